"""speechstack.artifacts: files and folders appear whole or not at all."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest

from speechstack import artifacts
from speechstack.artifacts import (
    atomic_directory,
    atomic_path,
    atomic_write_frame,
    atomic_write_json,
    atomic_write_text,
)

INTERRUPTIONS = [KeyboardInterrupt(), RuntimeError("crash"), SystemExit(1)]
INTERRUPTION_IDS = ["KeyboardInterrupt", "RuntimeError", "SystemExit"]


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_text_creates_parents_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "note.txt"
    atomic_write_text(path, "hello\n")
    assert path.read_text() == "hello\n"
    atomic_write_text(path, "replaced")
    assert path.read_text() == "replaced"
    assert names(path.parent) == ["note.txt"]


def test_atomic_write_json_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    data = {"accuracy": 0.875, "fold": 2, "labels": ["yes", "no"]}
    atomic_write_json(path, data)
    assert json.loads(path.read_text()) == data
    assert path.read_text().endswith("\n")
    assert names(tmp_path) == ["metrics.json"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_atomic_write_frame_writes_csv_and_parquet(tmp_path: Path, suffix: str) -> None:
    frame = pl.DataFrame({"fname": ["a.wav", "b.wav"], "yes": [0.25, 0.75]})
    path = tmp_path / f"probabilities{suffix}"
    atomic_write_frame(path, frame)
    read = pl.read_csv(path) if suffix == ".csv" else pl.read_parquet(path)
    assert read.equals(frame)
    assert names(tmp_path) == [path.name]


def test_atomic_write_frame_rejects_other_formats(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        atomic_write_frame(tmp_path / "table.xlsx", pl.DataFrame({"a": [1]}))
    assert names(tmp_path) == []


@pytest.mark.parametrize("interruption", INTERRUPTIONS, ids=INTERRUPTION_IDS)
def test_interrupted_atomic_path_keeps_the_old_file(
    tmp_path: Path, interruption: BaseException
) -> None:
    path = tmp_path / "oof.csv"
    path.write_text("old,complete\n")
    with pytest.raises(type(interruption)), atomic_path(path, ".csv") as temp:
        assert temp.parent == tmp_path and temp != path
        temp.write_text("new,half")
        raise interruption
    assert path.read_text() == "old,complete\n"
    assert names(tmp_path) == ["oof.csv"]


@pytest.mark.parametrize("interruption", INTERRUPTIONS, ids=INTERRUPTION_IDS)
def test_interrupted_first_write_leaves_nothing(
    tmp_path: Path, interruption: BaseException
) -> None:
    with pytest.raises(type(interruption)), atomic_path(tmp_path / "new.json") as temp:
        temp.write_text("{")
        raise interruption
    assert names(tmp_path) == []


def test_failed_frame_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "test_probabilities.parquet"
    old = pl.DataFrame({"fname": ["a.wav"], "yes": [1.0]})
    atomic_write_frame(path, old)

    def half_write(frame: pl.DataFrame, file: Path, *args: object, **kwargs: object) -> None:
        Path(file).write_bytes(b"PAR1 half")
        raise KeyboardInterrupt

    monkeypatch.setattr(pl.DataFrame, "write_parquet", half_write)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_frame(path, pl.DataFrame({"fname": ["b.wav"], "yes": [0.0]}))
    assert pl.read_parquet(path).equals(old)
    assert names(tmp_path) == [path.name]


def test_atomic_directory_replaces_the_folder_as_a_whole(tmp_path: Path) -> None:
    run = tmp_path / "fold0"
    run.mkdir()
    (run / "stale.txt").write_text("from an old run")
    with atomic_directory(run) as temp:
        assert temp.parent == tmp_path and temp != run
        (temp / "weights.txt").write_text("new")
    assert names(run) == ["weights.txt"]
    assert names(tmp_path) == ["fold0"]


@pytest.mark.parametrize("interruption", INTERRUPTIONS, ids=INTERRUPTION_IDS)
def test_interrupted_atomic_directory_keeps_the_old_folder(
    tmp_path: Path, interruption: BaseException
) -> None:
    run = tmp_path / "fold0"
    run.mkdir()
    (run / "metrics.json").write_text('{"accuracy": 0.9}')
    with pytest.raises(type(interruption)), atomic_directory(run) as temp:
        (temp / "metrics.json").write_text("{")
        raise interruption
    assert names(run) == ["metrics.json"]
    assert (run / "metrics.json").read_text() == '{"accuracy": 0.9}'
    assert names(tmp_path) == ["fold0"]


def test_interrupted_new_directory_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), atomic_directory(tmp_path / "fold1") as temp:
        (temp / "part").write_text("x")
        raise KeyboardInterrupt
    assert names(tmp_path) == []


def test_atomic_directory_keeps_the_old_folder_if_the_final_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure (or Ctrl-C) while the new folder is swapped in must not lose both the old
    folder and the new one: "a crash never leaves lost work"."""
    run = tmp_path / "fold0"
    run.mkdir()
    (run / "metrics.json").write_text('{"accuracy": 0.9}')

    def failing_replace(source: object, target: object) -> None:
        raise OSError("rename failed")

    real_replace = os.replace
    monkeypatch.setattr(artifacts.os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"), atomic_directory(run) as temp:
        (temp / "metrics.json").write_text('{"accuracy": 0.95}')
    monkeypatch.undo()
    assert artifacts.os.replace is real_replace
    # Either the old folder or the new one must still exist, whole.
    assert run.is_dir(), "both the old and the new folder are gone"
    assert (run / "metrics.json").read_text() in ('{"accuracy": 0.9}', '{"accuracy": 0.95}')
