"""The Whisper encoder-decoder recogniser (``whisper_seq2seq``): its token scheme, a tiny
model that overfits two clips and then writes exactly their transcripts (so training and
generation agree on the start/end tokens), the limits on clip and transcript length, a
checkpoint folder that loads with another vocabulary, the shipped configs, a tiny run
through the CLI; and with ``tokenizer: whisper`` (a tiny checkpoint with a byte-level BPE
tokenizer in a temporary folder, no hub): the language/task prompt, labels as HF's
fine-tuning recipe makes them, exact French and Bengali round trips, training and decoding
after the forced prompt, a missing tokenizer named, and the same CLI run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from tokenizers.pre_tokenizers import ByteLevel
from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizer
from transformers.models.whisper.tokenization_whisper import LANGUAGES

from speechstack.cli import main
from speechstack.config import ConfigError, load_config
from speechstack.models import MODELS, ModelContext, create_model
from speechstack.models.pretrained import PretrainedLoadError
from speechstack.models.whisper import TINY_SEQ2SEQ_CONFIG, WhisperBPETokenizer, WhisperSeq2Seq
from speechstack.synth import generate_asr
from speechstack.text import TextConfig, normalise

FAMILY = "whisper_seq2seq"
RATE = 16000
CLASSES = 8  # <blank>, <unk>, |, then 5 "characters": decoder ids 0..7, start 8, end 9
TARGETS = [[3, 4, 2, 5, 5], [6, 7, 3]]


def tiny(num_classes: int = CLASSES, **params: object) -> WhisperSeq2Seq:
    torch.manual_seed(0)
    return create_model(
        FAMILY, ModelContext(num_classes=num_classes), **{**MODELS.get(FAMILY).tiny, **params}
    )


def two_clips() -> tuple[torch.Tensor, torch.Tensor]:
    """A 0.75 s tone and a 0.5 s chirp (zero-padded), ``(2, 12000)``, and their lengths."""
    time = np.arange(12000) / RATE
    batch = np.zeros((2, 12000), dtype=np.float32)
    batch[0] = 0.3 * np.sin(2 * np.pi * 440 * time)
    batch[1, :8000] = 0.3 * np.sin(2 * np.pi * (300 + 2000 * time[:8000]) * time[:8000])
    return torch.from_numpy(batch), torch.tensor([12000, 8000])


def test_token_scheme_is_the_vocabulary_plus_start_and_end() -> None:
    model = tiny()
    config = model.model.config
    assert MODELS.get(FAMILY).trainer == "transcriber"
    assert config.vocab_size == CLASSES + 2
    assert (config.decoder_start_token_id, config.bos_token_id) == (CLASSES, CLASSES)
    assert (config.eos_token_id, config.pad_token_id) == (CLASSES + 1, CLASSES + 1)
    assert model.model.proj_out.weight is model.model.model.decoder.embed_tokens.weight
    inputs, labels = model.teacher_forcing([[3, 4], [5]])
    assert inputs.tolist() == [[8, 3, 4], [8, 5, 9]]  # start + targets, padded with end
    assert labels.tolist() == [[3, 4, 9], [5, 9, -100]]  # targets + end, padding ignored


def overfit(
    model: WhisperSeq2Seq, waveform: torch.Tensor, lengths: torch.Tensor, targets: list[list[int]]
) -> None:
    """80 Adam steps on the two clips; the loss must fall below a fifth of its start."""
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(80):
        loss = model.loss(waveform, lengths, targets)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


def test_overfits_two_clips_and_then_writes_exactly_their_transcripts() -> None:
    model = tiny()
    waveform, lengths = two_clips()
    overfit(model, waveform, lengths, TARGETS)
    model.eval()
    with torch.inference_mode():
        assert model.decode(waveform, lengths) == TARGETS  # greedy
        model.generation_config.num_beams = 3  # beam search agrees on a model this sure
        assert model.decode(waveform, lengths) == TARGETS
        model.generation_config.num_beams = 1
        # the HF model's own (Whisper) generate works with the plain generation config
        written = model.model.generate(model.features(waveform, lengths)).tolist()
    end = CLASSES + 1
    assert [row[: row.index(end)] if end in row else row for row in written] == TARGETS


def test_decoding_an_untrained_model_gives_only_vocabulary_ids() -> None:
    model = tiny(max_new_tokens=6).eval()
    waveform, lengths = two_clips()
    with torch.inference_mode():
        hypotheses = model.decode(waveform, lengths)
    assert len(hypotheses) == 2
    for ids in hypotheses:
        assert len(ids) <= 6 and all(1 <= i < CLASSES for i in ids)  # no blank, start, end


def test_a_clip_longer_than_the_encoder_input_is_an_error() -> None:
    model = tiny()  # 50 positions: 1 s
    with pytest.raises(ValueError, match=r"1\.50 s is longer than the Whisper encoder's input"
                       r" \(1 s = 50 positions"):  # fmt: skip
        model.loss(torch.zeros(1, 24000), torch.tensor([24000]), [[3]])
    with pytest.raises(ValueError, match="max_source_positions"):
        model.eval().decode(torch.zeros(1, 24000), torch.tensor([24000]))
    # padding past the longest clip is not audio: a wider batch of short clips is fine
    assert len(model.decode(torch.zeros(1, 24000), torch.tensor([8000]))) == 1


def test_a_transcript_longer_than_the_decoder_is_an_error() -> None:
    model = tiny()  # 32 decoder positions: 31 tokens after the start token
    waveform, lengths = two_clips()
    model.loss(waveform[:1], lengths[:1], [[3] * 31])
    with pytest.raises(ValueError, match=r"32 tokens does not fit the Whisper decoder"):
        model.loss(waveform[:1], lengths[:1], [[3] * 32])
    with pytest.raises(ValueError, match="max_new_tokens=40"):
        tiny(max_new_tokens=40)


def bpe_like_checkpoint(folder: Path) -> WhisperForConditionalGeneration:
    """A randomly initialised Whisper of the openai layout: a 64-token vocabulary with
    Whisper's suppress lists and forced prompt ids, 2 s of encoder positions."""
    torch.manual_seed(1)
    config = WhisperConfig(
        **{**TINY_SEQ2SEQ_CONFIG, "max_source_positions": 100},
        vocab_size=64,
        pad_token_id=50,
        bos_token_id=50,
        eos_token_id=50,
        decoder_start_token_id=51,
        suppress_tokens=[1, 2, 9],
        begin_suppress_tokens=[50],
        forced_decoder_ids=[[1, 52], [2, 53]],
    )
    source = WhisperForConditionalGeneration(config)
    source.save_pretrained(folder)
    return source


