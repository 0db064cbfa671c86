"""BC-ResNet: sub-spectral normalisation keeps statistics per band, the frequency sizes the
bands must divide, and the paper's BC-ResNet-8 size."""

from __future__ import annotations

import pytest
import torch

from speechstack.config import FeatureConfig
from speechstack.models import ModelContext, create_model
from speechstack.models.bcresnet import SubSpectralNorm, frequency_sizes


def test_sub_spectral_norm_normalises_each_band_on_its_own() -> None:
    """A band lifted by +10 and scaled by 5 comes out like the others: plain batch norm
    over the whole frequency axis would leave it apart."""
    torch.manual_seed(0)
    x = torch.randn(8, 3, 20, 50)
    x[:, :, 4:8] = x[:, :, 4:8] * 5 + 10  # band 1 of 5 (bins 4-7)
    out = SubSpectralNorm(3, bands=5).train()(x)
    for band in range(5):
        part = out[:, :, band * 4 : (band + 1) * 4]
        assert part.mean().abs() < 1e-4 and (part.std() - 1).abs() < 0.05, band
    plain = torch.nn.BatchNorm2d(3).train()(x)
    assert plain[:, :, 4:8].mean() > 1.0


def test_frequency_sizes_follow_the_stem_and_stage_strides() -> None:
    assert frequency_sizes(40) == [20, 20, 10, 5, 5]
    assert frequency_sizes(64) == [32, 32, 16, 8, 8]
    assert frequency_sizes(41) == [21, 21, 11, 6, 6]


def test_bands_that_do_not_divide_a_stage_are_refused_with_the_sizes() -> None:
    context = ModelContext(num_classes=12, features=FeatureConfig(n_mels=64))
    with pytest.raises(ValueError, match=r"sub_bands=5 does not divide .*\[32, 32, 16, 8, 8\]"):
        create_model("bcresnet", context, sub_bands=5)
    assert create_model("bcresnet", context, width=1, sub_bands=4)  # 4 divides them all


@pytest.mark.parametrize(("width", "parameters"), [(8, 321_148), (3, 54_248)])
def test_width_gives_the_papers_sizes(width: int, parameters: int) -> None:
    """The paper: BC-ResNet-8 321k parameters, BC-ResNet-3 54k (12 classes, 40 mel bands)."""
    context = ModelContext(num_classes=12, features=FeatureConfig(n_mels=40))
    model = create_model("bcresnet", context, width=width)
    assert sum(p.numel() for p in model.parameters()) == parameters
