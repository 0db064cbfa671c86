"""Whisper's audio encoder with a frame head and pooled classifier (``whisper``), and the
whole Whisper encoder-decoder as a speech recogniser (``whisper_seq2seq``, trained by
``transcribe.py``; see ``WhisperSeq2Seq``) writing the run's characters or, with
``tokenizer: whisper``, Whisper's own BPE tokens after its language/task prompt.

For real use, ``pretrained: openai/whisper-tiny`` (8M encoder parameters) or
``openai/whisper-base`` (20M); only the encoder is kept (loaded through
``WhisperForAudioClassification``, which never builds the decoder). A from-scratch ``config``
makes a small encoder for offline demos and tests.

Whisper's log-mel is computed in torch on the model's device exactly as
``WhisperFeatureExtractor`` does: the clip zero-padded to the encoder's input length, a
centred 400-point STFT (periodic Hann, hop 160, reflect padding, last frame dropped), Slaney
mel filters 0-8000 Hz (80 or 128 bins, from the model config), ``log10`` floored at 1e-10,
clamped to ``max - 8`` per clip and scaled ``(x + 4) / 4``. The real encoder takes 3000
frames (30 s); ``max_source_positions`` can cut that (each position = 2 frames = 20 ms).
Only encoder frames that hold the clip are pooled. ``tests/test_transformer_models.py``
checks the log-mel against ``WhisperFeatureExtractor``; ``tests/test_whisper_seq2seq.py`` the
recogniser.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from speechstack.features import SpecAugment
from speechstack.models import ModelContext, register_model
from speechstack.models.ctc import BLANK_ID
from speechstack.models.pooling import PooledClassifier
from speechstack.models.pretrained import (
    FrameHead,
    LayerWeightedSum,
    PretrainedLoadError,
    ceil_div,
    class_names,
    freeze,
    freeze_first_layers,
    load_transformer,
    local_path,
    require_checkpoint_rate,
    valid_mask,
)
from speechstack.params.models import WhisperParams, WhisperSeq2SeqParams
from speechstack.text import TextConfig, normalise

if TYPE_CHECKING:
    from transformers import WhisperTokenizer
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

LOG_FLOOR = 1e-10  # mel power floor before log10
DYNAMIC_RANGE = 8.0  # log10 units kept below each clip's maximum (80 dB)


class WhisperLogMel(nn.Module):
    """Waveform ``(batch, samples)`` -> Whisper log-mel ``(batch, n_mels, frames)`` with
    ``frames = total_samples // hop_length`` (the clip is zero-padded to ``total_samples``
    first, as ``WhisperFeatureExtractor`` pads to 30 s). Values are about -1.5 .. 1.5."""

    def __init__(
        self,
        n_mels: int,
        total_samples: int,
        sample_rate: int = 16000,
        n_fft: int = 400,
        hop_length: int = 160,
    ) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.total_samples = total_samples
        import librosa  # here, not at import (slow to import; only the filterbank)

        filters = librosa.filters.mel(
            sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=8000.0, norm="slaney"
        )
        self.register_buffer("filters", torch.from_numpy(filters), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        samples = waveform.shape[-1]
        if samples > self.total_samples:
            raise ValueError(
                f"clips of {samples} samples are longer than the Whisper encoder's input "
                f"({self.total_samples} samples); raise model.params.max_source_positions"
            )
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            # Zeros past the input length too (half a window), so the last frames see the
            # same silence they would in a 30 s pad, not a reflection of the clip.
            extra = self.total_samples - samples + self.n_fft // 2
            padded = nn.functional.pad(waveform.float(), (0, extra))
            frames = self.total_samples // self.hop_length
            spectrum = torch.stft(
                padded,
                self.n_fft,
                self.hop_length,
                window=self.window,
                center=True,
                pad_mode="reflect",
                return_complex=True,
            )[..., :frames]
            power = spectrum.real.square() + spectrum.imag.square()
            log_mel = torch.matmul(self.filters, power).clamp_min(LOG_FLOOR).log10()
            peak = log_mel.amax(dim=(1, 2), keepdim=True)
            log_mel = torch.maximum(log_mel, peak - DYNAMIC_RANGE)
            return (log_mel + 4.0) / 4.0


class WhisperClassifier(nn.Module):
    """Waveform ``(batch, samples)`` at 16 kHz -> log-mel ``(batch, n_mels, 2 * positions)``
    -> (training) SpecAugment on the clip's frames -> Whisper encoder ``(batch, positions,
    d_model)`` -> optional layer mix -> frame head -> pooled over the clip's positions ->
    logits ``(batch, num_classes)``."""

    def __init__(self, params: WhisperParams, context: ModelContext) -> None:
        from transformers import WhisperConfig, WhisperForAudioClassification
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        super().__init__()
        require_checkpoint_rate(params, context)
        names = class_names(context)
        if params.pretrained is None:
            self.encoder = load_transformer(WhisperEncoder, WhisperConfig, params, names)
        else:
            loaded = load_transformer(WhisperForAudioClassification, WhisperConfig, params, names)
            self.encoder = loaded.encoder  # the projector/classifier of that class are unused
        encoder = self.encoder
        self.skips_layers = encoder.config.encoder_layerdrop > 0  # DDP: look for unused
        if params.max_source_positions is not None:
            _cut_positions(encoder, params.max_source_positions)
        self.stride = encoder.conv1.stride[0] * encoder.conv2.stride[0]  # frames per position
        self.positions = encoder.config.max_source_positions
        self.hop_length = 160
        self.log_mel = WhisperLogMel(
            encoder.config.num_mel_bins,
            self.positions * self.stride * self.hop_length,
            context.audio.sample_rate,
            hop_length=self.hop_length,
        )
        if context.audio.clip_samples > self.log_mel.total_samples:
            raise ValueError(
                f"clips of {context.audio.clip_seconds} s are longer than the Whisper encoder "
                f"input ({self.positions} positions = "
                f"{self.log_mel.total_samples / context.audio.sample_rate:g} s): raise "
                "model.params.max_source_positions (at most the checkpoint's own)"
            )
        self.spec_augment = SpecAugment(context.spec_augment)
        dim = encoder.config.d_model
        self.layer_sum = (
            LayerWeightedSum(encoder.config.encoder_layers + 1)
            if params.weighted_layer_sum
            else None
        )
        self.head = FrameHead(params.head, dim, params.head_dim, params.dropout)
        self.classifier = PooledClassifier(
            params.pooling, self.head.out_dim, context.num_classes, params.dropout
        )
        if params.freeze_encoder:
            freeze(encoder)
        if params.freeze_layers:
            freeze_first_layers(encoder.layers, params.freeze_layers)
            freeze(encoder.conv1)
            freeze(encoder.conv2)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``lengths``: optional ``(batch,)`` valid samples per clip; ``None`` = the whole
        ``samples`` axis is audio. Encoder positions past the audio are not pooled."""
        samples = waveform.shape[-1]
        features = self.log_mel(waveform)
        clip_frames = ceil_div(samples, self.hop_length)
        if self.training:  # mask time/frequency only where the clip is, not in the padding
            augmented = self.spec_augment(features[..., :clip_frames])
            features = torch.cat([augmented, features[..., clip_frames:]], dim=-1)
        outputs = self.encoder(features, output_hidden_states=self.layer_sum is not None)
        if self.layer_sum is not None:
            hidden = self.layer_sum(outputs.hidden_states)
        else:
            hidden = outputs.last_hidden_state  # (batch, positions, d_model)
        if lengths is None:
            lengths = torch.full((waveform.shape[0],), samples, device=waveform.device)
        positions = ceil_div(ceil_div(lengths, self.hop_length), self.stride)
        mask = valid_mask(positions, hidden.shape[1])
        return self.classifier(self.head(hidden, mask), mask)


