"""folds -> train-fold (every fold) -> stack -> submission through the CLI, on tiny data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest

from speechstack.cli import main
from speechstack.tasks.speech_commands import LABELS

TINY = [
    "--set",
    "model.params.backbone=test_resnet",
    "--set",
    "model.params.backbone_args={}",
    "--set",
    "train.epochs=2",
    "--set",
    "train.batch_size=32",
    "--set",
    "folds.k=3",
    "--set",
    "task.params.silence_clips=12",
]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*argv: str) -> None:
    assert main(list(argv)) == 0, argv


def test_folds_train_stack_submission(
    workdir: Path, tiny_speech_commands: Path, repo_root: Path, capsys: pytest.CaptureFixture
) -> None:
    config = str(repo_root / "configs" / "speech_commands" / "cnn.yaml")
    # the test set and the shifted OOF rows with their own batch-norm statistics (the
    # tiny sets are below the default minimum)
    adapt = ["--set", "predict.adapt_min_clips=10"]
    common = ["--config", config, "--data", str(tiny_speech_commands), *TINY, *adapt]
    run("folds", *common)
    folds = pl.read_csv("folds/speech_commands.csv")
    assert sorted(folds["fold"].unique()) == [0, 1, 2]

    for fold in range(3):
        run("train-fold", *common, "--fold", str(fold))
    run_dir = workdir / "runs" / "speech_commands" / "cnn"
    for fold in range(3):
        folder = run_dir / f"fold{fold}"
        assert {p.name for p in folder.iterdir()} == {
            "model.pt",
            "oof.parquet",
            "oof_shifted.parquet",
            "test.parquet",
            "metrics.json",
            "history.csv",
            "dataset.parquet",
            "config.yaml",
            "report.md",
            "confusion.png",
            "report.json",
        }
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["fold"] == fold and 0.0 <= metrics["val_accuracy"] <= 1.0
        shifted = pl.read_parquet(folder / "oof_shifted.parquet")
        clean = pl.read_parquet(folder / "oof.parquet")
        assert shifted["fname"].to_list() == clean["fname"].to_list()
        assert not shifted.select(LABELS).equals(clean.select(LABELS))  # other conditions

    # OOF coverage: every folded clip predicted exactly once, by the model of its own fold.
    oof = pl.concat(
        pl.read_parquet(run_dir / f"fold{k}" / "oof.parquet").with_columns(pl.lit(k).alias("k"))
        for k in range(3)
    )
    assert oof.height == folds.height
    assert not oof["fname"].is_duplicated().any()
    joined = folds.join(oof, on="fname")
    assert (joined["fold"] == joined["k"]).all()
    assert oof.columns == ["fname", *LABELS, "k"]
    sums = oof.select(pl.sum_horizontal(LABELS)).to_series()
    assert ((sums - 1).abs() < 1e-4).all()

    # Re-running a finished fold skips it (resume) without touching its files.
    before = (run_dir / "fold0" / "model.pt").stat().st_mtime_ns
    capsys.readouterr()
    run("train-fold", *common, "--fold", "0")
    assert "skipped" in capsys.readouterr().out
    assert (run_dir / "fold0" / "model.pt").stat().st_mtime_ns == before

    run("stack", *common)
    stack_metrics = json.loads((workdir / "runs/speech_commands/stack/metrics.json").read_text())
    assert set(stack_metrics["experiments"]) == {"cnn"}
    assert 0.0 <= stack_metrics["stack_accuracy"] <= 1.0
    assert stack_metrics["selected_by"] == "shifted"
    kept = stack_metrics["sources"][stack_metrics["selected"]]["shifted"]
    assert kept == max(source["shifted"] for source in stack_metrics["sources"].values())
    stack_oof = pl.read_parquet(workdir / "runs/speech_commands/stack/oof.parquet")
    assert set(stack_oof["fname"]) == set(folds["fname"])
    # Reports: every fold, the experiment over its OOF rows (written by train once all
    # folds are done; train-fold alone writes it with `report`), and the stack.
    run("report", *common)
    for folder in (run_dir, workdir / "runs/speech_commands/stack"):
        report = json.loads((folder / "report.json").read_text())
        assert report["clips"] == folds.height
        assert (folder / "confusion.png").read_bytes()[:4] == b"\x89PNG"
        assert "| *macro avg* |" in (folder / "report.md").read_text()
    experiment_report = json.loads((run_dir / "report.json").read_text())
    assert experiment_report["accuracy"] == pytest.approx(stack_metrics["experiments"]["cnn"])
    assert sum(map(sum, experiment_report["confusion"])) == folds.height
    assert {"group"} == set(experiment_report["groups"])  # per speaker

    # predict: the saved fold models and fold stackers on the test folder reproduce the
    # stack's test predictions (same windows, same models).
    run("predict", *common, "--audio", str(tiny_speech_commands / "test" / "audio"),
        "--out", "predicted.csv")  # fmt: skip
    predicted = pl.read_csv("predicted.csv")
    stack_test = pl.read_parquet(workdir / "runs/speech_commands/stack/test.parquet")
    assert predicted.columns == ["path", "label", *LABELS]
    joined = stack_test.join(predicted, left_on="fname", right_on="path", suffix="_new")
    assert joined.height == stack_test.height == predicted.height
    for label in LABELS:
        assert (joined[label] - joined[f"{label}_new"]).abs().max() < 1e-4
    run("predict", *common, "--audio", str(tiny_speech_commands / "test" / "audio"),
        "--source", "cnn", "--answers", str(tiny_speech_commands / "demo_solution.csv"),
        "--out", "cnn.csv")  # fmt: skip
    assert "accuracy against" in capsys.readouterr().out

    # The leaderboard's CV accuracy is the stacker's per-experiment number.
    capsys.readouterr()
    run("leaderboard", *common)
    board = capsys.readouterr().out.splitlines()
    cnn_row = next(line.split() for line in board if line.startswith("cnn "))
    assert cnn_row[1] == "3/3"
    assert float(cnn_row[2]) == pytest.approx(stack_metrics["experiments"]["cnn"], abs=1e-4)

    run("submission", *common)
    out = capsys.readouterr().out
    assert "demo test-set accuracy" in out
    assert f"submits its '{stack_metrics['selected']}' source (best shifted OOF" in out
    assert "demo test accuracy by condition" in out and "snr_db" in out
    files = list((workdir / "submissions").glob("speech_commands-*-cv*.csv"))
    assert len(files) == 1
    submission = pl.read_csv(files[0])
    sample = pl.read_csv(tiny_speech_commands / "sample_submission.csv")
    assert submission.columns == ["fname", "label"]
    assert submission["fname"].to_list() == sample["fname"].to_list()
    assert set(submission["label"]) <= set(LABELS)
    score = float(files[0].stem.split("-cv")[1])
    assert score == pytest.approx(stack_metrics["stack_accuracy"], abs=1e-4)

    # A second submission never overwrites the first.
    run("submission", *common)
    assert len(list((workdir / "submissions").glob("*.csv"))) == 2

    # Submitting: dry run prints the exact kaggle command.
    capsys.readouterr()
    run("submit", "--file", str(files[0]), "--message", "tiny", "--dry-run")
    out = capsys.readouterr().out
    assert "competitions submit -c tensorflow-speech-recognition-challenge" in out
    assert str(files[0]) in out


def test_config_change_under_same_experiment_is_refused(
    workdir: Path, tiny_speech_commands: Path, repo_root: Path, capsys: pytest.CaptureFixture
) -> None:
    config = str(repo_root / "configs" / "speech_commands" / "cnn.yaml")
    common = [
        "--config",
        config,
        "--data",
        str(tiny_speech_commands),
        *TINY,
        "--set",
        "train.epochs=1",
    ]
    run("folds", *common)
    run("train-fold", *common, "--fold", "1")
    assert main(["train-fold", *common, "--set", "train.lr=0.01", "--fold", "1"]) == 2
    assert "different config" in capsys.readouterr().err


def test_interrupted_fold_leaves_nothing(
    workdir: Path, tiny_speech_commands: Path, repo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during training: no fold folder, no temp folder; a re-run trains it."""
    from speechstack import train as train_module
    from speechstack.config import load_config
    from speechstack.folds import write_folds
    from speechstack.tasks import create_task

    config = load_config(
        repo_root / "configs" / "speech_commands" / "cnn.yaml",
        [f"task.data_dir={tiny_speech_commands}", *TINY[1::2], "train.epochs=1"],
    )
    write_folds(create_task(config.task).train_manifest(), config.folds_file, 3, 0)

    def interrupt(epoch: int, accuracy: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_module.train_fold(config, 2, progress=False, epoch_callback=interrupt)
    parent = config.run_dir
    # no fold folder, no temp file: the lock and the finished epoch's checkpoint only
    assert sorted(os.listdir(parent)) == [".fold2.lock", "checkpoints"]
    assert os.listdir(parent / "checkpoints") == ["fold2.pt"]
    metrics = train_module.train_fold(config, 2, progress=False)
    assert (parent / "fold2" / "metrics.json").is_file() and metrics["fold"] == 2
    assert sorted(os.listdir(parent)) == [".fold2.lock", "checkpoints", "fold2"]
    assert os.listdir(parent / "checkpoints") == []  # removed with the fold written
