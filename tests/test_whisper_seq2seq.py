"""The Whisper encoder-decoder recogniser (``whisper_seq2seq``): its token scheme, a tiny
model that overfits two clips and then writes exactly their transcripts (so training and
generation agree on the start/end tokens), the limits on clip and transcript length, a
checkpoint folder that loads with another vocabulary, the shipped configs, and a tiny run
through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

from speechstack.cli import main
from speechstack.config import load_config
from speechstack.models import MODELS, ModelContext, create_model
from speechstack.models.pretrained import PretrainedLoadError
from speechstack.models.whisper import TINY_SEQ2SEQ_CONFIG, WhisperSeq2Seq
from speechstack.synth import generate_asr

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


def test_overfits_two_clips_and_then_writes_exactly_their_transcripts() -> None:
    model = tiny()
    waveform, lengths = two_clips()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(80):
        loss = model.loss(waveform, lengths, TARGETS)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
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


def test_a_tiny_whisper_recogniser_trains_and_predicts_through_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo_root: Path
) -> None:
    corpus = generate_asr(
        tmp_path / "demo", speakers=4, holdout_speakers=2, sentences_per_speaker=3, seed=0,
        progress=False,
    )  # fmt: skip
    monkeypatch.chdir(tmp_path)
    config = str(repo_root / "configs" / "asr" / "whisper_seq2seq.yaml")
    tiny_model = (
        "model.params={config: {d_model: 32, encoder_layers: 1, encoder_attention_heads: 2, "
        "encoder_ffn_dim: 64, decoder_layers: 1, decoder_attention_heads: 2, decoder_ffn_dim: 64, "
        "max_source_positions: 400, max_target_positions: 64}, max_new_tokens: 48}"
    )
    settings = ["train.epochs=2", "train.batch_size=4", "train.lr=3e-3", tiny_model]
    args = ["train", "--config", config, "--data", str(corpus)]
    assert main([*args, *(a for s in settings for a in ("--set", s))]) == 0
    run = Path("runs/asr/whisper_seq2seq")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_cer"] >= 0 and metrics["parameters"] > 0
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
