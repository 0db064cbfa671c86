"""Clip datasets, waveform augmentation and loaders.

A training run decodes each clip once into memory (``WaveformStore``) instead of every
epoch; augmentation is drawn from a seeded generator per worker, never the clock.
"""

from __future__ import annotations

import hashlib
import os
import random
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, get_worker_info
from tqdm.auto import tqdm

from speechstack.artifacts import atomic_path
from speechstack.audio import fit_length, read_audio
from speechstack.config import AudioConfig, AugmentConfig

WaveformTransform = Callable[[np.ndarray, int], np.ndarray]


def build_waveform_augment(
    config: AugmentConfig, noise_files: Sequence[Path]
) -> WaveformTransform | None:
    """An audiomentations pipeline from config; None when every probability is zero."""
    import audiomentations as A

    transforms = []
    if config.gain.p:
        transforms.append(A.Gain(config.gain.min_db, config.gain.max_db, p=config.gain.p))
    if config.shift.p:
        fraction = config.shift.max_fraction
        transforms.append(
            A.Shift(-fraction, fraction, shift_unit="fraction", rollover=False, p=config.shift.p)
        )
    if config.noise.p:
        if not noise_files:
            raise ValueError(
                "augment.noise.p > 0 but the task has no background-noise files "
                "(set augment.noise.p=0)"
            )
        transforms.append(
            BackgroundNoise(
                noise_files, config.noise.min_snr_db, config.noise.max_snr_db, p=config.noise.p
            )
        )
    if config.pitch.p:
        transforms.append(
            A.PitchShift(config.pitch.min_semitones, config.pitch.max_semitones, p=config.pitch.p)
        )
    if config.stretch.p:
        transforms.append(
            A.TimeStretch(
                config.stretch.min_rate,
                config.stretch.max_rate,
                leave_length_unchanged=True,
                p=config.stretch.p,
            )
        )
    return A.Compose(transforms) if transforms else None


class BackgroundNoise:
    """Mix in a random segment of a random noise file at a random SNR (dB, relative to the
    clip's RMS), with probability ``p``: ``audiomentations.AddBackgroundNoise`` with the same
    parameters, the same draws from ``random`` in the same order, and the same mix, but each
    noise file is decoded once per process (on first use; ~25 MB for Kaggle's six files) and
    segments are sliced in memory, instead of a file open, seek and read on every call (that
    was ~90% of the loader's time).

    Called as ``transform(samples (samples,) float32, sample_rate) -> samples``.
    """

    def __init__(
        self, noise_files: Sequence[Path], min_snr_db: float, max_snr_db: float, p: float
    ) -> None:
        if not noise_files:
            raise ValueError("BackgroundNoise needs at least one noise file")
        if min_snr_db > max_snr_db:
            raise ValueError(f"min_snr_db {min_snr_db} > max_snr_db {max_snr_db}")
        self.noise_files = [Path(path) for path in noise_files]
        self.min_snr_db = min_snr_db
        self.max_snr_db = max_snr_db
        self.p = p
        self._noise: dict[tuple[int, int], np.ndarray] = {}  # (file index, rate) -> waveform

    def __getstate__(self) -> dict:
        # A pickled copy (spawned loader workers) decodes its own noise instead of carrying it.
        return {**self.__dict__, "_noise": {}}

    def noise(self, index: int, sample_rate: int) -> np.ndarray:
        """Noise file ``index`` as mono float32 at ``sample_rate``, decoded once."""
        key = (index, sample_rate)
        if key not in self._noise:
            self._noise[key] = read_audio(self.noise_files[index], sample_rate)
        return self._noise[key]

    def __call__(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        # The draws of audiomentations' randomize_parameters, in its order.
        if not random.random() < self.p:
            return samples
        snr_db = random.uniform(self.min_snr_db, self.max_snr_db)
        random.uniform(-45.0, -15.0)  # its absolute-level draw, unused in relative mode
        index = random.randint(0, len(self.noise_files) - 1)
        noise = self.noise(index, sample_rate)
        signal_seconds = len(samples) / sample_rate
        offset = random.uniform(0.0, max(0.0, len(noise) / sample_rate - signal_seconds))
        if len(samples) == 0:
            return samples
        start = int(offset * sample_rate)
        segment = noise[start : start + int(signal_seconds * sample_rate)]
        noise_rms = _rms(segment)
        if noise_rms < 1e-9:
            warnings.warn(
                f"{self.noise_files[index]} is too silent to be added as noise; "
                "the clip is left unchanged",
                stacklevel=2,
            )
            return samples
        desired_rms = _rms(samples) / 10 ** (snr_db / 20)
        segment = segment * np.float32(desired_rms / noise_rms)
        if len(segment) < len(samples):  # a noise file shorter than the clip is repeated
            segment = np.tile(segment, -(-len(samples) // len(segment)))
        return samples + segment[: len(samples)]


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.dot(samples, samples) / samples.size))


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
        if not path.is_file() or (variable_length and not lengths_path.is_file()):
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
    """Item ``i`` -> (waveform, class index or -1).

    Clips come from a ``WaveformStore`` (training, validation) or are decoded on demand
    (a large test set). Two modes:

    * ``train=True``: the (augmented, when ``augment`` is given) clip randomly cropped or
      padded to one window: ``(clip_samples,)``.
    * ``train=False``: the clip cut into sliding windows ``hop_samples`` apart covering all
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
    ) -> None:
        self.rows = manifest.select("path", "start", "duration", "gain_db").to_dicts()
        self.audio = audio
        self.targets = targets if targets is not None else np.full(len(self.rows), -1)
        self.store = store
        # item i reads store row store_rows[i] (a fold's subset of a whole-manifest store)
        self.store_rows = store_rows if store_rows is not None else np.arange(len(self.rows))
        self.augment = augment
        self.train = train
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

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        waveform = self.clip(index)
        window = self.audio.clip_samples
        if self.train:
            if self.augment is not None:
                waveform = self.augment(waveform, self.audio.sample_rate)
            waveform = fit_length(waveform, window, self.rng)
        else:
            waveform = sliding_windows(waveform, window, self.audio.hop_samples)
        return torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32)), int(
            self.targets[index]
        )


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
) -> DataLoader:
    """A seeded loader (evaluation-mode ``ClipDataset`` batches are ``collate_windows``
    triples). ``shard=(rank, world_size)`` gives each data-parallel rank its own
    part of the (seeded, per-epoch reshuffled: call ``loader.sampler.set_epoch``) order."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler = None
    if shard is not None:
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
