"""Clip datasets, waveform augmentation and loaders.

A training run decodes each clip once into memory (``WaveformStore``) instead of every
epoch; augmentation is drawn from a seeded generator per worker, never the clock.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, get_worker_info
from tqdm.auto import tqdm

from speechstack.artifacts import atomic_path, remove_orphans
from speechstack.audio import AudioError, fit_length, read_audio
from speechstack.config import AudioConfig, Config

WaveformTransform = Callable[[np.ndarray, int], np.ndarray]
ClipCondition = Callable[[np.ndarray, str], np.ndarray]  # (waveform, fname) -> waveform

log = logging.getLogger(__name__)


class SegmentSource:
    """Whole audio files decoded once per process (on first use), to cut fresh segments
    from: a silence clip of a noise file gets a new random offset in that file every epoch
    instead of the one window the manifest names."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._files: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_files": {}}  # a pickled copy decodes its own

    def fresh(self, row: dict, rng: np.random.Generator) -> np.ndarray:
        """``row['duration']`` seconds of ``row['path']`` from a random offset, with the
        row's gain; ``(samples,)`` float32."""
        path = row["path"]
        if path not in self._files:
            self._files[path] = read_audio(path, self.sample_rate)
        waveform = self._files[path]
        length = round(row["duration"] * self.sample_rate)
        start = int(rng.integers(0, max(1, waveform.shape[0] - length + 1)))
        segment = waveform[start : start + length]
        gain_db = row["gain_db"] or 0.0
        return segment * np.float32(10.0 ** (gain_db / 20.0)) if gain_db else segment.copy()


class SyntheticUnknown:
    """Training clips turned into non-words (``train.synthetic_unknown``): with chance
    ``p`` a clip is played backwards, or its first half is spliced to the second half of
    another training clip, and labelled ``target`` (the task's ``unknown`` class). Real
    tests hold words no training folder has; without a class of their own they can only
    land on a known word."""

    def __init__(self, p: float, target: int) -> None:
        self.p, self.target = p, target

    def __call__(
        self, waveform: np.ndarray, other: Callable[[], np.ndarray], rng: np.random.Generator
    ) -> np.ndarray | None:
        """The non-word made of ``waveform`` (``other()``: a random training clip), or
        None when this clip stays as it is."""
        if not rng.random() < self.p:
            return None
        if rng.random() < 0.5:
            return waveform[::-1].copy()
        second = other()
        half = waveform.shape[0] // 2
        cut = second.shape[0] // 2
        return np.concatenate([waveform[:half], second[cut:]]).astype(np.float32)


class QuotaSampler(Sampler[int]):
    """Per-epoch training order that shows every clip each epoch except those of the
    ``quota`` labels: of each, ``ratio`` x the mean clip count of the non-quota labels are
    drawn afresh every epoch, walking through a seeded permutation of all of them (then
    another), so every clip of a large label is seen before any is seen twice.

    ``set_epoch(epoch)`` picks the epoch; ``shard=(rank, world_size)`` gives each
    data-parallel rank every world_size-th index of the same order."""

    def __init__(
        self,
        labels: Sequence[str],
        quota: dict[str, float],
        seed: int,
        shard: tuple[int, int] | None = None,
    ) -> None:
        labels_array = np.asarray(labels)
        self.seed = seed
        self.epoch = 0
        self.shard = shard
        self.always = np.flatnonzero(~np.isin(labels_array, list(quota)))
        counts = [int((labels_array == label).sum()) for label in set(labels_array[self.always])]
        mean_other = float(np.mean(counts)) if counts else float(len(labels_array))
        self.pools: list[tuple[np.ndarray, int]] = []  # (rows of the label, clips per epoch)
        for label, ratio in sorted(quota.items()):
            rows = np.flatnonzero(labels_array == label)
            if len(rows):
                self.pools.append((rows, min(len(rows), max(1, round(ratio * mean_other)))))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """The shuffled dataset indices of ``epoch`` (before sharding)."""
        chosen = [self.always]
        for pool_index, (rows, per_epoch) in enumerate(self.pools):
            start = epoch * per_epoch
            cycle, offset = divmod(start, len(rows))
            stream = np.concatenate(
                [
                    np.random.default_rng([self.seed, pool_index, cycle + c]).permutation(rows)
                    for c in range(2)
                ]
            )
            chosen.append(stream[offset : offset + per_epoch])
        order = np.concatenate(chosen)
        return np.random.default_rng([self.seed, 1_000_003, epoch]).permutation(order)

    def __iter__(self) -> Iterator[int]:
        indices = self.epoch_indices(self.epoch)
        if self.shard is not None:
            rank, world_size = self.shard
            indices = indices[rank::world_size]
        return iter(indices.tolist())

    def __len__(self) -> int:
        total = len(self.always) + sum(per_epoch for _, per_epoch in self.pools)
        if self.shard is None:
            return total
        rank, world_size = self.shard
        return len(range(rank, total, world_size))


