"""Every registered model family: tiny variant forward/backward, shapes, no NaN, learns."""

from __future__ import annotations

import pytest
import torch

from speechstack.config import ConfigError
from speechstack.models import MODELS, ModelContext, create_model

CLASSES = 5
SAMPLES = 16000


@pytest.fixture(params=[n for n in MODELS.names() if MODELS.get(n).trainer == "network"])
def family(request: pytest.FixtureRequest) -> str:
    return request.param


def tiny_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, ModelContext(num_classes=CLASSES), **MODELS.get(name).tiny)


def test_forward_backward_shape_and_finite(family: str) -> None:
    model = tiny_model(family)
    waveform = torch.randn(4, SAMPLES) * 0.1
    logits = model(waveform)
    assert logits.shape == (4, CLASSES)
    assert torch.isfinite(logits).all()
    logits.logsumexp(dim=1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_tiny_variant_overfits_a_small_batch(family: str) -> None:
    """Loss on a fixed batch of distinct synthetic tones falls by at least half."""
    model = tiny_model(family)
    time = torch.arange(SAMPLES) / 16000
    frequencies = torch.tensor([300.0, 600.0, 1200.0, 2400.0, 4000.0, 450.0, 900.0, 1800.0])
    waveform = 0.3 * torch.sin(2 * torch.pi * frequencies[:, None] * time)
    target = torch.arange(8) % CLASSES
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(waveform), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] <= 0.5 * losses[0], losses


def test_eval_mode_is_deterministic(family: str) -> None:
    model = tiny_model(family).eval()
    waveform = torch.randn(2, SAMPLES) * 0.1
    with torch.no_grad():
        assert torch.equal(model(waveform), model(waveform))


def test_unknown_family_lists_known_ones() -> None:
    with pytest.raises(KeyError, match=r"known models: .*cnn"):
        create_model("no_such_model", ModelContext(num_classes=2))


def test_unknown_param_is_rejected_with_valid_keys() -> None:
    with pytest.raises(ConfigError, match=r"backbon.*valid keys here: .*backbone"):
        create_model("cnn", ModelContext(num_classes=2), backbon="x")


def test_unknown_timm_backbone_is_named() -> None:
    with pytest.raises(ValueError, match="unknown timm backbone 'not_a_net'"):
        create_model("cnn", ModelContext(num_classes=2), backbone="not_a_net")


def test_pretrained_without_hub_says_how_to_provide_weights(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="weights_file"):
        create_model("cnn", ModelContext(num_classes=2), backbone="resnet10t", pretrained=True)


def test_pretrained_from_local_weights_file(tmp_path) -> None:
    """The offline path: a checkpoint saved to disk loads through `weights_file`."""
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("test_efficientnet", num_classes=1000)
    path = tmp_path / "weights.safetensors"
    save_file(source.state_dict(), str(path))
    model = create_model(
        "cnn",
        ModelContext(num_classes=3),
        backbone="test_efficientnet",
        pretrained=True,
        weights_file=str(path),
    )
    stem = next(p for n, p in model.backbone.named_parameters() if n.startswith("conv_stem"))
    expected = source.conv_stem.weight.sum(dim=1, keepdim=True)  # RGB filters summed to 1 channel
    assert torch.allclose(stem, expected, atol=1e-5)


def test_forward_backward_under_bf16_autocast(family: str) -> None:
    """The mixed-precision path of the loop (``Precision.autocast``), run with CPU autocast:
    logits and gradients stay finite and the loss is computed in float32."""
    from speechstack.train import Precision

    model = tiny_model(family)
    precision = Precision(torch.device("cpu"), True, torch.bfloat16)
    with precision.autocast():
        logits = model(torch.randn(4, SAMPLES) * 0.1)
    assert logits.shape == (4, CLASSES)
    loss = torch.nn.functional.cross_entropy(logits.float(), torch.arange(4) % CLASSES)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(("bf16", "dtype"), [(True, torch.bfloat16), (False, torch.float16)])
def test_cuda_precision_is_bf16_where_supported_else_fp16_with_scaling(
    bf16: bool, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    from speechstack.train import Precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    precision = Precision.choose(torch.device("cuda"), amp=True)
    assert (precision.enabled, precision.dtype) == (True, dtype)
    assert not Precision.choose(torch.device("cuda"), amp=False).enabled
    assert not Precision.choose(torch.device("cpu"), amp=True).enabled