def _cut_positions(encoder: WhisperEncoder, positions: int) -> None:
    """Keep the first ``positions`` rows of the (fixed, sinusoidal) positional table, so the
    encoder takes ``2 * positions`` log-mel frames instead of 3000."""
    table = encoder.embed_positions
    if positions > table.num_embeddings:
        raise ValueError(
            f"model.params.max_source_positions={positions} but the encoder has only "
            f"{table.num_embeddings} positions"
        )
    if positions == table.num_embeddings:
        return
    cut = nn.Embedding(positions, table.embedding_dim)
    cut.weight.data.copy_(table.weight.data[:positions])
    cut.requires_grad_(table.weight.requires_grad)
    encoder.embed_positions = cut.to(table.weight.device)
    encoder.config.max_source_positions = positions
    encoder.max_source_positions = positions


TINY_CONFIG = {  # ~31k parameters, 1 s input (50 positions = 100 log-mel frames)
    "d_model": 32,
    "encoder_layers": 2,
    "encoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "num_mel_bins": 80,
    "max_source_positions": 50,
}


@register_model(
    "whisper", WhisperParams, tiny={"config": TINY_CONFIG, "head_dim": 32, "dropout": 0.0}
)
def build_whisper(params: WhisperParams, context: ModelContext) -> nn.Module:
    return WhisperClassifier(params, context)