@pytest.mark.parametrize("source", ["this family", "bpe checkpoint"])
def test_checkpoint_folder_loads_and_is_resized_to_this_vocabulary(
    source: str, tmp_path: Path
) -> None:
    folder = tmp_path / "checkpoint"
    if source == "this family":
        saved = tiny().model  # vocabulary of 8 + 2
        saved.save_pretrained(folder)
        cut: dict = {}
    else:
        saved = bpe_like_checkpoint(folder)
        cut = {"max_source_positions": 50}  # the saved encoder has 100 positions (2 s)
    model = tiny(num_classes=12, pretrained=str(folder), config=None, **cut)
    hf = model.model
    config = hf.config
    assert config.vocab_size == 14 and hf.model.decoder.embed_tokens.weight.shape[0] == 14
    assert hf.proj_out.weight is hf.model.decoder.embed_tokens.weight  # still tied
    assert (config.decoder_start_token_id, config.eos_token_id, config.pad_token_id) == (12, 13, 13)
    assert config.suppress_tokens is None and config.forced_decoder_ids is None
    assert hf.model.decoder.embed_tokens.padding_idx == 13  # end, not the saved pad id
    rows = min(14, saved.config.vocab_size)  # resized: the rows both have are kept
    torch.testing.assert_close(
        hf.model.decoder.embed_tokens.weight[:rows], saved.model.decoder.embed_tokens.weight[:rows]
    )
    for layer in ("encoder.layers.0", "decoder.layers.0"):  # the layers are the checkpoint's
        ours, theirs = hf.model.get_submodule(layer), saved.model.get_submodule(layer)
        torch.testing.assert_close(ours.state_dict(), theirs.state_dict())
    waveform, lengths = two_clips()
    model.generation_config.max_new_tokens = 5
    loss = model.loss(waveform, lengths, [[3, 11], [2]])
    assert torch.isfinite(loss)
    loss.backward()
    with torch.inference_mode():
        assert all(1 <= i < 12 for ids in model.eval().decode(waveform, lengths) for i in ids)


def test_a_missing_local_folder_says_how_to_provide_weights(tmp_path: Path) -> None:
    with pytest.raises(PretrainedLoadError) as error:
        tiny(pretrained=str(tmp_path / "no-such-folder"), config=None)
    message = str(error.value)
    assert "is not a folder" in message and "--local-dir" in message
    assert "WhisperForConditionalGeneration" in message


