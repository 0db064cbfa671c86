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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from speechstack.artifacts import (
    atomic_directory,
    atomic_write_frame,
    atomic_write_json,
    atomic_write_text,
    read_frame,
)
from speechstack.config import StackConfig
from speechstack.folds import fold_count, read_folds
from speechstack.lock import RunLock
from speechstack.submission import label_accuracy

log = logging.getLogger(__name__)


class StackError(ValueError):
    """Missing or inconsistent experiment outputs; the message names the folder."""


def member_columns(experiment: str, labels: list[str]) -> list[str]:
    """The stacker's feature columns of one member: ``<experiment>:<label>`` per label."""
    return [f"{experiment}:{label}" for label in labels]


def _read_experiment(run_dir: Path, k: int, kind: str) -> pl.DataFrame:
    frames = []
    for fold in range(k):
        path = run_dir / f"fold{fold}" / f"{kind}.parquet"
        if not path.is_file():
            raise StackError(
                f"{path} is missing: fold {fold} of experiment '{run_dir.name}' is not trained "
                f"(run `make train-fold ... FOLD={fold}` or `make train`)"
            )
        frames.append(read_frame(path).with_columns(pl.lit(fold).alias("_fold")))
    return pl.concat(frames)


def collect_oof(
    runs_dir: Path,
    experiments: list[str],
    folds: pl.DataFrame,
    labels: list[str],
    kind: str = "oof",
) -> pl.DataFrame:
    """One row per folded clip: fname, label, fold and ``<experiment>:<label>`` columns,
    from each fold's ``<kind>.parquet`` (``oof``, or ``oof_shifted``: the same clips under
    test-like conditions).

    Checks that every experiment predicted every clip exactly once, from the model that
    held that clip's fold out.
    """
    k = fold_count(folds)
    table = folds.select("fname", "label", "fold")
    for name in experiments:
        oof = _read_experiment(runs_dir / name, k, kind)
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
            oof.select(
                "fname",
                *[
                    pl.col(c).alias(f)
                    for c, f in zip(labels, member_columns(name, labels), strict=True)
                ],
            ),
            on="fname",
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
            *[
                pl.col(c).mean().alias(f)
                for c, f in zip(labels, member_columns(name, labels), strict=True)
            ],
            pl.len().alias("_n"),
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


STACKER_SPEC = "stacker.json"  # in a run folder: the folder is a stack, not an experiment


def stack_members(run_dir: Path) -> list[str] | None:
    """The member experiments of a stack's run folder; None for an experiment's folder."""
    spec = Path(run_dir) / STACKER_SPEC
    if not spec.is_file():
        return None
    return list(json.loads(spec.read_text()).get("experiments", []))


@dataclass(frozen=True)
class SourcePredictions:
    """What a submission is made from: a stack's kept source or one experiment's folds."""

    test: pl.DataFrame  # fname + one probability column per label
    cv_accuracy: float
    note: str | None  # why a stack submits what it does


def source_predictions(
    runs_dir: Path, source: str, folds_file: Path, labels: list[str], is_stack: bool = False
) -> SourcePredictions:
    """Test probabilities and CV accuracy of ``source``: a stack's (``test.parquet``,
    ``metrics.json``), or an experiment's fold models averaged (CV over its OOF rows).
    ``is_stack`` forces the stack reading (the configured stack name, before it exists)."""
    source_dir = runs_dir / source
    if is_stack or stack_members(source_dir) is not None:
        test_path = source_dir / "test.parquet"
        if not test_path.is_file():
            raise FileNotFoundError(f"{test_path} not found; run `make stack` first")
        metrics = json.loads((source_dir / "metrics.json").read_text())
        note = None
        if "selected" in metrics:
            note = (
                f"stack {source!r} submits its {metrics['selected']!r} source ({metrics['reason']})"
            )
        return SourcePredictions(read_frame(test_path), metrics["stack_accuracy"], note)
    folds = read_folds(folds_file)
    oof = collect_oof(runs_dir, [source], folds, labels)  # names a missing fold file
    test = collect_test(runs_dir, [source], fold_count(folds), labels)
    if test is None:
        raise FileNotFoundError(f"{source_dir}: no test predictions (does the data have test/?)")
    columns = member_columns(source, labels)
    return SourcePredictions(
        test.rename(dict(zip(columns, labels, strict=True))),
        label_accuracy(oof, oof["label"], labels, columns),
        None,
    )


def source_oof(runs_dir: Path, source: str, folds_file: Path, labels: list[str]) -> pl.DataFrame:
    """Out-of-fold label probabilities of ``source`` (``fname`` + one column per label):
    a stack's ``oof.parquet`` (its kept source), or an experiment's fold OOF rows."""
    source_dir = runs_dir / source
    if stack_members(source_dir) is not None:
        path = source_dir / "oof.parquet"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; run `make stack` first")
        return read_frame(path).select("fname", *labels)
    oof = collect_oof(runs_dir, [source], read_folds(folds_file), labels)
    columns = member_columns(source, labels)
    return oof.select(
        "fname", *[pl.col(c).alias(label) for c, label in zip(columns, labels, strict=True)]
    )


