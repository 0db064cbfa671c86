"""Waveform augmentation: each transform's contract (shape, dtype, p, seeding, silence) and
what it claims to do to a clip, the pipeline built from config, and the shifted-validation
corruption (deterministic per clip, test-like kinds absent from training)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.signal

from speechstack.augment import (
    NOT_WAVEFORM,
    SHIFTED_NOISES,
    WAVEFORM_AUGMENTATIONS,
    BackgroundNoise,
    Band,
    ColoredNoise,
    MixClip,
    Placement,
    Reverb,
    Room,
    Speed,
    WaveformPipeline,
    build_waveform_augment,
    change_speed,
    colored_noise,
    loud_span,
    reverberate,
    room_impulse_response,
    shifted_condition,
)
from speechstack.config import AugmentConfig, ShiftedValidationConfig

RATE = 16_000
TIME = np.arange(RATE) / RATE


def tone(hz: float, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * hz * TIME)).astype(np.float32)


def rms(samples: np.ndarray) -> float:
    samples = np.asarray(samples, dtype=np.float64)
    return float(np.sqrt(np.mean(samples**2)))


def snr_db(clean: np.ndarray, mixed: np.ndarray) -> float:
    return 20 * np.log10(rms(clean) / rms(mixed.astype(np.float64) - clean))


def burst_clip(start: int = 3000, length: int = 4000, seed: int = 0) -> np.ndarray:
    """1 s: quiet noise (-60 dB) with a loud 300 Hz burst at ``start``."""
    clip = 0.001 * np.random.default_rng(seed).standard_normal(RATE)
    clip[start : start + length] += 0.5 * np.sin(2 * np.pi * 300 * TIME[:length])
    return clip.astype(np.float32)


def seeded(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)


@pytest.fixture
def noise_file(tmp_path: Path, write_wav) -> Path:
    """3 s of distinct uniform noise (a recognisable segment anywhere)."""
    samples = np.random.default_rng(5).uniform(-0.5, 0.5, 3 * RATE)
    return write_wav(tmp_path / "noise.wav", samples, RATE, "FLOAT")


CLIPS = [burst_clip(start, seed=index) for index, start in enumerate([1000, 6000, 11000])]


def random_clip() -> np.ndarray:
    return CLIPS[random.randrange(len(CLIPS))]


TRANSFORMS: dict[str, Callable[[float, Path], Callable[[np.ndarray, int], np.ndarray]]] = {
    "placement": lambda p, _: Placement(-30.0, p=p),
    "speed": lambda p, _: Speed(0.85, 1.15, p=p),
    "mix": lambda p, _: MixClip(random_clip, 10.0, 25.0, p=p),
    "reverb": lambda p, _: Reverb(0.15, 0.9, p=p),
    "noise": lambda p, path: BackgroundNoise([path], 3.0, 30.0, p=p),
    "colored_noise": lambda p, _: ColoredNoise(0.0, 30.0, -2.0, 2.0, p=p),
    "band": lambda p, _: Band(50.0, 400.0, 2500.0, 7500.0, p=p),
    "eq": lambda p, _: (
        build_waveform_augment(AugmentConfig.model_validate({"eq": {"p": p}}), [])
        or (lambda samples, rate: samples)
    ),  # p 0: no pipeline, the identity
}


# ---------------------------------------------------------------------------------------
# Every transform's contract


@pytest.mark.parametrize("name", TRANSFORMS)
def test_transform_keeps_shape_and_dtype_and_leaves_its_input_alone(name, noise_file) -> None:
    transform = TRANSFORMS[name](1.0, noise_file)
    clip = burst_clip()
    before = clip.copy()
    seeded(0)
    outputs = [transform(clip, RATE) for _ in range(5)]
    assert np.array_equal(clip, before)
    for out in outputs:
        assert out.shape == clip.shape and out.dtype == np.float32
        assert np.isfinite(out).all()
    assert any(not np.array_equal(out, clip) for out in outputs)


@pytest.mark.parametrize("name", TRANSFORMS)
def test_transform_at_p0_is_the_identity(name, noise_file) -> None:
    transform = TRANSFORMS[name](0.0, noise_file)
    clip = burst_clip()
    seeded(0)
    assert all(np.array_equal(transform(clip, RATE), clip) for _ in range(10))


@pytest.mark.parametrize("name", TRANSFORMS)
def test_transform_is_reproduced_by_its_seed(name, noise_file) -> None:
    transform = TRANSFORMS[name](0.7, noise_file)

    def run(seed: int) -> list[np.ndarray]:
        seeded(seed)
        return [transform(clip, RATE) for clip in CLIPS * 4]

    first, again, other = run(1), run(1), run(2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("name", TRANSFORMS)
@pytest.mark.parametrize("length", [0, RATE])
def test_transform_of_silence_is_finite_silence(name, length, noise_file) -> None:
    transform = TRANSFORMS[name](1.0, noise_file)
    seeded(0)
    for _ in range(5):
        out = transform(np.zeros(length, dtype=np.float32), RATE)
        assert out.shape == (length,) and out.dtype == np.float32
        assert np.isfinite(out).all() and not out.any()


# ---------------------------------------------------------------------------------------
# Placement


def test_loud_span_finds_the_burst() -> None:
    start, stop = loud_span(burst_clip(3000, 4000), RATE, -30.0)
    assert 2840 <= start <= 3000 and 7000 <= stop <= 7160  # 10 ms frames
    assert loud_span(np.zeros(RATE, np.float32), RATE, -30.0) is None


def test_placement_moves_the_loud_span_and_keeps_it_intact() -> None:
    clip = burst_clip(3000, 4000)
    start, stop = loud_span(clip, RATE, -30.0)
    placement = Placement(-30.0, p=1.0)
    seeded(0)
    starts = set()
    for _ in range(40):
        out = placement(clip, RATE)
        correlation = np.fft.irfft(np.fft.rfft(out) * np.conj(np.fft.rfft(clip)), RATE)
        shift = int(np.argmax(correlation))
        assert np.array_equal(np.roll(clip, shift), out)  # a circular roll, nothing else
        new_start = (start + shift) % RATE
        assert new_start + (stop - start) <= RATE  # the span fits: it never wraps
        np.testing.assert_array_equal(out[new_start : new_start + stop - start], clip[start:stop])
        starts.add(new_start)
    assert len(starts) > 30 and min(starts) < 2000 and max(starts) > 9000


def test_placement_leaves_a_clip_that_is_loud_throughout_as_is() -> None:
    steady = (0.1 * np.random.default_rng(0).standard_normal(RATE)).astype(np.float32)
    placement = Placement(-30.0, p=1.0)
    seeded(0)
    assert all(np.array_equal(placement(steady, RATE), steady) for _ in range(5))


# ---------------------------------------------------------------------------------------
# Speed


def peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / RATE)[np.argmax(spectrum)])


@pytest.mark.parametrize("rate", [0.85, 0.93, 1.07, 1.15])
def test_speed_multiplies_a_tones_frequency_by_the_rate(rate) -> None:
    out = change_speed(tone(500.0), rate)
    assert out.shape == (RATE,) and out.dtype == np.float32
    assert peak_hz(out) == pytest.approx(500.0 * rate, abs=2.0)


def test_slowing_down_pads_both_ends_with_zeros_and_speeding_up_crops_the_centre() -> None:
    ramp = np.linspace(-1, 1, RATE, dtype=np.float32)
    slow = change_speed(ramp, 0.8)  # 20000 samples, centre-cropped: the ends are lost
    assert slow[0] > -1 + 0.1 and slow[-1] < 1 - 0.1
    assert abs(slow[RATE // 2]) < 1e-3  # the centre stays the centre
    fast = change_speed(ramp, 1.25)  # 12800 samples in the middle, zeros around
    assert not fast[:1600].any() and not fast[1600 + 12800 :].any()
    assert fast[1600] == pytest.approx(-1, abs=1e-3) and fast[1600 + 12799] == pytest.approx(
        1, abs=1e-3
    )


def test_speed_resamples_like_the_test_time_views() -> None:
    """Training's speed and prediction's TTA speed are one mapping."""
    torch = pytest.importorskip("torch")
    tta = pytest.importorskip("speechstack.tta")
    from speechstack.config import TtaView

    clip = burst_clip()
    for rate in (0.87, 1.0, 1.13):
        view = tta.apply_view(torch.from_numpy(clip)[None], TtaView(speed=rate), RATE)[0]
        np.testing.assert_allclose(change_speed(clip, rate), view.numpy(), atol=1e-4)


# ---------------------------------------------------------------------------------------
# Reverb


def decay_rt60(response: np.ndarray, onset: int) -> float:
    """RT60 (s) from the Schroeder energy decay curve of the tail, fitted from -5 to -25 dB."""
    tail = response[onset:].astype(np.float64)
    curve = np.cumsum(tail[::-1] ** 2)[::-1]
    curve_db = 10 * np.log10(curve / curve[0])
    first, last = np.argmax(curve_db <= -5), np.argmax(curve_db <= -25)
    slope = np.polyfit(np.arange(first, last) / RATE, curve_db[first:last], 1)[0]
    return -60 / slope


@pytest.mark.parametrize("rt60", [0.2, 0.5, 0.9])
def test_room_impulse_response_decays_60_db_over_rt60(rt60) -> None:
    for seed in range(3):
        room = Room(rt60=rt60, predelay=0.01, direct_to_reverberant_db=3.0, absorption_hz=4000)
        response = room_impulse_response(room, RATE, rng=np.random.default_rng(seed))
        assert response.dtype == np.float32
        assert len(response) == round(room.seconds * RATE) + 1
        assert decay_rt60(response, 160) == pytest.approx(rt60, rel=0.1)
        assert float(np.sum(response.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=0.05)
        assert response[0] == response.max()  # the direct path leads, undelayed
        assert np.abs(response[3:150]).max() < 0.01 * response[0]  # the pre-delay


def test_room_direct_to_reverberant_ratio_and_absorption() -> None:
    def room(drr: float, absorption_hz: float) -> np.ndarray:
        parameters = Room(0.5, 0.01, drr, absorption_hz)
        return room_impulse_response(parameters, RATE, rng=np.random.default_rng(0))

    near, far = room(10.0, 4000.0), room(-3.0, 4000.0)
    for response, drr in ((near, 10.0), (far, -3.0)):
        ratio = 10 * np.log10(response[0] ** 2 / np.sum(response[150:].astype(np.float64) ** 2))
        assert ratio == pytest.approx(drr, abs=0.5)
    frequencies, bright = scipy.signal.welch(room(0.0, 8000.0)[160:], RATE, nperseg=512)
    _, dark = scipy.signal.welch(room(0.0, 1500.0)[160:], RATE, nperseg=512)
    high = frequencies > 5000
    assert np.mean(dark[high]) / np.mean(bright[high]) < 0.3  # absorbed highs


def test_reverberate_is_the_linear_convolution_with_the_room_cropped() -> None:
    clip = burst_clip()
    room = Room(0.4, 0.01, 0.0, 3000.0)
    out = reverberate(clip, room, RATE, rng=np.random.default_rng(3))
    response = room_impulse_response(room, RATE, max_samples=RATE, rng=np.random.default_rng(3))
    expected = scipy.signal.fftconvolve(clip, response)[:RATE]
    assert out.shape == clip.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=2e-3 * np.abs(expected).max())


def test_reverb_lengthens_an_impulse_and_keeps_the_level() -> None:
    impulse = np.zeros(RATE, dtype=np.float32)
    impulse[2000] = 1.0
    reverb = Reverb(0.5, 0.5, p=1.0)
    seeded(0)
    out = reverb(impulse, RATE)
    assert np.abs(out[:2000]).max() < 1e-3  # nothing before the sound
    late = out[2000 + 1600 : 2000 + 4000]  # 100-250 ms after it: the tail
    assert rms(late) > 1e-3
    assert rms(out[2000 + 6000 : 2000 + 8000]) < rms(late)  # decaying
    noise = (0.1 * np.random.default_rng(0).standard_normal(RATE)).astype(np.float32)
    levels = [rms(reverb(noise, RATE)) / rms(noise) for _ in range(10)]
    assert min(levels) > 0.5 and max(levels) < 1.5


# ---------------------------------------------------------------------------------------
# Band


def level_db(samples: np.ndarray) -> float:
    return 20 * np.log10(rms(samples[4000:]))  # past the filter's start-up


@pytest.mark.parametrize("seed", range(4))  # each draws orders 2 or 4
def test_band_attenuates_tones_outside_the_band_and_passes_one_inside(seed) -> None:
    band = Band(400.0, 400.0, 2500.0, 2500.0, p=1.0)
    for hz, lowest, highest in ((50.0, None, -20.0), (7000.0, None, -20.0), (1000.0, -1.0, 0.5)):
        seeded(seed)
        change = level_db(band(tone(hz), RATE)) - level_db(tone(hz))
        assert change < highest and (lowest is None or change > lowest), (hz, change)


@pytest.mark.parametrize(
    ("gain_db", "low_db", "high_db"), [(0.0, -0.01, 0.01), (12.0, 6.0, 14.0), (-12.0, -14.0, -1.0)]
)
def test_eq_moves_broadband_noise_by_its_band_gains(gain_db, low_db, high_db) -> None:
    """Every band at +-12 dB: white noise louder / quieter by about that (the bands' centres
    and widths are drawn, so less where the spectrum falls between two of them)."""
    section = {"p": 1.0, "min_gain_db": gain_db, "max_gain_db": gain_db}
    transform = build_waveform_augment(AugmentConfig.model_validate({"eq": section}), [])
    noise = (0.05 * np.random.default_rng(0).standard_normal(RATE)).astype(np.float32)
    steady = slice(RATE // 4, None)  # past the filters' onset
    for seed in range(4):
        seeded(seed)
        change_db = 20 * np.log10(rms(transform(noise, RATE)[steady]) / rms(noise[steady]))
        assert low_db <= change_db <= high_db, (seed, change_db)


def test_band_skips_a_low_pass_at_or_above_nyquist() -> None:
    band = Band(50.0, 50.0, 7500.0, 7500.0, p=1.0)
    seeded(0)
    out = band(tone(3000.0), 8000)  # 7.5 kHz is beyond 8 kHz audio's 4 kHz Nyquist
    assert np.isfinite(out).all() and level_db(out) == pytest.approx(level_db(tone(3000.0)), abs=1)


# ---------------------------------------------------------------------------------------
# Colored noise


@pytest.mark.parametrize("exponent", [-2.0, -1.0, 0.0, 1.0, 2.0])
def test_colored_noise_power_falls_as_one_over_f_to_the_exponent(exponent) -> None:
    noise = colored_noise(RATE, RATE, exponent, rng=np.random.default_rng(0))
    assert noise.dtype == np.float32 and rms(noise) == pytest.approx(1.0, rel=1e-3)
    frequencies, power = scipy.signal.welch(noise, RATE, nperseg=1024)
    used = (frequencies >= 100) & (frequencies <= 6000)
    slope = np.polyfit(np.log10(frequencies[used]), np.log10(power[used]), 1)[0]
    assert slope == pytest.approx(-exponent, abs=0.15)


def test_colored_noise_snr_within_range_and_slope_sign_follows_the_exponent() -> None:
    clip = burst_clip()
    for low, high in ((-2.0, -1.0), (1.0, 2.0)):
        transform = ColoredNoise(5.0, 15.0, low, high, p=1.0)
        seeded(0)
        for _ in range(10):
            out = transform(clip, RATE)
            assert 5.0 - 1e-3 <= snr_db(clip, out) <= 15.0 + 1e-3
            frequencies, power = scipy.signal.welch(out - clip, RATE, nperseg=1024)
            used = (frequencies >= 100) & (frequencies <= 6000)
            slope = np.polyfit(np.log10(frequencies[used]), np.log10(power[used]), 1)[0]
            assert np.sign(slope) == -np.sign(low)


# ---------------------------------------------------------------------------------------
# Another clip


def test_mix_adds_the_other_clip_at_the_requested_snr() -> None:
    clip = burst_clip(2000)
    other = burst_clip(9000, seed=7)
    seeded(0)
    out = MixClip(lambda: other, 12.0, 12.0, p=1.0)(clip, RATE)
    assert snr_db(clip, out) == pytest.approx(12.0, abs=1e-3)
    added = out - clip
    assert np.corrcoef(added, other)[0, 1] > 0.9999  # the other clip itself, scaled


def test_mix_places_a_shorter_clip_and_cuts_a_longer_one() -> None:
    clip = burst_clip()
    short = tone(200.0)[:4000]
    long = np.concatenate([tone(200.0), tone(700.0)])
    seeded(0)
    for source in (short, long):
        out = MixClip(lambda source=source: source, 10.0, 20.0, p=1.0)(clip, RATE)
        assert out.shape == clip.shape and 10.0 - 1e-3 <= snr_db(clip, out) <= 20.0 + 1e-3
    seeded(0)
    silent = MixClip(lambda: np.zeros(RATE, np.float32), 10.0, 20.0, p=1.0)
    assert np.array_equal(silent(clip, RATE), clip)


def test_mix_of_a_crowd_sums_equal_voices_at_the_requested_snr() -> None:
    clip = burst_clip(2000)
    loud, quiet = burst_clip(9000, seed=7), 0.01 * burst_clip(9000, seed=8)
    voices = iter([loud, quiet, loud, quiet, loud, quiet])
    seeded(0)
    out = MixClip(lambda: next(voices), 6.0, 6.0, p=1.0, min_voices=2, max_voices=2)(clip, RATE)
    assert snr_db(clip, out) == pytest.approx(6.0, abs=1e-3)
    # each voice at unit RMS before the sum: the quiet one counts as much as the loud one
    added = out - clip
    crowd = loud / rms(loud) + quiet / rms(quiet)
    assert np.corrcoef(added, crowd)[0, 1] > 0.9999
    seeded(1)
    drawn = []
    counting = MixClip(
        lambda: drawn.append(1) or loud, 0.0, 20.0, p=1.0, min_voices=3, max_voices=5
    )
    for _ in range(20):
        before = len(drawn)
        counting(clip, RATE)
        assert 3 <= len(drawn) - before <= 5
    with pytest.raises(ValueError, match="min_voices"):
        MixClip(lambda: loud, 0.0, 20.0, p=1.0, min_voices=3, max_voices=2)


# ---------------------------------------------------------------------------------------
# Background noise files (its equivalence with audiomentations is in test_bench.py)


def test_background_noise_adds_a_segment_of_the_file_at_an_snr_in_range(noise_file) -> None:
    from speechstack.audio import read_audio

    noise = read_audio(noise_file, RATE)
    clip = burst_clip()
    transform = BackgroundNoise([noise_file], 3.0, 30.0, p=1.0)
    seeded(0)
    for _ in range(5):
        out = transform(clip, RATE)
        assert 3.0 - 1e-3 <= snr_db(clip, out) <= 30.0 + 1e-3
        added = (out - clip).astype(np.float64)
        scale = rms(added) / rms(noise[: len(clip)])
        # a contiguous segment of the file, scaled
        correlation = scipy.signal.correlate(noise, added / scale, mode="valid")
        assert correlation.max() == pytest.approx(float(np.dot(added, added)) / scale**2, rel=0.02)
    with pytest.raises(ValueError, match="at least one noise file"):
        BackgroundNoise([], 3.0, 30.0, p=1.0)


# ---------------------------------------------------------------------------------------
# The pipeline from config


WAVEFORM_SECTIONS = [name for name in AugmentConfig.model_fields if name not in NOT_WAVEFORM]


def every_section_on(**extra) -> AugmentConfig:
    return AugmentConfig.model_validate({name: {"p": 1.0} for name in WAVEFORM_SECTIONS} | extra)


def test_every_waveform_section_has_a_builder() -> None:
    assert sorted(WAVEFORM_SECTIONS) == WAVEFORM_AUGMENTATIONS.names()
    assert set(AugmentConfig.model_fields) >= NOT_WAVEFORM


def test_pipeline_runs_the_sections_in_config_order(noise_file) -> None:
    pipeline = build_waveform_augment(every_section_on(), [noise_file], mix_source=random_clip)
    assert isinstance(pipeline, WaveformPipeline)
    assert pipeline.names == WAVEFORM_SECTIONS
    assert pipeline.names[:3] == ["placement", "shift", "speed"] and pipeline.names[-1] == "band"

    def run(seed: int) -> list[np.ndarray]:
        seeded(seed)
        return [pipeline(clip, RATE) for clip in CLIPS]

    first, again = run(3), run(3)
    for clip, a, b in zip(CLIPS, first, again, strict=True):
        assert a.shape == clip.shape and a.dtype == np.float32 and np.isfinite(a).all()
        assert np.array_equal(a, b)
    silent = pipeline(np.zeros(RATE, np.float32), RATE)
    assert silent.dtype == np.float32 and np.isfinite(silent).all()


def test_pipeline_holds_only_the_sections_that_are_on(noise_file) -> None:
    config = AugmentConfig.model_validate(
        {"band": {"p": 0.3}, "placement": {"p": 0.5}, "spec_augment": {"p": 1.0}}
    )
    assert build_waveform_augment(config, []).names == ["placement", "band"]
    nothing = AugmentConfig.model_validate({"spec_augment": {"p": 1.0}, "mixup": {"p": 1.0}})
    assert build_waveform_augment(nothing, [noise_file]) is None
    assert build_waveform_augment(AugmentConfig(), []) is None


def test_pipeline_rejects_a_non_finite_input() -> None:
    pipeline = build_waveform_augment(AugmentConfig.model_validate({"band": {"p": 1.0}}), [])
    clip = burst_clip()
    clip[100] = np.nan
    with pytest.raises(ValueError, match="the input clip"):
        pipeline(clip, RATE)


def test_noise_without_files_and_mix_without_a_source_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="no background-noise files"):
        build_waveform_augment(AugmentConfig.model_validate({"noise": {"p": 0.5}}), [])
    with pytest.raises(ValueError, match=r"augment\.mix\.p > 0 but no clip source"):
        build_waveform_augment(AugmentConfig.model_validate({"mix": {"p": 0.5}}), [])


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        (
            "reverb",
            {"min_rt60": 0.9, "max_rt60": 0.2},
            "augment.reverb: min_rt60 0.9 > max_rt60 0.2",
        ),
        ("speed", {"min_rate": 1.2, "max_rate": 0.9}, "augment.speed: min_rate 1.2 > max_rate 0.9"),
        (
            "noise",
            {"min_snr_db": 20, "max_snr_db": 5},
            "augment.noise: min_snr_db 20.0 > max_snr_db",
        ),
        ("colored_noise", {"min_exponent": 1, "max_exponent": 0}, "min_exponent 1.0 > max_exp"),
        ("band", {"min_low_hz": 300, "max_low_hz": 100}, "augment.band: min_low_hz 300.0 > max"),
        ("pitch", {"min_semitones": 2, "max_semitones": -2}, "augment.pitch: min_semitones"),
        ("band", {"max_low_hz": 3000, "min_high_hz": 2500}, "max_low_hz 3000.0 >= min_high_hz"),
    ],
)
def test_a_reversed_range_is_an_error_naming_the_key(section, values, message) -> None:
    config = AugmentConfig.model_validate({section: {"p": 0.0, **values}})  # even when off
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        build_waveform_augment(config, [])


# ---------------------------------------------------------------------------------------
# Shifted validation


NOISE_ONLY = ShiftedValidationConfig(noise_p=1.0, reverb_p=0.0, band_p=0.0, min_snr_db=0.0)


def test_shifted_condition_is_the_same_per_seed_and_clip_and_differs_between_them() -> None:
    clip = burst_clip()
    config = ShiftedValidationConfig(noise_p=1.0, reverb_p=1.0, band_p=1.0)
    first = shifted_condition(clip, RATE, config, "yes/a_nohash_0.wav")
    shifted_condition(clip, RATE, config, "no/b_nohash_1.wav")  # order does not matter
    again = shifted_condition(clip.copy(), RATE, config, "yes/a_nohash_0.wav")
    assert first.dtype == np.float32 and first.shape == clip.shape
    assert np.array_equal(first, again) and not np.array_equal(first, clip)
    other_key = shifted_condition(clip, RATE, config, "yes/a_nohash_1.wav")
    other_seed = shifted_condition(
        clip, RATE, config.model_copy(update={"seed": 1}), "yes/a_nohash_0.wav"
    )
    assert not np.array_equal(first, other_key) and not np.array_equal(first, other_seed)
    assert np.array_equal(clip, burst_clip())  # the input is left alone


def test_shifted_condition_with_every_probability_zero_is_the_identity() -> None:
    clip = burst_clip()
    config = ShiftedValidationConfig(noise_p=0.0, reverb_p=0.0, band_p=0.0)
    out = shifted_condition(clip, RATE, config, "x.wav")
    assert out.dtype == np.float32 and np.array_equal(out, clip)
    assert shifted_condition(np.zeros(0, np.float32), RATE, NOISE_ONLY, "x").shape == (0,)
    silent = shifted_condition(np.zeros(RATE, np.float32), RATE, NOISE_ONLY, "x")
    assert np.isfinite(silent).all() and not silent.any()


def test_shifted_noise_snr_is_within_range_and_every_kind_is_drawn() -> None:
    clip = burst_clip()
    config = NOISE_ONLY.model_copy(update={"min_snr_db": 2.0, "max_snr_db": 12.0})
    values = [snr_db(clip, shifted_condition(clip, RATE, config, f"c{i}")) for i in range(60)]
    assert min(values) >= 2.0 - 1e-3 and max(values) <= 12.0 + 1e-3
    assert max(values) - min(values) > 5.0
    with pytest.raises(ValueError, match=r"min_snr_db 5\.0 > max_snr_db 1\.0"):
        shifted_condition(
            clip, RATE, NOISE_ONLY.model_copy(update={"min_snr_db": 5.0, "max_snr_db": 1.0}), "c"
        )


def spectral_misfit_and_modulation(noise: np.ndarray) -> tuple[float, float]:
    """How far a noise is from any power law (RMS dB residual of a log-log fit of its
    spectrum, 100 Hz-6 kHz) and how unsteady it is (SD of its 50 ms frame levels, dB)."""
    frequencies, power = scipy.signal.welch(noise, RATE, nperseg=512)
    used = (frequencies >= 100) & (frequencies <= 6000)
    power_db = 10 * np.log10(power[used] + 1e-12 * power.max())
    fit = np.polyval(
        np.polyfit(np.log10(frequencies[used]), power_db, 1), np.log10(frequencies[used])
    )
    frames = noise[: len(noise) // 800 * 800].reshape(-1, 800).astype(np.float64)
    levels = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12 * np.mean(noise**2))
    return float(np.std(power_db - fit)), float(np.std(levels))


def test_shifted_noise_kinds_are_none_of_the_training_kinds() -> None:
    """Training adds noise files, power-law (colored) noise and other voices; every shifted
    kind is far from a power law (tonal, band-limited) or far from steady (clicks, gusts),
    where colored noise is neither."""
    assert set(SHIFTED_NOISES.names()).isdisjoint(WAVEFORM_SECTIONS)
    assert len(SHIFTED_NOISES.names()) >= 4
    for exponent in (-2.0, -1.0, 0.0, 1.0, 2.0):
        for seed in range(3):
            noise = colored_noise(RATE, RATE, exponent, rng=np.random.default_rng(seed))
            misfit, modulation = spectral_misfit_and_modulation(noise)
            assert misfit < 1.5 and modulation < 3.0, (exponent, misfit, modulation)
    for kind in SHIFTED_NOISES.names():
        for seed in range(10):
            noise = SHIFTED_NOISES.get(kind)(RATE, RATE, np.random.default_rng(seed))
            assert noise.shape == (RATE,) and noise.dtype == np.float32
            assert np.isfinite(noise).all() and rms(noise) > 0
            misfit, modulation = spectral_misfit_and_modulation(noise)
            assert misfit > 3.0 or modulation > 5.0, (kind, seed, misfit, modulation)


def test_shifted_noise_kinds_handle_short_and_long_clips() -> None:
    for kind in SHIFTED_NOISES.names():
        for count in (1, 100, 5 * RATE):
            noise = SHIFTED_NOISES.get(kind)(count, RATE, np.random.default_rng(0))
            assert noise.shape == (count,) and np.isfinite(noise).all()


def test_shifted_rooms_and_channels() -> None:
    impulse = np.zeros(RATE, dtype=np.float32)
    impulse[1000] = 1.0
    rooms = ShiftedValidationConfig(noise_p=0.0, reverb_p=1.0, band_p=0.0)
    for index in range(5):
        out = shifted_condition(impulse, RATE, rooms, f"r{index}")
        assert rms(out[1000 + 800 : 1000 + 1600]) > 1e-3  # 50-100 ms on: a tail
        assert np.abs(out[:990]).max() < 1e-5  # nothing before the sound
    channels = ShiftedValidationConfig(noise_p=0.0, reverb_p=0.0, band_p=1.0)
    for index in range(10):
        high = shifted_condition(tone(7000.0), RATE, channels, f"b{index}")
        assert level_db(high) - level_db(tone(7000.0)) < -10.0
        speech_band = shifted_condition(tone(1000.0), RATE, channels, f"b{index}")
        assert level_db(speech_band) - level_db(tone(1000.0)) > -3.0
