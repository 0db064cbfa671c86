"""Decoded-waveform store and its cache; datasets and loaders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from speechstack.config import AugmentConfig, TaskConfig
from speechstack.data import ClipDataset, WaveformStore, build_waveform_augment, make_loader
from speechstack.tasks import create_task


@pytest.fixture
def manifest(tiny_speech_commands: Path, tmp_path: Path):
    data = tmp_path / "data"
    shutil.copytree(tiny_speech_commands, data)
    task = create_task(
        TaskConfig(name="speech_commands", data_dir=data, params={"silence_clips": 6})
    )
    manifest = task.train_manifest()
    words = manifest.filter(~pl.col("fname").str.starts_with("_background_noise_"))
    return pl.concat([words.head(34), manifest.head(6)])


def test_cache_gives_identical_waveforms_and_is_reused(manifest, tmp_path: Path) -> None:
    plain = WaveformStore.build(manifest, 16000, 16000, cache_dir=None, progress=False)
    cache = tmp_path / "cache"
    first = WaveformStore.build(manifest, 16000, 16000, cache_dir=cache, progress=False)
    files = list(cache.glob("waveforms-*.npy"))
    assert len(files) == 1
    np.testing.assert_array_equal(np.asarray(first.waveforms), plain.waveforms)
    stamp = files[0].stat().st_mtime_ns
    second = WaveformStore.build(manifest, 16000, 16000, cache_dir=cache, progress=False)
    assert isinstance(second.waveforms, np.memmap)  # read back, not decoded again
    assert files[0].stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(np.asarray(second.waveforms), plain.waveforms)


def test_cache_is_invalidated_by_audio_settings_and_changed_files(manifest, tmp_path) -> None:
    cache = tmp_path / "cache"
    WaveformStore.build(manifest, 16000, 16000, cache_dir=cache, progress=False)
    WaveformStore.build(manifest, 8000, 8000, cache_dir=cache, progress=False)
    WaveformStore.build(manifest, 16000, 12000, cache_dir=cache, progress=False)
    assert len(list(cache.glob("*.npy"))) == 3
    # Rewriting a clip (new content, new mtime) must not reuse the old decode.
    path = Path(manifest["path"][0])
    row = manifest["fname"][0]
    assert not row.startswith("_background_noise_")
    import soundfile

    soundfile.write(path, np.zeros(16000, dtype=np.float32) + 0.25, 16000, subtype="PCM_16")
    os.utime(path, ns=(1, 1))
    fresh = WaveformStore.build(manifest, 16000, 16000, cache_dir=cache, progress=False)
    assert len(list(cache.glob("*.npy"))) == 4
    assert np.allclose(np.asarray(fresh.waveforms[0]), 0.25, atol=1e-4)


def test_dataset_reads_its_rows_of_a_shared_store(manifest) -> None:
    store = WaveformStore.build(manifest, 16000, 16000, progress=False)
    rows = np.array([5, 2, 9])
    dataset = ClipDataset(
        manifest[rows.tolist()], 16000, 16000, np.array([1, 2, 3]), store=store, store_rows=rows
    )
    waveform, target = dataset[1]
    assert target == 2
    assert torch.equal(waveform, torch.from_numpy(store.waveforms[2]))


def test_augmented_loader_is_seeded_and_keeps_length(manifest, tiny_speech_commands) -> None:
    store = WaveformStore.build(manifest, 16000, 16000, progress=False)
    noise = sorted((tiny_speech_commands / "train/audio/_background_noise_").glob("*.wav"))
    config = AugmentConfig.model_validate(
        {"gain": {"p": 1.0}, "shift": {"p": 1.0}, "noise": {"p": 1.0}}
    )
    augment = build_waveform_augment(config, noise)

    def batches(seed: int) -> list[torch.Tensor]:
        import random

        random.seed(seed)
        np.random.seed(seed)
        dataset = ClipDataset(manifest, 16000, 16000, store=store, augment=augment, seed=seed)
        return [x for x, _ in make_loader(dataset, 8, shuffle=True, num_workers=0, seed=seed)]

    first, again, other = batches(1), batches(1), batches(2)
    assert all(x.shape[1] == 16000 for x in first)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    # Augmentation changed the clips (noise at p=1).
    assert not torch.equal(
        torch.cat(first).sort(dim=0).values,
        torch.from_numpy(np.asarray(store.waveforms)).sort(dim=0).values,
    )


def test_noise_augmentation_without_noise_files_is_a_clear_error() -> None:
    config = AugmentConfig.model_validate({"noise": {"p": 0.5}})
    with pytest.raises(ValueError, match="no background-noise files"):
        build_waveform_augment(config, [])
