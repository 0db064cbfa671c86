"""A table of every experiment of a task: CV accuracy, size, training and inference speed.

Reads ``runs/<task>/<experiment>/fold<k>/{metrics.json,oof.parquet}``; only experiments
with every fold finished get a CV accuracy (computed from their OOF rows against the folds
file, so it is the same number the stacker reports).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from speechstack.artifacts import read_frame
from speechstack.folds import fold_count, read_folds
from speechstack.submission import predicted_labels


@dataclass(frozen=True)
class Entry:
    experiment: str
    folds_done: int
    cv_accuracy: float | None  # None until every fold is finished
    mean_fold_accuracy: float
    parameters: int
    train_seconds: float  # summed over folds (includes each fold's validation passes)
    inference_clips_per_second: float | None  # test-set prediction, decode included


def leaderboard(task_runs: Path, folds_file: Path, labels: list[str]) -> list[Entry]:
    """Entries for every experiment folder under ``task_runs``, best CV accuracy first."""
    folds = read_folds(folds_file)
    k = fold_count(folds)
    truth = dict(zip(folds["fname"], folds["label"], strict=True))
    if not task_runs.is_dir():
        raise FileNotFoundError(f"{task_runs}: no runs yet; run `make train` first")
    entries = []
    for folder in sorted(p for p in task_runs.iterdir() if p.is_dir()):
        metrics = [
            json.loads(path.read_text()) for path in sorted(folder.glob("fold*/metrics.json"))
        ]
        if not metrics:
            continue
        cv = None
        if len(metrics) == k:
            oof = pl.concat(read_frame(p) for p in sorted(folder.glob("fold*/oof.parquet")))
            predicted = predicted_labels(oof, labels)
            expected = np.asarray([truth.get(name) for name in oof["fname"]])
            cv = float((predicted == expected).mean())
        test_clips = sum(m.get("test_clips", 0) for m in metrics)
        test_seconds = sum(m.get("test_seconds", 0.0) for m in metrics)
        entries.append(
            Entry(
                experiment=folder.name,
                folds_done=len(metrics),
                cv_accuracy=cv,
                mean_fold_accuracy=float(np.mean([m["val_accuracy"] for m in metrics])),
                parameters=int(metrics[0]["parameters"]),
                train_seconds=float(sum(m["train_seconds"] for m in metrics)),
                inference_clips_per_second=test_clips / test_seconds if test_seconds else None,
            )
        )
    return sorted(entries, key=lambda e: -(e.cv_accuracy or -1.0))