def decode_clip(row: dict, sample_rate: int) -> np.ndarray:
    """One manifest row -> float32 waveform at ``sample_rate`` (segment and gain applied)."""
    waveform = read_audio(
        row["path"],
        sample_rate,
        start_seconds=row["start"] or 0.0,
        duration_seconds=row["duration"],
    )
    gain_db = row["gain_db"] or 0.0
    if gain_db:
        waveform = waveform * np.float32(10.0 ** (gain_db / 20.0))
    return waveform


def load_clip(row: dict, sample_rate: int, max_samples: int, variable_length: bool) -> np.ndarray:
    """A decoded clip as the store keeps it: fitted to ``max_samples`` (one window: padded
    or centre-cropped) for fixed-length tasks; at most ``max_samples`` (centre-cropped,
    never padded) for variable-length ones."""
    waveform = decode_clip(row, sample_rate)
    if not variable_length or waveform.shape[0] > max_samples:
        return fit_length(waveform, max_samples)
    return waveform


def window_starts(length: int, window: int, hop: int) -> np.ndarray:
    """Start samples of the sliding windows that cover a clip of ``length`` samples:
    every ``hop`` samples, plus one ending at the clip's end (a single start 0 when the
    clip fits in one window)."""
    if length <= window:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, length - window + 1, hop, dtype=np.int64)
    if starts[-1] != length - window:
        starts = np.append(starts, length - window)
    return starts


def sliding_windows(waveform: np.ndarray, window: int, hop: int) -> np.ndarray:
    """``(windows, window)`` float32: a clip cut into the windows of ``window_starts``
    (a short clip is centre-padded into one window)."""
    if waveform.shape[0] <= window:
        return fit_length(waveform, window)[None, :]
    starts = window_starts(waveform.shape[0], window, hop)
    return np.stack([waveform[start : start + window] for start in starts])


CACHE_VERSION = 2  # bump when decoding changes, so old cache files are not reused


