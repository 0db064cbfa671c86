"""Pseudo-labelling: confident test clips, with their predicted label, for the next round.

The test set's speakers and conditions are the ones that are scored, so a second round of
training that also sees confidently predicted test clips (on the training side of every
fold, never a validation side) learns those conditions. A clip is chosen when

* the source's top probability is at least ``pseudo.threshold``, and
* with ``pseudo.agreement``, the models behind the source agree on its label: for a stack,
  every member experiment's fold-averaged prediction has the stack's argmax; for a single
  experiment, every one of its fold models has the same argmax;

and then, if more than ``pseudo.max_share`` of the test clips are left, only the most
confident ones are kept. The source is ``pseudo.source`` (default ``stack.name``): a folder
of ``runs/<task>/`` with ``stacker.json`` is a stack, any other an experiment.

The result is written to ``runs/<task>/pseudo/round<r>.csv`` (``fname, path, label,
confidence``; absolute paths), which ``train.pseudo_labels`` reads back through
:func:`read_pseudo_labels`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl

from speechstack.artifacts import atomic_write_frame, read_frame
from speechstack.config import Config, PseudoConfig
from speechstack.stack import STACKER_SPEC, collect_test, member_columns, stack_members
from speechstack.submission import predicted_labels
from speechstack.tasks import Task

PSEUDO_COLUMNS = ["fname", "path", "label"]  # what training reads
PSEUDO_SCHEMA = {
    "fname": pl.String,
    "path": pl.String,
    "label": pl.String,
    "confidence": pl.Float64,
}


class PseudoLabelError(ValueError):
    """A pseudo-label source or file that cannot be used; the message names the path."""


# ---------------------------------------------------------------------------------------
# Selection


def pseudo_labels_path(config: Config) -> Path:
    """``runs/<task>/pseudo/round<r>.csv``: where round ``pseudo.round``'s labels go."""
    return config.task_runs_dir / "pseudo" / f"round{config.pseudo.round}.csv"


def pseudo_source(config: Config) -> str:
    """The run whose test predictions decide: ``pseudo.source``, else the stack."""
    return config.pseudo.source or config.stack.name


def _fold_test_paths(run_dir: Path, k: int) -> list[Path]:
    """Each fold's ``test.parquet`` of an experiment; a missing one is a clear error."""
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"{run_dir} not found: experiment '{run_dir.name}' is not trained "
            f"(run `make train EXP={run_dir.name}` with its MODEL/CONFIG)"
        )
    paths = [run_dir / f"fold{fold}" / "test.parquet" for fold in range(k)]
    for fold, path in enumerate(paths):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: fold {fold} of experiment '{run_dir.name}' has no test "
                f"predictions (run `make train-fold ... FOLD={fold}` or `make train "
                f"EXP={run_dir.name}` on data with a test set)"
            )
    return paths


def _check_label_columns(frame: pl.DataFrame, path: Path, labels: list[str]) -> None:
    missing = [c for c in ["fname", *labels] if c not in frame.columns]
    if missing:
        raise PseudoLabelError(f"{path}: lacks the columns {missing} (the task's labels)")


def _stack_predictions(
    run_dir: Path, runs_dir: Path, labels: list[str], k: int, agreement: bool
) -> pl.DataFrame:
    """fname, the stack's label probabilities and ``agree`` (every member experiment's
    fold-averaged argmax is the stack's)."""
    test_path = run_dir / "test.parquet"
    if not test_path.is_file():
        raise FileNotFoundError(
            f"{test_path} not found: the stack '{run_dir.name}' has no test predictions "
            "(run `make stack` after training on data with a test set)"
        )
    stack = read_frame(test_path)
    _check_label_columns(stack, test_path, labels)
    stack = stack.select("fname", *labels).sort("fname")
    if not agreement:
        return stack.with_columns(pl.lit(True).alias("agree"))
    spec = json.loads((run_dir / STACKER_SPEC).read_text())
    members: list[str] = list(spec.get("experiments", []))
    if not members:
        raise PseudoLabelError(f"{run_dir / STACKER_SPEC} lists no experiments")
    k = len(spec.get("folds", [])) or k  # the folds the stack was made on
    for member in members:
        _fold_test_paths(runs_dir / member, k)
    averaged = collect_test(runs_dir, members, k, labels)
    assert averaged is not None  # every member's fold files exist (checked above)
    joined = stack.join(averaged, on="fname", how="left")
    unmatched = joined.filter(pl.col(f"{members[0]}:{labels[0]}").is_null())
    if unmatched.height:
        raise PseudoLabelError(
            f"{test_path}: {unmatched.height} clips (e.g. {unmatched['fname'][0]}) are not "
            f"predicted by its experiments {members}; re-run `make stack`"
        )
    stack_labels = predicted_labels(joined, labels)
    agree = np.ones(joined.height, dtype=bool)
    for member in members:
        agree &= predicted_labels(joined, labels, member_columns(member, labels)) == stack_labels
    return stack.with_columns(pl.Series("agree", agree))