def test_freezing_the_encoder_leaves_the_decoder_training() -> None:
    model = tiny(freeze_encoder=True)
    assert not any(p.requires_grad for p in model.model.model.encoder.parameters())
    assert all(p.requires_grad for p in model.model.model.decoder.parameters())
    layers = tiny(freeze_layers=1).model.model.encoder
    assert not any(p.requires_grad for p in layers.layers[0].parameters())
    assert not layers.conv1.weight.requires_grad
    assert all(p.requires_grad for p in layers.layers[1].parameters())


@pytest.mark.parametrize("task", ["asr", "bengali_ai"])
def test_shipped_config_builds_a_small_model(task: str, repo_root: Path) -> None:
    config = load_config(repo_root / "configs" / task / "whisper_seq2seq.yaml")
    assert config.model.name == FAMILY and config.experiment == FAMILY
    assert config.model.params["pretrained"] is None
    model = create_model(FAMILY, ModelContext(num_classes=44), **config.model.params)
    assert 300_000 <= sum(p.numel() for p in model.parameters()) <= 2_000_000
    assert model.max_samples >= 8 * RATE  # the demo's 6 s clips, slowed by augmentation


@pytest.mark.parametrize("tokenizer", ["characters", "whisper"])
def test_a_tiny_whisper_recogniser_trains_and_predicts_through_the_cli(
    tokenizer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo_root: Path
) -> None:
    corpus = generate_asr(
        tmp_path / "demo", speakers=4, holdout_speakers=2, sentences_per_speaker=3, seed=0,
        progress=False,
    )  # fmt: skip
    monkeypatch.chdir(tmp_path)
    config = str(repo_root / "configs" / "asr" / "whisper_seq2seq.yaml")
    if tokenizer == "characters":
        tiny_model = (
            "model.params={config: {d_model: 32, encoder_layers: 1, encoder_attention_heads: 2, "
            "encoder_ffn_dim: 64, decoder_layers: 1, decoder_attention_heads: 2, "
            "decoder_ffn_dim: 64, max_source_positions: 400, max_target_positions: 64}, "
            "max_new_tokens: 48}"
        )
    else:  # predict reloads the tokenizer from the checkpoint folder the run names
        folder = tiny_whisper_checkpoint(tmp_path / "whisper", source_positions=400,
                                         target_positions=128)  # fmt: skip
        tiny_model = (
            f"model.params={{pretrained: {folder}, config: null, tokenizer: whisper, "
            "language: french, max_new_tokens: 48}"
        )
    settings = ["train.epochs=2", "train.batch_size=4", "train.lr=3e-3", tiny_model]
    args = ["train", "--config", config, "--data", str(corpus)]
    assert main([*args, *(a for s in settings for a in ("--set", s))]) == 0
    run = Path("runs/asr/whisper_seq2seq")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_cer"] >= 0 and metrics["parameters"] > 0
    assert (metrics["tokens"] > 300) == (tokenizer == "whisper")  # BPE, not the characters
    test = pl.read_csv(run / "test.csv")
    # predict rebuilds the model from the run folder and writes what the run wrote
    folder = Path("incoming")
    folder.mkdir()
    for name in pl.read_csv(corpus / "test.tsv", separator="\t", quote_char=None)["path"]:
        shutil.copy(corpus / "clips" / name, folder / name)
    predict = ["predict", "--config", config, "--data", str(corpus), "--audio", "incoming"]
    assert main([*predict, "--out", "said.csv"]) == 0
    said = pl.read_csv("said.csv")
    expected = dict(zip(test["fname"], test["hypothesis"].fill_null(""), strict=True))
    assert dict(zip(said["path"], said["sentence"].fill_null(""), strict=True)) == expected


# ---------------------------------------------------------------------------------------
# tokenizer: whisper (the checkpoint's own byte-level BPE and its language/task prompt)

FRENCH = "Léo est allé à la gare, ce matin !"
BENGALI = "আমি ভাত খাই।"
BYTE_MERGES = [("Ã", "©"), ("Ġ", "l"), ("e", "s"), ("à", "¦"), ("à", "§")]  # é; " l";
#   "es"; the first two bytes of every Bengali letter (U+0980..U+09BF and U+09C0..U+09FF)


def whisper_special_tokens() -> list[str]:
    """Whisper's special tokens after ``<|endoftext|>``, in the openai checkpoints' order
    (every language, so the ids HF computes by position are the ones looked up by name)."""
    return [
        "<|startoftranscript|>",
        *(f"<|{code}|>" for code in LANGUAGES),
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nocaptions|>",
        "<|notimestamps|>",
    ]