# ---------------------------------------------------------------------------------------
# whisper_seq2seq: the encoder-decoder as a recogniser over the run's characters, or over
# Whisper's own byte-level BPE tokens (model.params.tokenizer)

WHISPER_START = "<|startoftranscript|>"  # the decoder's first input, before the prompt
WHISPER_END = "<|endoftext|>"  # ends a transcript (and pads decoder inputs)
WHISPER_NO_TIMESTAMPS = "<|notimestamps|>"  # last prompt token: text without timestamps
TOKENIZER_EXAMPLE = "openai/whisper-tiny"  # named in the help text of a missing tokenizer


def whisper_language_code(language: str) -> str:
    """Whisper's code of ``language``, given as a code (``bn``, ``fr``) or an English name
    (``bengali``, ``french``, any case); an unknown one is a ``ValueError`` listing them."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

    name = language.strip().lower()
    if name in LANGUAGES:
        return name
    if name in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[name]
    raise ValueError(
        f"model.params.language={language!r} is not a Whisper language: give a code or an "
        f"English name, one of {', '.join(f'{code} ({n})' for code, n in LANGUAGES.items())}"
    )


def how_to_provide_tokenizer(pretrained: str) -> str:
    folder = f"weights/{TOKENIZER_EXAMPLE.split('/')[-1]}"
    return (
        "model.params.tokenizer=whisper reads Whisper's tokenizer from the checkpoint's own "
        "folder (tokenizer.json, or vocab.json + merges.txt with the special tokens in "
        "tokenizer_config.json / added_tokens.json), and nothing is downloaded at run time. "
        "Downloading the whole checkpoint brings the weights and the tokenizer together, on "
        f"a machine with internet:\n  hf download {TOKENIZER_EXAMPLE} --local-dir {folder}\n"
        "or add the tokenizer to a folder that has only the weights, in Python:\n"
        f"  WhisperTokenizer.from_pretrained('{TOKENIZER_EXAMPLE}').save_pretrained("
        f"'{pretrained}')\n"
        "then set model.params.pretrained to that folder (or tokenizer=characters to decode "
        "the run's characters instead)."
    )


def load_whisper_tokenizer(pretrained: str) -> WhisperTokenizer:
    """The Whisper tokenizer saved with the checkpoint ``pretrained`` (its folder, or the
    hub cache). A folder without one (``from_pretrained`` then builds an empty tokenizer
    rather than failing) or an unreachable hub name is a ``PretrainedLoadError`` naming the
    folder and saying how to provide the files."""
    from transformers import WhisperTokenizer

    source = local_path(pretrained)
    try:
        tokenizer = WhisperTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:  # hub unreachable, damaged files
        raise PretrainedLoadError(
            f"could not load Whisper's tokenizer from model.params.pretrained='{pretrained}': "
            f"{error}\n" + how_to_provide_tokenizer(pretrained)
        ) from error
    vocabulary = tokenizer.get_vocab()
    missing = [
        t for t in (WHISPER_START, WHISPER_END, WHISPER_NO_TIMESTAMPS) if t not in vocabulary
    ]
    if missing:
        raise PretrainedLoadError(
            f"model.params.pretrained='{pretrained}' holds no Whisper tokenizer ({source}: "
            f"{len(vocabulary)} tokens, without {', '.join(missing)}).\n"
            + how_to_provide_tokenizer(pretrained)
        )
    return tokenizer


def whisper_prompt(tokenizer: WhisperTokenizer, language: str | None, task: str) -> list[int]:
    """The ids of ``<|startoftranscript|>``, ``<|language|>`` (none for ``language=None``),
    ``<|task|>``, ``<|notimestamps|>``: the prompt before every transcript, as
    ``WhisperTokenizer.prefix_tokens`` makes it. Looked up by name (not by Whisper's layout
    of ids), so a token the tokenizer lacks is a ``ValueError`` naming it."""
    names = [WHISPER_START]
    if language is not None:
        names.append(f"<|{whisper_language_code(language)}|>")
    names += [f"<|{task}|>", WHISPER_NO_TIMESTAMPS]
    vocabulary = tokenizer.get_vocab()
    missing = [name for name in names if name not in vocabulary]
    if missing:
        raise ValueError(
            f"the checkpoint's tokenizer has no {', '.join(missing)} token (model.params."
            f"language={language!r}, task={task!r}): an English-only checkpoint (*.en) has no "
            "language tokens; use a multilingual one or language=null"
        )
    return [vocabulary[name] for name in names]


def whisper_generate_settings(
    tokenizer: WhisperTokenizer, language: str | None, task: str
) -> dict[str, Any]:
    """What Whisper's own ``generate`` reads from a generation config to build its prompt
    (``lang_to_id``, ``task_to_id``, ``no_timestamps_token_id``, ``is_multilingual``), with
    the run's ``language`` and ``task`` as its defaults; as an openai checkpoint's
    ``generation_config.json`` has them, but from this tokenizer's ids."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TASK_IDS

    vocabulary = tokenizer.get_vocab()
    languages = {
        token: vocabulary[token]
        for token in (f"<|{code}|>" for code in LANGUAGES)
        if token in vocabulary
    }
    return {
        "lang_to_id": languages,
        "task_to_id": {t: vocabulary[f"<|{t}|>"] for t in TASK_IDS if f"<|{t}|>" in vocabulary},
        "no_timestamps_token_id": vocabulary[WHISPER_NO_TIMESTAMPS],
        "is_multilingual": bool(languages),
        "language": None if language is None else f"<|{whisper_language_code(language)}|>",
        "task": task,
    }


