"""Bidirectional LSTM and GRU over log-mel frames, pooled over time into a classifier.

One class, ``RecurrentClassifier``; the cell type is its argument and the two families
``lstm`` and ``gru`` are the same class registered twice with the same params schema.

What makes them train (an earlier version sat at chance): the input is the normalised log-mel
of ``LogMelFrontEnd`` (unit scale per mel bin), optionally through a small strided conv or
linear front that halves the steps the recurrence must carry a word across; input weights
Xavier-uniform, recurrent weights orthogonal per gate (no exploding/vanishing at init), zero
biases except the LSTM forget gate at 1 (remember by default); and a learned pooling over
every step's output rather than the last hidden state. The training loop clips gradients
(``train.grad_clip``).
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch
from torch import nn

from speechstack.features import LogMelFrontEnd
from speechstack.models import ModelContext, register_model
from speechstack.models.pooling import PooledClassifier
from speechstack.params.models import RecurrentParams

Cell = Literal["lstm", "gru"]
CELLS: dict[str, type[nn.LSTM] | type[nn.GRU]] = {"lstm": nn.LSTM, "gru": nn.GRU}
GATES = {"lstm": 4, "gru": 3}  # gate blocks stacked in torch's weight matrices
LSTM_FORGET_GATE = 1  # torch's LSTM gate order: input, forget, cell, output


class RecurrentClassifier(nn.Module):
    """Waveform ``(batch, samples)`` -> log-mel ``(batch, n_mels, frames)`` -> front
    ``(batch, front_channels, steps)``, ``steps ≈ frames / frame_stride`` -> LSTM/GRU
    ``(batch, steps, directions * hidden_size)`` -> pooled -> logits ``(batch, num_classes)``.
    """

    def __init__(self, params: RecurrentParams, context: ModelContext, cell: Cell) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown recurrent cell '{cell}'; known: {', '.join(CELLS)}")
        self.cell = cell
        n_mels = context.features.n_mels
        self.front_end = LogMelFrontEnd(
            context.features, context.audio.sample_rate, context.spec_augment
        )
        self.front = self._build_front(params, n_mels)
        input_size = n_mels if params.front == "none" else params.front_channels
        self.recurrence = CELLS[cell](
            input_size,
            params.hidden_size,
            num_layers=params.layers,
            batch_first=True,
            bidirectional=params.bidirectional,
            dropout=params.dropout if params.layers > 1 else 0.0,
        )
        self._initialise_recurrence()
        width = params.hidden_size * (2 if params.bidirectional else 1)
        self.output_dropout = nn.Dropout(params.dropout)
        self.classifier = PooledClassifier(
            params.pooling, width, context.num_classes, params.dropout
        )

    @staticmethod
    def _build_front(params: RecurrentParams, n_mels: int) -> nn.Module:
        """``(batch, n_mels, frames)`` -> ``(batch, channels, steps)``."""
        if params.front == "none":
            return nn.Identity()
        kernel = params.front_kernel if params.front == "conv" else params.frame_stride
        padding = kernel // 2 if params.front == "conv" else 0
        return nn.Sequential(
            nn.Conv1d(
                n_mels,
                params.front_channels,
                kernel,
                stride=params.frame_stride,
                padding=padding,
                bias=False,
            ),
            nn.BatchNorm1d(params.front_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(params.dropout),
        )

    def _initialise_recurrence(self) -> None:
        """Xavier input weights, orthogonal recurrent weights per gate block, zero biases;
        LSTM forget-gate bias 1 (split across torch's two bias vectors as 1 + 0)."""
        gates = GATES[self.cell]
        for name, parameter in self.recurrence.named_parameters():
            with torch.no_grad():
                if name.startswith("weight_ih"):
                    for block in parameter.chunk(gates, dim=0):
                        nn.init.xavier_uniform_(block)
                elif name.startswith("weight_hh"):
                    for block in parameter.chunk(gates, dim=0):
                        nn.init.orthogonal_(block)
                elif name.startswith("bias"):
                    parameter.zero_()
                    if self.cell == "lstm" and name.startswith("bias_ih"):
                        parameter.chunk(gates)[LSTM_FORGET_GATE].fill_(1.0)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        steps = self.front(self.front_end(waveform)).transpose(1, 2)  # (batch, steps, channels)
        outputs, _ = self.recurrence(steps)
        return self.classifier(self.output_dropout(outputs))


def build_recurrent(params: RecurrentParams, context: ModelContext, cell: Cell) -> nn.Module:
    return RecurrentClassifier(params, context, cell)


TINY = {"hidden_size": 16, "layers": 1, "front_channels": 16, "dropout": 0.0, "pooling": "mean"}
for _cell in CELLS:
    register_model(_cell, RecurrentParams, tiny=TINY)(partial(build_recurrent, cell=_cell))
