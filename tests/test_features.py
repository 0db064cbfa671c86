"""speechstack.features: log-mel against librosa, SpecAugment, level-invariant norm."""

from __future__ import annotations

import math
from pathlib import Path

import librosa
import numpy as np
import pytest
import scipy.signal
import torch

from speechstack.audio import read_audio
from speechstack.config import FeatureConfig, PcenConfig, SpecAugmentConfig
from speechstack.features import (
    FrequencyNorm,
    Lifter,
    LogMel,
    LogMelFrontEnd,
    Pcen,
    SpecAugment,
    frame_count,
)

RATE = 16_000
TOLERANCE_DB = 1e-3
FLOOR_DB = -80.0


def librosa_log_mel(waveform: np.ndarray) -> np.ndarray:
    power = librosa.feature.melspectrogram(
        y=waveform,
        sr=RATE,
        n_fft=512,
        hop_length=160,
        win_length=400,
        window="hann",
        center=True,
        pad_mode="constant",
        power=2.0,
        n_mels=64,
        fmin=20,
        fmax=8000,
    )
    return librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None)


def torch_log_mel(waveform: np.ndarray, config: FeatureConfig) -> np.ndarray:
    log_mel = LogMel(config, RATE)
    with torch.no_grad():
        return log_mel(torch.from_numpy(waveform)[None])[0].numpy()


@pytest.fixture(scope="module")
def speech(tiny_speech_commands: Path) -> np.ndarray:
    clip = sorted((tiny_speech_commands / "train" / "audio" / "yes").glob("*.wav"))[0]
    return read_audio(clip, RATE)


def white_noise(samples: int = RATE) -> np.ndarray:
    return np.random.default_rng(0).uniform(-0.5, 0.5, samples).astype(np.float32)


@pytest.mark.parametrize("f_max", [8000.0, None], ids=["f_max=8000", "f_max=None"])
@pytest.mark.parametrize("source", ["speech", "white-noise", "noise-odd-length"])
def test_log_mel_matches_librosa(
    request: pytest.FixtureRequest,
    tiny_speech_commands: Path,
    source: str,
    f_max: float | None,
) -> None:
    """Same shape as librosa (power_to_db of melspectrogram, n_fft 512, win 400, hop 160,
    64 mels, 20-8000 Hz, centred zero-padded STFT) and within 1e-3 dB on every cell above
    -80 dB (float32 STFT rounding; measured ~2e-4 dB on speech)."""
    if source == "speech":
        waveform = request.getfixturevalue("speech")
    elif source == "white-noise":
        waveform = white_noise()
    else:
        noise = tiny_speech_commands / "train" / "audio" / "_background_noise_" / "pink_noise.wav"
        waveform = read_audio(noise, RATE)[:12_345]
    expected = librosa_log_mel(waveform)
    actual = torch_log_mel(waveform, FeatureConfig(f_max=f_max))
    assert actual.shape == expected.shape == (64, frame_count(len(waveform), 160))
    audible = expected > FLOOR_DB
    assert audible.mean() > 0.9  # the comparison covers nearly every cell
    assert np.abs(actual - expected)[audible].max() < TOLERANCE_DB


@pytest.mark.parametrize("samples", [16_000, 15_999, 12_345, 160])
def test_frames_are_one_plus_samples_over_hop(samples: int) -> None:
    features = LogMel(FeatureConfig(), RATE)(torch.zeros(2, samples))
    assert features.shape == (2, 64, 1 + samples // 160)
    assert frame_count(samples, 160) == 1 + samples // 160


@pytest.mark.parametrize("source", ["speech", "white-noise"])
def test_pcen_matches_librosa(request: pytest.FixtureRequest, source: str) -> None:
    """``Pcen`` on librosa's mel power equals ``librosa.pcen`` (same gain, bias, power,
    time constant and eps) started from the first frame's steady state."""
    waveform = request.getfixturevalue("speech") if source == "speech" else white_noise()
    power = librosa.feature.melspectrogram(
        y=waveform, sr=RATE, n_fft=512, hop_length=160, win_length=400, n_mels=64,
        fmin=20, fmax=8000, center=True, pad_mode="constant", power=2.0,
    ).astype(np.float64)  # fmt: skip
    config = PcenConfig()
    pcen = Pcen(config, 64, RATE / 160)
    start = scipy.signal.lfilter_zi([pcen.b], [1, pcen.b - 1])[None, :] * power[:, :1]
    expected = librosa.pcen(
        power, sr=RATE, hop_length=160, gain=config.alpha, bias=config.delta,
        power=config.r, time_constant=config.time_constant, eps=config.eps, zi=start,
    )  # fmt: skip
    with torch.no_grad():
        actual = pcen(torch.from_numpy(power.T.astype(np.float32))[None])[0].numpy()
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).max() < 1e-4 * max(1.0, np.abs(expected).max())


