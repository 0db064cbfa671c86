"""Test-set shifts (speakers, rooms, channels, noises) and the shifted speech-commands test set."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechstack.synth import generate_speech_commands, shift
from speechstack.synth import speech_commands as sc
from speechstack.synth.common import rms
from speechstack.synth.espeak import Espeak, english_voices

SR = 16_000
TINY = {
    "speakers": 4,
    "test_speakers": 2,
    "test_clips": 20,
    "noise_seconds": 2.0,
    "progress": False,
}


def harmonic_tone(f0: float, seconds: float = 1.0, sample_rate: int = SR) -> np.ndarray:
    time = np.arange(round(seconds * sample_rate)) / sample_rate
    return sum(np.sin(2 * np.pi * k * f0 * time) / k for k in range(1, 6)) / 3


def word_like(rng: np.random.Generator) -> np.ndarray:
    """1 s: 0.3 s of silence, a 0.4 s modulated harmonic 'word', 0.3 s of silence."""
    clip = np.zeros(SR)
    word = harmonic_tone(rng.uniform(100, 250), 0.4) * np.hanning(round(0.4 * SR))
    clip[round(0.3 * SR) : round(0.7 * SR)] = 0.5 * word
    return clip


def gain_db(process, frequency: float, sample_rate: int = SR) -> float:
    """Steady-state gain of `process` on a sine (the first half second is its transient)."""
    time = np.arange(sample_rate) / sample_rate
    tone = 0.5 * np.sin(2 * np.pi * frequency * time)
    out = process(tone)
    half = sample_rate // 2
    return 20 * np.log10(rms(out[half:]) / rms(tone[half:]))


def band_energy(noise: np.ndarray, low: float, high: float, sample_rate: int = SR) -> float:
    power = np.abs(np.fft.rfft(noise)) ** 2
    frequencies = np.fft.rfftfreq(len(noise), 1 / sample_rate)
    return float(power[(frequencies >= low) & (frequencies < high)].sum() / power.sum())


@pytest.fixture(scope="module")
def test_bank() -> dict[str, np.ndarray]:
    return sc.make_test_noise_bank(0, 2.0, Espeak())


# ---------------------------------------------------------------- mixing


@pytest.mark.parametrize("snr", [0.0, 7.5, 20.0])
def test_mix_at_snr_gives_the_requested_snr(snr: float) -> None:
    rng = np.random.default_rng(0)
    speech = word_like(rng)
    noise = 0.3 * rng.standard_normal(SR)
    mixed = shift.mix_at_snr(speech, noise, snr)
    added = mixed - speech
    active = speech[np.abs(speech) > 0.01 * np.abs(speech).max()]  # the word, not the silence
    assert 20 * np.log10(rms(active) / rms(added)) == pytest.approx(snr, abs=1e-6)
    assert shift.snr_db(speech, added) == pytest.approx(snr, abs=1e-6)
    assert np.corrcoef(added, noise)[0, 1] == pytest.approx(1.0)


def test_mixing_rejects_lengths_that_differ_and_keeps_silent_noise() -> None:
    with pytest.raises(ValueError, match="lengths differ"):
        shift.mix_at_snr(np.ones(10), np.ones(11), 10.0)
    speech = word_like(np.random.default_rng(1))
    assert np.array_equal(shift.mix_at_snr(speech, np.zeros(SR), 5.0), speech)


def test_test_noise_mix_stays_in_the_snr_range(test_bank: dict[str, np.ndarray]) -> None:
    # One or two bank sounds share the noise power, so the total SNR is the one asked for.
    clip = word_like(np.random.default_rng(2))
    for draw in range(40):
        rng = np.random.default_rng(draw)
        wanted = rng.uniform(*sc._TEST_SNR_DB)
        noise = sc._noise_at_snr(clip, test_bank, rng, wanted, kinds=1 + draw % 2)
        assert shift.snr_db(clip, noise) == pytest.approx(wanted, abs=1.5)
        assert sc._TEST_SNR_DB[0] - 1.5 <= shift.snr_db(clip, noise) <= sc._TEST_SNR_DB[1] + 1.5


# ---------------------------------------------------------------- rooms


@pytest.mark.parametrize("rt60", [0.2, 0.5, 0.9])
def test_room_impulse_response_decays_at_the_requested_rt60(rt60: float) -> None:
    room = shift.Room(rt60_s=rt60, predelay_s=0.01, direct_to_reverb_db=3.0, tail_lowpass_hz=6000)
    response = shift.room_impulse_response(room, np.random.default_rng(3), SR)
    predelay = round(0.01 * SR)
    assert len(response) == predelay + round(rt60 * SR)
    assert np.sum(response**2) == pytest.approx(1.0)
    assert np.argmax(np.abs(response)) == 0 and not np.any(response[1:predelay])
    assert response[0] ** 2 / np.sum(response[1:] ** 2) == pytest.approx(10**0.3)
    assert shift.estimate_rt60(response, SR) == pytest.approx(rt60, rel=0.15)


def test_random_rooms_span_the_rt60_range_and_reverb_smears() -> None:
    rng = np.random.default_rng(4)
    rt60s = [shift.random_room(rng).rt60_s for _ in range(300)]
    assert 0.2 <= min(rt60s) < 0.25 and 0.85 < max(rt60s) <= 0.9
    click = np.zeros(SR)
    click[1600] = 1.0
    wet = shift.reverberate(click, shift.random_room(rng, rt60_range=(0.6, 0.6)), rng, SR)
    assert len(wet) == SR and np.max(np.abs(wet[:1600])) < 1e-12  # causal
    assert rms(wet[1600 + round(0.1 * SR) : 1600 + round(0.3 * SR)]) > 1e-4  # the tail


# ---------------------------------------------------------------- channels


def test_telephone_band_pass_attenuates_outside_the_band() -> None:
    def telephone(x: np.ndarray) -> np.ndarray:
        return shift.band_limit(x, SR, 300.0, 3400.0)

    assert gain_db(telephone, 1000.0) > -1.0
    assert gain_db(telephone, 80.0) < -25.0
    assert gain_db(telephone, 6000.0) < -20.0


def test_low_pass_channel_attenuates_above_its_corner() -> None:
    def low_pass(x: np.ndarray) -> np.ndarray:
        return shift.band_limit(x, SR, None, 3000.0)

    assert gain_db(low_pass, 500.0) > -1.0
    assert gain_db(low_pass, 6500.0) < -30.0
    # No corner (or one at Nyquist) leaves the signal alone.
    tone = harmonic_tone(200.0)
    assert np.array_equal(shift.band_limit(tone, SR, None, 8000.0), tone)


def test_random_channels_are_telephone_or_low_pass() -> None:
    rng = np.random.default_rng(5)
    channels = [shift.random_channel(rng) for _ in range(300)]
    telephone = [c for c in channels if c.low_hz is not None]
    assert all((c.low_hz, c.high_hz) == (300.0, 3400.0) for c in telephone)
    assert all(
        2000 <= c.high_hz <= 5000 and c.mu_law_bits is None for c in channels if c.low_hz is None
    )  # type: ignore[operator]
    assert 0.35 < len(telephone) / len(channels) < 0.65
    assert any(c.mu_law_bits for c in channels) and any(c.drive for c in channels)


def test_mu_law_and_soft_clipping() -> None:
    x = 0.8 * np.sin(np.linspace(0, 40 * np.pi, SR))
    coded = shift.mu_law_quantise(x, bits=8)
    assert len(np.unique(coded)) <= 256
    assert rms(coded - x) / rms(x) < 0.05
    clipped = shift.soft_clip(x, 4.0)
    assert np.max(np.abs(clipped)) <= 0.25
    quiet = 0.001 * x
    assert np.allclose(shift.soft_clip(quiet, 4.0), quiet, rtol=1e-4)
    out = shift.apply_channel(x, shift.Channel(300.0, 3400.0, 8, 3.0), SR)
    assert len(out) == len(x) and np.all(np.isfinite(out))


# ---------------------------------------------------------------- speakers


def test_vocal_tract_warp_moves_frequencies_and_length() -> None:
    tone = harmonic_tone(200.0)
    for factor in (0.8, 1.2):
        warped = shift.warp_vocal_tract(tone, factor)
        assert len(warped) == pytest.approx(len(tone) / factor, rel=0.01)
        spectrum = np.abs(np.fft.rfft(warped))
        peak_hz = np.argmax(spectrum) * SR / len(warped)
        assert peak_hz == pytest.approx(200.0 * factor, rel=0.02)


def test_random_voice_shifts_are_strong_and_in_range() -> None:
    rng = np.random.default_rng(6)
    shifts = [shift.random_voice_shift(rng) for _ in range(400)]
    warps = np.array([s.warp for s in shifts])
    assert np.all((warps >= 0.8 - 1e-9) & (warps <= 1.25 + 1e-9))
    assert np.all(np.abs(np.log(warps)) >= np.log(1.06) - 1e-9)  # never a near-identity warp
    assert 0.4 < np.mean(warps > 1) < 0.6
    assert all(2 <= len(s.eq) <= 3 for s in shifts)
    assert 0.3 < np.mean([s.breath_db is not None for s in shifts]) < 0.7


def test_spectral_shape_tilts_and_bumps() -> None:
    frequencies = np.array([250.0, 1000.0, 4000.0])
    assert shift.spectral_gain_db(frequencies, 3.0) == pytest.approx([-6.0, 0.0, 6.0])
    assert shift.spectral_gain_db(np.array([2000.0]), 0.0, [(2000.0, 8.0, 0.5)])[0] == 8.0
    low, high = harmonic_tone(250.0), np.sin(2 * np.pi * 4000 * np.arange(SR) / SR)
    bright = shift.shape_spectrum(low + high, SR, 3.0)
    ratio_before = band_energy(low + high, 3000, 5000) / band_energy(low + high, 0, 1500)
    ratio_after = band_energy(bright, 3000, 5000) / band_energy(bright, 0, 1500)
    assert 10 * np.log10(ratio_after / ratio_before) > 9.0  # +6 dB at 4 kHz, -6 dB at 250 Hz


def test_shift_voice_is_deterministic_and_breath_follows_the_speech() -> None:
    voice = shift.random_voice_shift(np.random.default_rng(7))
    speech = word_like(np.random.default_rng(8))
    one = shift.shift_voice(speech, voice, np.random.default_rng(9), SR)
    two = shift.shift_voice(speech, voice, np.random.default_rng(9), SR)
    assert np.array_equal(one, two) and np.all(np.isfinite(one))
    assert len(one) == pytest.approx(len(speech) / voice.warp, rel=0.01)
    assert len(shift.add_tremor(speech, np.random.default_rng(0), SR, 0.02, 5.0)) == len(speech)
    breathy = shift.add_breath(speech, np.random.default_rng(0), SR, -15.0)
    assert not np.any(breathy[: round(0.3 * SR)])  # no breath before the word starts
    assert shift.snr_db(speech, breathy - speech) == pytest.approx(15.0, abs=0.01)


# ---------------------------------------------------------------- noises


def test_test_noise_kinds_are_not_the_training_kinds(test_bank: dict[str, np.ndarray]) -> None:
    assert set(test_bank) == set(sc.TEST_NOISE_KINDS) == set(shift.NOISE_KINDS)
    assert not set(test_bank) & set(sc._BACKGROUND_FILES)
    train_files = {Path(name).stem for name, _ in sc._BACKGROUND_FILES.values()}
    assert not {kind for kind in test_bank if any(kind in f for f in train_files)}
    for kind, sound in test_bank.items():
        assert len(sound) == 2 * SR and rms(sound) == pytest.approx(1.0), kind


@pytest.mark.parametrize("kind", sorted(shift.PROCEDURAL_NOISES))
@pytest.mark.parametrize("sample_rate", [16_000, 48_000])
def test_procedural_noises_are_unit_rms_and_deterministic(kind: str, sample_rate: int) -> None:
    make = shift.PROCEDURAL_NOISES[kind]
    one = make(np.random.default_rng(10), 3 * sample_rate, sample_rate)
    two = make(np.random.default_rng(10), 3 * sample_rate, sample_rate)
    other = make(np.random.default_rng(11), 3 * sample_rate, sample_rate)
    assert np.array_equal(one, two) and not np.array_equal(one, other)
    assert len(one) == 3 * sample_rate and np.all(np.isfinite(one))
    assert rms(one) == pytest.approx(1.0)


def test_noise_kinds_have_their_character() -> None:
    rng = np.random.default_rng(12)
    make = {kind: maker(rng, 4 * SR, SR) for kind, maker in shift.PROCEDURAL_NOISES.items()}
    assert band_energy(make["traffic"], 0, 250) > 0.9  # rumble below 250 Hz
    assert band_energy(make["wind"], 0, 1000) > 0.9
    assert band_energy(make["blue"], 4000, 8000) > 0.6  # power rising with frequency
    assert band_energy(make["violet"], 4000, 8000) > band_energy(make["blue"], 4000, 8000)
    clicks = make["keyboard"]
    assert np.max(np.abs(clicks)) / rms(clicks) > 10  # impulsive
    # Music is tonal: most of its power sits in a few narrow spectral lines.
    power = np.sort(np.abs(np.fft.rfft(make["music"])) ** 2)[::-1]
    assert power[: len(power) // 100].sum() / power.sum() > 0.5


def test_noise_bank_kinds_are_independent_and_checked() -> None:
    both = shift.noise_bank(np.random.default_rng(13), SR, SR, ["music", "wind"])
    alone = shift.noise_bank(np.random.default_rng(13), SR, SR, ["wind"])
    assert np.array_equal(both["wind"], alone["wind"])
    with pytest.raises(ValueError, match="unknown noise kinds"):
        shift.noise_bank(np.random.default_rng(0), SR, SR, ["white"])
    with pytest.raises(ValueError, match="crowd"):
        shift.noise_bank(np.random.default_rng(0), SR, SR, [shift.CROWD])


def test_crowd_babble_is_deterministic() -> None:
    def crowd(seed: int) -> np.ndarray:
        return shift.crowd_babble(
            np.random.default_rng(seed),
            SR // 2,
            SR,
            Espeak(),
            accents=("en-us", "en"),
            variants=("klatt", "klatt3"),
            vocabulary=("pencil", "river", "yellow"),
            talkers=(2, 3),
        )

    first = crowd(14)
    Espeak().speak("in between", voice="en-029", variant="m3", rate=250, pitch=20, pitch_range=80)
    assert np.array_equal(first, crowd(14))
    assert rms(first) == pytest.approx(1.0) and len(first) == SR // 2


# ---------------------------------------------------------------- the shifted test set


@pytest.mark.parametrize("seed", [0, 1])
def test_klatt_and_held_out_variants_are_test_only(seed: int) -> None:
    pools = sc.voice_pools(seed)
    klatt = {v for v in english_voices().variants if v.startswith("klatt")}
    assert set(pools.klatt) == klatt and len(klatt) >= 4
    assert not set(pools.train) & (set(pools.test) | klatt)
    assert pools.test and pools.train
    train, test = sc.make_speakers(seed, 60, 16)
    assert {s.variant for s in train} <= set(pools.train)
    assert {s.variant for s in test} <= set(pools.test) | klatt
    assert sum(s.variant in klatt for s in test) == 8  # every other test speaker
    assert all(s.shift is not None and 0.8 <= s.shift.warp <= 1.25 for s in test)


def test_test_plan_shares_and_absent_words() -> None:
    plan = sc.plan_test_clips(0, 600, 16)
    labels = [clip.label for clip in plan]
    assert labels.count("silence") == 60 and labels.count("unknown") == 120
    assert all(labels.count(command) == 42 for command in sc.COMMANDS)
    absent = [clip.word for clip in plan if clip.word in sc.ABSENT_WORDS]
    assert len(absent) == 72 and set(absent) == set(sc.ABSENT_WORDS)  # all of them, 2-3 times
    assert all(clip.label == "unknown" for clip in plan if clip.word in sc.ABSENT_WORDS)
    assert {clip.speaker for clip in plan if clip.word} == set(range(16))
    assert all(clip.speaker is None for clip in plan if clip.word is None)


def test_absent_words_are_never_train_words() -> None:
    absent = set(sc.ABSENT_WORDS)
    assert len(absent) == len(sc.ABSENT_WORDS) >= 30
    assert not absent & set(sc.WORDS)
    assert not absent & {w.lower() for w in sc._BABBLE_VOCABULARY}
    assert not absent & set(sc._CROWD_VOCABULARY)
    assert not set(sc._CROWD_VOCABULARY) & (set(sc.WORDS) | set(sc._BABBLE_VOCABULARY))


def test_shifted_clips_are_full_seconds_in_range(test_bank: dict[str, np.ndarray]) -> None:
    _, test = sc.make_speakers(0, 4, 2)
    espeak = Espeak()
    espeak.reset()
    for index in range(6):
        rng = np.random.default_rng([0, index])
        clip = sc._shifted_word_clip(espeak, test[index % 2], "stop", test_bank, rng, {})
        assert len(clip) == SR and np.all(np.isfinite(clip))
        assert 10 ** (-60 / 20) < np.max(np.abs(clip)) <= sc._TEST_MAX_PEAK + 1e-9
    levels = []
    for index in range(60):
        silence = sc._shifted_silence_clip(test_bank, np.random.default_rng([1, index]))
        assert len(silence) == SR and np.max(np.abs(silence)) <= sc._TEST_MAX_PEAK + 1e-9
        levels.append(20 * np.log10(rms(silence)))
    assert min(levels) < -60 and max(levels) > -25  # near digital silence to loud


def digests(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha1(path.read_bytes()).hexdigest() for path in folder.glob("*.wav")}


def test_shifted_test_set_is_deterministic_and_answered(tmp_path: Path) -> None:
    first = generate_speech_commands(tmp_path / "a", seed=3, **TINY)
    second = generate_speech_commands(tmp_path / "b", seed=3, **TINY)
    other = generate_speech_commands(tmp_path / "c", seed=4, **TINY)
    audio = digests(first / "test" / "audio")
    assert audio == digests(second / "test" / "audio")
    assert not set(audio.values()) & set(digests(other / "test" / "audio").values())
    with (first / "demo_solution.csv").open(newline="") as handle:
        solution = {row["fname"]: row["label"] for row in csv.DictReader(handle)}
    assert set(solution) == set(audio)
    plan = sc.plan_test_clips(3, TINY["test_clips"], TINY["test_speakers"])
    assert solution == {clip.fname: clip.label for clip in plan}
    for clip in plan:
        samples, rate = sf.read(first / "test" / "audio" / clip.fname)
        assert rate == SR and len(samples) == SR
