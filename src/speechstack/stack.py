"""LightGBM stacker over the out-of-fold probabilities of several experiments.

The stacker's features are the concatenated label probabilities of the listed
experiments. It is cross-validated on the same folds the experiments were trained on (the
OOF row of a clip in fold k came from a model that never saw fold k, so a stacker trained
on folds != k and scored on fold k is an honest estimate). The test features are each
experiment's test probabilities averaged over its fold models; the stack's test prediction
averages its K fold stackers.

Writes ``runs/<task>/<name>/``: ``oof.parquet``, ``test.parquet``, ``metrics.json``,
``config.json``, the fold stackers (``stacker_fold<k>.txt``, LightGBM's text format, and
``stacker.json``: features, classes, experiments) that ``apply_stack`` runs on new clips,
and the classification report (``report.md``, ``confusion.png``, ``report.json``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from speechstack.artifacts import (
    atomic_directory,
    atomic_write_frame,
    atomic_write_json,
    atomic_write_text,
)
from speechstack.config import StackConfig
from speechstack.folds import read_folds

log = logging.getLogger(__name__)


class StackError(ValueError):
    """Missing or inconsistent experiment outputs; the message names the folder."""


def _read_experiment(run_dir: Path, k: int, kind: str) -> pl.DataFrame:
    frames = []
    for fold in range(k):
        path = run_dir / f"fold{fold}" / f"{kind}.parquet"
        if not path.is_file():
            raise StackError(
                f"{path} is missing: fold {fold} of experiment '{run_dir.name}' is not trained "
                f"(run `make train-fold ... FOLD={fold}` or `make train`)"
            )
        frames.append(pl.read_parquet(path).with_columns(pl.lit(fold).alias("_fold")))
    return pl.concat(frames)


def collect_oof(
    runs_dir: Path, experiments: list[str], folds: pl.DataFrame, labels: list[str]
) -> pl.DataFrame:
    """One row per folded clip: fname, label, fold and ``<experiment>:<label>`` columns.

    Checks that every experiment predicted every clip exactly once, from the model that
    held that clip's fold out.
    """
    k = int(folds["fold"].max()) + 1  # type: ignore[arg-type]
    table = folds.select("fname", "label", "fold")
    for name in experiments:
        oof = _read_experiment(runs_dir / name, k, "oof")
        if oof["fname"].is_duplicated().any():
            raise StackError(f"{runs_dir / name}: some clips are predicted by more than one fold")
        if set(oof["fname"]) != set(table["fname"]):
            raise StackError(
                f"{runs_dir / name}: OOF predictions do not cover the folds file's clips "
                "one for one (was it trained on other folds?)"
            )
        missing = [c for c in labels if c not in oof.columns]
        if missing:
            raise StackError(f"{runs_dir / name}: OOF lacks label columns {missing}")
        joined = table.join(oof.select("fname", "_fold"), on="fname")
        if (joined["fold"] != joined["_fold"]).any():
            raise StackError(f"{runs_dir / name}: OOF rows come from the wrong fold model")
        table = table.join(
            oof.select("fname", *[pl.col(c).alias(f"{name}:{c}") for c in labels]), on="fname"
        )
    return table


def collect_test(
    runs_dir: Path, experiments: list[str], k: int, labels: list[str]
) -> pl.DataFrame | None:
    """Test probabilities of each experiment averaged over its fold models (None if absent)."""
    table: pl.DataFrame | None = None
    for name in experiments:
        try:
            test = _read_experiment(runs_dir / name, k, "test")
        except StackError:
            return None
        averaged = test.group_by("fname").agg(
            *[pl.col(c).mean().alias(f"{name}:{c}") for c in labels], pl.len().alias("_n")
        )
        if (averaged["_n"] != k).any():
            raise StackError(f"{runs_dir / name}: fold test predictions cover different clips")
        averaged = averaged.drop("_n")
        table = (
            averaged
            if table is None
            else table.join(averaged, on="fname", how="full", coalesce=True)
        )
    if table is not None and table.null_count().sum_horizontal().item():
        raise StackError("experiments predicted different test clips; retrain them on one dataset")
    return None if table is None else table.sort("fname")


def accuracy(probabilities: np.ndarray, truth: np.ndarray) -> float:
    return float((probabilities.argmax(axis=1) == truth).mean())


def run_stack(
    config: StackConfig,
    runs_dir: Path,
    folds_file: Path,
    labels: list[str],
    progress: bool = True,
    manifest: pl.DataFrame | None = None,
    report_columns: list[str] | None = None,
) -> dict[str, Any]:
    """Cross-validate the stacker on the folds, predict the test set, write the outputs
    (with a report whose per-group tables come from ``manifest``'s ``report_columns``)."""
    import lightgbm

    folds = read_folds(folds_file)
    oof = collect_oof(runs_dir, config.experiments, folds, labels)
    k = int(folds["fold"].max()) + 1  # type: ignore[arg-type]
    truth = oof["label"].replace_strict({label: i for i, label in enumerate(labels)}).to_numpy()
    fold_of = oof["fold"].to_numpy()
    feature_columns = [c for c in oof.columns if ":" in c]
    features = oof.select(feature_columns).to_numpy()
    test = collect_test(runs_dir, config.experiments, k, labels)

    per_experiment = {
        name: accuracy(oof.select([f"{name}:{c}" for c in labels]).to_numpy(), truth)
        for name in config.experiments
    }
    stacked = np.zeros((oof.height, len(labels)), dtype=np.float64)
    test_stacked = None if test is None else np.zeros((test.height, len(labels)))
    present = np.unique(truth)
    stackers: list[tuple[Any, list[int]]] = []  # (fitted model, label index of each column)
    for fold in range(k):
        train_rows, held_rows = fold_of != fold, fold_of == fold
        model = lightgbm.LGBMClassifier(
            objective="multiclass" if len(np.unique(truth[train_rows])) > 2 else "binary",
            random_state=config.seed + fold,
            verbose=-1,
            **config.lightgbm.model_dump(),
        )
        model.fit(features[train_rows], truth[train_rows])
        # Classes absent from the training rows get probability 0 in their column.
        columns = np.searchsorted(present, model.classes_)
        stackers.append((model, present[columns].tolist()))
        stacked[np.ix_(held_rows, present[columns])] = model.predict_proba(features[held_rows])
        if test is not None and test_stacked is not None:
            test_stacked[:, present[columns]] += (
                model.predict_proba(test.select(feature_columns).to_numpy()) / k
            )
    metrics = {
        "experiments": per_experiment,
        "stack_accuracy": accuracy(stacked, truth),
        "mean_accuracy": accuracy(
            sum(oof.select([f"{n}:{c}" for c in labels]).to_numpy() for n in config.experiments),
            truth,
        ),
        "folds": k,
        "clips": oof.height,
        "test_clips": 0 if test is None else test.height,
    }
    stack_oof = pl.DataFrame(
        {"fname": oof["fname"], **{c: stacked[:, i] for i, c in enumerate(labels)}}
    )
    out_dir = runs_dir / config.name
    with atomic_directory(out_dir) as folder:
        atomic_write_frame(folder / "oof.parquet", stack_oof)
        if test is not None and test_stacked is not None:
            atomic_write_frame(
                folder / "test.parquet",
                pl.DataFrame(
                    {
                        "fname": test["fname"],
                        **{c: test_stacked[:, i] for i, c in enumerate(labels)},
                    }
                ),
            )
        for fold, (model, _) in enumerate(stackers):
            atomic_write_text(folder / f"stacker_fold{fold}.txt", model.booster_.model_to_string())
        atomic_write_json(
            folder / "stacker.json",
            {
                "experiments": config.experiments,
                "labels": labels,
                "features": feature_columns,
                "folds": [
                    {"file": f"stacker_fold{f}.txt", "classes": c}
                    for f, (_, c) in enumerate(stackers)
                ],
            },
        )
        atomic_write_json(folder / "metrics.json", metrics)
        atomic_write_json(folder / "config.json", config.model_dump(mode="json"))
        if manifest is not None:
            from speechstack.report import with_manifest, write_report

            columns = report_columns or []
            write_report(
                folder,
                f"{runs_dir.name} / {config.name} over {', '.join(config.experiments)}",
                with_manifest(stack_oof, manifest, columns),
                labels,
                columns,
            )
    return metrics


def apply_stack(stack_dir: Path, features: pl.DataFrame) -> np.ndarray:
    """Label probabilities ``(clips, labels)`` of the saved fold stackers (averaged) for
    ``features``: a frame with the ``<experiment>:<label>`` columns the stack was fit on."""
    import lightgbm

    spec_path = stack_dir / "stacker.json"
    if not spec_path.is_file():
        raise StackError(f"{spec_path} not found; run `make stack` (it saves the stackers)")
    spec = json.loads(spec_path.read_text())
    missing = [c for c in spec["features"] if c not in features.columns]
    if missing:
        raise StackError(f"features {missing[:3]} missing for the stack in {stack_dir}")
    matrix = features.select(spec["features"]).to_numpy()
    out = np.zeros((matrix.shape[0], len(spec["labels"])))
    for fold in spec["folds"]:
        booster = lightgbm.Booster(model_file=str(stack_dir / fold["file"]))
        probabilities = np.asarray(booster.predict(matrix))
        if probabilities.ndim == 1:  # a binary stacker gives the second class's probability
            probabilities = np.stack([1.0 - probabilities, probabilities], axis=1)
        out[:, fold["classes"]] += probabilities / len(spec["folds"])
    return out