def _experiment_predictions(
    run_dir: Path, labels: list[str], k: int, agreement: bool
) -> pl.DataFrame:
    """fname, the experiment's fold-averaged label probabilities and ``agree`` (all its fold
    models have the same argmax)."""
    paths = _fold_test_paths(run_dir, k)
    averaged = collect_test(run_dir.parent, [run_dir.name], k, labels)
    assert averaged is not None  # every fold file exists (checked above)
    averaged = averaged.rename({f"{run_dir.name}:{c}": c for c in labels})
    agree = np.ones(averaged.height, dtype=bool)
    if agreement:
        first: np.ndarray | None = None
        for path in paths:
            fold = read_frame(path)
            _check_label_columns(fold, path, labels)
            fold = averaged.select("fname").join(fold, on="fname", how="left")
            if fold[labels[0]].null_count():
                raise PseudoLabelError(f"{path}: does not predict every test clip of {run_dir}")
            predicted = predicted_labels(fold, labels)
            first = predicted if first is None else first
            agree &= predicted == first
    return averaged.with_columns(pl.Series("agree", agree))


def _test_paths(task: Task, predicted: pl.DataFrame, source_dir: Path) -> pl.DataFrame:
    """fname -> absolute path from the task's test manifest; the predicted clips and the
    test set must be the same clips (else the runs were made on other data)."""
    manifest = task.test_manifest()
    if manifest is None:
        raise PseudoLabelError(
            f"{task.data_dir}: the task has no test set, so there is nothing to pseudo-label"
        )
    if manifest["fname"].is_duplicated().any():
        raise PseudoLabelError(f"{task.data_dir}: the test manifest repeats clip names")
    segments = manifest.filter(
        (pl.col("start") != 0) | pl.col("duration").is_not_null() | (pl.col("gain_db") != 0)
    )
    if segments.height:
        raise PseudoLabelError(
            f"{task.data_dir}: test clip {segments['fname'][0]} is a segment of its file "
            "(start/duration/gain); pseudo labels name whole files only"
        )
    names, predicted_names = set(manifest["fname"]), set(predicted["fname"])
    if names != predicted_names:
        extra, absent = sorted(predicted_names - names), sorted(names - predicted_names)
        raise PseudoLabelError(
            f"{source_dir}: its test predictions and the test set of {task.data_dir} differ "
            f"({len(extra)} predicted clips not in the test set, e.g. {extra[:2]}; "
            f"{len(absent)} test clips not predicted, e.g. {absent[:2]}): "
            "retrain or re-stack on this dataset"
        )
    return manifest.select(
        "fname",
        pl.Series("path", [os.path.abspath(p) for p in manifest["path"]], dtype=pl.String),
    )


def source_predictions(config: Config, task: Task) -> pl.DataFrame:
    """Every test clip as the source sees it: ``fname, path, label, confidence, agree``
    (label = argmax, confidence = its probability), sorted by fname."""
    source = pseudo_source(config)
    runs_dir = config.task_runs_dir
    source_dir = runs_dir / source
    labels = task.labels
    if not source_dir.is_dir():
        make = (
            "`make stack`"
            if source == config.stack.name
            else f"`make train EXP={source}` (or `make stack` if it is a stack)"
        )
        raise FileNotFoundError(
            f"{source_dir} not found: pseudo.source '{source}' has no run; run {make} first"
        )
    if stack_members(source_dir) is not None:
        frame = _stack_predictions(
            source_dir, runs_dir, labels, config.folds.k, config.pseudo.agreement
        )
    else:
        frame = _experiment_predictions(source_dir, labels, config.folds.k, config.pseudo.agreement)
    probabilities = frame.select(labels).to_numpy()
    paths = _test_paths(task, frame, source_dir)
    return (
        frame.select(
            "fname",
            pl.Series("label", predicted_labels(frame, labels), dtype=pl.String),
            pl.Series("confidence", probabilities.max(axis=1), dtype=pl.Float64),
            "agree",
        )
        .join(paths, on="fname")
        .select("fname", "path", "label", "confidence", "agree")
        .sort("fname")
    )


def choose_confident(predictions: pl.DataFrame, pseudo: PseudoConfig) -> pl.DataFrame:
    """The clips of ``predictions`` (``source_predictions``) that pass the threshold and agree,
    capped at ``max_share`` of all its clips by confidence (ties: by fname); columns
    ``fname, path, label, confidence``, sorted by fname."""
    chosen = predictions.filter(pl.col("confidence") >= pseudo.threshold)
    if pseudo.agreement:
        chosen = chosen.filter(pl.col("agree"))
    limit = int(pseudo.max_share * predictions.height + 1e-9)
    if chosen.height > limit:
        chosen = chosen.sort(["confidence", "fname"], descending=[True, False]).head(limit)
    return chosen.select(list(PSEUDO_SCHEMA)).sort("fname")


