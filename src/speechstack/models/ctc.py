"""A from-scratch speech recogniser small enough to learn on a CPU: the shared log-mel
front-end, a strided convolution that halves the frame rate, a bidirectional GRU, and a
linear layer to the vocabulary's tokens, trained with the CTC loss (``transcribe.py``).

The model maps a padded waveform batch ``(batch, samples)`` to per-step logits
``(batch, steps, tokens)``; ``output_lengths`` turns each clip's length in samples into its
number of valid steps, which CTC needs to ignore the padding."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from speechstack.config import Strict
from speechstack.features import LogMelFrontEnd, frame_count
from speechstack.models import ModelContext, register_model

KERNEL = 5  # of the strided convolution (frames)


class CTCParams(Strict):
    channels: int = Field(192, ge=1)  # of the convolutional front
    stride: int = Field(2, ge=1)  # frames per output step (2: 20 ms steps at a 10 ms hop)
    hidden_size: int = Field(192, ge=1)  # per direction
    layers: int = Field(3, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)


class CTCRecognizer(nn.Module):
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

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
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
