"""The emotion and sentiment tasks end to end through the CLI, as `make demo TASK=...`
runs them: synth -> folds -> train (every fold) -> stack -> report -> predict, on tiny
generated corpora with a tiny CNN."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from speechstack.cli import main

# One fold after the other in this process: ``train.parallel_folds`` left at ``auto`` would
# spawn a worker per core, each importing torch and timm again (~7 s of CPU apiece), for a
# path tests/test_fold_pool.py and the Ctrl-C test in tests/test_faults.py already cover.
TINY = [
    "--set", "model.params.backbone=test_resnet",
    "--set", "model.params.backbone_args={}",
    "--set", "train.epochs=1",
    "--set", "train.parallel_folds=1",
    "--set", "folds.k=2",
]  # fmt: skip

FLOWS = {  # task: (demo size, labels, group columns in the reports)
    "ravdess": (2, 8, {"gender", "intensity", "group"}),
    "crema_d": (2, 6, {"gender", "level", "group"}),
    "sentiment": (4, 2, {"language", "group"}),
}


def run(*argv: str) -> None:
    assert main(list(argv)) == 0, argv


@pytest.mark.parametrize("task", sorted(FLOWS))
def test_demo_flow_of_each_task(
    task: str, tmp_path: Path, repo_root: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    speakers, n_labels, group_columns = FLOWS[task]
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data" / task
    run("synth", "--task", task, "--out", str(data), "--speakers", str(speakers))
    config = str(repo_root / "configs" / task / "cnn.yaml")
    common = ["--config", config, "--data", str(data), *TINY]
    run("folds", *common)
    folds = pl.read_csv(tmp_path / "folds" / f"{task}.csv", schema_overrides={"group": pl.String})
    per_speaker = folds.group_by("group").agg(pl.col("fold").n_unique())
    assert (per_speaker["fold"] == 1).all()  # speaker-independent folds
    run("train", *common)
    run("stack", *common)
    runs = tmp_path / "runs" / task
    for folder in (runs / "cnn", runs / "cnn" / "fold0", runs / "stack"):
        report = json.loads((folder / "report.json").read_text())
        assert len(report["labels"]) == n_labels
        assert set(report["groups"]) == group_columns
        assert (folder / "confusion.png").is_file() and (folder / "report.md").is_file()
    assert json.loads((runs / "cnn" / "report.json").read_text())["clips"] == folds.height

    capsys.readouterr()
    holdout = data / "demo_holdout"
    run("predict", *common, "--audio", str(holdout), "--answers", str(holdout / "answers.csv"))
    out = capsys.readouterr().out
    assert "accuracy against" in out
    predictions = pl.read_csv(runs / "stack" / "predictions" / "demo_holdout.csv")
    answers = pl.read_csv(holdout / "answers.csv")
    assert sorted(predictions["path"]) == sorted(answers["path"])
    labels = predictions.columns[2:]
    assert len(labels) == n_labels
    sums = predictions.select(pl.sum_horizontal(labels)).to_series()
    assert ((sums - 1).abs() < 1e-3).all()