def select_pseudo_labels(config: Config, task: Task) -> pl.DataFrame:
    """Confident, agreed test clips of ``pseudo.source`` (default the stack) under
    ``config.pseudo``: ``fname, path, label, confidence``, sorted by fname."""
    return choose_confident(source_predictions(config, task), config.pseudo)


def class_counts(frame: pl.DataFrame, labels: list[str]) -> pl.DataFrame:
    """Per label (every one of ``labels``, in order): ``clips``, their ``share`` of the frame
    and ``mean_confidence`` (null without clips or without a confidence column)."""
    has_confidence = "confidence" in frame.columns
    grouped = frame.group_by("label").agg(
        pl.len().alias("clips"),
        (pl.col("confidence").mean() if has_confidence else pl.lit(None, pl.Float64)).alias(
            "mean_confidence"
        ),
    )
    table = (
        pl.DataFrame({"label": labels}, schema={"label": pl.String})
        .join(grouped, on="label", how="left")
        .with_columns(pl.col("clips").fill_null(0).cast(pl.Int64))
    )
    total = max(frame.height, 1)
    return table.select(
        "label",
        "clips",
        (pl.col("clips") / total).alias("share"),
        pl.col("mean_confidence").cast(pl.Float64),
    )


# ---------------------------------------------------------------------------------------
# The file


def write_pseudo_labels(frame: pl.DataFrame, path: Path) -> Path:
    """Write ``fname, path, label, confidence`` as CSV, atomically (whole or not at all)."""
    columns = [c for c in PSEUDO_SCHEMA if c in frame.columns]
    missing = [c for c in PSEUDO_COLUMNS if c not in columns]
    if missing:
        raise PseudoLabelError(f"pseudo labels for {path} lack the columns {missing}")
    atomic_write_frame(Path(path), frame.select(columns))
    return Path(path)


def read_pseudo_labels(path: Path | str, labels: list[str]) -> pl.DataFrame:
    """The pseudo labels of a CSV (``speechstack pseudo`` writes them): ``fname, path,
    label`` (paths absolute; a relative one is taken from the CSV's folder), in file order.

    Rejects, naming the file and its line: a missing column, an empty cell, a label outside
    ``labels``, a clip named twice, an audio file that does not exist. Extra columns
    (``confidence``) are ignored. A header-only file gives no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: pseudo-label file not found (`make pseudo` writes runs/<task>/pseudo/)"
        )
    try:
        frame = pl.read_csv(path, infer_schema=False)
    except pl.exceptions.NoDataError:
        raise PseudoLabelError(
            f"{path}: empty file (expected the header fname,path,label)"
        ) from None
    except pl.exceptions.ComputeError as error:
        raise PseudoLabelError(f"{path}: not a readable CSV: {error}") from error
    missing = [c for c in PSEUDO_COLUMNS if c not in frame.columns]
    if missing:
        raise PseudoLabelError(
            f"{path}: missing column(s) {missing}; expected fname, path, label "
            f"(found {frame.columns})"
        )
    frame = frame.select(PSEUDO_COLUMNS).with_row_index("line", offset=2)  # line 1: header

    def where(row: dict[str, object]) -> str:
        return f"{path}, line {row['line']} (fname {row['fname']!r})"

    for column in PSEUDO_COLUMNS:
        empty = frame.filter(pl.col(column).is_null() | (pl.col(column).str.strip_chars() == ""))
        if empty.height:
            raise PseudoLabelError(f"{where(empty.row(0, named=True))}: empty {column}")
    unknown = frame.filter(~pl.col("label").is_in(labels))
    if unknown.height:
        row = unknown.row(0, named=True)
        raise PseudoLabelError(
            f"{where(row)}: label {row['label']!r} is not one of the task's labels {labels}"
            + (f" ({unknown.height} such rows)" if unknown.height > 1 else "")
        )
    repeated = frame.filter(pl.col("fname").is_duplicated())
    if repeated.height:
        name = repeated["fname"][0]
        lines = repeated.filter(pl.col("fname") == name)["line"].to_list()
        raise PseudoLabelError(f"{path}: clip {name!r} is listed more than once (lines {lines})")
    absolute = [p if os.path.isabs(p) else os.path.abspath(path.parent / p) for p in frame["path"]]
    frame = frame.with_columns(pl.Series("path", absolute, dtype=pl.String))
    absent = frame.filter(~pl.Series([os.path.isfile(p) for p in absolute], dtype=pl.Boolean))
    if absent.height:
        row = absent.row(0, named=True)
        raise PseudoLabelError(
            f"{where(row)}: audio file {row['path']} does not exist"
            + (f" ({absent.height} missing files)" if absent.height > 1 else "")
        )
    return frame.select(PSEUDO_COLUMNS)
