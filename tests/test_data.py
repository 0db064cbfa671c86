"""Decoded-waveform store and its cache; datasets and loaders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from speechstack.augment import build_waveform_augment
from speechstack.config import AudioConfig, AugmentConfig, TaskConfig
from speechstack.data import (
    ClipDataset,
    WaveformStore,
    make_loader,
    sliding_windows,
    window_starts,
)
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
        manifest[rows.tolist()], AudioConfig(), np.array([1, 2, 3]), store=store, store_rows=rows
    )
    waveform, target = dataset[1]
    assert target == 2
    assert torch.equal(waveform, torch.from_numpy(store.waveforms[2])[None])  # one window


def test_augmented_loader_is_seeded_and_keeps_length(manifest, tiny_speech_commands) -> None:
    store = WaveformStore.build(manifest, 16000, 16000, progress=False)
    noise = sorted((tiny_speech_commands / "train/audio/_background_noise_").glob("*.wav"))
    config = AugmentConfig.model_validate(
        {"placement": {"p": 1.0}, "shift": {"p": 1.0}, "noise": {"p": 1.0}}
    )
    augment = build_waveform_augment(config, noise)

    def batches(seed: int) -> list[torch.Tensor]:
        import random

        random.seed(seed)
        np.random.seed(seed)
        dataset = ClipDataset(
            manifest, AudioConfig(), store=store, augment=augment, seed=seed, train=True
        )
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


# ---------------------------------------------------------------- variable-length clips


@pytest.fixture
def long_clips(tmp_path: Path, write_wav) -> pl.DataFrame:
    """Three float WAVs of 0.5 s, 2.3 s and 4 s (distinct random samples, so a window's
    position in its clip is recognisable)."""
    rows = []
    rng = np.random.default_rng(0)
    for index, seconds in enumerate([0.5, 2.3, 4.0]):
        samples = rng.uniform(-0.5, 0.5, round(16000 * seconds))
        path = write_wav(tmp_path / f"clip{index}.wav", samples, 16000, "FLOAT")
        rows.append(
            {"fname": path.name, "path": str(path), "start": 0.0, "duration": None, "gain_db": 0.0}
        )
    return pl.DataFrame(rows, schema_overrides={"duration": pl.Float64})


def test_window_starts_cover_the_clip_and_end_at_its_end() -> None:
    assert window_starts(800, 1000, 500).tolist() == [0]
    assert window_starts(1000, 1000, 500).tolist() == [0]
    assert window_starts(2300, 1000, 500).tolist() == [0, 500, 1000, 1300]
    assert window_starts(2000, 1000, 500).tolist() == [0, 500, 1000]
    windows = sliding_windows(np.arange(2300.0), 1000, 500)
    assert windows.shape == (4, 1000)
    assert windows[-1, -1] == 2299 and windows[0, 0] == 0


def test_variable_length_store_keeps_each_clip_up_to_max_seconds(long_clips, tmp_path) -> None:
    audio = AudioConfig(clip_seconds=1.0, max_seconds=3.0)
    plain = WaveformStore.build(long_clips, 16000, audio.max_samples, None, False, True)
    assert plain.lengths.tolist() == [8000, 36800, 48000]  # 4 s centre-cropped to 3 s
    cached = WaveformStore.build(long_clips, 16000, audio.max_samples, tmp_path / "c", False, True)
    again = WaveformStore.build(long_clips, 16000, audio.max_samples, tmp_path / "c", False, True)
    assert isinstance(again.waveforms, np.memmap)
    for row in range(3):
        np.testing.assert_array_equal(cached.read(row), plain.read(row))
        np.testing.assert_array_equal(again.read(row), plain.read(row))
    # A fixed-length store of the same files is another cache entry.
    WaveformStore.build(long_clips, 16000, audio.max_samples, tmp_path / "c", False, False)
    assert len(list((tmp_path / "c").glob("waveforms-*.npy"))) == 2


def test_training_crops_randomly_and_prediction_uses_every_window(long_clips) -> None:
    audio = AudioConfig(clip_seconds=1.0, max_seconds=3.0, window_hop_seconds=0.5)
    store = WaveformStore.build(long_clips, 16000, audio.max_samples, None, False, True)
    train = ClipDataset(long_clips, audio, store=store, train=True, seed=0)
    crops = [train[2][0] for _ in range(6)]
    assert all(crop.shape == (16000,) for crop in crops)
    assert len({float(crop[0]) for crop in crops}) > 1  # random offsets
    full = store.read(2)
    for crop in crops:  # each crop is a contiguous window of the clip
        start = int(np.flatnonzero(full == float(crop[0]))[0])
        np.testing.assert_array_equal(crop.numpy(), full[start : start + 16000])
    evaluation = ClipDataset(long_clips, audio, store=store)
    assert [evaluation[i][0].shape[0] for i in range(3)] == [1, 4, 5]  # 0.5 s, 2.3 s, 3 s
    batch = next(iter(make_loader(evaluation, 3, shuffle=False, num_workers=0, seed=0)))
    windows, targets, counts = batch
    assert windows.shape == (10, 16000) and counts.tolist() == [1, 4, 5]
    assert targets.tolist() == [-1, -1, -1]


def test_sliding_window_prediction_averages_each_clips_windows(long_clips) -> None:
    from speechstack.train import Precision, predict_probabilities

    class WindowMean(torch.nn.Module):
        """Logits = (mean sample, 0): a window's class-0 probability rises with its mean."""

        def forward(self, waveform: torch.Tensor) -> torch.Tensor:
            mean = waveform.mean(dim=1, keepdim=True) * 10
            return torch.cat([mean, torch.zeros_like(mean)], dim=1)

    audio = AudioConfig(clip_seconds=1.0, max_seconds=3.0, window_hop_seconds=0.5)
    dataset = ClipDataset(long_clips, audio)
    loader = make_loader(dataset, 2, shuffle=False, num_workers=0, seed=0)
    precision = Precision.choose(torch.device("cpu"), amp=False)
    probabilities = predict_probabilities(WindowMean(), loader, precision)
    assert probabilities.shape == (3, 2)
    for index in range(3):
        windows = dataset[index][0]
        expected = torch.softmax(WindowMean()(windows), dim=1).mean(dim=0)
        np.testing.assert_allclose(probabilities[index], expected.numpy(), atol=1e-6)
