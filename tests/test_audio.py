"""speechstack.audio: decoding any WAV to mono float32 at 16 kHz, fit_length, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speechstack.audio import AudioError, fit_length, read_audio

RATE = 16_000


def ramp(samples: int = 1000) -> np.ndarray:
    """A full-scale test signal from -1 to just under +1 (exactly representable ends)."""
    return np.linspace(-1.0, 0.99, samples)


def sine(frequency: float, rate: int, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * frequency * np.arange(round(rate * seconds)) / rate)


def peak_frequency(waveform: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(len(waveform))))
    return float(np.fft.rfftfreq(len(waveform), 1 / rate)[spectrum.argmax()])


# ---------------------------------------------------------------- sample formats


@pytest.mark.parametrize(
    ("subtype", "step"),
    [
        ("PCM_U8", 2.0**-7),
        ("PCM_16", 2.0**-15),
        ("PCM_24", 2.0**-23),
        ("PCM_32", 1e-6),  # float32 precision, not the 2**-31 step
        ("FLOAT", 1e-7),
    ],
)
def test_every_sample_format_decodes_to_float32_in_unit_range(
    tmp_path: Path, write_wav, subtype: str, step: float
) -> None:
    original = ramp()
    path = write_wav(tmp_path / f"{subtype}.wav", original, RATE, subtype)
    audio = read_audio(path, RATE)
    assert audio.dtype == np.float32 and audio.shape == original.shape
    assert audio.min() >= -1.0 and audio.max() <= 1.0
    # One quantisation step of the format (plus rounding), never an offset or a wrong scale.
    np.testing.assert_allclose(audio, original, rtol=0, atol=step * 1.01)
    assert audio.min() < -0.99 and audio.max() > 0.98


def test_unsigned_8_bit_silence_decodes_to_zero_not_to_an_offset(tmp_path: Path, write_wav) -> None:
    path = write_wav(tmp_path / "u8.wav", np.zeros(800), RATE, "PCM_U8")
    assert np.all(read_audio(path, RATE) == 0.0)


def test_stereo_is_downmixed_to_the_mean_of_the_channels(tmp_path: Path, write_wav) -> None:
    left = sine(440, RATE, 0.25)
    right = -0.5 * sine(440, RATE, 0.25) + 0.25
    path = write_wav(tmp_path / "stereo.wav", np.stack([left, right], axis=1), RATE, "FLOAT")
    audio = read_audio(path, RATE)
    assert audio.ndim == 1 and audio.shape == left.shape
    np.testing.assert_allclose(audio, (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize(("native_rate", "frequency"), [(44_100, 440.0), (8_000, 1_000.0)])
def test_other_rates_are_resampled_to_16khz_keeping_length_and_pitch(
    tmp_path: Path, write_wav, native_rate: int, frequency: float
) -> None:
    path = write_wav(tmp_path / "sine.wav", sine(frequency, native_rate), native_rate, "PCM_16")
    audio = read_audio(path, RATE)
    assert audio.dtype == np.float32
    assert abs(len(audio) - RATE) <= 1  # 1 s stays 1 s
    assert abs(peak_frequency(audio, RATE) - frequency) <= 2.0  # FFT bin = 1 Hz
    assert 0.45 < np.abs(audio[100:-100]).max() < 0.55  # amplitude kept


# ---------------------------------------------------------------- segments


def test_start_and_duration_read_a_segment_in_the_files_own_time(tmp_path: Path, write_wav) -> None:
    signal = np.random.default_rng(0).uniform(-0.9, 0.9, 3 * RATE)
    path = write_wav(tmp_path / "long.wav", signal, RATE, "FLOAT")
    audio = read_audio(path, RATE, start_seconds=1.25, duration_seconds=0.5)
    np.testing.assert_allclose(audio, signal[20_000:28_000], atol=1e-7)
    tail = read_audio(path, RATE, start_seconds=2.5)
    np.testing.assert_allclose(tail, signal[40_000:], atol=1e-7)


def test_segment_of_a_resampled_file_is_in_seconds(tmp_path: Path, write_wav) -> None:
    # 8 kHz file: 0 for the first second, then a 1 kHz tone for a second.
    signal = np.concatenate([np.zeros(8_000), sine(1_000, 8_000)])
    path = write_wav(tmp_path / "8k.wav", signal, 8_000, "FLOAT")
    segment = read_audio(path, RATE, start_seconds=1.0, duration_seconds=0.5)
    assert abs(len(segment) - 8_000) <= 1  # 0.5 s at 16 kHz
    rms = float(np.sqrt(np.mean(segment[200:-200] ** 2)))
    assert 0.3 < rms < 0.4  # the tone (0.5 / sqrt 2), not the silent first second
    assert abs(peak_frequency(segment, RATE) - 1_000) <= 4
    silent = read_audio(path, RATE, start_seconds=0.0, duration_seconds=0.5)
    assert np.abs(silent[:-200]).max() < 0.01


def test_segment_past_the_end_is_an_error_naming_the_file(tmp_path: Path, write_wav) -> None:
    path = write_wav(tmp_path / "short.wav", sine(440, RATE), RATE, "PCM_16")
    with pytest.raises(AudioError, match=r"short\.wav"):
        read_audio(path, RATE, start_seconds=5.0, duration_seconds=1.0)


# ---------------------------------------------------------------- fit_length


def test_fit_length_crops_the_centre_without_rng() -> None:
    np.testing.assert_array_equal(fit_length(np.arange(20.0), 10), np.arange(5.0, 15.0))


def test_fit_length_pads_symmetrically_with_zeros_without_rng() -> None:
    padded = fit_length(np.arange(1.0, 5.0), 10)
    np.testing.assert_array_equal(padded, [0, 0, 0, 1, 2, 3, 4, 0, 0, 0])


def test_fit_length_keeps_an_exact_length_clip() -> None:
    clip = np.arange(10.0)
    np.testing.assert_array_equal(fit_length(clip, 10), clip)
    np.testing.assert_array_equal(fit_length(clip, 10, np.random.default_rng(0)), clip)


def test_fit_length_random_crop_is_a_window_at_varying_offsets() -> None:
    clip = np.arange(100.0)
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(50):
        cropped = fit_length(clip, 30, rng)
        assert cropped.shape == (30,)
        np.testing.assert_array_equal(np.diff(cropped), np.ones(29))  # contiguous window
        starts.add(int(cropped[0]))
    assert len(starts) > 10 and min(starts) >= 0 and max(starts) <= 70


def test_fit_length_random_pad_keeps_the_clip_at_varying_offsets() -> None:
    clip = np.arange(1.0, 11.0)
    rng = np.random.default_rng(0)
    offsets = set()
    for _ in range(50):
        padded = fit_length(clip, 40, rng)
        assert padded.shape == (40,)
        offset = int(np.flatnonzero(padded)[0])
        np.testing.assert_array_equal(padded[offset : offset + 10], clip)
        assert np.count_nonzero(padded) == 10
        offsets.add(offset)
    assert len(offsets) > 10 and max(offsets) <= 30


def test_fit_length_is_deterministic_for_a_seeded_rng() -> None:
    long_clip, short_clip = np.arange(100.0), np.arange(1.0, 11.0)

    def draws(seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        return [fit_length(clip, 40, rng) for clip in (long_clip, short_clip) * 5]

    first, again, other = draws(7), draws(7), draws(8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


# ---------------------------------------------------------------- bad files


def pcm16_bytes(tmp_path: Path, write_wav) -> bytes:
    path = write_wav(tmp_path / "whole.wav", sine(440, RATE), RATE, "PCM_16")
    return path.read_bytes()


def test_missing_file_is_an_audio_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "missing.wav"
    with pytest.raises(AudioError, match=r"missing\.wav") as error:
        read_audio(path, RATE)
    assert str(path) in str(error.value)


def test_empty_file_is_an_audio_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError) as error:
        read_audio(path, RATE)
    assert str(path) in str(error.value) and "empty" in str(error.value)


def test_corrupt_file_is_an_audio_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.wav"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError) as error:
        read_audio(path, RATE)
    assert str(path) in str(error.value)


def test_header_only_wav_is_an_audio_error_naming_it(tmp_path: Path, write_wav) -> None:
    path = tmp_path / "header_only.wav"
    path.write_bytes(pcm16_bytes(tmp_path, write_wav)[:44])  # RIFF + fmt + data header
    with pytest.raises(AudioError) as error:
        read_audio(path, RATE)
    assert str(path) in str(error.value)


def test_header_cut_inside_the_chunks_is_an_audio_error(tmp_path: Path, write_wav) -> None:
    path = tmp_path / "cut_header.wav"
    path.write_bytes(pcm16_bytes(tmp_path, write_wav)[:30])
    with pytest.raises(AudioError) as error:
        read_audio(path, RATE)
    assert str(path) in str(error.value)


def test_truncated_wav_is_an_audio_error_naming_it(tmp_path: Path, write_wav) -> None:
    """The header declares 1 s of samples but the file holds half of them (an interrupted
    download or copy). Returning the half silently would be a wrong answer."""
    whole = pcm16_bytes(tmp_path, write_wav)
    path = tmp_path / "truncated.wav"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(AudioError) as error:
        read_audio(path, RATE)
    assert str(path) in str(error.value)


def test_non_finite_float_samples_are_an_audio_error(tmp_path: Path, write_wav) -> None:
    signal = sine(440, RATE, 0.1)
    signal[10] = np.nan
    path = write_wav(tmp_path / "nan.wav", signal, RATE, "FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav"):
        read_audio(path, RATE)
