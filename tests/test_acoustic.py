"""The acoustic family: openSMILE functionals, per-speaker standardisation, augmented copies,
the feature cache, and the family end to end (train -> fold folders -> stack -> predict)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from speechstack import acoustic
from speechstack.acoustic import AugmentedCopy, FeatureExtractor, Standardiser, clip_features
from speechstack.cli import main
from speechstack.tasks import TEST_COLUMNS, manifest_frame
from speechstack.tasks.crema_d import CremaD
from speechstack.tasks.ravdess import EMOTIONS, Ravdess
from speechstack.tasks.speech_commands import SpeechCommands

RATE = 16000


def tone(hz: float, seconds: float = 1.0, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (level * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_extractor_gives_finite_functionals() -> None:
    extractor = FeatureExtractor("GeMAPSv01b")
    features = extractor(tone(220.0), RATE)
    assert features.shape == (len(extractor.names),) == (62,)
    assert np.isfinite(features).all()
    # a silent or very short clip still gives a finite vector of the same size
    assert np.isfinite(extractor(np.zeros(100, dtype=np.float32), RATE)).all()
    louder = extractor(tone(220.0, level=0.9), RATE)
    loudness = extractor.names.index("loudness_sma3_amean")
    assert louder[loudness] > features[loudness]  # level is a cue the family keeps


def test_standardiser_uses_each_speakers_own_clips_only() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(5.0, 2.0, (6, 3))
    b = rng.normal(-3.0, 0.5, (6, 3))
    pooled = Standardiser.fit(np.concatenate([a, b]), by_speaker=True)
    out = pooled.transform(np.concatenate([a, b]), ["a"] * 6 + ["b"] * 6)
    for rows in (slice(0, 6), slice(6, 12)):  # each speaker centred on its own mean
        assert np.allclose(out[rows].mean(axis=0), 0.0, atol=1e-5)
    # another speaker's clips change nothing of a's
    b_changed = pooled.transform(np.concatenate([a, b * 10 + 7]), ["a"] * 6 + ["b"] * 6)
    assert np.allclose(out[:6], b_changed[:6])
    # unknown or lone speakers: the pooled (training) statistics
    lone = pooled.transform(a[:1], ["c"])
    unknown = pooled.transform(a[:2], [None, None])
    assert np.allclose(lone, (a[:1] - pooled.mean) / pooled.std)
    assert np.allclose(unknown, (a[:2] - pooled.mean) / pooled.std)
    # global standardisation ignores speakers
    flat = Standardiser.fit(a, by_speaker=False).transform(a, ["a"] * 6)
    assert np.allclose(flat.mean(axis=0), 0.0, atol=1e-5)


def test_augmented_copy_is_fixed_per_clip_whatever_the_order() -> None:
    def noisy(waveform: np.ndarray, _rate: int) -> np.ndarray:
        return waveform + np.random.normal(0, 0.1, waveform.shape).astype(np.float32)

    clip = tone(300.0, 0.1)
    first = AugmentedCopy(noisy, RATE, seed=0, copy=0)
    again = AugmentedCopy(noisy, RATE, seed=0, copy=0)
    again(clip, "other.wav")  # another clip drawn first changes nothing
    assert np.array_equal(first(clip, "a.wav"), again(clip, "a.wav"))
    assert not np.array_equal(first(clip, "a.wav"), first(clip, "b.wav"))
    second = AugmentedCopy(noisy, RATE, seed=0, copy=1)
    assert not np.array_equal(first(clip, "a.wav"), second(clip, "a.wav"))


def test_clip_features_are_cached_and_a_damaged_cache_is_redone(
    tmp_path: Path, write_wav, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [write_wav(tmp_path / f"c{i}.wav", tone(150.0 + 50 * i), RATE) for i in range(3)]
    manifest = manifest_frame(
        {"fname": [p.name for p in paths], "path": [str(p) for p in paths]}, TEST_COLUMNS
    )
    cache = tmp_path / "cache"
    first = clip_features(manifest, "GeMAPSv01b", RATE, RATE, cache)
    assert first.shape == (3, 62)
    (cached,) = cache.glob("acoustic-*.npy")

    class Refuses:
        def __init__(self, *_args: object) -> None:
            raise AssertionError("extracted again despite the cache")

    with monkeypatch.context() as patch:
        patch.setattr(acoustic, "FeatureExtractor", Refuses)
        assert np.array_equal(clip_features(manifest, "GeMAPSv01b", RATE, RATE, cache), first)
    cached.write_bytes(cached.read_bytes()[:50])  # truncated by a crash or a full disk
    assert np.allclose(clip_features(manifest, "GeMAPSv01b", RATE, RATE, cache), first)
    # a conditioned pass is cached only under its own key
    louder = clip_features(
        manifest, "GeMAPSv01b", RATE, RATE, cache,
        condition=lambda w, _f: w * 2, condition_key="louder",
    )  # fmt: skip
    assert not np.allclose(louder, first)
    assert len(list(cache.glob("acoustic-*louder*.npy"))) == 1


def test_extraction_in_processes_gives_what_one_process_gives(
    tmp_path: Path, write_wav, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forked extraction processes, each handed runs of clips in order, return the rows of
    one process, with a condition that cannot be pickled (a local function) inherited."""

    def noisy(waveform: np.ndarray, _rate: int) -> np.ndarray:
        return waveform + np.random.normal(0, 0.05, waveform.shape).astype(np.float32)

    paths = [write_wav(tmp_path / f"c{i}.wav", tone(150.0 + 40 * i), RATE) for i in range(5)]
    manifest = manifest_frame(
        {"fname": [p.name for p in paths], "path": [str(p) for p in paths]}, TEST_COLUMNS
    )
    monkeypatch.setattr(acoustic, "CHUNK_CLIPS", 2)  # 3 runs of clips for 2 processes
    copy = AugmentedCopy(noisy, RATE, seed=0, copy=0)
    one = clip_features(manifest, "GeMAPSv01b", RATE, RATE, condition=copy, processes=1)
    two = clip_features(manifest, "GeMAPSv01b", RATE, RATE, condition=copy, processes=2)
    assert one.shape == (5, 62)
    assert np.array_equal(one, two)
    assert len(np.unique(one[:, 0])) == 5  # each row its own clip, in manifest order
    assert acoustic.extraction_processes(3) == 3
    assert acoustic.extraction_processes("auto") == (os.cpu_count() or 1)