def accuracy(probabilities: np.ndarray, truth: np.ndarray) -> float:
    return float((probabilities.argmax(axis=1) == truth).mean())


def has_shifted_oof(runs_dir: Path, experiments: list[str], k: int) -> bool:
    """Whether every fold of every experiment wrote ``oof_shifted.parquet``."""
    return all(
        (runs_dir / name / f"fold{fold}" / "oof_shifted.parquet").is_file()
        for name in experiments
        for fold in range(k)
    )


def member_probabilities(table: pl.DataFrame, name: str, labels: list[str]) -> np.ndarray:
    """``(clips, labels)`` of one experiment's ``<name>:<label>`` columns."""
    return table.select(member_columns(name, labels)).to_numpy()


def mean_probabilities(table: pl.DataFrame, names: list[str], labels: list[str]) -> np.ndarray:
    """The plain mean of the experiments' label probabilities."""
    return sum(member_probabilities(table, n, labels) for n in names) / len(names)


MEAN, LIGHTGBM = "mean", "lightgbm"


def choose_source(right: dict[str, np.ndarray], by: str, margin_se: float = 2.0) -> tuple[str, str]:
    """(name, reason): the simplest candidate within ``margin_se`` standard errors of the best.

    ``right`` holds, per candidate, whether each row of the ``by`` table (``shifted`` or
    ``cv``) was predicted right; candidates are listed simplest first (the mean, the
    members, then LightGBM). The best by accuracy sets the bar, and the first candidate
    whose accuracy is below it by at most ``margin_se`` standard errors of the paired
    per-row difference is kept: a gain the rows cannot resolve does not buy the stacker's
    extra freedom, which a test of voices unlike every training voice punishes (the
    shifted OOF rows hold out noise, rooms and speakers, not the kind of voice). Equal
    candidates keep the simplest."""
    names = list(right)
    score = {name: float(np.mean(right[name])) for name in names}
    best = max(names, key=lambda name: (score[name], -names.index(name)))
    rows = len(right[best])

    def standard_error(name: str) -> float:
        difference = right[best].astype(float) - right[name].astype(float)
        return float(difference.std(ddof=1) / np.sqrt(rows)) if rows > 1 else 0.0

    kept = next(n for n in names if score[best] - score[n] <= margin_se * standard_error(n))
    ranked = ", ".join(f"{n} {score[n]:.4f}" for n in sorted(names, key=lambda n: -score[n]))
    where = (
        "shifted OOF (validation clips under test-like conditions)" if by == "shifted" else "OOF"
    )
    reason = f"best {where} accuracy: {ranked}"
    if kept != best:
        reason += (
            f"; kept {kept}: {score[best] - score[kept]:.4f} behind {best}, within "
            f"{margin_se:g} standard errors ({standard_error(kept):.4f} each)"
        )
    return kept, reason