def test_pcen_removes_a_stationary_level_and_learns_per_band() -> None:
    """Stationary noise 40 dB quieter comes out near the same values (the running average
    divides the level away, where dB shifts every cell by 40); the per-band parameters
    get gradients when trainable and stay buffers when not; the exportable front-end
    agrees."""
    noise = torch.from_numpy(white_noise())[None]
    config = FeatureConfig(pcen=PcenConfig())
    log_mel = LogMel(config, RATE)
    quiet, loud = log_mel(noise * 0.01), log_mel(noise)
    assert (quiet - loud).abs().mean() < 0.3 * loud.std()  # 40 dB apart in dB
    loud.sum().backward()
    assert log_mel.compress.log_params.grad.shape == (3, 64)
    with torch.no_grad():
        assert torch.allclose(log_mel.exportable()(noise), loud, atol=1e-5)
    fixed = LogMel(FeatureConfig(pcen=PcenConfig(trainable=False)), RATE)
    assert not list(fixed.parameters())
    with pytest.raises(ValueError, match="lifter"):
        FeatureConfig(pcen=PcenConfig(), lifter=20)


def test_log_mel_of_silence_is_the_floor_not_nan() -> None:
    features = LogMel(FeatureConfig(), RATE)(torch.zeros(1, RATE))
    assert torch.isfinite(features).all()
    assert torch.allclose(features, torch.full_like(features, -100.0))


# ---------------------------------------------------------------- SpecAugment


def random_features(batch: int = 8) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, 64, 101, generator=generator) * 10 - 40


def test_spec_augment_is_the_identity_in_eval_mode() -> None:
    augment = SpecAugment(SpecAugmentConfig(p=1.0, time_width=30, freq_width=30)).eval()
    features = random_features()
    assert torch.equal(augment(features), features)


def test_spec_augment_is_the_identity_with_p_zero() -> None:
    augment = SpecAugment(SpecAugmentConfig(p=0.0, time_width=30, freq_width=30)).train()
    features = random_features()
    assert torch.equal(augment(features), features)


def test_spec_augment_masks_time_frames_and_mel_bins_with_the_example_mean() -> None:
    torch.manual_seed(0)
    config = SpecAugmentConfig(p=1.0, time_masks=2, time_width=10, freq_masks=2, freq_width=8)
    augment = SpecAugment(config).train()
    features = random_features()
    augmented = augment(features)
    assert augmented.shape == features.shape
    masked_frames = masked_bins = 0
    for example, original in zip(augmented, features, strict=True):
        mean = original.mean()
        changed = example != original
        assert torch.all(example[changed] == mean)  # masked cells hold the example's mean
        at_mean = example == mean
        frames = at_mean.all(dim=0)  # (frames,) whole time frames masked
        bins = at_mean.all(dim=1)  # (n_mels,) whole mel bins masked
        assert frames.sum() <= config.time_masks * config.time_width
        assert bins.sum() <= config.freq_masks * config.freq_width
        masked_frames += int(frames.sum())
        masked_bins += int(bins.sum())
        # Every changed cell lies in a masked frame or a masked bin.
        assert torch.all(changed <= (frames[None, :] | bins[:, None]))
    assert masked_frames > 0 and masked_bins > 0


def test_spec_augment_does_not_modify_its_input() -> None:
    torch.manual_seed(0)
    augment = SpecAugment(SpecAugmentConfig(p=1.0, time_width=30, freq_width=30)).train()
    features = random_features()
    copy = features.clone()
    augment(features)
    assert torch.equal(features, copy)


# ---------------------------------------------------------------- FrequencyNorm


def test_frequency_norm_subtracts_each_examples_mean() -> None:
    norm = FrequencyNorm(64).eval()  # fresh running stats: mean 0, var 1, affine identity
    features = random_features(4)
    expected = features - features.mean(dim=(1, 2), keepdim=True)
    with torch.no_grad():
        torch.testing.assert_close(norm(features), expected, atol=1e-3, rtol=1e-4)


def test_band_norm_removes_a_fixed_channel_colouring() -> None:
    """mode="band" subtracts each mel band's mean over the frames: a fixed EQ (a constant dB
    offset per band) leaves the output unchanged, while mode="clip" keeps it."""
    features = random_features(3)
    colouring = torch.linspace(-12.0, 6.0, 64)[None, :, None]  # dB per band
    band, clip = FrequencyNorm(64, "band").eval(), FrequencyNorm(64, "clip").eval()
    with torch.no_grad():
        torch.testing.assert_close(band(features + colouring), band(features), atol=1e-3, rtol=0)
        expected = features - features.mean(dim=2, keepdim=True)
        torch.testing.assert_close(band(features), expected, atol=1e-3, rtol=1e-4)
        assert (clip(features + colouring) - clip(features)).abs().max() > 5.0


