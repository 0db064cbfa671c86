"""Per-speaker level normalisation of the audio the networks hear (``audio.speaker_level``).

With the log-mel front-end's ``features.norm: none`` a network sees each clip's level, one
of the strongest emotion cues, but also the speaker's (and the microphone's) own baseline,
which says nothing about emotion and differs on unseen actors. This moves every speaker's
mean active level to the same reference: each clip's ``gain_db`` (which decoding applies)
gets ``reference - mean level of its speaker's clips``, so a shouted clip stays louder
than the same actor's calm one, while a loud actor is no louder than a quiet one.

A speaker's statistics come from its own clips only (training speakers from theirs, a
test or prediction speaker from its own clips in that set, never another speaker's), so
nothing crosses folds. A clip whose speaker is unknown (or alone) is brought to the
reference itself: per-clip, its level cue is lost rather than guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from speechstack.artifacts import atomic_write_array, read_cached_array
from speechstack.config import Config
from speechstack.data import cache_key, load_clip

REFERENCE_DB = -26.0  # dBFS of a speaker's mean active level after normalisation
ACTIVE_RANGE_DB = 30.0  # frames within this of the clip's loudest count as speech
FRAME_SECONDS = 0.02
SILENT_DB = -100.0


def active_level_db(waveform: np.ndarray, sample_rate: int) -> float:
    """Mean power (dBFS) of the frames within ``ACTIVE_RANGE_DB`` of the clip's loudest
    20 ms frame: the level of the speech, not of the pauses around it."""
    frame = max(1, int(sample_rate * FRAME_SECONDS))
    count = waveform.shape[0] // frame
    if count == 0:
        return SILENT_DB
    power = np.square(waveform[: count * frame].astype(np.float64)).reshape(count, frame)
    frames_db = 10 * np.log10(power.mean(axis=1) + 1e-12)
    active = frames_db >= frames_db.max() - ACTIVE_RANGE_DB
    return float(max(SILENT_DB, 10 * np.log10(np.power(10, frames_db[active] / 10).mean())))


def clip_levels(
    manifest: pl.DataFrame, sample_rate: int, max_samples: int, cache_dir: Path | None
) -> np.ndarray:
    """``active_level_db`` of every clip as decoded (its current ``gain_db`` included),
    cached in ``cache_dir`` under the decode cache's key."""
    path = None
    if cache_dir is not None:
        key = cache_key(manifest, sample_rate, max_samples, variable_length=True)
        path = Path(cache_dir) / f"levels-{key}.npy"
        cached = read_cached_array(path, manifest.height)
        if cached is not None:
            return cached
    rows = manifest.select("path", "start", "duration", "gain_db").iter_rows(named=True)
    levels = np.array(
        [
            active_level_db(load_clip(row, sample_rate, max_samples, True), sample_rate)
            for row in rows
        ]
    )
    if path is not None:
        atomic_write_array(path, levels)
    return levels


def speaker_gains(levels: np.ndarray, speakers: Sequence[str | None]) -> np.ndarray:
    """Gain (dB) per clip that moves its speaker's mean active level to ``REFERENCE_DB``;
    a clip of an unknown or lone speaker is moved there itself."""
    gains = REFERENCE_DB - np.asarray(levels, dtype=np.float64)
    names = np.asarray([s if s is not None else "" for s in speakers], dtype=object)
    for speaker in np.unique(names):
        rows = np.flatnonzero(names == speaker)
        if speaker != "" and rows.size >= 2:
            gains[rows] = REFERENCE_DB - levels[rows].mean()
    return gains


def with_speaker_levels(
    manifest: pl.DataFrame,
    speakers: Sequence[str | None],
    sample_rate: int,
    max_samples: int,
    cache_dir: Path | None,
) -> pl.DataFrame:
    """``manifest`` with ``gain_db`` raised by ``speaker_gains`` (see the module)."""
    if manifest.is_empty():
        return manifest
    levels = clip_levels(manifest, sample_rate, max_samples, cache_dir)
    gains = speaker_gains(levels, speakers)
    return manifest.with_columns(
        (pl.col("gain_db").fill_null(0.0) + pl.Series(gains)).alias("gain_db")
    )


def levelled(
    config: Config, manifest: pl.DataFrame, speakers: Sequence[str | None]
) -> pl.DataFrame:
    """``manifest`` as the run hears it: ``with_speaker_levels`` when
    ``audio.speaker_level`` is on, else unchanged."""
    audio = config.audio
    if not audio.speaker_level:
        return manifest
    return with_speaker_levels(
        manifest, speakers, audio.sample_rate, audio.max_samples, config.cache_dir
    )
