"""Test-time augmentation and adaptation, computed on the model's device.

A view is a circular shift and/or a resampling of each window (``predict.tta``); the
class probabilities of the views are averaged. The same views serve the OOF rows, the
shifted OOF rows, the test set and ``predict``, so the stacker sees what the test gets.

Adaptation (``predict.adapt_norm``) re-estimates a network's batch-norm statistics on the
set of clips it is about to predict (AdaBN, Li et al. 2016): a test set recorded through
other channels, rooms and noise shifts every layer's activations, and statistics of the
test set itself undo the first-order part of that shift without a label. It is applied to
sets that are predicted as a whole: the test set and the shifted OOF rows (each fold's
shifted validation clips, so the stacker sees what the test gets), and ``predict``'s folder.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from speechstack import interrupt
from speechstack.config import TtaView

IDENTITY = TtaView()


def apply_view(windows: torch.Tensor, view: TtaView, sample_rate: int) -> torch.Tensor:
    """``(batch, samples)`` -> the same shape: rolled by ``view.shift_seconds`` (the
    window's own audio wraps around), then resampled by ``view.speed`` (> 1: faster and
    higher; linear interpolation) and centre-cropped or zero-padded back to ``samples``."""
    samples = windows.shape[-1]
    out = windows
    shift = round(view.shift_seconds * sample_rate)
    if shift:
        out = torch.roll(out, shifts=shift, dims=-1)
    if view.speed != 1.0:
        length = max(1, round(samples / view.speed))
        out = F.interpolate(out[:, None, :], size=length, mode="linear", align_corners=False)[:, 0]
        if length > samples:
            start = (length - samples) // 2
            out = out[:, start : start + samples]
        elif length < samples:
            before = (samples - length) // 2
            out = F.pad(out, (before, samples - length - before))
    return out


def views_or_identity(views: Sequence[TtaView]) -> list[TtaView]:
    """The views to average: ``views``, or the window as it is when there are none."""
    return list(views) if views else [IDENTITY]


def batch_norm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The model's batch-norm layers (any dimension), in module order."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def adapt_batch_norm(
    model: nn.Module, windows: Iterable[torch.Tensor], device: torch.device
) -> nn.Module:
    """A copy of ``model`` in eval mode whose batch-norm layers hold the mean and variance of
    the activations of ``windows`` (batches of waveforms ``(batch, samples)``), each batch
    weighing alike; every other layer, the weights and ``model`` itself are unchanged. A
    model without batch norm comes back as is."""
    if not batch_norm_layers(model):
        return model
    adapted = copy.deepcopy(model).eval()
    layers = batch_norm_layers(adapted)
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average over the batches
        layer.train()
    with torch.inference_mode():
        for batch in windows:
            interrupt.check()  # a fold worker stops here too when its parent is told to
            adapted(batch.to(device).float())
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum
        layer.eval()
    return adapted