def test_norm_none_keeps_the_level_visible() -> None:
    """mode="none" (emotion: loudness is a cue) passes a gain through as a dB offset."""
    features = random_features(2)
    keep = FrequencyNorm(64, "none").eval()
    with torch.no_grad():
        torch.testing.assert_close(keep(features), features, atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(keep(features + 20.0) - keep(features),
                                   torch.full_like(features, 20.0), atol=1e-3, rtol=0)  # fmt: skip


def test_frequency_norm_output_is_invariant_to_input_gain(speech: np.ndarray) -> None:
    log_mel = LogMel(FeatureConfig(), RATE)
    norm = FrequencyNorm(64)
    waveform = torch.from_numpy(speech)[None]
    quieter = waveform * 10 ** (-20 / 20)  # -20 dB
    with torch.no_grad():
        norm.train()
        # One training step on a batch holding the clip at two levels: batch statistics
        # see the two as one, so the outputs are equal too.
        both = norm(log_mel(torch.cat([waveform, quieter])))
        torch.testing.assert_close(both[0], both[1], atol=1e-3, rtol=0)
        assert norm.norm.num_batches_tracked.item() == 1
        norm.eval()
        loud, quiet = norm(log_mel(waveform)), norm(log_mel(quieter))
    torch.testing.assert_close(loud, quiet, atol=1e-3, rtol=0)
    assert (log_mel(waveform) - log_mel(quieter)).mean().item() == pytest.approx(20.0, abs=0.05)


def test_front_end_in_eval_mode_is_deterministic(speech: np.ndarray) -> None:
    front_end = LogMelFrontEnd(FeatureConfig(), RATE, SpecAugmentConfig(p=1.0)).eval()
    waveform = torch.from_numpy(speech)[None].repeat(2, 1)
    with torch.no_grad():
        first, second = front_end(waveform), front_end(waveform)
    assert first.shape == (2, 64, 101)
    assert torch.equal(first, second) and torch.isfinite(first).all()


def test_frequency_warp_moves_a_tone_by_the_drawn_factor() -> None:
    from speechstack.features import warp_frequencies

    bins = 257
    power = torch.zeros(64, 3, bins)
    power[..., 100] = 1.0  # a tone at bin 100
    torch.manual_seed(0)
    warped = warp_frequencies(power, p=1.0, warp=0.2)
    peaks = warped[:, 0].argmax(dim=1).float()
    assert peaks.min() >= 100 * 0.8 - 1 and peaks.max() <= 100 * 1.2 + 1
    assert peaks.std() > 5  # factors drawn per clip, not one for the batch
    assert torch.equal(warped[:, 0], warped[:, 2])  # one factor for all frames of a clip
    assert torch.equal(warp_frequencies(power, p=0.0, warp=0.2), power)


def test_frequency_warp_runs_in_training_only(speech: np.ndarray) -> None:
    warp = SpecAugmentConfig(p=0.0, warp_p=1.0, warp=0.15)
    front_end = LogMelFrontEnd(FeatureConfig(), RATE, warp)
    plain = LogMelFrontEnd(FeatureConfig(), RATE, SpecAugmentConfig(p=0.0)).eval()
    waveform = torch.from_numpy(speech)[None].repeat(4, 1)
    with torch.no_grad():
        torch.testing.assert_close(front_end.eval()(waveform), plain(waveform))
        trained = front_end.train().log_mel(waveform)
    assert not torch.allclose(trained, plain.log_mel(waveform), atol=1e-3)
    assert not torch.allclose(trained[0], trained[1], atol=1e-3)


def test_lifter_keeps_the_envelope_and_drops_the_harmonic_ripple() -> None:
    """A smooth spectral envelope (formants) passes; a fast ripple along the mel axis (the
    comb of a voice's pitch harmonics) is removed; a second pass changes nothing."""
    bands = torch.arange(64, dtype=torch.float64)
    envelope = -30 + 20 * torch.cos(2 * math.pi * bands / 64)  # quefrency 2: kept at 20
    ripple = 6 * torch.cos(math.pi * 40 * (bands + 0.5) / 64)  # DCT order 40: dropped
    lifter = Lifter(64, 20)
    features = (envelope + ripple).float()[None, :, None].repeat(2, 1, 3)
    smoothed = lifter(features)
    assert smoothed.shape == features.shape
    assert torch.allclose(smoothed[0, :, 0].double(), envelope, atol=0.05)
    assert torch.allclose(lifter(smoothed), smoothed, atol=1e-4)
    assert torch.allclose(Lifter(64, 64)(features), features, atol=1e-4)


def test_front_end_applies_the_lifter_and_refuses_more_coefficients_than_bands(
    speech: np.ndarray,
) -> None:
    waveform = torch.from_numpy(speech[:16000].astype(np.float32))[None]
    plain = LogMelFrontEnd(FeatureConfig(), 16000, SpecAugmentConfig()).eval()
    liftered = LogMelFrontEnd(FeatureConfig(lifter=12), 16000, SpecAugmentConfig()).eval()
    a, b = plain(waveform), liftered(waveform)
    assert a.shape == b.shape
    # the liftered bands vary less from one band to the next: the fine structure is gone
    assert b.diff(dim=1).abs().mean() < 0.8 * a.diff(dim=1).abs().mean()
    with pytest.raises(ValueError, match="lifter"):
        FeatureConfig(lifter=65)
