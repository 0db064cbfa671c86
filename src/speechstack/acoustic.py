"""Acoustic functionals of whole clips (openSMILE) and their per-speaker standardisation.

What the ``acoustic`` model family learns from (``models/acoustic.py``): one vector per clip
of classic statistics (pitch, loudness, jitter/shimmer, spectral shape, MFCC functionals:
openSMILE's eGeMAPS, GeMAPS or ComParE sets), computed on the decoded clip as training and
prediction decode it. Extraction costs tens of milliseconds per clip, so a manifest's
features are cached in ``cache_dir`` under a key of the feature set and the decode cache's
key (paths, segments, sizes, times), and every fold and experiment reuses them; a first
extraction runs in one process per core (openSMILE is single-threaded), each clip's result
the same whichever process makes it.

Per-speaker standardisation is what makes these features hold on unseen speakers: each
speaker's clips are z-scored with that speaker's own mean and spread (never another
speaker's, and never a label), so what remains is how a clip differs from the speaker's
own baseline (raised pitch, louder, faster) rather than who is speaking. A clip whose
speaker is unknown (or alone) falls back to the training side's pooled statistics.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import signal
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from speechstack.artifacts import atomic_write_array, read_cached_array
from speechstack.data import ClipCondition, cache_key, load_clip
from speechstack.params.models import FeatureSet

FEATURES_VERSION = 1  # bump when extraction changes, so old cache files are not reused
CHUNK_CLIPS = 8  # clips per task of an extraction process: what a Ctrl-C waits for
MIN_SPEAKER_CLIPS = 2  # fewer clips than this: the speaker's spread is not estimated
EPSILON = 1e-6


class FeatureExtractor:
    """openSMILE functionals of one feature set (``process_signal`` on a float waveform)."""

    def __init__(self, feature_set: FeatureSet) -> None:
        import opensmile  # a heavy import (pandas, audformat): only where features are made

        self.feature_set = feature_set
        self._smile = opensmile.Smile(
            feature_set=getattr(opensmile.FeatureSet, feature_set),
            feature_level=opensmile.FeatureLevel.Functionals,
        )

    @property
    def names(self) -> list[str]:
        return list(self._smile.feature_names)

    def __call__(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray:
        """``(features,)`` float32 of one clip (a silent or empty clip gives finite zeros
        where openSMILE has no value)."""
        if waveform.shape[0] < sample_rate // 10:  # openSMILE needs a few frames
            waveform = np.pad(waveform, (0, sample_rate // 10 - waveform.shape[0]))
        values = self._smile.process_signal(waveform.astype(np.float32), sample_rate)
        return np.nan_to_num(values.to_numpy(dtype=np.float32)[0], nan=0.0, posinf=0.0, neginf=0.0)


_ROW_COLUMNS = ("fname", "path", "start", "duration", "gain_db")


def extraction_processes(parallel_folds: int | str) -> int:
    """Processes that extract features: ``train.parallel_folds`` (a ``features`` family
    trains its folds one after another, so its cores go to the first extraction instead);
    ``auto``: one per core."""
    return (os.cpu_count() or 1) if parallel_folds == "auto" else int(parallel_folds)


def clip_features(
    manifest: pl.DataFrame,
    feature_set: FeatureSet,
    sample_rate: int,
    max_samples: int,
    cache_dir: Path | None = None,
    progress: bool = False,
    condition: ClipCondition | None = None,
    condition_key: str | None = None,
    processes: int = 1,
) -> np.ndarray:
    """``(clips, features)`` float32: the functionals of every clip of ``manifest`` (each
    decoded as the store decodes it: up to ``max_samples``, centre-cropped, not padded,
    then passed through ``condition(waveform, fname)`` if given), from the cache when
    ``cache_dir`` holds them. A conditioned manifest is cached only under a
    ``condition_key`` that names everything the condition draws from. ``processes`` > 1
    extracts in that many forked processes (where the platform forks; the condition is
    inherited, never pickled), in order, with the same result as one process."""
    path = None
    if cache_dir is not None and (condition is None or condition_key is not None):
        key = cache_key(manifest, sample_rate, max_samples, variable_length=True)
        tag = "" if condition_key is None else f"-{condition_key}"
        path = Path(cache_dir) / f"acoustic-v{FEATURES_VERSION}-{feature_set}{tag}-{key}.npy"
        cached = read_cached_array(path, manifest.height)
        if cached is not None:
            return cached
    rows = list(manifest.select(_ROW_COLUMNS).iter_rows(named=True))
    chunks = [rows[start : start + CHUNK_CLIPS] for start in range(0, len(rows), CHUNK_CLIPS)]
    settings = (feature_set, sample_rate, max_samples, condition)
    pool = None
    if min(processes, len(chunks)) > 1 and "fork" in multiprocessing.get_all_start_methods():
        pool = ProcessPoolExecutor(
            min(processes, len(chunks)),
            mp_context=multiprocessing.get_context("fork"),
            initializer=_start_worker,
            initargs=settings,
        )
    try:
        batches = pool.map(_worker_chunk, chunks) if pool else map(_Extraction(*settings), chunks)
        results = []
        with tqdm(total=len(rows), desc=feature_set, disable=not progress, leave=False) as bar:
            for batch in batches:
                results.append(batch)
                bar.update(len(batch))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    features = np.concatenate(results)
    if path is not None:
        atomic_write_array(path, features)
    return features


class _Extraction:
    """The functionals of runs of manifest rows: one extractor, the decode settings and the
    condition."""

    def __init__(
        self,
        feature_set: FeatureSet,
        sample_rate: int,
        max_samples: int,
        condition: ClipCondition | None,
    ) -> None:
        self.extractor = FeatureExtractor(feature_set)
        self.sample_rate, self.max_samples, self.condition = sample_rate, max_samples, condition

    def __call__(self, rows: list[dict]) -> np.ndarray:
        """``(len(rows), features)``."""
        vectors = []
        for row in rows:
            waveform = load_clip(row, self.sample_rate, self.max_samples, variable_length=True)
            if self.condition is not None:
                waveform = self.condition(waveform, row["fname"])
            vectors.append(self.extractor(waveform, self.sample_rate))
        return np.stack(vectors)


_worker_extraction: _Extraction | None = None  # an extraction process's own, set at its start


def _start_worker(*settings: object) -> None:
    """Set up an extraction process; it leaves Ctrl-C to its parent, which stops the pool."""
    global _worker_extraction
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_extraction = _Extraction(*settings)  # type: ignore[arg-type]


def _worker_chunk(rows: list[dict]) -> np.ndarray:
    assert _worker_extraction is not None, "_start_worker first"
    return _worker_extraction(rows)


class AugmentedCopy:
    """A training clip as one augmented copy hears it: ``transform`` (the task's training
    waveform augmentation) drawn from generators seeded by ``(seed, copy, fname)``, so a
    clip's copy is the same whatever the order or process, and cacheable."""

    def __init__(self, transform: Callable[[np.ndarray, int], np.ndarray], sample_rate: int,
                 seed: int, copy: int) -> None:  # fmt: skip
        self.transform, self.sample_rate, self.seed, self.copy = transform, sample_rate, seed, copy

    def __call__(self, waveform: np.ndarray, fname: str) -> np.ndarray:
        clip_seed = zlib.crc32(f"{self.seed}:{self.copy}:{fname}".encode())
        random.seed(clip_seed)
        np.random.seed(clip_seed)
        return self.transform(waveform, self.sample_rate)


