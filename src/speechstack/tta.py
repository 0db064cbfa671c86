"""Test-time augmentation: views of a batch of windows, computed on the model's device.

A view is a circular shift and/or a resampling of each window (``predict.tta``); the
class probabilities of the views are averaged. The same views serve the OOF rows, the
shifted OOF rows, the test set and ``predict``, so the stacker sees what the test gets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

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