class WaveformStore:
    """Every clip of a manifest decoded once: ``waveforms`` is ``(clips, max_samples)``
    float32, row i = manifest row i, zero-padded after the clip's ``lengths[i]`` samples
    (fixed-length tasks: every row is one full window).

    With a ``cache_dir`` the array is saved as ``waveforms-<key>.npy`` (and, for
    variable-length clips, ``lengths-<key>.npy``) and later runs (every fold, every
    experiment) memory-map it instead of decoding again; RAM then holds only the pages in
    use. The key hashes the audio settings and each clip's path, segment, gain, file size and
    modification time, so changed settings or files never hit a stale cache.

    ``read(row)`` (what the datasets use) reads a cached row with ``pread`` instead of
    through the map: the OS page cache serves it all the same, but the pages are not mapped
    into the process, so its resident memory stays flat over an epoch whatever the dataset
    size (through the map, every clip touched stays counted in RSS, in every loader worker).
    """

    def __init__(self, waveforms: np.ndarray, lengths: np.ndarray | None = None) -> None:
        self.waveforms = waveforms
        self.lengths = (
            np.full(waveforms.shape[0], waveforms.shape[1], dtype=np.int64)
            if lengths is None
            else np.asarray(lengths, dtype=np.int64)
        )
        self._file: BinaryIO | None = None  # the cache file, opened on first read

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None}  # a pickled copy opens its own

    def read(self, row: int) -> np.ndarray:
        """Clip ``row`` as a new, writable float32 array ``(lengths[row],)``."""
        waveforms = self.waveforms
        length = int(self.lengths[row])
        mapped = isinstance(waveforms, np.memmap) and waveforms.filename is not None
        if not (mapped and waveforms.flags.c_contiguous and hasattr(os, "preadv")):
            return np.array(waveforms[row, :length], dtype=np.float32)  # a copy: read-only map
        if self._file is None:
            self._file = open(waveforms.filename, "rb", buffering=0)  # noqa: SIM115
        waveform = np.empty(length, dtype=waveforms.dtype)
        offset = waveforms.offset + int(row) * waveforms.shape[1] * waveforms.itemsize
        buffer, done = memoryview(waveform).cast("B"), 0
        while done < len(buffer):  # one call for a regular file; a loop in case of short reads
            count = os.preadv(self._file.fileno(), [buffer[done:]], offset + done)
            if count <= 0:
                raise OSError(f"{waveforms.filename}: unexpected end of file at row {row}")
            done += count
        return waveform.astype(np.float32, copy=False)

    @classmethod
    def build(
        cls,
        manifest: pl.DataFrame,
        sample_rate: int,
        max_samples: int,
        cache_dir: Path | None = None,
        progress: bool = True,
        variable_length: bool = False,
    ) -> WaveformStore:
        """Decode (or memory-map the cached decode of) every clip of ``manifest``."""
        if cache_dir is None:
            return cls(*cls._decode(manifest, sample_rate, max_samples, variable_length, progress))
        key = cache_key(manifest, sample_rate, max_samples, variable_length)
        path = Path(cache_dir) / f"waveforms-{key}.npy"
        lengths_path = Path(cache_dir) / f"lengths-{key}.npy"
        for orphan in remove_orphans(Path(cache_dir), recursive=False):
            log.info("removed %s, left by a killed run", orphan)
        cached = cls._load_cached(path, lengths_path, variable_length, manifest.height)
        if cached is not None:
            return cached
        waveforms, lengths = cls._decode(
            manifest, sample_rate, max_samples, variable_length, progress
        )
        if variable_length:  # written first: the waveforms file marks a complete entry
            with atomic_path(lengths_path, ".npy") as temp, open(temp, "wb") as stream:
                np.save(stream, lengths)
        with atomic_path(path, ".npy") as temp, open(temp, "wb") as stream:
            np.save(stream, waveforms)
        lengths = np.load(lengths_path) if variable_length else None
        return cls(np.load(path, mmap_mode="r"), lengths)

    @classmethod
    def _load_cached(
        cls, path: Path, lengths_path: Path, variable_length: bool, clips: int
    ) -> WaveformStore | None:
        """The cache entry, or None when there is none or it is damaged (truncated, or not
        one row per clip): a damaged entry is removed, named in a warning, and decoded
        again."""
        if not path.is_file() or (variable_length and not lengths_path.is_file()):
            return None
        try:
            waveforms = np.load(path, mmap_mode="r")
            lengths = np.load(lengths_path) if variable_length else None
            if waveforms.shape[0] != clips or (lengths is not None and len(lengths) != clips):
                raise ValueError(f"{waveforms.shape[0]} rows for {clips} clips")
        except (OSError, ValueError, EOFError) as error:
            log.warning("cache %s is damaged (%s); decoding again", path, error)
            path.unlink(missing_ok=True)
            lengths_path.unlink(missing_ok=True)
            return None
        return cls(waveforms, lengths)

    @staticmethod
    def _decode(
        manifest: pl.DataFrame,
        sample_rate: int,
        max_samples: int,
        variable_length: bool,
        progress: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        waveforms = np.zeros((manifest.height, max_samples), dtype=np.float32)
        lengths = np.zeros(manifest.height, dtype=np.int64)
        rows = manifest.select("path", "start", "duration", "gain_db").iter_rows(named=True)
        for index, row in enumerate(
            tqdm(rows, total=manifest.height, desc="decode", disable=not progress, leave=False)
        ):
            waveform = load_clip(row, sample_rate, max_samples, variable_length)
            waveforms[index, : waveform.shape[0]] = waveform
            lengths[index] = waveform.shape[0]
        return waveforms, lengths

    def __len__(self) -> int:
        return self.waveforms.shape[0]


def unreadable_clips(
    manifest: pl.DataFrame, sample_rate: int, progress: bool = False
) -> pl.DataFrame:
    """``fname,reason`` of every clip of ``manifest`` that cannot be decoded, found by
    decoding each one as training and prediction do (``decode_clip``); the reason is the
    decoder's message on one line, naming the clip by ``fname`` rather than its path."""
    bad: dict[str, list[str]] = {"fname": [], "reason": []}
    rows = manifest.select("fname", "path", "start", "duration", "gain_db").iter_rows(named=True)
    for row in tqdm(rows, total=manifest.height, desc="check", disable=not progress, leave=False):
        try:
            decode_clip(row, sample_rate)
        except (AudioError, OSError) as error:
            reason = str(error).removeprefix(f"{row['path']}: ").replace(row["path"], row["fname"])
            bad["fname"].append(row["fname"])
            bad["reason"].append(" ".join(reason.split()))
    return pl.DataFrame(bad, schema={"fname": pl.String, "reason": pl.String})


def checked_decodable(
    manifest: pl.DataFrame, sample_rate: int, cache_dir: Path | None, what: str
) -> None:
    """Raise ``AudioError`` naming the first bad clip (and how many) unless every clip of
    ``manifest`` decodes. The clean result is remembered in ``cache_dir`` under the same
    key as a decode cache (paths, sizes, times), so unchanged files are checked once."""
    marker = None
    if cache_dir is not None:
        marker = Path(cache_dir) / f"decodable-{cache_key(manifest, sample_rate, 0)}"
        if marker.is_file():
            return
    bad = unreadable_clips(manifest, sample_rate)
    if bad.height:
        path = manifest.filter(pl.col("fname") == bad["fname"][0])["path"][0]
        raise AudioError(
            f"{path}: {bad['reason'][0]} ({bad.height} of the {manifest.height} {what} clips "
            "cannot be decoded; found before training: fix or remove them)"
        )
    if marker is not None:
        with atomic_path(marker) as temp:
            temp.write_text("")


def cache_key(
    manifest: pl.DataFrame, sample_rate: int, max_samples: int, variable_length: bool = False
) -> str:
    """Hash of everything the decoded array depends on (see ``WaveformStore``)."""
    layout = "variable" if variable_length else "fixed"
    digest = hashlib.sha256(f"v{CACHE_VERSION}:{sample_rate}:{max_samples}:{layout}".encode())
    for path, start, duration, gain_db in manifest.select(
        "path", "start", "duration", "gain_db"
    ).iter_rows():
        stat = os.stat(path)
        digest.update(
            f"|{path}:{start}:{duration}:{gain_db}:{stat.st_size}:{stat.st_mtime_ns}".encode()
        )
    return digest.hexdigest()[:20]


class ClipDataset(Dataset):
    """Item ``i`` -> (waveform, class index or -1; in training with ``soft_targets``, the
    clip's row of them: a distribution over the classes, ``train.distill``).

    Clips come from a ``WaveformStore`` (training, validation) or are decoded on demand
    (a large test set). Two modes:

    * ``train=True``: the (augmented, when ``augment`` is given) clip randomly cropped or
      padded to one window: ``(clip_samples,)``. With ``segments``, a clip that is a
      segment of a longer file (a ``duration`` in its row) is cut afresh from that file.
    * ``train=False``: the clip (passed through ``condition(waveform, fname)`` when given:
      the shifted validation) cut into sliding windows ``hop_samples`` apart covering all
      of it: ``(windows, clip_samples)`` (one window for a clip that fits); batch these with
      ``collate_windows`` (what ``make_loader`` does for them).
    """

    def __init__(
        self,
        manifest: pl.DataFrame,
        audio: AudioConfig,
        targets: np.ndarray | None = None,
        store: WaveformStore | None = None,
        store_rows: np.ndarray | None = None,
        augment: WaveformTransform | None = None,
        seed: int = 0,
        train: bool = False,
        segments: SegmentSource | None = None,
        condition: ClipCondition | None = None,
        synthetic: SyntheticUnknown | None = None,
        soft_targets: np.ndarray | None = None,
    ) -> None:
        self.rows = manifest.select("fname", "path", "start", "duration", "gain_db").to_dicts()
        self.soft_targets = soft_targets
        self.audio = audio
        self.targets = targets if targets is not None else np.full(len(self.rows), -1)
        self.store = store
        # item i reads store row store_rows[i] (a fold's subset of a whole-manifest store)
        self.store_rows = store_rows if store_rows is not None else np.arange(len(self.rows))
        self.augment = augment
        self.train = train
        self.segments = segments
        self.condition = condition
        self.synthetic = synthetic
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.rows)

    def clip(self, index: int) -> np.ndarray:
        """Clip ``index`` as stored: ``(samples,)`` float32, before augmentation."""
        if self.store is not None:
            return self.store.read(self.store_rows[index])
        audio = self.audio
        return load_clip(
            self.rows[index], audio.sample_rate, audio.max_samples, audio.variable_length
        )

    def random_clip(self) -> np.ndarray:
        """A random clip of this dataset as stored (what ``augment.mix`` mixes in)."""
        return self.clip(int(self.rng.integers(len(self.rows))))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int | np.ndarray]:
        row = self.rows[index]
        window = self.audio.clip_samples
        target = int(self.targets[index])
        if self.train:
            if self.segments is not None and row["duration"] is not None:
                waveform = self.segments.fresh(row, self.rng)
            else:
                waveform = self.clip(index)
            if self.synthetic is not None:
                made = self.synthetic(waveform, self.random_clip, self.rng)
                if made is not None:
                    waveform, target = made, self.synthetic.target
            if self.augment is not None:
                waveform = self.augment(waveform, self.audio.sample_rate)
            waveform = fit_length(waveform, window, self.rng)
            if self.soft_targets is not None:
                soft = self.soft_targets[index]
                if target != int(self.targets[index]):  # made a non-word: its own class
                    soft = np.eye(soft.shape[0], dtype=np.float32)[target]
                return torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32)), soft
        else:
            waveform = self.clip(index)
            if self.condition is not None:
                waveform = self.condition(waveform, row["fname"])
            waveform = sliding_windows(waveform, window, self.audio.hop_samples)
        return torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32)), target


