"""Speech recognisers trained with the CTC loss (``transcribe.py``), and the from-scratch
one small enough to learn on a CPU: the shared log-mel front-end, a strided convolution that
halves the frame rate, a bidirectional GRU, and a linear layer to the vocabulary's tokens.

A recogniser maps a padded waveform batch ``(batch, samples)`` and each clip's length in
samples to what ``transcribe.py`` needs: ``loss`` against token-id targets, and ``decode``,
the token ids it hears in each clip. ``CTCModel`` implements both over per-step logits
``(batch, steps, tokens)`` (token 0 the blank) for any family that gives ``forward`` and
``output_lengths`` (each clip's number of valid steps, which CTC needs to ignore padding):
``ctc`` here, ``wav2vec2_ctc`` (``models/wav2vec2.py``). ``whisper_seq2seq`` implements
them with a decoder instead (``models/whisper.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from speechstack.features import LogMelFrontEnd, frame_count
from speechstack.models import ModelContext, register_model
from speechstack.params.models import CTCParams
from speechstack.text import ctc_collapse

KERNEL = 5  # of the strided convolution (frames)
BLANK_ID = 0  # the CTC blank (text.Vocabulary.BLANK_ID)


class CTCModel(nn.Module):
    """What a CTC recogniser adds to ``forward(waveform, lengths) -> logits``: the loss and
    greedy (best-path) decoding. Subclasses define ``forward`` and ``output_lengths``."""

    def output_lengths(self, samples: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(
        self, waveform: torch.Tensor, lengths: torch.Tensor, targets: Sequence[Sequence[int]]
    ) -> torch.Tensor:
        """Mean CTC loss of the batch against token-id ``targets`` (one list per clip)."""
        log_probs = F.log_softmax(self(waveform, lengths).float(), dim=-1).transpose(0, 1)
        return F.ctc_loss(
            log_probs,
            torch.tensor([token for target in targets for token in target], dtype=torch.long),
            self.output_lengths(lengths),
            torch.tensor([len(target) for target in targets], dtype=torch.long),
            blank=BLANK_ID,
            zero_infinity=True,  # a clip too short for its transcript adds no gradient
        )

    def log_probs(self, waveform: torch.Tensor, lengths: torch.Tensor) -> list[np.ndarray]:
        """Each clip's per-step log-probabilities ``(steps, tokens)``, its padding steps cut:
        what a search (``beam.ctc_beam_search``) decodes."""
        steps = self.output_lengths(lengths)
        scores = F.log_softmax(self(waveform, lengths).detach().float(), dim=-1).cpu().numpy()
        return [scores[row, : int(steps[row])] for row in range(len(scores))]

    def decode(self, waveform: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        """The token ids of each clip's best path, repeats collapsed and blanks dropped."""
        return [best_path(clip) for clip in self.log_probs(waveform, lengths)]


def best_path(log_probs: np.ndarray) -> list[int]:
    """Greedy CTC decoding of one clip's ``(steps, tokens)`` scores."""
    return ctc_collapse(log_probs.argmax(axis=-1).tolist())


class CTCRecognizer(CTCModel):
    """Waveform ``(batch, samples)`` -> log-mel -> strided convolutions -> BiGRU -> logits
    ``(batch, steps, tokens)``, token 0 being the CTC blank."""

    def __init__(self, params: CTCParams, context: ModelContext) -> None:
        super().__init__()
        features = context.features
        self.hop_length = features.hop_length
        self.stride = params.stride
        self.front_end = LogMelFrontEnd(features, context.audio.sample_rate, context.spec_augment)
        self.convolution = nn.Sequential(
            nn.Conv1d(features.n_mels, params.channels, KERNEL, params.stride, KERNEL // 2),
            nn.BatchNorm1d(params.channels),
            nn.GELU(),
            nn.Conv1d(params.channels, params.channels, KERNEL, 1, KERNEL // 2),
            nn.BatchNorm1d(params.channels),
            nn.GELU(),
        )
        self.recurrence = nn.GRU(
            params.channels,
            params.hidden_size,
            params.layers,
            batch_first=True,
            bidirectional=True,
            dropout=params.dropout if params.layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(params.dropout)
        self.head = nn.Linear(2 * params.hidden_size, context.num_classes)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``lengths`` is unused: padding is not masked (``transcribe.py`` batches clips of
        similar length), and the steps past ``output_lengths`` are ignored."""
        steps = self.convolution(self.front_end(waveform)).transpose(1, 2)
        outputs, _ = self.recurrence(steps)
        return self.head(self.dropout(outputs))

    def output_lengths(self, samples: torch.Tensor) -> torch.Tensor:
        """Valid output steps of clips ``samples`` long (before padding)."""
        frames = frame_count(samples, self.hop_length)  # works elementwise on a tensor
        return (frames + 2 * (KERNEL // 2) - KERNEL) // self.stride + 1


@register_model(
    "ctc",
    CTCParams,
    tiny={"channels": 16, "hidden_size": 16, "layers": 1, "dropout": 0.0},
    trainer="transcriber",
)
def build_ctc(params: CTCParams, context: ModelContext) -> nn.Module:
    return CTCRecognizer(params, context)
