"""Speaker-grouped, label-stratified folds, written once to ``folds/<task>.csv``.

Every later stage (train-fold, stack) reads the same file, so out-of-fold predictions of
different experiments line up row for row and the stacker is validated on the same split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from sklearn.model_selection import StratifiedGroupKFold

from speechstack.artifacts import atomic_write_frame

FOLD_COLUMNS = ["fname", "label", "group", "fold"]


class FoldsError(ValueError):
    """The folds file is missing, malformed or does not match the dataset."""


def assign_folds(manifest: pl.DataFrame, k: int, seed: int) -> pl.DataFrame:
    """Add a ``fold`` column (0..k-1): StratifiedGroupKFold on ``label`` by ``group``."""
    groups = manifest["group"].n_unique()
    if groups < k:
        raise FoldsError(f"only {groups} speakers/groups for {k} folds; lower folds.k")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    fold = np.full(manifest.height, -1, dtype=np.int64)
    labels = manifest["label"].to_numpy()
    group_ids = manifest["group"].to_numpy()
    for index, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels, group_ids)):
        fold[held_out] = index
    return manifest.with_columns(pl.Series("fold", fold))


def write_folds(
    manifest: pl.DataFrame, path: Path, k: int, seed: int, force: bool = False
) -> pl.DataFrame:
    """Assign folds and write them; refuses to replace an existing file unless ``force``."""
    if path.exists() and not force:
        raise FoldsError(
            f"{path} already exists; folds are written once so every experiment shares them "
            "(delete it or pass --force / FORCE=1 to rewrite; finished runs then no longer match)"
        )
    folds = assign_folds(scored_rows(manifest), k, seed).select(FOLD_COLUMNS)
    atomic_write_frame(path, folds)
    return folds


def scored_rows(manifest: pl.DataFrame) -> pl.DataFrame:
    """The clips that are folded, validated and stacked: those whose optional ``scored``
    column is true (every clip when there is none). The others only ever train."""
    if "scored" not in manifest.columns:
        return manifest
    return manifest.filter(pl.col("scored"))


def fold_count(folds: pl.DataFrame) -> int:
    """k of a folds frame (folds are numbered 0..k-1)."""
    return int(folds["fold"].max()) + 1  # type: ignore[arg-type]


def read_folds(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise FoldsError(
            f"{path}: folds file not found; run `make folds` (speechstack folds) first"
        )
    try:
        folds = pl.read_csv(path, schema_overrides={"fname": pl.String, "group": pl.String})
    except (pl.exceptions.ComputeError, OSError) as error:
        raise FoldsError(f"{path}: cannot read folds file ({error})") from error
    missing = [c for c in FOLD_COLUMNS if c not in folds.columns]
    if missing:
        raise FoldsError(f"{path}: missing columns {missing}; expected {FOLD_COLUMNS}")
    if folds["fname"].is_duplicated().any():
        raise FoldsError(f"{path}: duplicate fname rows")
    return folds


def attach_folds(manifest: pl.DataFrame, folds: pl.DataFrame, path: Path) -> pl.DataFrame:
    """Join the fold column onto the manifest; the two must hold exactly the same clips."""
    extra = set(manifest["fname"]) - set(folds["fname"])
    gone = set(folds["fname"]) - set(manifest["fname"])
    if extra or gone:
        example = sorted(extra or gone)[:3]
        raise FoldsError(
            f"{path} does not match the dataset: {len(extra)} clips have no fold, "
            f"{len(gone)} folded clips are not in the dataset (e.g. {example}). The data "
            "or the task settings changed since the folds were written: rewrite them with "
            "`make folds FORCE=1` (and retrain), or point folds.file at the matching file."
        )
    return manifest.join(folds.select("fname", "fold"), on="fname", how="left")
