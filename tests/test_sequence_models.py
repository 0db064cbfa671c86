"""The sequence families (ConvS2S, LSTM, GRU) and their shared pooling, beyond the
registry-wide checks of ``test_models.py``."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from speechstack.config import AudioConfig, ConfigError, load_config
from speechstack.models import MODELS, ModelContext, create_model
from speechstack.models.convs2s import ConvS2SEncoder, GLUBlock, sinusoidal_positions
from speechstack.models.pooling import PooledClassifier, Pooling
from speechstack.models.recurrent import RecurrentClassifier

CLASSES = 4
POOLINGS = ["mean", "sum", "max", "attention", "mean_max"]
SEQUENCE_FAMILIES = ["convs2s", "lstm", "gru"]


def tiny(name: str, context: ModelContext | None = None, **params: object) -> torch.nn.Module:
    torch.manual_seed(0)
    context = context or ModelContext(num_classes=CLASSES)
    return create_model(name, context, **(MODELS.get(name).tiny | params))


# ---------------------------------------------------------------------------------------
# ConvS2S


@pytest.mark.parametrize("position", ["learned", "sinusoidal", "none"])
@pytest.mark.parametrize("samples", [1600, 8000, 16000])
def test_convs2s_logits_for_clips_up_to_the_configured_length(position: str, samples: int) -> None:
    model = tiny("convs2s", position=position).eval()
    with torch.no_grad():
        logits = model(torch.randn(3, samples) * 0.1)
    assert logits.shape == (3, CLASSES)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("kernel_size", [2, 3, 4, 5])
@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_glu_block_keeps_the_number_of_steps(kernel_size: int, dilation: int) -> None:
    block = GLUBlock(channels=8, kernel_size=kernel_size, dilation=dilation, dropout=0.0)
    for steps in (1, 7, 50):
        assert block(torch.randn(2, 8, steps)).shape == (2, 8, steps)


def test_glu_block_is_residual_scaled_by_sqrt_half() -> None:
    """With the convolution's gain at zero the GLU branch is zero: out = x * sqrt(0.5)."""
    block = GLUBlock(channels=6, kernel_size=3, dilation=1, dropout=0.0).eval()
    x = torch.randn(2, 6, 11)
    with torch.no_grad():
        block.convolution.parametrizations.weight.original0.zero_()  # weight-norm gain g
        assert torch.allclose(block(x), x * math.sqrt(0.5))
        # And in general: out * sqrt(2) - x is exactly the GLU of the convolution.
        block.convolution.parametrizations.weight.original0.fill_(1.0)
        padded = torch.nn.functional.pad(x, block.padding)
        branch = torch.nn.functional.glu(block.convolution(padded), dim=1)
        assert torch.allclose(block(x), (x + branch) * math.sqrt(0.5), atol=1e-6)


def test_glu_block_follows_the_paper_initialisation() -> None:
    """Weight-normalised (gain ``g`` per output channel, direction ``v``), zero bias, and
    ``v`` drawn with std sqrt(4 (1 - dropout) / (kernel_size * channels))."""
    torch.manual_seed(0)
    channels, kernel_size, dropout = 64, 5, 0.2
    block = GLUBlock(channels, kernel_size, dilation=1, dropout=dropout)
    parametrization = block.convolution.parametrizations.weight
    gain, direction = parametrization.original0, parametrization.original1
    assert gain.shape == (2 * channels, 1, 1)
    assert direction.shape == (2 * channels, channels, kernel_size)
    expected = math.sqrt(4 * (1 - dropout) / (kernel_size * channels))
    assert direction.std().item() == pytest.approx(expected, rel=0.05)
    assert torch.equal(block.convolution.bias, torch.zeros(2 * channels))


def test_convs2s_keeps_activations_on_a_unit_scale_at_initialisation() -> None:
    """The init keeps deep stacks trainable: activations neither explode nor vanish."""
    model = tiny("convs2s", channels=64, layers=8, kernel_size=5, dropout=0.1).eval()
    assert isinstance(model, ConvS2SEncoder)
    with torch.no_grad():
        hidden = model.embed(torch.randn(8, 64, 101))
        for block in model.blocks:
            hidden = block(hidden)
            assert 0.3 < hidden.std().item() < 3.0


def test_convs2s_learned_positions_refuse_longer_inputs_with_advice() -> None:
    context = ModelContext(num_classes=CLASSES, audio=AudioConfig(clip_seconds=0.5))
    model = tiny("convs2s", context, position="learned").eval()
    with pytest.raises(ValueError, match="position=sinusoidal"):
        model(torch.randn(1, 16000))
    longer = tiny("convs2s", context, position="sinusoidal").eval()
    assert longer(torch.randn(1, 16000)).shape == (1, CLASSES)


def test_sinusoidal_positions_shape_and_range() -> None:
    code = sinusoidal_positions(50, 7)
    assert code.shape == (50, 7)
    assert code[:, -1].abs().max() == 0  # odd channel count: the spare column is zero
    assert code.abs().max() <= 1.0


# ---------------------------------------------------------------------------------------
# LSTM / GRU