def run_stack(
    config: StackConfig,
    runs_dir: Path,
    folds_file: Path,
    labels: list[str],
    progress: bool = True,
    manifest: pl.DataFrame | None = None,
    report_columns: list[str] | None = None,
) -> dict[str, Any]:
    """Cross-validate the LightGBM stacker on the folds, score it beside the plain mean of
    probabilities and every member, keep the simplest within ``margin_se`` standard errors
    of the best (``choose_source``), and write the kept source's OOF/test predictions (with
    a report whose per-group tables come from ``manifest``'s ``report_columns``).

    When every fold wrote ``oof_shifted.parquet`` the stacker is fitted on those rows and
    the sources are compared on them: the clean OOF rows flatter, and a stacker fitted on
    them learns a confidence the shifted test does not have. A second stack of the same
    name at once is refused (``RunLockedError``)."""
    with RunLock(runs_dir, f"stack-{config.name}", f"stack {config.name!r}"):
        import lightgbm

        folds = read_folds(folds_file)
        k = fold_count(folds)
        names = config.experiments
        clean = collect_oof(runs_dir, names, folds, labels)
        shifted = (
            collect_oof(runs_dir, names, folds, labels, kind="oof_shifted")
            if has_shifted_oof(runs_dir, names, k)
            else None
        )
        fit_table = shifted if shifted is not None else clean
        truth = (
            clean["label"].replace_strict({label: i for i, label in enumerate(labels)}).to_numpy()
        )
        fold_of = clean["fold"].to_numpy()
        feature_columns = [c for c in clean.columns if ":" in c]
        tables = {"cv": clean} | ({"shifted": shifted} if shifted is not None else {})
        test = collect_test(runs_dir, names, k, labels)

        stacked = {key: np.zeros((clean.height, len(labels))) for key in tables}
        test_stacked = None if test is None else np.zeros((test.height, len(labels)))
        present = np.unique(truth)
        stackers: list[tuple[Any, list[int]]] = []  # (fitted model, label index of each column)
        fit_features = fit_table.select(feature_columns).to_numpy()
        for fold in range(k):
            train_rows, held_rows = fold_of != fold, fold_of == fold
            model = lightgbm.LGBMClassifier(
                objective="multiclass" if len(np.unique(truth[train_rows])) > 2 else "binary",
                random_state=config.seed + fold,
                verbose=-1,
                **config.lightgbm.model_dump(),
            )
            model.fit(fit_features[train_rows], truth[train_rows])
            # Classes absent from the training rows get probability 0 in their column.
            columns = np.searchsorted(present, model.classes_)
            stackers.append((model, present[columns].tolist()))
            for key, table in tables.items():
                features = table.select(feature_columns).to_numpy()[held_rows]
                stacked[key][np.ix_(held_rows, present[columns])] = model.predict_proba(features)
            if test is not None and test_stacked is not None:
                test_stacked[:, present[columns]] += (
                    model.predict_proba(test.select(feature_columns).to_numpy()) / k
                )

        # Every candidate source: OOF probabilities per condition, and its test probabilities.
        candidates: dict[str, dict[str, np.ndarray | None]] = {
            MEAN: {key: mean_probabilities(t, names, labels) for key, t in tables.items()}
            | {"test": None if test is None else mean_probabilities(test, names, labels)},
        }
        for name in names:
            candidates[name] = {
                key: member_probabilities(t, name, labels) for key, t in tables.items()
            }
            candidates[name]["test"] = (
                None if test is None else member_probabilities(test, name, labels)
            )
        candidates[LIGHTGBM] = {**stacked, "test": test_stacked}
        scores: dict[str, dict[str, float | None]] = {
            name: {key: accuracy(c[key], truth) if key in c else None for key in ("cv", "shifted")}
            for name, c in candidates.items()
        }
        by = "shifted" if shifted is not None else "cv"
        selected, reason = choose_source(
            {name: c[by].argmax(axis=1) == truth for name, c in candidates.items()},
            by,
            config.margin_se,
        )
        chosen = candidates[selected]
        metrics = {
            "experiments": {name: scores[name]["cv"] for name in names},
            "sources": scores,
            "selected": selected,
            "selected_by": by,
            "reason": reason,
            "stack_accuracy": scores[selected]["cv"],
            "stack_accuracy_shifted": scores[selected]["shifted"],
            "mean_accuracy": scores[MEAN]["cv"],
            "lightgbm_accuracy": scores[LIGHTGBM]["cv"],
            "folds": k,
            "clips": clean.height,
            "test_clips": 0 if test is None else test.height,
        }

        def frame(fnames: pl.Series, probabilities: np.ndarray) -> pl.DataFrame:
            return pl.DataFrame(
                {"fname": fnames, **{c: probabilities[:, i] for i, c in enumerate(labels)}}
            )

        stack_oof = frame(clean["fname"], chosen["cv"])
        out_dir = runs_dir / config.name
        with atomic_directory(out_dir) as folder:
            atomic_write_frame(folder / "oof.parquet", stack_oof)
            if shifted is not None:
                atomic_write_frame(
                    folder / "oof_shifted.parquet", frame(clean["fname"], chosen["shifted"])
                )
            if test is not None and chosen["test"] is not None:
                atomic_write_frame(folder / "test.parquet", frame(test["fname"], chosen["test"]))
            for fold, (model, _) in enumerate(stackers):
                atomic_write_text(
                    folder / f"stacker_fold{fold}.txt", model.booster_.model_to_string()
                )
            atomic_write_json(
                folder / STACKER_SPEC,
                {
                    "experiments": names,
                    "labels": labels,
                    "features": feature_columns,
                    "selected": selected,
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
                    f"{runs_dir.name} / {config.name} ({selected}) over {', '.join(names)}",
                    with_manifest(stack_oof, manifest, columns),
                    labels,
                    columns,
                )
        return metrics


def apply_stack(stack_dir: Path, features: pl.DataFrame) -> np.ndarray:
    """Label probabilities ``(clips, labels)`` of the stack's selected source for
    ``features`` (a frame with the ``<experiment>:<label>`` columns the stack was fit on):
    the saved fold stackers (averaged), the mean of the members, or one member."""
    import lightgbm

    spec_path = stack_dir / STACKER_SPEC
    if not spec_path.is_file():
        raise StackError(f"{spec_path} not found; run `make stack` (it saves the stackers)")
    spec = json.loads(spec_path.read_text())
    missing = [c for c in spec["features"] if c not in features.columns]
    if missing:
        raise StackError(f"features {missing[:3]} missing for the stack in {stack_dir}")
    selected = spec.get("selected", LIGHTGBM)
    if selected == MEAN:
        return mean_probabilities(features, spec["experiments"], spec["labels"])
    if selected != LIGHTGBM:
        return member_probabilities(features, selected, spec["labels"])
    matrix = features.select(spec["features"]).to_numpy()
    out = np.zeros((matrix.shape[0], len(spec["labels"])))
    for fold in spec["folds"]:
        booster = lightgbm.Booster(model_file=str(stack_dir / fold["file"]))
        probabilities = np.asarray(booster.predict(matrix))
        if probabilities.ndim == 1:  # a binary stacker gives the second class's probability
            probabilities = np.stack([1.0 - probabilities, probabilities], axis=1)
        out[:, fold["classes"]] += probabilities / len(spec["folds"])
    return out