def augmented_key(augment_json: str, noise_files: Sequence[Path], seed: int, copy: int) -> str:
    """The cache tag of one augmented copy: a hash of what its transforms draw from."""
    digest = hashlib.sha256(f"{augment_json}|{seed}|{copy}".encode())
    for path in noise_files:
        stat = Path(path).stat()
        digest.update(f"|{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"aug{copy}-{digest.hexdigest()[:12]}"


class Standardiser:
    """Pooled statistics of the training side (the fallback for clips of an unknown or
    lone speaker) and ``transform``, which z-scores each speaker's clips with their own."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, by_speaker: bool) -> None:
        self.mean, self.std, self.by_speaker = mean, std, by_speaker

    @classmethod
    def fit(cls, features: np.ndarray, by_speaker: bool) -> Standardiser:
        return cls(features.mean(axis=0), features.std(axis=0) + EPSILON, by_speaker)

    def transform(self, features: np.ndarray, speakers: Sequence[str | None]) -> np.ndarray:
        """z-scores ``(clips, features)``: per speaker (by_speaker, for every speaker with at
        least ``MIN_SPEAKER_CLIPS`` clips among ``features``), else with the pooled
        statistics. Only the clips passed in are used: a speaker is standardised with its
        own clips of this call, never with another's."""
        out = (features - self.mean) / self.std
        if not self.by_speaker:
            return out.astype(np.float32)
        speakers = np.asarray([s if s is not None else "" for s in speakers], dtype=object)
        if speakers.shape[0] != features.shape[0]:
            raise ValueError(f"{speakers.shape[0]} speakers for {features.shape[0]} clips")
        for speaker in np.unique(speakers):
            rows = np.flatnonzero(speakers == speaker)
            if speaker == "" or rows.size < MIN_SPEAKER_CLIPS:
                continue
            own = features[rows]
            out[rows] = (own - own.mean(axis=0)) / (own.std(axis=0) + self.std * 0.1)
        return out.astype(np.float32)

    def state(self) -> dict[str, object]:
        return {"mean": self.mean, "std": self.std, "by_speaker": self.by_speaker}
