"""`speechstack predict` on a folder holding unreadable audio: the readable files are
predicted and the others listed with their reasons in ``<out stem>.bad.csv``; ``--strict``
refuses the folder, naming the first bad file; a folder with no readable file is an error.
The run is an untrained fold (``untrained_run``): nothing is trained here."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from speechstack.cli import main
from speechstack.data import unreadable_clips
from speechstack.inference import audio_manifest

GOOD = 3


def screen_lines(stream: str) -> list[str]:
    """The lines a terminal ends up showing: progress bars (redrawn after ``\r``) and
    blank lines left out."""
    shown = (line.rsplit("\r", 1)[-1] for line in stream.split("\n"))
    return [line for line in shown if line.strip()]


@pytest.fixture
def mixed_folder(
    tmp_path: Path, tiny_speech_commands: Path, write_wav: Callable[..., Path]
) -> Path:
    """Three good test clips, a truncated WAV (its header declares more data than it
    holds) and a .wav of random bytes."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    for clip in sorted((tiny_speech_commands / "test" / "audio").glob("*.wav"))[:GOOD]:
        shutil.copy(clip, folder / clip.name)
    full = write_wav(tmp_path / "full.wav", np.zeros(16000, dtype=np.float32), 16000, "PCM_16")
    (folder / "sub").mkdir()
    (folder / "sub" / "truncated.wav").write_bytes(full.read_bytes()[:4000])
    rng = np.random.default_rng(0)
    (folder / "garbage.wav").write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    return folder


def test_unreadable_files_names_each_bad_file_with_its_reason(mixed_folder: Path) -> None:
    bad = unreadable_clips(audio_manifest(mixed_folder), 16000, progress=False)
    assert bad.columns == ["fname", "reason"]
    reasons = dict(bad.rows())
    assert sorted(reasons) == ["garbage.wav", "sub/truncated.wav"]
    assert "truncated" in reasons["sub/truncated.wav"]
    assert "cannot decode" in reasons["garbage.wav"]
    assert not any(str(mixed_folder) in reason for reason in reasons.values())  # fnames only


def test_predict_skips_bad_files_and_lists_them_beside_the_output(
    untrained_run: list[str], mixed_folder: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["predict", *untrained_run, "--audio", str(mixed_folder), "--source", "cnn"]
    assert main([*args, "--out", "out/predicted.csv"]) == 0
    predicted = pl.read_csv("out/predicted.csv")
    assert predicted.height == GOOD
    assert not set(predicted["path"]) & {"garbage.wav", "sub/truncated.wav"}
    bad = pl.read_csv("out/predicted.bad.csv")
    assert bad.columns == ["fname", "reason"]
    assert sorted(bad["fname"]) == ["garbage.wav", "sub/truncated.wav"]
    assert bad["reason"].str.len_chars().min() > 0
    out = capsys.readouterr().out
    assert "2 files could not be read: see out/predicted.bad.csv" in out

    # Once the folder is clean again, the stale list goes with the next run.
    (mixed_folder / "garbage.wav").unlink()
    shutil.rmtree(mixed_folder / "sub")
    assert main([*args, "--out", "out/predicted.csv"]) == 0
    assert not Path("out/predicted.bad.csv").exists()
    assert "could not be read" not in capsys.readouterr().out


def test_strict_refuses_the_folder_naming_the_first_bad_file(
    untrained_run: list[str], mixed_folder: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["predict", *untrained_run, "--audio", str(mixed_folder), "--source", "cnn"]
    assert main([*argv, "--out", "strict.csv", "--strict"]) == 2
    [error] = screen_lines(capsys.readouterr().err)
    assert error.startswith("error: ")
    assert str(mixed_folder / "garbage.wav") in error
    assert "2 of 5 audio files cannot be read" in error
    assert not Path("strict.csv").exists() and not Path("strict.bad.csv").exists()


def test_a_folder_without_one_readable_file_is_an_error(
    untrained_run: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "all_bad"
    folder.mkdir()
    (folder / "a.wav").write_bytes(b"not audio at all")
    (folder / "b.wav").write_bytes(b"")
    argv = ["predict", *untrained_run, "--audio", str(folder), "--source", "cnn"]
    assert main([*argv, "--out", "none.csv"]) == 2
    [error] = screen_lines(capsys.readouterr().err)
    assert f"{folder}: none of its 2 audio files can be read (e.g. a.wav: " in error
    assert not Path("none.csv").exists()
