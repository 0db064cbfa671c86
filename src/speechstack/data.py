"""Clip datasets, waveform augmentation and loaders.

A training run decodes each clip once into memory (``WaveformStore``) instead of every
epoch; augmentation is drawn from a seeded generator per worker, never the clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, get_worker_info
from tqdm.auto import tqdm

from speechstack.audio import fit_length, read_audio
from speechstack.config import AugmentConfig

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
            A.AddBackgroundNoise(
                sounds_path=[str(path) for path in noise_files],
                min_snr_db=config.noise.min_snr_db,
                max_snr_db=config.noise.max_snr_db,
                p=config.noise.p,
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


class WaveformStore:
    """Every clip of a manifest decoded once, fitted to ``clip_samples`` and kept in memory
    as ``(clips, clip_samples)`` float32 (4 bytes x samples per clip)."""

    def __init__(
        self,
        manifest: pl.DataFrame,
        sample_rate: int,
        clip_samples: int,
        progress: bool = True,
        description: str = "decode",
    ) -> None:
        self.waveforms = np.zeros((manifest.height, clip_samples), dtype=np.float32)
        rows = manifest.select("path", "start", "duration", "gain_db").iter_rows(named=True)
        for index, row in enumerate(
            tqdm(rows, total=manifest.height, desc=description, disable=not progress, leave=False)
        ):
            self.waveforms[index] = fit_length(decode_clip(row, sample_rate), clip_samples)

    def __len__(self) -> int:
        return self.waveforms.shape[0]


class ClipDataset(Dataset):
    """Item ``i`` -> (waveform ``(clip_samples,)`` float32 tensor, class index or -1).

    Clips come from a ``WaveformStore`` (training, validation) or are decoded on demand
    (a large test set). ``augment`` is applied only when given, i.e. only in training.
    """

    def __init__(
        self,
        manifest: pl.DataFrame,
        sample_rate: int,
        clip_samples: int,
        targets: np.ndarray | None = None,
        store: WaveformStore | None = None,
        augment: WaveformTransform | None = None,
        seed: int = 0,
    ) -> None:
        self.rows = manifest.select("path", "start", "duration", "gain_db").to_dicts()
        self.sample_rate = sample_rate
        self.clip_samples = clip_samples
        self.targets = targets if targets is not None else np.full(len(self.rows), -1)
        self.store = store
        self.augment = augment
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.store is not None:
            waveform = self.store.waveforms[index]
        else:
            waveform = fit_length(
                decode_clip(self.rows[index], self.sample_rate), self.clip_samples
            )
        if self.augment is not None:
            waveform = self.augment(waveform.copy(), self.sample_rate)
            waveform = fit_length(waveform, self.clip_samples, self.rng)
        return torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32)), int(
            self.targets[index]
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
    """A seeded loader. ``shard=(rank, world_size)`` gives each data-parallel rank its own
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
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=generator,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
