"""Per-speaker level normalisation (``audio.speaker_level``): the active level, the gains
per speaker, and the manifests that decoding then levels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speechstack.speakers import (
    REFERENCE_DB,
    active_level_db,
    clip_levels,
    speaker_gains,
    with_speaker_levels,
)
from speechstack.tasks import TEST_COLUMNS, manifest_frame

RATE = 16000


def tone(level: float, seconds: float = 0.5, pad: float = 0.0) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    clip = level * np.sin(2 * np.pi * 200 * t)
    silence = np.zeros(int(RATE * pad))
    return np.concatenate([silence, clip, silence]).astype(np.float32)


def test_active_level_is_the_speech_not_the_pauses() -> None:
    expected = 20 * np.log10(0.1 / np.sqrt(2))  # a sine's RMS
    assert active_level_db(tone(0.1), RATE) == pytest.approx(expected, abs=0.1)
    assert active_level_db(tone(0.1, pad=1.0), RATE) == pytest.approx(expected, abs=0.1)
    assert active_level_db(np.zeros(10, dtype=np.float32), RATE) == -100.0


def test_speaker_gains_keep_differences_within_a_speaker_only() -> None:
    levels = np.array([-20.0, -30.0, -40.0, -50.0, -33.0, -12.0])
    speakers = ["a", "a", "b", "b", None, "lone"]
    gains = speaker_gains(levels, speakers)
    after = levels + gains
    assert after[:2].mean() == pytest.approx(REFERENCE_DB)  # each speaker at the reference
    assert after[2:4].mean() == pytest.approx(REFERENCE_DB)
    assert after[0] - after[1] == pytest.approx(10.0)  # a's shout stays 10 dB above
    assert after[4] == after[5] == pytest.approx(REFERENCE_DB)  # unknown, lone: per clip
    # another speaker's clips never move a's
    moved = speaker_gains(np.array([-20.0, -30.0, -10.0, 0.0, -33.0, -12.0]), speakers)
    assert np.allclose(moved[:2], gains[:2])


def test_levelled_manifest_decodes_at_the_reference(tmp_path: Path, write_wav) -> None:
    clips = {"a1.wav": 0.5, "a2.wav": 0.05, "b1.wav": 0.01, "b2.wav": 0.02}
    paths = [write_wav(tmp_path / name, tone(level), RATE) for name, level in clips.items()]
    manifest = manifest_frame(
        {"fname": [p.name for p in paths], "path": [str(p) for p in paths]}, TEST_COLUMNS
    )
    speakers = ["a", "a", "b", "b"]
    levelled = with_speaker_levels(manifest, speakers, RATE, RATE, tmp_path / "cache")
    heard = clip_levels(levelled, RATE, RATE, None)
    assert heard[:2].mean() == pytest.approx(REFERENCE_DB, abs=0.1)
    assert heard[2:].mean() == pytest.approx(REFERENCE_DB, abs=0.1)
    assert heard[0] - heard[1] == pytest.approx(20.0, abs=0.1)  # 0.5 vs 0.05
    assert list((tmp_path / "cache").glob("levels-*.npy"))  # measured once, cached