def write_whisper_tokenizer(folder: Path) -> int:
    """A tiny byte-level BPE Whisper tokenizer in the hub's file layout: ``vocab.json``
    (the 256 byte symbols, a few merges, ``<|endoftext|>``), ``merges.txt`` and
    ``tokenizer_config.json`` naming the special tokens; returns its number of tokens."""
    vocabulary = {symbol: i for i, symbol in enumerate(sorted(ByteLevel.alphabet()))}
    for first, second in BYTE_MERGES:
        vocabulary[first + second] = len(vocabulary)
    end = vocabulary["<|endoftext|>"] = len(vocabulary)
    special = whisper_special_tokens()
    ids = {"<|endoftext|>": end, **{token: end + 1 + i for i, token in enumerate(special)}}
    added = {
        str(i): {"content": token, "special": True, "lstrip": False, "rstrip": False,
                 "normalized": False, "single_word": False}
        for token, i in ids.items()
    }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocabulary, ensure_ascii=False))
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in BYTE_MERGES)
    )
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "WhisperTokenizer", "added_tokens_decoder": added,
        "additional_special_tokens": special, "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }))  # fmt: skip
    return len(vocabulary) + len(special)


def tiny_whisper_checkpoint(
    folder: Path, tokenizer: bool = True, source_positions: int = 50, target_positions: int = 64
) -> Path:
    """A randomly initialised multilingual Whisper in ``folder`` (d_model 32, one encoder
    and one decoder layer, ``source_positions`` / 50 s of input) laid out like the openai
    checkpoints, with their token layout and (``tokenizer``) a tiny BPE tokenizer beside it."""
    size = write_whisper_tokenizer(folder) if tokenizer else 0
    end = len(ByteLevel.alphabet()) + len(BYTE_MERGES)  # <|endoftext|>, then the specials
    config = WhisperConfig(
        d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
        max_source_positions=source_positions, max_target_positions=target_positions,
        vocab_size=size or end + 1 + len(whisper_special_tokens()), pad_token_id=end,
        bos_token_id=end, eos_token_id=end, decoder_start_token_id=end + 1,
        suppress_tokens=[1, 2], begin_suppress_tokens=[220, end],
    )  # fmt: skip
    torch.manual_seed(2)
    WhisperForConditionalGeneration(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def whisper_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_whisper_checkpoint(tmp_path_factory.mktemp("whisper") / "checkpoint")


def with_whisper_tokenizer(folder: Path, **params: object) -> WhisperSeq2Seq:
    torch.manual_seed(0)
    settings = {"pretrained": str(folder), "config": None, "tokenizer": "whisper", **params}
    return create_model(FAMILY, ModelContext(num_classes=CLASSES), **settings)


def bpe(model: WhisperSeq2Seq) -> WhisperBPETokenizer:
    tokenizer = model.text_tokenizer(TextConfig())
    assert tokenizer is not None
    return tokenizer


@pytest.mark.parametrize(
    ("language", "task", "names"),
    [
        ("french", "transcribe", ["<|fr|>", "<|transcribe|>"]),
        ("BN", "translate", ["<|bn|>", "<|translate|>"]),
        (None, "transcribe", ["<|transcribe|>"]),
    ],
)
def test_the_whisper_prompt_is_start_language_task_and_no_timestamps(
    language: str | None, task: str, names: list[str], whisper_folder: Path
) -> None:
    model = with_whisper_tokenizer(whisper_folder, language=language, task=task)
    hf = WhisperTokenizer.from_pretrained(whisper_folder)
    expected = ["<|startoftranscript|>", *names, "<|notimestamps|>"]
    assert model.prompt == hf.convert_tokens_to_ids(expected)
    hf.set_prefix_tokens(language=language, task=task, predict_timestamps=False)
    assert model.prompt == hf.prefix_tokens  # what HF's fine-tuning recipe puts before labels
    assert model.end_id == hf.convert_tokens_to_ids("<|endoftext|>")
    config = model.model.config
    assert (config.decoder_start_token_id, config.eos_token_id) == (model.prompt[0], model.end_id)
    never = set(model.generation_config.suppress_tokens)
    assert set(model.prompt) <= never and model.end_id not in never and 220 not in never
    # the checkpoint's vocabulary and embeddings are kept, not resized to the characters
    saved = WhisperForConditionalGeneration.from_pretrained(whisper_folder)
    assert config.vocab_size == saved.config.vocab_size == len(hf)
    torch.testing.assert_close(
        model.model.model.decoder.embed_tokens.weight, saved.model.decoder.embed_tokens.weight
    )
    assert model.model.proj_out.weight is model.model.model.decoder.embed_tokens.weight


@pytest.mark.parametrize("sentence", [FRENCH, BENGALI, "l'homme peut-être <|en|>"])
def test_whisper_labels_are_the_prompt_and_the_transcripts_bpe_ids(
    sentence: str, whisper_folder: Path
) -> None:
    model = with_whisper_tokenizer(whisper_folder, language="fr")
    tokenizer = bpe(model)
    ids = tokenizer.encode(sentence)
    reference = normalise(sentence)
    assert tokenizer.text(ids) == reference  # exact round trip, Bengali and French alike
    raw = tokenizer.tokenizer.encode(sentence, add_special_tokens=False)  # cased, punctuated
    assert tokenizer.tokenizer.decode(raw, clean_up_tokenization_spaces=False) == sentence
    special = set(tokenizer.tokenizer.all_special_ids)
    assert not special & set(ids)  # a literal "<|en|>" is text
    inputs, labels = model.teacher_forcing([ids, ids[:2]])
    prompt, end, n = model.prompt, model.end_id, len(ids)
    assert inputs[0].tolist() == [*prompt, *ids]
    assert labels[0].tolist() == [*prompt[1:], *ids, end]
    assert inputs[1].tolist() == [*prompt, *ids[:2], *[end] * (n - 2)]
    assert labels[1].tolist() == [*prompt[1:], *ids[:2], end, *[-100] * (n - 2)]
    # HF's Whisper fine-tuning recipe: the tokenizer's ids with the prefix, the start
    # token dropped (the model puts it back as the first decoder input)
    hf = WhisperTokenizer.from_pretrained(whisper_folder, language="fr", task="transcribe")
    assert labels[0].tolist() == hf(reference, split_special_tokens=True).input_ids[1:]


def test_whisper_tokens_train_and_decode_after_the_forced_prompt(whisper_folder: Path) -> None:
    model = with_whisper_tokenizer(whisper_folder, language="french", max_new_tokens=24)
    tokenizer = bpe(model)
    sentences = ["le chat", "আমি"]
    targets = [tokenizer.encode(sentence) for sentence in sentences]
    waveform, lengths = two_clips()
    overfit(model, waveform, lengths, targets)
    model.eval()
    with torch.inference_mode():
        decoded = model.decode(waveform, lengths)
        assert decoded == targets
        assert [tokenizer.text(ids) for ids in decoded] == sentences
        model.generation_config.num_beams = 3  # beam search from the same prompt agrees
        assert model.decode(waveform, lengths) == targets
        model.generation_config.num_beams = 1
        features = model.features(waveform, lengths)
        # Whisper's own generate with language= and task= forces the same prompt and so
        # writes the same tokens (it returns them without the prompt)
        written = model.model.generate(features, language="fr", task="transcribe").tolist()
    end = model.end_id
    assert [row[: row.index(end)] if end in row else row for row in written] == targets


def test_untrained_whisper_decoding_writes_no_special_token(whisper_folder: Path) -> None:
    model = with_whisper_tokenizer(whisper_folder, language="bn", max_new_tokens=6).eval()
    waveform, lengths = two_clips()
    with torch.inference_mode():
        hypotheses = model.decode(waveform, lengths)
    special = set(bpe(model).tokenizer.all_special_ids)
    assert all(len(ids) <= 6 and not special & set(ids) for ids in hypotheses)


def test_a_checkpoint_without_its_tokenizer_says_how_to_provide_it(tmp_path: Path) -> None:
    folder = tiny_whisper_checkpoint(tmp_path / "weights-only", tokenizer=False)
    with pytest.raises(PretrainedLoadError) as error:
        with_whisper_tokenizer(folder, language="fr")
    message = str(error.value)
    assert str(folder) in message and "holds no Whisper tokenizer" in message
    assert "hf download openai/whisper-tiny" in message
    assert "WhisperTokenizer.from_pretrained('openai/whisper-tiny').save_pretrained" in message


def test_whisper_tokenizer_settings_are_checked(whisper_folder: Path) -> None:
    with pytest.raises(ConfigError, match="tokenizer=whisper uses the checkpoint's own"):
        tiny(tokenizer="whisper")  # from scratch: no tokenizer to load
    with pytest.raises(ConfigError, match="`language` and `task` are tokens of Whisper's"):
        tiny(language="fr")
    with pytest.raises(ValueError, match=r"'klingon' is not a Whisper language.*bn \(bengali\)"):
        with_whisper_tokenizer(whisper_folder, language="klingon")