def collate_windows(
    items: list[tuple[torch.Tensor, int]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch of windowed clips -> (windows ``(sum of windows, clip_samples)``, targets
    ``(clips,)``, windows per clip ``(clips,)``)."""
    windows = [waveform for waveform, _ in items]
    return (
        torch.cat(windows),
        torch.tensor([target for _, target in items], dtype=torch.long),
        torch.tensor([waveform.shape[0] for waveform in windows], dtype=torch.long),
    )


def pad_waveforms(waveforms: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips of any lengths -> a zero-padded batch ``(clips, longest)`` and each clip's
    length in samples ``(clips,)`` (the recognisers and pre-training mask by it)."""
    lengths = torch.tensor([len(w) for w in waveforms])
    batch = torch.zeros(len(waveforms), int(lengths.max()))
    for row, waveform in enumerate(waveforms):
        batch[row, : len(waveform)] = torch.from_numpy(waveform)
    return batch, lengths


def seed_worker(worker_id: int) -> None:
    """Give each loader worker its own generator, derived from the loader's seed:
    the dataset's ``rng`` and the global ``random``/``numpy`` ones audiomentations draws from."""
    info = get_worker_info()
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    if info is not None and isinstance(info.dataset, ClipDataset):
        info.dataset.rng = np.random.default_rng(seed)


def make_loader(
    dataset: ClipDataset,
    batch_size: int,
    *,
    shuffle: bool,
    num_workers: int,
    seed: int,
    drop_last: bool = False,
    shard: tuple[int, int] | None = None,
    sampler: Sampler[int] | None = None,
) -> DataLoader:
    """A seeded loader (evaluation-mode ``ClipDataset`` batches are ``collate_windows``
    triples). ``shard=(rank, world_size)`` gives each data-parallel rank its own
    part of the (seeded, per-epoch reshuffled: call ``loader.sampler.set_epoch``) order.
    A given ``sampler`` (e.g. ``QuotaSampler``, sharded itself) decides the order instead."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    if sampler is None and shard is not None:
        rank, world_size = shard
        sampler = DistributedSampler(
            dataset,
            num_replicas=world_size,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
    windowed = isinstance(dataset, ClipDataset) and not dataset.train
    return DataLoader(
        dataset,
        batch_size=batch_size,
        collate_fn=collate_windows if windowed else None,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=generator,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


def clip_means(window_values: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Per-window rows ``(windows, k)`` averaged per clip ``(clips, k)``, ``counts`` being
    each clip's number of windows (``collate_windows``' third item)."""
    if window_values.shape[0] == counts.shape[0]:  # one window per clip
        return window_values
    clip_of_window = torch.repeat_interleave(torch.arange(counts.shape[0]), counts)
    summed = torch.zeros(counts.shape[0], window_values.shape[1], dtype=window_values.dtype)
    summed.index_add_(0, clip_of_window, window_values)
    return summed / counts[:, None]


def prediction_loader(manifest: pl.DataFrame, config: Config) -> DataLoader:
    """The evaluation loader of ``manifest``'s clips for prediction: sliding windows of
    ``config.audio`` per clip, ``config.predict`` batch size and workers, in order."""
    return make_loader(
        ClipDataset(manifest, config.audio),
        config.predict.batch_size,
        shuffle=False,
        num_workers=config.predict.num_workers,
        seed=0,
    )
