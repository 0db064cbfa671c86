"""Atomic writes: every artefact appears whole or not at all (temp file, fsync, rename)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

log = logging.getLogger(__name__)


def _owner_tag() -> str:
    """``<host hash>-<pid>``: part of every temp name, so an orphan (its process gone) can be
    told from a temp file that a live process on this or another machine is writing."""
    host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:4]
    return f"{host}-{os.getpid()}"


# .<name>.<host>-<pid>.<random>.tmp[suffix] (atomic_path, atomic_directory) or
# .<name>.<host>-<pid>.<random>.old (a folder set aside while being replaced)
_TEMP_NAME = re.compile(r"^\..+\.(?P<host>[0-9a-f]{4})-(?P<pid>\d+)\.[^.]+\.(tmp|old)")


def _process_is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def remove_orphans(folder: Path, recursive: bool = True) -> list[Path]:
    """Remove the temp files and folders of atomic writes in ``folder`` whose process (on
    this machine) is gone: what ``kill -9`` or a power cut leaves. Returns what was removed;
    another machine's or a live process's temp files are never touched."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    host = _owner_tag().split("-")[0]
    removed = []
    candidates = folder.rglob(".*") if recursive else folder.glob(".*")
    for path in sorted(candidates):
        match = _TEMP_NAME.match(path.name)
        if match is None or match["host"] != host or not _process_is_gone(int(match["pid"])):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


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
    with _naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.{_owner_tag()}.", suffix=f".tmp{suffix}"
        )
    os.close(handle)
    temp = Path(temp_name)
    try:
        with _naming(path, temp):
            yield temp
            with open(temp, "rb") as stream:
                os.fsync(stream.fileno())
            os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
            os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _naming(path: Path, temp: Path | None = None) -> Iterator[None]:
    """An ``OSError`` (permission denied, a full disk, a read-only file system) about the
    folder or the temp file of an atomic write names the artefact the user asked for."""
    try:
        yield
    except OSError as error:
        if error.filename in (None, str(path.parent), str(temp)) or temp is None:
            raise OSError(error.errno, error.strerror or str(error), str(path)) from error
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as temp:
        temp.write_text(text)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def atomic_write_array(path: Path, array: np.ndarray) -> None:
    """``np.save`` of ``array`` to ``path`` (its folder made), atomically."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, ".npy") as temp, open(temp, "wb") as stream:
        np.save(stream, array)


def read_cached_array(path: Path, rows: int) -> np.ndarray | None:
    """A cache entry written by ``atomic_write_array``: None when absent, or when damaged
    (unreadable, or not ``rows`` rows): then removed and named in a warning, so the caller
    computes it again."""
    if not Path(path).is_file():
        return None
    try:
        array = np.load(path)
        if array.shape[:1] != (rows,):
            raise ValueError(f"shape {array.shape} for {rows} rows")
    except (OSError, ValueError, EOFError) as error:
        log.warning("cache %s is damaged (%s); computing it again", path, error)
        Path(path).unlink(missing_ok=True)
        return None
    return array


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
    owner = _owner_tag()
    with _naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(
            tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{owner}.", suffix=".tmp")
        )
    try:
        yield temp
        os.chmod(temp, 0o777 & ~_umask())
        old = path.parent / f".{path.name}.{owner}.{uuid.uuid4().hex}.old"
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


class ArtifactError(ValueError):
    """An artefact that exists but cannot be read (truncated, damaged, not what it says)."""


def read_frame(path: Path) -> pl.DataFrame:
    """A parquet or CSV table written by this package; a damaged file is an
    :class:`ArtifactError` naming it (a missing one stays ``FileNotFoundError``)."""
    path = Path(path)
    readers: dict[str, Callable[[Path], pl.DataFrame]] = {
        ".parquet": pl.read_parquet,
        ".csv": pl.read_csv,
    }
    if path.suffix not in readers:
        raise ValueError(f"{path}: unsupported table format (use .parquet or .csv)")
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        return readers[path.suffix](path)
    except Exception as error:
        raise ArtifactError(
            f"{path} cannot be read ({type(error).__name__}: {error}); it is damaged: delete "
            "it and re-run the step that wrote it"
        ) from error


def read_versioned_json(
    path: Path, file_format: str, version: int, what: str, missing: str = ""
) -> dict[str, Any]:
    """The JSON object of a file this package wrote with ``"format": file_format`` and
    ``"version": version`` (a vocabulary, a language model); a missing file is
    ``FileNotFoundError`` (``missing`` says where it comes from), one that is not readable
    JSON, not that format or another version is an :class:`ArtifactError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {what} file{missing}")
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{path} is not a readable {what} file (damaged): {error}") from error
    if not isinstance(data, dict) or data.get("format") != file_format:
        raise ArtifactError(f"{path} is not a speechstack {what} file")
    if data.get("version") != version:
        raise ArtifactError(
            f"{path}: {what} format version {data.get('version')!r}, this code reads "
            f"version {version}"
        )
    return data


def file_digest(path: Path) -> dict[str, Any]:
    """Size and SHA-256 of a file, as recorded beside artefacts to tell a damaged copy."""
    sha = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            sha.update(block)
    return {"bytes": Path(path).stat().st_size, "sha256": sha.hexdigest()}


def damaged_files(folder: Path, recorded: dict[str, dict[str, Any]]) -> list[str]:
    """The files of ``recorded`` (name -> :func:`file_digest`) in ``folder`` that are missing
    or differ, each with why; the cheap size check first."""
    problems = []
    for name, expected in sorted(recorded.items()):
        path = Path(folder) / name
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif path.stat().st_size != expected["bytes"]:
            problems.append(
                f"{path} has {path.stat().st_size} bytes, {expected['bytes']} were written"
            )
        elif file_digest(path)["sha256"] != expected["sha256"]:
            problems.append(f"{path} differs from what was written (SHA-256)")
    return problems
