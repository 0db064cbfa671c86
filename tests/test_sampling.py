"""Per-epoch balanced sampling (QuotaSampler), fresh silence segments, and what each fold
trains and validates on (scored, training-only and pseudo-labelled clips)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from speechstack.config import load_config
from speechstack.data import QuotaSampler, SegmentSource
from speechstack.folds import write_folds
from speechstack.tasks import create_task
from speechstack.train import FoldData

# ---------------------------------------------------------------- QuotaSampler

LABELS = ["yes"] * 10 + ["no"] * 20 + ["unknown"] * 95


def test_quota_limits_a_large_label_per_epoch_and_keeps_the_others() -> None:
    sampler = QuotaSampler(LABELS, {"unknown": 1.5}, seed=0)
    indices = sampler.epoch_indices(0)
    counts = Counter(LABELS[i] for i in indices)
    # mean of the other labels: (10 + 20) / 2 = 15 -> 1.5 x 15 = 22.5 -> 22 unknown per epoch
    assert counts == {"yes": 10, "no": 20, "unknown": 22}
    assert len(sampler) == 52 and len(set(indices.tolist())) == 52


def test_quota_walks_through_every_clip_before_repeating_one() -> None:
    sampler = QuotaSampler(LABELS, {"unknown": 1.5}, seed=3)
    unknown = [
        [i for i in sampler.epoch_indices(epoch).tolist() if LABELS[i] == "unknown"]
        for epoch in range(5)
    ]
    seen = [i for epoch in unknown[:4] for i in epoch]  # 4 x 22 = 88 <= 95: no repeats yet
    assert len(seen) == len(set(seen)) == 88
    assert set(unknown[0]) != set(unknown[1])  # a fresh subset every epoch
    all_five = [i for epoch in unknown for i in epoch]  # 110 > 95: every clip was shown
    assert set(all_five) == {i for i, label in enumerate(LABELS) if label == "unknown"}


def test_quota_order_is_seeded_and_reshuffled_per_epoch() -> None:
    first, again = (
        QuotaSampler(LABELS, {"unknown": 1.0}, 7),
        QuotaSampler(LABELS, {"unknown": 1.0}, 7),
    )
    assert list(first) == list(again)
    first.set_epoch(1)
    assert list(first) != list(again)
    other = QuotaSampler(LABELS, {"unknown": 1.0}, 8)
    assert list(other) != list(again)


def test_quota_shards_split_one_epoch_between_ranks() -> None:
    whole = QuotaSampler(LABELS, {"unknown": 1.0}, 0).epoch_indices(2).tolist()
    ranks = [QuotaSampler(LABELS, {"unknown": 1.0}, 0, shard=(r, 2)) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(2)
    parts = [list(sampler) for sampler in ranks]
    assert sorted(parts[0] + parts[1]) == sorted(whole)
    assert [len(s) for s in ranks] == [len(p) for p in parts]


def test_quota_larger_than_the_label_shows_all_of_it() -> None:
    sampler = QuotaSampler(["a"] * 10 + ["b"] * 3, {"b": 5.0}, 0)
    assert Counter(sampler.epoch_indices(0).tolist()) == Counter(range(13))


# ---------------------------------------------------------------- fresh segments


def test_segment_source_cuts_fresh_windows_of_the_named_file(write_wav, tmp_path: Path) -> None:
    ramp = np.linspace(-0.5, 0.5, 48000, dtype=np.float32)
    path = write_wav(tmp_path / "noise.wav", ramp, 16000, "FLOAT")
    source = SegmentSource(16000)
    row = {"path": str(path), "start": 0.0, "duration": 1.0, "gain_db": 0.0}
    rng = np.random.default_rng(0)
    cuts = [source.fresh(row, rng) for _ in range(5)]
    assert all(cut.shape == (16000,) for cut in cuts)
    starts = {int(np.argmin(np.abs(ramp - cut[0]))) for cut in cuts}
    assert len(starts) == 5  # five different offsets
    for cut, start in zip(cuts, sorted(starts), strict=False):
        assert start + 16000 <= 48000
        np.testing.assert_allclose(cut, ramp[int(np.argmin(np.abs(ramp - cut[0]))) :][:16000])


# ---------------------------------------------------------------- what a fold holds


@pytest.fixture
def task_config(tiny_speech_commands: Path, tmp_path: Path, repo_root: Path):
    data = tmp_path / "data"
    shutil.copytree(tiny_speech_commands, data)
    overrides = [
        f"task.data_dir={data}",
        f"folds.file={tmp_path / 'folds.csv'}",
        "folds.k=3",
        "task.params.unknown_ratio=0.3",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    config = load_config(repo_root / "configs" / "speech_commands" / "cnn.yaml", overrides)
    write_folds(create_task(config.task).train_manifest(), config.folds_file, 3, 0)
    return config


def test_unscored_clips_train_every_fold_but_their_speakers_own(task_config) -> None:
    task = create_task(task_config.task)
    manifest = task.train_manifest()
    folds = pl.read_csv(task_config.folds_file)
    unscored = manifest.filter(~pl.col("scored"))
    assert unscored.height > 0 and set(unscored["label"]) == {"unknown"}
    assert set(folds["fname"]) == set(manifest.filter(pl.col("scored"))["fname"])
    for fold in range(3):
        data = FoldData(task_config, task, fold, progress=False)
        valid_speakers = set(data.valid["group"])
        assert set(data.valid["fname"]) == set(folds.filter(pl.col("fold") == fold)["fname"])
        trained = set(data.train["fname"])
        assert not trained & set(data.valid["fname"])
        assert not valid_speakers & set(data.train["group"])  # no speaker on both sides
        expected_extra = unscored.filter(~pl.col("group").is_in(list(valid_speakers)))
        assert set(expected_extra["fname"]) <= trained
        assert data.train_only_clips == expected_extra.height
        # the store rows point at the same clips
        for frame, rows in ((data.train, data.train_rows), (data.valid, data.valid_rows)):
            assert len(rows) == frame.height and rows.max() < len(data.store)


def test_pseudo_labels_join_the_training_side_of_every_fold_only(
    task_config, tmp_path: Path
) -> None:
    task = create_task(task_config.task)
    test = task.test_manifest()
    pseudo = tmp_path / "round1.csv"
    pl.DataFrame(
        {
            "fname": test["fname"][:5],
            "path": test["path"][:5],
            "label": ["yes", "no", "silence", "unknown", "go"],
            "confidence": [0.99] * 5,
        }
    ).write_csv(pseudo)
    config = task_config.model_copy(deep=True)
    config.train.pseudo_labels = pseudo
    for fold in range(3):
        data = FoldData(config, task, fold, progress=False)
        assert data.pseudo_clips == 5
        added = data.train.filter(pl.col("fname").str.starts_with("pseudo:"))
        assert sorted(added["label"].to_list()) == sorted(["yes", "no", "silence", "unknown", "go"])
        assert not data.valid["fname"].str.starts_with("pseudo:").any()
        stored = data.store.read(int(data.train_rows[data.train.height - 1]))
        assert stored.shape == (16000,)


# ---------------------------------------------------------------- synthetic non-words


def test_synthetic_unknown_reverses_or_splices_and_relabels() -> None:
    from speechstack.data import SyntheticUnknown

    clip = np.arange(10, dtype=np.float32)
    other = np.full(10, -1.0, dtype=np.float32)
    rng = np.random.default_rng(0)
    never = SyntheticUnknown(0.0, target=3)
    assert all(never(clip, lambda: other, rng) is None for _ in range(50))
    always = SyntheticUnknown(0.999999, target=3)
    made = [always(clip, lambda: other, rng) for _ in range(200)]
    reversed_, spliced = clip[::-1], np.concatenate([clip[:5], other[5:]])

    def kind(made_clip: np.ndarray) -> str:
        if np.array_equal(made_clip, reversed_):
            return "reversed"
        return "spliced" if np.array_equal(made_clip, spliced) else "other"

    kinds = Counter(kind(m) for m in made)
    assert kinds["other"] == 0 and kinds["reversed"] > 60 and kinds["spliced"] > 60


def test_synthetic_unknown_trains_an_unknown_class_of_words_mode(task_config) -> None:
    from speechstack.config import ConfigError, override_config
    from speechstack.data import ClipDataset
    from speechstack.train import synthetic_unknown

    words = override_config(task_config, {"task.params.label_mode": "words"}, "test")
    with pytest.raises(ConfigError, match="unknown_class=true"):
        synthetic_unknown(override_config(words, {"train.synthetic_unknown": 0.5}, "t"),
                          create_task(words.task).classes())  # fmt: skip
    config = override_config(
        words, {"task.params.unknown_class": True, "train.synthetic_unknown": 0.5}, "test"
    )
    task = create_task(config.task)
    classes = task.classes()
    assert classes[-1] == "unknown"
    assert task.class_to_label()[-1].tolist() == [0.0] * 11 + [1.0]  # sums into `unknown`
    data = FoldData(config, task, 0, progress=False)
    dataset = ClipDataset(
        data.train, config.audio, data.train_targets, store=data.store,
        store_rows=data.train_rows, train=True, synthetic=synthetic_unknown(config, classes),
    )  # fmt: skip
    targets = [dataset[i % len(dataset)][1] for i in range(200)]
    share = targets.count(len(classes) - 1) / len(targets)
    assert 0.35 < share < 0.65  # no word folder feeds the class: only the non-words do
