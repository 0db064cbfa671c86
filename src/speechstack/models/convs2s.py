"""ConvS2S: the convolutional encoder of Gehring et al. 2017 ("Convolutional Sequence to
Sequence Learning") over log-mel frames, pooled over time into a classifier.

The paper's recipe is kept where it matters for training to work at all: every block is
``residual + GLU(conv(dropout(x)))`` scaled by ``sqrt(0.5)`` (so the variance of the sum stays
that of one input), weight-normalised layers initialised so that activations keep unit
variance under dropout (``std = sqrt(4 (1 - dropout) / (kernel_size * channels))`` for the
convolutions, the 4 compensating the GLU halving the output and the gate's ~1/2 slope;
``sqrt((1 - dropout) / in_features)`` for the projection), zero biases. The input is the
normalised log-mel of ``LogMelFrontEnd``, so the projection starts from unit-scale features.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from speechstack.features import LogMelFrontEnd, frame_count
from speechstack.models import ModelContext, register_model
from speechstack.models.pooling import PooledClassifier
from speechstack.params.models import ConvS2SParams

RESIDUAL_SCALE = math.sqrt(0.5)


def sinusoidal_positions(steps: int, channels: int) -> torch.Tensor:
    """The transformer's fixed position code, ``(steps, channels)``: sin on the first half of
    the channels, cos on the second, wavelengths geometric from 2π to 10,000·2π steps."""
    half = channels // 2
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(half) / max(half - 1, 1))
    angles = torch.arange(steps, dtype=torch.float32)[:, None] * frequencies[None, :]
    code = torch.cat([angles.sin(), angles.cos()], dim=1)
    return F.pad(code, (0, channels - 2 * half))  # an odd channel count gets one zero column


class GLUBlock(nn.Module):
    """``(batch, channels, steps)`` -> same shape:
    ``(x + GLU(conv(dropout(x)))) * sqrt(0.5)``, the convolution producing ``2 * channels``
    ("same" padding, so the step count is unchanged), weight-normalised."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        convolution = nn.Conv1d(channels, 2 * channels, kernel_size, dilation=dilation)
        std = math.sqrt(4.0 * (1.0 - dropout) / (kernel_size * channels))
        nn.init.normal_(convolution.weight, mean=0.0, std=std)
        nn.init.zeros_(convolution.bias)
        self.convolution = weight_norm(convolution, dim=0)  # one gain per output channel
        reach = dilation * (kernel_size - 1)  # extra steps the kernel covers
        self.padding = (reach // 2, reach - reach // 2)  # "same": even kernels pad right more

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convolution(F.pad(self.dropout(x), self.padding))
        return (x + F.glu(y, dim=1)) * RESIDUAL_SCALE


class ConvS2SEncoder(nn.Module):
    """Waveform ``(batch, samples)`` -> log-mel ``(batch, n_mels, frames)`` -> projection of
    ``frame_stride`` stacked frames to ``channels`` (+ position) -> GLU blocks
    ``(batch, channels, steps)`` -> pooled over ``steps = frames // frame_stride`` ->
    logits ``(batch, num_classes)``."""

    def __init__(self, params: ConvS2SParams, context: ModelContext) -> None:
        super().__init__()
        n_mels = context.features.n_mels
        self.front_end = LogMelFrontEnd(
            context.features, context.audio.sample_rate, context.spec_augment
        )
        self.input_dropout = nn.Dropout(params.dropout)
        # A linear map of `frame_stride` consecutive frames, written as a strided convolution.
        projection = nn.Conv1d(
            n_mels, params.channels, params.frame_stride, stride=params.frame_stride
        )
        fan_in = n_mels * params.frame_stride
        nn.init.normal_(projection.weight, std=math.sqrt((1.0 - params.dropout) / fan_in))
        nn.init.zeros_(projection.bias)
        self.projection = weight_norm(projection, dim=0)
        frames = frame_count(context.audio.clip_samples, context.features.hop_length)
        self.max_steps = frames // params.frame_stride
        self.position = params.position
        if params.position == "learned":
            self.position_embedding = nn.Parameter(
                torch.randn(params.channels, self.max_steps) * 0.1  # fairseq's std
            )
        elif params.position == "sinusoidal":
            self.register_buffer(
                "position_embedding",
                sinusoidal_positions(self.max_steps, params.channels).T.contiguous(),
                persistent=False,
            )
        self.blocks = nn.Sequential(
            *(
                GLUBlock(
                    params.channels,
                    params.kernel_size,
                    params.dilation_growth**index,
                    params.dropout,
                )
                for index in range(params.layers)
            )
        )
        self.classifier = PooledClassifier(
            params.pooling, params.channels, context.num_classes, params.dropout
        )

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Log-mel ``(batch, n_mels, frames)`` -> ``(batch, channels, frames // stride)``."""
        x = self.projection(self.input_dropout(features))
        if self.position == "none":
            return x
        steps = x.shape[-1]
        if steps > self.max_steps:
            if self.position == "learned":
                raise ValueError(
                    f"input of {steps} steps is longer than the {self.max_steps} steps the "
                    "learned position embedding covers (audio.clip_seconds); use "
                    "model.params.position=sinusoidal or none for longer inputs"
                )
            code = sinusoidal_positions(steps, x.shape[1]).T.to(x)
            return x + code
        return x + self.position_embedding[:, :steps]

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        hidden = self.blocks(self.embed(self.front_end(waveform)))
        return self.classifier(hidden.transpose(1, 2))


@register_model(
    "convs2s",
    ConvS2SParams,
    tiny={"channels": 16, "layers": 2, "kernel_size": 3, "dropout": 0.0, "pooling": "mean"},
)
def build_convs2s(params: ConvS2SParams, context: ModelContext) -> nn.Module:
    return ConvS2SEncoder(params, context)
