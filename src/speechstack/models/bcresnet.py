"""BC-ResNet (Kim et al., Interspeech 2021, "Broadcasted Residual Learning for Efficient
Keyword Spotting") on log-mel: the keyword-spotting network that leads Speech Commands for
its size (BC-ResNet-8: 321k parameters).

Each block splits the work along the two axes of a spectrogram: a depthwise convolution
over frequency keeps the 2-D map (``f2``), the map is averaged over frequency, and a
depthwise convolution over time plus a pointwise one run on that 1-D sequence (``f1``),
whose output is broadcast back over every frequency and added. Sub-spectral normalisation
(batch norm with its own statistics per band of frequencies) follows the frequency
convolution: a shift that colours some bands (a microphone, another vocal tract) does not
move the statistics of the others.
"""

from __future__ import annotations

import torch
from torch import nn

from speechstack.features import LogMelFrontEnd
from speechstack.models import ModelContext, register_model
from speechstack.params.models import BCResNetParams

STAGE_CHANNELS = (8, 12, 16, 20)  # x width: the paper's BC-ResNet-1 stage widths
STAGE_FREQ_STRIDE = (1, 2, 2, 1)  # frequency stride of each stage's first block
STEM_CHANNELS = 16  # x width, the 5x5 stem (frequency stride 2)
HEAD_CHANNELS = 32  # x width, the pointwise layer before the classifier


class SubSpectralNorm(nn.Module):
    """Batch norm whose statistics are kept per channel *and* per band: the frequency axis
    is cut into ``bands`` equal groups of bins."""

    def __init__(self, channels: int, bands: int) -> None:
        super().__init__()
        self.bands = bands
        self.norm = nn.BatchNorm2d(channels * bands)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, freq, time = x.shape
        x = x.reshape(batch, channels * self.bands, freq // self.bands, time)
        return self.norm(x).reshape(batch, channels, freq, time)


class BroadcastBlock(nn.Module):
    """One BC-ResNet block. A transition block (``in_channels != channels`` or a stride)
    first maps the channels with a pointwise convolution and has no identity shortcut; a
    normal block adds its input."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        *,
        freq_stride: int,
        dilation: int,
        bands: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.transition = in_channels != channels or freq_stride != 1
        self.project = (
            nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(),
            )
            if self.transition
            else nn.Identity()
        )
        self.freq_conv = nn.Conv2d(
            channels,
            channels,
            (3, 1),
            stride=(freq_stride, 1),
            padding=(1, 0),
            groups=channels,
            bias=False,
        )
        self.freq_norm = SubSpectralNorm(channels, bands)
        self.time = nn.Sequential(
            nn.Conv2d(
                channels,
                channels,
                (1, 3),
                padding=(0, dilation),
                dilation=(1, dilation),
                groups=channels,
                bias=False,
            ),
            nn.BatchNorm2d(channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.Dropout2d(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f2 = self.freq_norm(self.freq_conv(self.project(x)))
        f1 = self.time(f2.mean(dim=2, keepdim=True))  # (batch, channels, 1, time)
        out = f2 + f1  # broadcast over frequency
        if not self.transition:
            out = out + x
        return torch.relu(out)


def frequency_sizes(n_mels: int) -> list[int]:
    """Frequency bins after the stem and after each stage (a stride of 2 halves them,
    rounding up), where sub-spectral normalisation cuts them into bands."""
    sizes = [(n_mels + 1) // 2]  # the stem: kernel 5, padding 2, stride 2
    for stride in STAGE_FREQ_STRIDE:
        sizes.append(-(-sizes[-1] // stride))
    return sizes


class BCResNet(nn.Module):
    """Waveform ``(batch, samples)`` -> log-mel -> stem -> four stages of broadcast blocks
    (``blocks`` each; time dilation 1, 2, 4, 8) -> depthwise 5x5 -> pointwise -> mean over
    frequency and time -> logits ``(batch, num_classes)``. As the paper's code, except that
    the stem and the pointwise head layer carry batch norm and ReLU, and the head pools
    over frequency instead of an unpadded 5x5 (so any ``n_mels`` whose bins the bands
    divide works)."""

    def __init__(self, params: BCResNetParams, context: ModelContext) -> None:
        super().__init__()
        self.front_end = LogMelFrontEnd(
            context.features, context.audio.sample_rate, context.spec_augment
        )
        n_mels = context.features.n_mels
        sizes = frequency_sizes(n_mels)
        if any(size % params.sub_bands for size in sizes):
            raise ValueError(
                f"model.params.sub_bands={params.sub_bands} does not divide the frequency bins "
                f"of every stage ({sizes} from features.n_mels={n_mels}); "
                "the paper's setting is n_mels 40 with 5 sub-bands (20, 10, 5 bins)"
            )
        width = params.width
        stem = STEM_CHANNELS * width
        self.stem = nn.Sequential(
            nn.Conv2d(1, stem, 5, stride=(2, 1), padding=2, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        channels = stem
        for stage, (base, stride) in enumerate(zip(STAGE_CHANNELS, STAGE_FREQ_STRIDE, strict=True)):
            for index in range(params.blocks[stage]):
                out = base * width
                blocks.append(
                    BroadcastBlock(
                        channels,
                        out,
                        freq_stride=stride if index == 0 else 1,
                        dilation=2**stage,
                        bands=params.sub_bands,
                        dropout=params.dropout,
                    )
                )
                channels = out
        self.blocks = nn.Sequential(*blocks)
        head = HEAD_CHANNELS * width
        self.head = nn.Sequential(
            nn.Conv2d(channels, channels, 5, padding=2, groups=channels, bias=False),
            nn.Conv2d(channels, head, 1, bias=False),
            nn.BatchNorm2d(head),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(head, context.num_classes)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        image = self.front_end(waveform).unsqueeze(1)  # (batch, 1, n_mels, frames)
        out = self.head(self.blocks(self.stem(image)))
        return self.classifier(out.mean(dim=(2, 3)))


TINY = {"width": 1, "blocks": [1, 1, 1, 1], "sub_bands": 4}  # 4 bands divide 64 mels' stages


@register_model("bcresnet", BCResNetParams, tiny=TINY)
def build_bcresnet(params: BCResNetParams, context: ModelContext) -> nn.Module:
    return BCResNet(params, context)