class WhisperBPETokenizer:
    """The run's text <-> Whisper's byte-level BPE ids, with the interface of
    ``text.Vocabulary`` (``text.Tokenizer``) so the recogniser's loop treats both alike.
    ``encode`` normalises a transcript as the references are normalised and writes its BPE
    ids (no prompt, no end token: ``WhisperSeq2Seq.teacher_forcing`` adds them; a literal
    ``<|en|>`` in a transcript is text, not the special token). ``text`` decodes ids with the
    special tokens skipped and without HF's clean-up of spaces before punctuation, then
    normalises, so a checkpoint's cased, punctuated output is scored in the references'
    form. Byte-level BPE covers every byte, so any text (Bengali, French) round-trips
    exactly: ``text(encode(s)) == normalise(s)``."""

    def __init__(self, tokenizer: WhisperTokenizer, config: TextConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config

    def __len__(self) -> int:
        return len(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(
            normalise(text, self.config), add_special_tokens=False, split_special_tokens=True
        )

    def text(self, ids: Sequence[int] | np.ndarray) -> str:
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]
        decoded = self.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        return normalise(decoded, self.config)


class WhisperSeq2Seq(nn.Module):
    """Whisper encoder-decoder (HF ``WhisperForConditionalGeneration``) as a recogniser:
    waveform ``(batch, samples)`` at 16 kHz -> Whisper log-mel padded to the encoder's input
    (``2 * max_source_positions`` frames) -> (training) SpecAugment on the clips' frames ->
    encoder -> decoder writing the transcript's tokens after a prompt.

    Training is teacher-forced: decoder input ``prompt, t1 .. tn`` (padded with ``end``),
    labels ``prompt[1:], t1 .. tn, end`` (padding -100, ignored), cross-entropy per token —
    HF's Whisper fine-tuning recipe (labels are the ids after the start token). Decoding is
    plain HF encoder-decoder generation (``GenerationMixin.generate``: greedy, or beam search
    with ``num_beams``) forced to start with the same prompt (``decoder_input_ids``), so
    training and decoding cannot disagree on it; ``decode`` returns the ids after the
    prompt up to ``end``, none of them special. Two token schemes (``model.params.tokenizer``):

    * ``characters`` (default): the decoder's ids are the run's vocabulary's (``text.
      Vocabulary``: 0 ``<blank>``, 1 ``<unk>``, 2 ``|`` the space, then characters), plus
      ``start = num_classes`` (the one-token prompt; ``decoder_start_token_id``) and ``end
      = num_classes + 1`` (``eos_token_id``, ``pad_token_id``): ``vocab_size = num_classes +
      2``; ``<blank>`` and ``start`` are never generated. A checkpoint's encoder and decoder
      layers are reused and its token embeddings and (tied) output projection resized to
      this vocabulary (``resize_token_embeddings``: its first rows are kept, which mean
      nothing for these characters), so the decoder relearns its output from the run's
      transcripts. Whisper's BPE, language, task and timestamp tokens are not used.
    * ``whisper``: the checkpoint's own tokenizer (``WhisperTokenizer`` from the same
      ``pretrained`` folder; ``text_tokenizer`` wraps it for the loop) with its vocabulary
      and embeddings unchanged. The prompt is ``<|startoftranscript|><|language|><|task|>
      <|notimestamps|>`` (``language`` and ``task`` from the params; no language token for
      ``language: null``), ``end`` is ``<|endoftext|>``, and Whisper's special and
      timestamp tokens are never generated. The HF model's own ``generation_config`` also
      carries Whisper's ``lang_to_id``/``task_to_id``/``no_timestamps_token_id`` with the
      run's language and task, so Whisper's own ``self.model.generate(log_mel)`` forces the
      same prompt when a language is set (without one it would detect the language).

    Either way the checkpoint's suppress lists and forced decoder ids are dropped: the
    generation config's ``suppress_tokens`` (the ids never generated above) replace them.
    """

    def __init__(self, params: WhisperSeq2SeqParams, context: ModelContext) -> None:
        from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

        super().__init__()
        require_checkpoint_rate(params, context)
        characters = params.tokenizer == "characters"
        num_classes = context.num_classes
        settings: dict[str, Any] = {  # a checkpoint's lists of ids to suppress at
            "suppress_tokens": None,  # generation; this model sets its own
            "begin_suppress_tokens": None,
        }
        if characters and params.pretrained is None:  # a checkpoint keeps its vocabulary
            settings |= {  # until resized
                "vocab_size": num_classes + 2,
                "decoder_start_token_id": num_classes,
                "bos_token_id": num_classes,
                "eos_token_id": num_classes + 1,
                "pad_token_id": num_classes + 1,
            }
        self.model = load_transformer(
            WhisperForConditionalGeneration, WhisperConfig, params, None, settings=settings
        )
        model = self.model
        # the openai checkpoints' config.json still forces their prompt ids (Whisper's
        # generate reads it); not a WhisperConfig argument any more, so set here, not above
        model.config.forced_decoder_ids = None
        self.tokenizer: WhisperTokenizer | None = None
        whisper_generation: dict[str, Any] = {}
        if characters:
            self.target_limit = num_classes  # targets: ids 0 .. target_limit - 1
            self.prompt = [num_classes]  # start
            self.end_id = num_classes + 1
            never = [BLANK_ID, num_classes]  # blank and start are never targets
            if model.config.vocab_size != num_classes + 2:  # the embeddings and the tied
                #   projection; the first rows are kept, new ones drawn as at initialisation
                model.resize_token_embeddings(num_classes + 2, mean_resizing=False)
            # `end` as a decoder input is only padding after the transcript: no gradient
            # through the lookup (as HF builds it from scratch; a checkpoint's pad id is gone)
            model.get_input_embeddings().padding_idx = self.end_id
            bos_id = num_classes
        else:
            assert params.pretrained is not None  # WhisperSeq2SeqParams requires it
            self.tokenizer = load_whisper_tokenizer(params.pretrained)
            vocabulary = self.tokenizer.get_vocab()
            self.target_limit = model.config.vocab_size  # any row of the checkpoint's
            if len(self.tokenizer) > self.target_limit:
                raise PretrainedLoadError(
                    f"the tokenizer in model.params.pretrained='{params.pretrained}' has "
                    f"{len(self.tokenizer)} tokens but the checkpoint's decoder only "
                    f"{self.target_limit}: they are not the same checkpoint's"
                )
            self.prompt = whisper_prompt(self.tokenizer, params.language, params.task)
            self.end_id = vocabulary[WHISPER_END]
            special = set(self.tokenizer.all_special_ids) - {self.end_id}
            timestamps = range(vocabulary[WHISPER_NO_TIMESTAMPS] + 1, self.target_limit)
            never = sorted(special | set(timestamps))  # (timestamps: Whisper's layout)
            bos_id = self.end_id  # as Whisper's configs have it
            whisper_generation = whisper_generate_settings(
                self.tokenizer, params.language, params.task
            )
        self.start_id = self.prompt[0]
        self.not_text = frozenset(never)  # ids never generated nor kept in a transcript
        special_ids = {
            "decoder_start_token_id": self.start_id,
            "bos_token_id": bos_id,
            "eos_token_id": self.end_id,
            "pad_token_id": self.end_id,
        }
        for key, value in special_ids.items():
            setattr(model.config, key, value)
        config = model.config
        encoder = model.model.encoder
        self.skips_layers = config.encoder_layerdrop > 0 or config.decoder_layerdrop > 0
        if params.max_source_positions is not None:
            _cut_positions(encoder, params.max_source_positions)
        self.stride = encoder.conv1.stride[0] * encoder.conv2.stride[0]  # frames per position
        self.positions = encoder.config.max_source_positions
        self.hop_length = 160
        self.sample_rate = context.audio.sample_rate
        self.log_mel = WhisperLogMel(
            config.num_mel_bins,
            self.positions * self.stride * self.hop_length,
            self.sample_rate,
            hop_length=self.hop_length,
        )
        self.spec_augment = SpecAugment(context.spec_augment)
        self.max_target_positions = config.max_target_positions
        room = self.max_target_positions - len(self.prompt)
        max_new_tokens = room if params.max_new_tokens is None else params.max_new_tokens
        if max_new_tokens > room:
            raise ValueError(
                f"model.params.max_new_tokens={max_new_tokens} but the Whisper decoder holds "
                f"{room} tokens after the prompt of {len(self.prompt)} (max_target_positions "
                f"{self.max_target_positions})"
            )
        beams = {"num_beams": params.num_beams, "length_penalty": params.length_penalty}
        self.generation_config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            **special_ids,
            suppress_tokens=sorted(self.not_text),
            **(beams if params.num_beams > 1 else {}),
            **whisper_generation,
        )
        model.generation_config = self.generation_config
        self.label_smoothing = params.label_smoothing
        if params.freeze_encoder:
            freeze(encoder)
        if params.freeze_layers:
            freeze_first_layers(encoder.layers, params.freeze_layers)
            freeze(encoder.conv1)
            freeze(encoder.conv2)

    def text_tokenizer(self, config: TextConfig) -> WhisperBPETokenizer | None:
        """Text <-> this decoder's ids with Whisper's tokenizer (``tokenizer: whisper``),
        normalising with ``config``; None when the decoder writes the run's character
        vocabulary's ids."""
        return None if self.tokenizer is None else WhisperBPETokenizer(self.tokenizer, config)

    @property
    def max_samples(self) -> int:
        """The longest clip the encoder takes, in samples."""
        return self.log_mel.total_samples

    def features(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Log-mel ``(batch, n_mels, 2 * positions)`` of the clips (SpecAugment on their
        frames in training); a clip longer than the encoder's input is a ``ValueError``."""
        longest = int(lengths.max()) if len(lengths) else 0
        if longest > self.max_samples:
            raise ValueError(
                f"a clip of {longest / self.sample_rate:.2f} s is longer than the Whisper "
                f"encoder's input ({self.max_samples / self.sample_rate:g} s = "
                f"{self.positions} positions of 20 ms): raise "
                "model.params.max_source_positions (at most the checkpoint's own; 1500 = 30 s "
                "for openai checkpoints) or shorten the clips"
            )
        waveform = waveform[:, :longest].to(self.log_mel.window.device)  # padding past
        #   the longest clip is zeros, as the log-mel pads anyway
        features = self.log_mel(waveform)
        if self.training:  # mask time/frequency only where the clips are, not in the padding
            clip_frames = ceil_div(longest, self.hop_length)
            augmented = self.spec_augment(features[..., :clip_frames])
            features = torch.cat([augmented, features[..., clip_frames:]], dim=-1)
        return features

    def forward(
        self, waveform: torch.Tensor, lengths: torch.Tensor, decoder_input_ids: torch.Tensor
    ) -> torch.Tensor:
        """Teacher-forced logits ``(batch, tokens, vocab_size)`` of the next token after
        each of ``decoder_input_ids`` ``(batch, tokens)``."""
        features = self.features(waveform, lengths)
        return self.model(
            input_features=features,
            decoder_input_ids=decoder_input_ids.to(features.device),
            use_cache=False,
        ).logits

    def teacher_forcing(
        self, targets: Sequence[Sequence[int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder inputs ``prompt, t1 .. tn`` (padded with ``end``) and labels ``prompt[1:],
        t1 .. tn, end`` (padded with -100), both ``(batch, len(prompt) + longest)``."""
        prompt = torch.as_tensor(self.prompt, dtype=torch.long)
        longest = max((len(target) for target in targets), default=0) + len(prompt)
        if longest > self.max_target_positions:
            raise ValueError(
                f"a transcript of {longest - len(prompt)} tokens does not fit the Whisper "
                f"decoder ({self.max_target_positions} positions, {len(prompt)} of them for "
                "the prompt): raise max_target_positions in model.params.config (from "
                "scratch), or shorten the transcripts"
            )
        inputs = torch.full((len(targets), longest), self.end_id, dtype=torch.long)
        labels = torch.full((len(targets), longest), -100, dtype=torch.long)
        inputs[:, : len(prompt)] = prompt
        labels[:, : len(prompt) - 1] = prompt[1:]
        for row, target in enumerate(targets):
            ids = torch.as_tensor(list(target), dtype=torch.long)
            if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= self.target_limit):
                raise ValueError(f"target ids {ids.tolist()} outside 0..{self.target_limit - 1}")
            inputs[row, len(prompt) : len(prompt) + len(ids)] = ids
            labels[row, len(prompt) - 1 : len(prompt) - 1 + len(ids)] = ids
            labels[row, len(prompt) - 1 + len(ids)] = self.end_id
        return inputs, labels

    def loss(
        self, waveform: torch.Tensor, lengths: torch.Tensor, targets: Sequence[Sequence[int]]
    ) -> torch.Tensor:
        """Mean cross-entropy per label token (the prompt's after the start token and each
        transcript's end token included)."""
        inputs, labels = self.teacher_forcing(targets)
        logits = self(waveform, lengths, inputs)
        return F.cross_entropy(
            logits.float().flatten(0, 1),
            labels.to(logits.device).flatten(),
            ignore_index=-100,
            label_smoothing=self.label_smoothing,
        )

    def decode(self, waveform: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        """The ids the decoder writes for each clip after the prompt (greedy, or beam search
        with ``num_beams``), up to its end token; no prompt, end or other special id."""
        from transformers.generation import GenerationMixin

        features = self.features(waveform, lengths)
        prompt = torch.as_tensor(self.prompt, dtype=torch.long, device=features.device)
        # plain encoder-decoder generation, not Whisper's override (language detection,
        # long-form segments, timestamp rules), from the training prompt. Whisper's encoder
        # ignores the attention mask; a full one only keeps generate from warning that it
        # cannot infer one.
        sequences = GenerationMixin.generate(
            self.model,
            features,
            attention_mask=torch.ones(
                features.shape[::2], dtype=torch.long, device=features.device
            ),
            decoder_input_ids=prompt.expand(len(features), -1),
            generation_config=self.generation_config,
        )
        hypotheses = []
        for row in sequences.tolist():
            ids = row[len(self.prompt) :] if row[: len(self.prompt)] == self.prompt else row
            if self.end_id in ids:
                ids = ids[: ids.index(self.end_id)]
            hypotheses.append(
                [i for i in ids if 0 <= i < self.target_limit and i not in self.not_text]
            )
        return hypotheses


TINY_SEQ2SEQ_CONFIG = {  # ~44k parameters, 1 s input, transcripts of up to 31 tokens
    **TINY_CONFIG,
    "decoder_layers": 1,
    "decoder_attention_heads": 2,
    "decoder_ffn_dim": 64,
    "max_target_positions": 32,
}


@register_model(
    "whisper_seq2seq",
    WhisperSeq2SeqParams,
    tiny={"config": TINY_SEQ2SEQ_CONFIG},
    trainer="transcriber",
)
def build_whisper_seq2seq(params: WhisperSeq2SeqParams, context: ModelContext) -> nn.Module:
    return WhisperSeq2Seq(params, context)
