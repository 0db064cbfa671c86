"""Folds trained at once in worker processes (train.parallel_folds)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from speechstack.config import load_config
from speechstack.fold_pool import core_share, fold_processes, train_folds
from speechstack.folds import write_folds
from speechstack.tasks import create_task
from speechstack.train import fold_dir


def config_with(repo_root: Path, *overrides: str):
    return load_config(repo_root / "configs/speech_commands/cnn.yaml", list(overrides))


@pytest.mark.parametrize(
    ("setting", "threads", "cpu", "distributed", "pending", "expected"),
    [
        ("auto", None, True, False, 5, 4),  # one per core
        ("auto", None, True, False, 2, 2),  # at most one per pending fold
        ("auto", None, False, False, 5, 1),  # a GPU: one fold at a time
        ("auto", None, True, True, 5, 1),  # under torchrun
        ("auto", 2, True, False, 5, 1),  # threads chosen by hand
        (3, None, False, False, 5, 3),  # asked for explicitly
        (3, None, True, False, 0, 1),
    ],
)
def test_how_many_folds_at_once(
    repo_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    setting: object,
    threads: int | None,
    cpu: bool,
    distributed: bool,
    pending: int,
    expected: int,
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    overrides = [f"train.parallel_folds={setting}"]
    if threads:
        overrides.append(f"train.threads={threads}")
    config = config_with(repo_root, *overrides)
    assert fold_processes(config, pending, cpu, distributed) == expected


@pytest.mark.parametrize(
    ("cores", "processes", "unfinished", "expected"),
    [
        (2, 2, 5, 1),  # the first fold to start does not take its neighbour's core
        (2, 2, 2, 1),
        (2, 2, 1, 2),  # the last fold gets both cores
        (16, 5, 5, 3),
        (16, 5, 2, 8),
        (4, 8, 8, 1),  # never below one thread
    ],
)
def test_cores_are_shared_among_the_folds_that_run_together(
    cores: int, processes: int, unfinished: int, expected: int
) -> None:
    assert core_share(cores, processes, unfinished) == expected


def test_parallel_folds_is_validated(repo_root: Path) -> None:
    from speechstack.config import ConfigError

    for bad in ("0", "many"):
        with pytest.raises(ConfigError, match="parallel_folds"):
            config_with(repo_root, f"train.parallel_folds={bad}")


@pytest.fixture
def tiny_configs(tiny_speech_commands: Path, repo_root: Path, tmp_path: Path):
    def make(experiment: str, parallel: int, *extra: str):
        return config_with(
            repo_root,
            f"task.data_dir={tiny_speech_commands}",
            f"runs_dir={tmp_path / 'runs'}",
            f"cache_dir={tmp_path / 'cache'}",
            f"folds.file={tmp_path / 'folds.csv'}",
            "model.params.backbone=test_resnet",
            "model.params.backbone_args={}",
            "train.epochs=2",
            "train.batch_size=16",
            "train.threads=1",  # the same threads either way: the same numbers
            f"train.parallel_folds={parallel}",
            "folds.k=3",
            f"experiment={experiment}",
            *extra,
        )

    first = make("sequential", 1)
    write_folds(create_task(first.task).train_manifest(), first.folds_file, 3, 0)
    return make


def test_parallel_folds_train_the_same_as_one_after_another(tiny_configs) -> None:
    sequential = train_folds(tiny_configs("sequential", 1), progress=False)
    parallel_config = tiny_configs("parallel", 2)
    parallel = train_folds(parallel_config, progress=False)
    assert [m["fold"] for m in parallel] == [0, 1, 2]
    for one, other in zip(sequential, parallel, strict=True):
        assert other["val_accuracy"] == pytest.approx(one["val_accuracy"])
        assert other["best_epoch"] == one["best_epoch"]
    for fold in range(3):
        one = pl.read_parquet(fold_dir(tiny_configs("sequential", 1), fold) / "oof.parquet")
        other = pl.read_parquet(fold_dir(parallel_config, fold) / "oof.parquet")
        assert one["fname"].to_list() == other["fname"].to_list()
        numeric = [c for c in one.columns if one[c].dtype.is_float()]
        for column in numeric:
            assert other[column].to_numpy() == pytest.approx(one[column].to_numpy(), abs=1e-5)
    assert (parallel_config.run_dir / "report.json").is_file()  # written once all are done
    # finished folds are skipped, not retrained
    again = train_folds(parallel_config, progress=False)
    assert all(m.get("skipped") for m in again)


def test_a_failing_fold_keeps_the_others(tiny_configs) -> None:
    config = tiny_configs("broken", 2, "train.epochs=1")  # fold 0 needs only to finish
    with pytest.raises(RuntimeError, match=r"fold\(s\) 7 of broken failed"):
        train_folds(config, folds=[0, 7], progress=False)
    assert (fold_dir(config, 0) / "metrics.json").is_file()
    assert not fold_dir(config, 7).exists()