def test_lstm_and_gru_are_one_class_with_one_schema() -> None:
    lstm, gru = tiny("lstm"), tiny("gru")
    assert type(lstm) is type(gru) is RecurrentClassifier
    assert MODELS.get("lstm").params_schema is MODELS.get("gru").params_schema
    assert isinstance(lstm.recurrence, torch.nn.LSTM)
    assert isinstance(gru.recurrence, torch.nn.GRU)


def test_lstm_forget_gate_bias_starts_at_one() -> None:
    model = tiny("lstm", hidden_size=8, layers=2)
    recurrence = model.recurrence
    hidden = recurrence.hidden_size
    for name, bias in recurrence.named_parameters():
        if not name.startswith("bias"):
            continue
        input_gate, forget, cell, output = bias.detach().chunk(4)
        expected_forget = 1.0 if name.startswith("bias_ih") else 0.0
        assert torch.equal(forget, torch.full((hidden,), expected_forget)), name
        assert not input_gate.any() and not cell.any() and not output.any(), name
    total_forget = recurrence.bias_ih_l0.chunk(4)[1] + recurrence.bias_hh_l0.chunk(4)[1]
    assert torch.equal(total_forget, torch.ones(hidden))


@pytest.mark.parametrize("family", ["lstm", "gru"])
def test_recurrent_weights_are_orthogonal_per_gate(family: str) -> None:
    model = tiny(family, hidden_size=8)
    gates = 4 if family == "lstm" else 3
    for block in model.recurrence.weight_hh_l0.detach().chunk(gates):
        assert torch.allclose(block @ block.T, torch.eye(8), atol=1e-5)


@pytest.mark.parametrize(
    ("family", "front", "bidirectional"),
    [
        ("lstm", {"front": "conv"}, True),
        ("gru", {"front": "linear"}, True),
        ("lstm", {"front": "none", "frame_stride": 1}, False),
        ("gru", {"front": "conv", "frame_stride": 3}, False),
    ],
)
def test_recurrent_front_and_direction_variants(
    family: str, front: dict[str, object], bidirectional: bool
) -> None:
    model = tiny(family, bidirectional=bidirectional, layers=2, dropout=0.1, **front).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 8000) * 0.1)
    assert logits.shape == (2, CLASSES)
    assert torch.isfinite(logits).all()


def test_front_none_with_a_stride_is_rejected() -> None:
    with pytest.raises(ConfigError, match="frame_stride=1"):
        tiny("lstm", front="none", frame_stride=2)


# ---------------------------------------------------------------------------------------
# Pooling and configuration


@pytest.mark.parametrize("name", POOLINGS)
def test_pooling_ignores_padded_frames(name: str) -> None:
    """Whatever sits in masked frames (here huge values) must not change the result, and a
    clip padded with masked frames pools exactly as the unpadded clip."""
    torch.manual_seed(0)
    pooling = Pooling(name, dim=6)
    valid = torch.randn(2, 5, 6)
    padded = torch.cat([valid, torch.full((2, 3, 6), 1e4)], dim=1)
    mask = torch.tensor([[True] * 5 + [False] * 3] * 2)
    expected = pooling(valid)
    assert torch.allclose(pooling(padded, mask), expected, atol=1e-5)
    padded[:, 5:] = -1e4
    assert torch.allclose(pooling(padded, mask), expected, atol=1e-5)
    assert expected.shape == (2, pooling.out_dim)


def test_pooling_masks_each_example_separately() -> None:
    pooling = Pooling("mean", dim=1)
    frames = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [4.0], [6.0]]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    assert torch.allclose(pooling(frames, mask), torch.tensor([[2.0], [4.0]]))


def test_unknown_pooling_name_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"unknown pooling 'median'.*attention"):
        Pooling("median", dim=4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown pooling"):
        PooledClassifier("median", dim=4, num_classes=2)  # type: ignore[arg-type]
    for family in SEQUENCE_FAMILIES:
        with pytest.raises(ConfigError, match="pooling"):
            tiny(family, pooling="median")


@pytest.mark.parametrize(
    ("family", "pooling"),
    [(SEQUENCE_FAMILIES[i % 3], name) for i, name in enumerate([*POOLINGS, "attention"])],
)
def test_every_pooling_builds_and_runs(family: str, pooling: str) -> None:
    """Each pooling in some family (the head is shared, so one family per name suffices)."""
    model = tiny(family, pooling=pooling).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 4000) * 0.1).shape == (2, CLASSES)


@pytest.mark.parametrize("family", SEQUENCE_FAMILIES)
def test_experiment_config_loads_and_lists_every_param(family: str, repo_root: Path) -> None:
    """The family's config file (a shared one in configs/models/ where there is one) names
    every param of the schema (so each one is documented there)."""
    path = repo_root / "configs" / "speech_commands" / f"{family}.yaml"
    config = load_config(path)
    shared = repo_root / "configs" / "models" / f"{family}.yaml"
    path = shared if shared.is_file() else path
    assert config.model.name == family
    assert config.experiment == family
    written = yaml.safe_load(path.read_text())["model"]["params"]
    assert set(written) == set(MODELS.get(family).params_schema.model_fields)