@pytest.mark.parametrize(
    ("task", "fname", "speaker"),
    [
        (Ravdess, "Actor_13/03-01-05-02-01-01-13.wav", "actor13"),
        (CremaD, "1091_IEO_ANG_HI.wav", "actor1091"),
        (SpeechCommands, "yes/0a7c2a8d_nohash_0.wav", "0a7c2a8d"),
        (SpeechCommands, "clip_000044442.wav", None),
    ],
)
def test_speaker_of_a_file_name(task: type, fname: str, speaker: str | None) -> None:
    assert task.speaker_of(fname) == speaker


def run(*argv: str) -> None:
    assert main(list(argv)) == 0, argv


def test_acoustic_family_end_to_end(
    tmp_path: Path, repo_root: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """RAVDESS demo (4 training actors, 2 folds): the family writes the same fold folders
    as a network, scores above chance, stacks, and predicts the unseen actors."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data" / "ravdess"
    run("synth", "--task", "ravdess", "--out", str(data), "--speakers", "4")
    common = [
        "--config", str(repo_root / "configs" / "ravdess" / "acoustic.yaml"),
        "--data", str(data),
        "--set", "folds.k=2",
        "--set", "model.params.feature_set=GeMAPSv01b",
        "--set", "model.params.augment_copies=1",
        # one LightGBM thread (the classifier's and the stacker's): `make test` runs one test
        # per core, where a second thread only waits for the core (its fits ~1.5x as long)
        "--set", "model.params.lightgbm.n_jobs=1",
        "--set", "stack.lightgbm.n_jobs=1",
    ]  # fmt: skip
    run("folds", *common)
    run("train", *common)
    runs = tmp_path / "runs" / "ravdess"
    for fold in range(2):
        folder = runs / "acoustic" / f"fold{fold}"
        metrics = json.loads((folder / "metrics.json").read_text())
        assert {"model.pkl", "oof.parquet", "oof_shifted.parquet", "config.yaml"} <= set(
            metrics["files"]
        )
        assert metrics["val_accuracy"] > 0.3  # chance is 1/8
        assert metrics["train_clips"] == metrics["valid_clips"] == 120
        with open(folder / "model.pkl", "rb") as stream:
            saved = pickle.load(stream)
        assert saved["labels"] == EMOTIONS
    # the augmented copies were cached once and reused by the second fold
    assert len(list((tmp_path / "cache").glob("acoustic-*aug0-*.npy"))) == 1

    run("stack", *common, "--experiments", "acoustic")
    # a quarter of the unseen actors' clips (every label of every actor), kept short: the
    # features of each predicted clip are extracted again
    answers = pl.read_csv(data / "demo_holdout" / "answers.csv").sort("path").gather_every(4)
    holdout = tmp_path / "holdout"
    for relative in answers["path"]:
        (holdout / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data / "demo_holdout" / relative, holdout / relative)
    answers.write_csv(holdout / "answers.csv")
    assert set(answers["label"]) == set(EMOTIONS)
    out = tmp_path / "holdout.csv"
    run("predict", *common, "--source", "acoustic", "--audio", str(holdout),
        "--answers", str(holdout / "answers.csv"), "--out", str(out))  # fmt: skip
    predictions = pl.read_csv(out)
    answers = pl.read_csv(holdout / "answers.csv")
    assert sorted(predictions["path"]) == sorted(answers["path"])
    joined = predictions.join(answers, on="path", suffix="_true")
    assert (joined["label"] == joined["label_true"]).mean() > 0.2


def test_a_partial_lightgbm_setting_keeps_the_feature_set_s_trees(repo_root: Path) -> None:
    """Naming one key of the acoustic family's ``lightgbm`` changes that key only: the
    others stay the feature set's CLASSIFIER_TREES (then the stacker's LightGBMParams)."""
    from speechstack.config import LightGBMParams, load_config
    from speechstack.params.models import CLASSIFIER_TREES, AcousticParams

    def trees(*overrides: str) -> LightGBMParams:
        config = load_config(repo_root / "configs/ravdess/acoustic.yaml", list(overrides))
        return AcousticParams(**config.model.params).lightgbm

    compare = trees("model.params.lightgbm.num_leaves=5")
    assert compare.num_leaves == 5
    assert compare.colsample_bytree == CLASSIFIER_TREES["ComParE_2016"]["colsample_bytree"]
    assert compare.n_estimators == LightGBMParams().n_estimators
    deeper = trees("model.params.feature_set=eGeMAPSv02", "model.params.lightgbm.n_jobs=1")
    assert deeper.n_jobs == 1
    for key, value in CLASSIFIER_TREES["eGeMAPSv02"].items():
        assert getattr(deeper, key) == value != getattr(LightGBMParams(), key)
    assert AcousticParams().lightgbm == LightGBMParams(**CLASSIFIER_TREES["ComParE_2016"])
    assert AcousticParams(**AcousticParams().model_dump()) == AcousticParams()  # a saved run


def test_lightgbm_keeps_to_the_fold_process_s_share_of_the_cores() -> None:
    """A fold process beside others (``train.parallel_folds``) has a share of the cores;
    the classifier's LightGBM uses no more threads than that (its OpenMP threads spin while
    they wait, and past the share hold the cores the other folds need), and no more than
    its ``n_jobs``."""
    from speechstack.models import ModelContext
    from speechstack.models.acoustic import AcousticClassifier
    from speechstack.params.models import AcousticParams

    rng = np.random.default_rng(0)
    features, targets = rng.normal(size=(60, 5)), np.arange(60) % 3
    speakers = [f"s{i % 4}" for i in range(60)]
    context = ModelContext(num_classes=3)
    params = AcousticParams(feature_set="GeMAPSv01b", lightgbm={"n_jobs": 2})

    def threads_used(share: int | None) -> int:
        fitted = AcousticClassifier(params, context).fit(features, speakers, targets, 0, share)
        return fitted.estimator.get_params()["n_jobs"]

    assert threads_used(1) == 1
    assert threads_used(None) == threads_used(4) == 2
