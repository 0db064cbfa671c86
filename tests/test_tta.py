"""Test-time augmentation: the views and their average in ``predict_probabilities``."""

from __future__ import annotations

import numpy as np
import polars as pl
import torch
from torch import nn

from speechstack.config import AudioConfig, TtaView
from speechstack.data import ClipDataset, make_loader
from speechstack.train import Precision, predict_probabilities
from speechstack.tta import adapt_batch_norm, apply_view, views_or_identity

RATE = 16000


def test_identity_view_changes_nothing() -> None:
    windows = torch.randn(3, RATE)
    assert torch.equal(apply_view(windows, TtaView(), RATE), windows)
    assert views_or_identity([]) == [TtaView()]


def test_shift_rolls_the_window_by_whole_samples() -> None:
    windows = torch.zeros(2, RATE)
    windows[:, 100] = 1.0
    shifted = apply_view(windows, TtaView(shift_seconds=0.01), RATE)
    assert shifted.shape == windows.shape
    assert torch.nonzero(shifted[0]).flatten().tolist() == [260]
    back = apply_view(windows, TtaView(shift_seconds=-0.01), RATE)
    assert torch.nonzero(back[0]).flatten().tolist() == [RATE - 60]  # wrapped around


def test_speed_raises_a_tone_and_keeps_the_length() -> None:
    time = torch.arange(RATE) / RATE
    tone = torch.sin(2 * torch.pi * 500 * time)[None]
    for speed in (0.8, 1.25):
        out = apply_view(tone, TtaView(speed=speed), RATE)
        assert out.shape == tone.shape
        spectrum = torch.fft.rfft(out[0]).abs()
        assert abs(int(spectrum.argmax()) - 500 * speed) <= 2  # 1 Hz bins


class Position(nn.Module):
    """Probability of class 1 = where the loudest sample sits in the window (0..1)."""

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        position = windows.abs().argmax(dim=1).float() / windows.shape[1]
        p = position.clamp(1e-4, 1 - 1e-4)
        return torch.stack([torch.log(1 - p), torch.log(p)], dim=1)


def test_predictions_average_the_views(tmp_path) -> None:
    waveform = np.zeros(RATE, dtype=np.float32)
    waveform[RATE // 2] = 1.0
    import soundfile as sf

    sf.write(tmp_path / "a.wav", waveform, RATE, subtype="FLOAT")
    manifest = pl.DataFrame(
        {
            "fname": ["a.wav"],
            "path": [str(tmp_path / "a.wav")],
            "start": [0.0],
            "duration": [None],
            "gain_db": [0.0],
        },
        schema_overrides={"duration": pl.Float64},
    )
    loader = make_loader(
        ClipDataset(manifest, AudioConfig()), 4, shuffle=False, num_workers=0, seed=0
    )
    precision = Precision.choose(torch.device("cpu"), amp=False)
    plain = predict_probabilities(Position(), loader, precision)
    views = [TtaView(), TtaView(shift_seconds=0.1), TtaView(shift_seconds=-0.1)]
    averaged = predict_probabilities(Position(), loader, precision, views=views, sample_rate=RATE)
    assert plain[0, 1] == np.float32(0.5)
    # positions 0.5, 0.6 and 0.4: the mean is 0.5 again, but each view was applied
    assert np.isclose(averaged[0, 1], 0.5, atol=1e-4)
    one_sided = predict_probabilities(
        Position(), loader, precision, views=[TtaView(shift_seconds=0.1)], sample_rate=RATE
    )
    assert np.isclose(one_sided[0, 1], 0.6, atol=1e-4)


class _Normed(nn.Module):
    """A batch norm over two features, then dropout (which adaptation must leave in eval)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(2)
        self.dropout = nn.Dropout(0.9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.norm(x))


def test_adaptation_takes_the_batch_norm_statistics_of_the_predicted_set() -> None:
    model = _Normed().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    shifted = [torch.randn(50, 2, generator=generator) * 3 + 5 for _ in range(4)]
    adapted = adapt_batch_norm(model, iter(shifted), torch.device("cpu"))
    every = torch.cat(shifted)
    assert adapted is not model and not adapted.training and not adapted.norm.training
    assert torch.allclose(adapted.norm.running_mean, every.mean(0), atol=1e-5)
    assert torch.allclose(adapted.norm.running_var, every.var(0), rtol=0.05)
    assert adapted.norm.momentum == model.norm.momentum  # later training behaves as before
    # the predicted set now comes out standardised; the model given is untouched
    out = adapted(every)
    assert out.mean(0).abs().max() < 0.05 and (out.std(0) - 1).abs().max() < 0.05
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert torch.equal(adapted(every), adapted(every))  # dropout stayed off
    plain = nn.Linear(2, 2)
    assert adapt_batch_norm(plain, iter(shifted), torch.device("cpu")) is plain
