"""Atomic writes: every artefact appears whole or not at all (temp file, fsync, rename)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it is renamed over ``path``.

    On any exception (including KeyboardInterrupt) the temp file is removed and ``path`` is
    left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}"
    )
    os.close(handle)
    temp = Path(temp_name)
    try:
        yield temp
        with open(temp, "rb") as stream:
            os.fsync(stream.fileno())
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as temp:
        temp.write_text(text)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def atomic_write_frame(path: Path, frame: pl.DataFrame) -> None:
    """Write a polars frame as parquet or CSV, chosen by the file suffix."""
    writers: dict[str, Callable[[pl.DataFrame, Path], None]] = {
        ".parquet": lambda df, p: df.write_parquet(p),
        ".csv": lambda df, p: df.write_csv(p),
    }
    if path.suffix not in writers:
        raise ValueError(f"{path}: unsupported table format (use .parquet or .csv)")
    with atomic_path(path, suffix=path.suffix) as temp:
        writers[path.suffix](frame, temp)


@contextlib.contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield a temp folder beside ``path``; on success it replaces ``path`` as a whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield temp
        os.chmod(temp, 0o777 & ~_umask())
        old = path.parent / f".{path.name}.{uuid.uuid4().hex}.old"
        if path.exists():
            os.replace(path, old)  # set aside, restored if the swap fails
        try:
            os.replace(temp, path)
        except BaseException:
            if old.exists():
                os.replace(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
