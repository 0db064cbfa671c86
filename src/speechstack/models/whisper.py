"""Whisper's audio encoder with a frame head and pooled classifier (``whisper``), and the
whole Whisper encoder-decoder as a speech recogniser over the run's characters
(``whisper_seq2seq``, trained by ``transcribe.py``; see ``WhisperSeq2Seq``).

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
from typing import TYPE_CHECKING

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
    ceil_div,
    class_names,
    freeze,
    freeze_first_layers,
    load_transformer,
    require_checkpoint_rate,
    valid_mask,
)
from speechstack.params.models import WhisperParams, WhisperSeq2SeqParams

if TYPE_CHECKING:
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
# whisper_seq2seq: the encoder-decoder as a recogniser over the run's characters


class WhisperSeq2Seq(nn.Module):
    """Whisper encoder-decoder (HF ``WhisperForConditionalGeneration``) that writes the
    run's characters: waveform ``(batch, samples)`` at 16 kHz -> Whisper log-mel padded to
    the encoder's input (``2 * max_source_positions`` frames) -> (training) SpecAugment on
    the clips' frames -> encoder -> decoder over character tokens.

    Token scheme: the decoder's ids are the vocabulary's ids (``text.Vocabulary``: 0
    ``<blank>``, 1 ``<unk>``, 2 ``|`` the space, then characters), plus two ids after them,
    ``start = num_classes`` (``decoder_start_token_id`` and ``bos_token_id``) and ``end =
    num_classes + 1`` (``eos_token_id`` and ``pad_token_id``), so ``vocab_size =
    num_classes + 2``. Training is teacher-forced: decoder input ``start, t1 .. tn``,
    labels ``t1 .. tn, end`` (padding labels -100, ignored), cross-entropy per token.
    Decoding is plain HF encoder-decoder generation (``GenerationMixin.generate``: greedy,
    or beam search with ``num_beams``), with ``<blank>`` and ``start`` never generated and
    ``end`` stopping a clip; ``decode`` returns the ids between ``start`` and ``end``. The
    HF model's own ``generation_config`` is set to the same plain settings, so
    ``self.model.generate(log_mel)`` (Whisper's generate) works too, without language,
    task or timestamp tokens.

    With a checkpoint (``pretrained: openai/whisper-tiny``, ...) its encoder and decoder
    layers are reused, and the token embeddings and the (tied) output projection are
    resized to this vocabulary (``resize_token_embeddings``: the first ``num_classes + 2``
    rows are kept, which mean nothing for these characters). Whisper's own BPE tokenizer,
    its language, task and timestamp tokens and its suppress lists are NOT used: a known
    limitation — the decoder relearns its output from the run's transcripts, so far less of
    the checkpoint's language knowledge carries over than in a fine-tuning that keeps the
    tokenizer.
    """

    def __init__(self, params: WhisperSeq2SeqParams, context: ModelContext) -> None:
        from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

        super().__init__()
        require_checkpoint_rate(params, context)
        self.num_classes = context.num_classes
        self.start_id = context.num_classes
        self.end_id = context.num_classes + 1
        vocab_size = context.num_classes + 2
        special = {
            "decoder_start_token_id": self.start_id,
            "bos_token_id": self.start_id,
            "eos_token_id": self.end_id,
            "pad_token_id": self.end_id,
        }
        settings = {  # a checkpoint's lists name its BPE ids, which mean nothing here
            "suppress_tokens": None,
            "begin_suppress_tokens": None,
            "forced_decoder_ids": None,
        }
        if params.pretrained is None:  # a checkpoint keeps its vocabulary until resized
            settings |= {"vocab_size": vocab_size, **special}
        self.model = load_transformer(
            WhisperForConditionalGeneration, WhisperConfig, params, None, settings=settings
        )
        model = self.model
        if model.config.vocab_size != vocab_size:  # the embeddings and the tied projection;
            #   the first rows are kept, new ones drawn as at initialisation
            model.resize_token_embeddings(vocab_size, mean_resizing=False)
        for key, value in special.items():
            setattr(model.config, key, value)
        # `end` as a decoder input is only padding after the transcript: no gradient through
        # the lookup (as HF builds it from scratch; a checkpoint's own pad id is gone)
        model.get_input_embeddings().padding_idx = self.end_id
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
        room = self.max_target_positions - 1  # position 0 holds the start token
        max_new_tokens = room if params.max_new_tokens is None else params.max_new_tokens
        if max_new_tokens > room:
            raise ValueError(
                f"model.params.max_new_tokens={max_new_tokens} but the Whisper decoder holds "
                f"{room} tokens after the start token (max_target_positions "
                f"{self.max_target_positions})"
            )
        beams = {"num_beams": params.num_beams, "length_penalty": params.length_penalty}
        self.generation_config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            decoder_start_token_id=self.start_id,
            bos_token_id=self.start_id,
            eos_token_id=self.end_id,
            pad_token_id=self.end_id,
            suppress_tokens=[BLANK_ID, self.start_id],  # never targets
            **(beams if params.num_beams > 1 else {}),
        )
        model.generation_config = self.generation_config
        self.label_smoothing = params.label_smoothing
        if params.freeze_encoder:
            freeze(encoder)
        if params.freeze_layers:
            freeze_first_layers(encoder.layers, params.freeze_layers)
            freeze(encoder.conv1)
            freeze(encoder.conv2)

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
        """Teacher-forced logits ``(batch, tokens, num_classes + 2)`` of the next token after
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
        """Decoder inputs ``start, t1 .. tn`` (padded with ``end``) and labels ``t1 .. tn,
        end`` (padded with -100), both ``(batch, longest + 1)``."""
        longest = max((len(target) for target in targets), default=0) + 1
        if longest > self.max_target_positions:
            raise ValueError(
                f"a transcript of {longest - 1} tokens does not fit the Whisper decoder "
                f"({self.max_target_positions} positions, one for the start token): raise "
                "max_target_positions in model.params.config (from scratch), or shorten the "
                "transcripts"
            )
        inputs = torch.full((len(targets), longest), self.end_id, dtype=torch.long)
        labels = torch.full((len(targets), longest), -100, dtype=torch.long)
        inputs[:, 0] = self.start_id
        for row, target in enumerate(targets):
            ids = torch.as_tensor(list(target), dtype=torch.long)
            if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= self.num_classes):
                raise ValueError(f"target ids {ids.tolist()} outside 0..{self.num_classes - 1}")
            inputs[row, 1 : len(ids) + 1] = ids
            labels[row, : len(ids)] = ids
            labels[row, len(ids)] = self.end_id
        return inputs, labels

    def loss(
        self, waveform: torch.Tensor, lengths: torch.Tensor, targets: Sequence[Sequence[int]]
    ) -> torch.Tensor:
        """Mean cross-entropy per target token (each transcript's end token included)."""
        inputs, labels = self.teacher_forcing(targets)
        logits = self(waveform, lengths, inputs)
        return F.cross_entropy(
            logits.float().flatten(0, 1),
            labels.to(logits.device).flatten(),
            ignore_index=-100,
            label_smoothing=self.label_smoothing,
        )

    def decode(self, waveform: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        """The vocabulary ids the decoder writes for each clip (greedy, or beam search with
        ``num_beams``), up to its end token; no start, end or blank id."""
        from transformers.generation import GenerationMixin

        features = self.features(waveform, lengths)
        # plain encoder-decoder generation, not Whisper's override (language/task prompts,
        # long-form segments, timestamp rules). Whisper's encoder ignores the attention
        # mask; a full one only keeps generate from warning that it cannot infer one.
        sequences = GenerationMixin.generate(
            self.model,
            features,
            attention_mask=torch.ones(
                features.shape[::2], dtype=torch.long, device=features.device
            ),
            generation_config=self.generation_config,
        )
        hypotheses = []
        for row in sequences.tolist():
            ids = row[1:] if row and row[0] == self.start_id else row
            if self.end_id in ids:
                ids = ids[: ids.index(self.end_id)]
            hypotheses.append([i for i in ids if 0 <= i < self.num_classes and i != BLANK_ID])
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
