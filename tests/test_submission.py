"""speechstack.submission: validated fname,label CSVs that never overwrite, and the Kaggle
CLI upload (argument list, no shell), with clear errors for a missing CLI or credentials."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from speechstack import submission as submission_module
from speechstack.cli import main
from speechstack.submission import (
    COMPETITION,
    SubmissionError,
    predictions_to_submission,
    score_submission,
    submit,
    validate_submission,
    write_submission,
)
from speechstack.tasks.speech_commands import LABELS

SAMPLE_ORDER = ["clip_c.wav", "clip_a.wav", "clip_e.wav", "clip_b.wav", "clip_d.wav"]
ANSWERS = {
    "clip_a.wav": "yes",
    "clip_b.wav": "no",
    "clip_c.wav": "silence",
    "clip_d.wav": "unknown",
    "clip_e.wav": "go",
}


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "sample_submission.csv"
    pl.DataFrame({"fname": SAMPLE_ORDER, "label": ["silence"] * 5}).write_csv(path)
    return path


@pytest.fixture
def solution(tmp_path: Path) -> Path:
    path = tmp_path / "demo_solution.csv"
    pl.DataFrame({"fname": SAMPLE_ORDER, "label": [ANSWERS[f] for f in SAMPLE_ORDER]}).write_csv(
        path
    )
    return path


def answers_in_sorted_order() -> pl.DataFrame:
    fnames = sorted(ANSWERS)
    return pl.DataFrame({"fname": fnames, "label": [ANSWERS[f] for f in fnames]})


# ---------------------------------------------------------------- writing


def test_write_submission_names_the_file_and_keeps_the_sample_order(
    tmp_path: Path, sample: Path
) -> None:
    out = tmp_path / "submissions"
    path = write_submission(
        answers_in_sorted_order(), out, "speech_commands", 0.87654, LABELS, sample
    )
    assert path.parent == out
    assert re.fullmatch(r"speech_commands-\d{8}-\d{6}-cv0\.8765\.csv", path.name), path.name
    assert path.read_text().splitlines()[0] == "fname,label"
    written = pl.read_csv(path)
    assert written["fname"].to_list() == SAMPLE_ORDER
    assert dict(zip(written["fname"], written["label"], strict=True)) == ANSWERS
    assert [p.name for p in out.iterdir()] == [path.name]  # no temp files


def test_write_submission_never_overwrites_within_the_same_second(
    tmp_path: Path, sample: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(submission_module.time, "strftime", lambda *_: "20240101-120000")
    out = tmp_path / "submissions"
    first = write_submission(answers_in_sorted_order(), out, "sc", 0.5, LABELS, sample)
    first_text = first.read_text()
    changed = answers_in_sorted_order().with_columns(pl.lit("yes").alias("label"))
    second = write_submission(changed, out, "sc", 0.5, LABELS, sample)
    third = write_submission(changed, out, "sc", 0.5, LABELS, sample)
    assert len({first, second, third}) == 3
    assert first.read_text() == first_text
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (first, second, third))
    assert all(
        p.name.startswith("sc-20240101-120000") and p.name.endswith("-cv0.5000.csv")
        for p in (first, second, third)
    )


def test_write_submission_without_a_sample_keeps_the_given_order(tmp_path: Path) -> None:
    frame = pl.DataFrame({"fname": ["b.wav", "a.wav"], "label": ["yes", "no"]})
    path = write_submission(frame, tmp_path, "sc", 0.9, LABELS, None)
    assert pl.read_csv(path).equals(frame)


def test_invalid_submission_writes_nothing(tmp_path: Path, sample: Path) -> None:
    out = tmp_path / "submissions"
    bad = answers_in_sorted_order().head(3)
    with pytest.raises(SubmissionError):
        write_submission(bad, out, "sc", 0.5, LABELS, sample)
    assert not out.exists() or list(out.iterdir()) == []


# ---------------------------------------------------------------- validation


def test_missing_fnames_are_named(sample: Path) -> None:
    partial = answers_in_sorted_order().filter(pl.col("fname") != "clip_d.wav")
    with pytest.raises(SubmissionError) as error:
        validate_submission(partial, LABELS, sample, "my.csv")
    message = str(error.value)
    assert "my.csv" in message and str(sample) in message
    assert "1 clips missing" in message and "clip_d.wav" in message


def test_extra_fnames_are_named(sample: Path) -> None:
    extra = pl.concat(
        [answers_in_sorted_order(), pl.DataFrame({"fname": ["clip_z.wav"], "label": ["yes"]})]
    )
    with pytest.raises(SubmissionError) as error:
        validate_submission(extra, LABELS, sample, "my.csv")
    assert "1 unexpected" in str(error.value) and "clip_z.wav" in str(error.value)


def test_duplicate_fnames_are_named(sample: Path) -> None:
    duplicated = pl.concat(
        [answers_in_sorted_order(), pl.DataFrame({"fname": ["clip_b.wav"], "label": ["yes"]})]
    )
    with pytest.raises(SubmissionError, match="duplicate") as error:
        validate_submission(duplicated, LABELS, sample, "my.csv")
    assert "clip_b.wav" in str(error.value)


def test_labels_outside_the_task_are_named_with_the_valid_ones(sample: Path) -> None:
    wrong = answers_in_sorted_order().with_columns(
        pl.when(pl.col("fname") == "clip_a.wav")
        .then(pl.lit("marvin"))
        .otherwise(pl.col("label"))
        .alias("label")
    )
    with pytest.raises(SubmissionError) as error:
        validate_submission(wrong, LABELS, sample, "my.csv")
    message = str(error.value)
    assert "1 rows" in message and "marvin" in message and "unknown" in message
    assert "valid labels" in message


def test_empty_labels_are_rejected(sample: Path) -> None:
    """A null label (e.g. a clip whose prediction was lost in a join) would be written as
    an empty cell; Kaggle scores it as wrong, so it must be refused here."""
    holes = answers_in_sorted_order().with_columns(
        pl.when(pl.col("fname") == "clip_a.wav")
        .then(None)
        .otherwise(pl.col("label"))
        .alias("label")
    )
    with pytest.raises(SubmissionError, match="label"):
        validate_submission(holes, LABELS, sample, "my.csv")


@pytest.mark.parametrize(
    "columns",
    [["fname", "prediction"], ["label", "fname"], ["fname", "label", "score"]],
)
def test_wrong_columns_are_named(sample: Path, columns: list[str]) -> None:
    frame = pl.DataFrame({name: ["clip_a.wav"] for name in columns})
    with pytest.raises(SubmissionError) as error:
        validate_submission(frame, LABELS, sample, "my.csv")
    assert str(columns) in str(error.value) and "['fname', 'label']" in str(error.value)


def test_a_valid_submission_passes(sample: Path) -> None:
    validate_submission(answers_in_sorted_order(), LABELS, sample, "ok.csv")


# ---------------------------------------------------------------- predictions and scoring


def test_predictions_to_submission_takes_the_argmax_label() -> None:
    probabilities = pl.DataFrame(
        {"fname": ["a.wav", "b.wav"], "yes": [0.7, 0.1], "no": [0.2, 0.3], "silence": [0.1, 0.6]}
    )
    submission = predictions_to_submission(probabilities, ["yes", "no", "silence"])
    assert submission.to_dict(as_series=False) == {
        "fname": ["a.wav", "b.wav"],
        "label": ["yes", "silence"],
    }


def test_score_submission_is_accuracy(solution: Path) -> None:
    perfect = answers_in_sorted_order()
    assert score_submission(perfect, solution) == 1.0
    two_wrong = perfect.with_columns(
        pl.when(pl.col("fname").is_in(["clip_a.wav", "clip_b.wav"]))
        .then(pl.lit("stop"))
        .otherwise(pl.col("label"))
        .alias("label")
    )
    assert score_submission(two_wrong, solution) == pytest.approx(3 / 5)
    missing_one = perfect.filter(pl.col("fname") != "clip_e.wav")
    assert score_submission(missing_one, solution) == pytest.approx(4 / 5)


# ---------------------------------------------------------------- kaggle CLI


@pytest.fixture
def no_kaggle_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME and KAGGLE_CONFIG_DIR, no KAGGLE_* variables. Returns the config dir."""
    home = tmp_path / "home"
    config_dir = home / ".kaggle"
    config_dir.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    for name in list(os.environ):
        if name.startswith("KAGGLE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config_dir))
    return config_dir


@pytest.fixture
def fake_kaggle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A ``kaggle`` executable alone on PATH that records its argv (JSON) and exits 0, or the
    code in ``exit_code`` beside it. Returns (executable, record file)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "kaggle_argv.json"
    executable = bin_dir / "kaggle"
    executable.write_text(
        f"#!{sys.executable}\n"
        "import json, pathlib, sys\n"
        f"pathlib.Path({str(record)!r}).write_text(json.dumps(sys.argv))\n"
        f"code = pathlib.Path({str(bin_dir / 'exit_code')!r})\n"
        "sys.exit(int(code.read_text()) if code.exists() else 0)\n"
    )
    executable.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return executable, record


@pytest.fixture
def submission_file(tmp_path: Path) -> Path:
    path = tmp_path / "submissions" / "speech_commands-20240101-120000-cv0.9000.csv"
    path.parent.mkdir()
    answers_in_sorted_order().write_csv(path)
    return path


def expected_command(kaggle: str, file: Path, message: str) -> list[str]:
    return [
        kaggle,
        "competitions",
        "submit",
        "-c",
        "tensorflow-speech-recognition-challenge",
        "-f",
        str(file),
        "-m",
        message,
    ]


def test_competition_is_the_tf_speech_challenge() -> None:
    assert COMPETITION == "tensorflow-speech-recognition-challenge"


def test_dry_run_returns_the_exact_command_and_runs_nothing(
    submission_file: Path, fake_kaggle: tuple[Path, Path], no_kaggle_credentials: Path
) -> None:
    executable, record = fake_kaggle
    command = submit(submission_file, "cnn cv 0.9000", dry_run=True)
    assert command == expected_command(str(executable), submission_file, "cnn cv 0.9000")
    assert not record.exists()


def test_dry_run_without_the_cli_still_shows_the_command(
    submission_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(sys, "executable", str(empty / "python"))  # no kaggle beside it
    command = submit(submission_file, "msg", dry_run=True)
    assert command == expected_command("kaggle", submission_file, "msg")


def test_missing_submission_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SubmissionError, match="not found"):
        submit(tmp_path / "none.csv", "msg", dry_run=True)


def test_no_credentials_is_an_error_mentioning_kaggle_json(
    submission_file: Path, fake_kaggle: tuple[Path, Path], no_kaggle_credentials: Path
) -> None:
    _, record = fake_kaggle
    with pytest.raises(SubmissionError, match=r"kaggle\.json") as error:
        submit(submission_file, "msg")
    assert "KAGGLE_USERNAME" in str(error.value)
    assert not record.exists()


def test_no_kaggle_on_path_says_how_to_install(
    submission_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_kaggle_credentials: Path,
) -> None:
    (no_kaggle_credentials / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(sys, "executable", str(empty / "python"))  # no kaggle beside it
    with pytest.raises(SubmissionError, match="not on PATH") as error:
        submit(submission_file, "msg")
    assert "pip install kaggle" in str(error.value) or "make install" in str(error.value)


def test_kaggle_beside_the_interpreter_is_used_when_not_on_path(
    submission_file: Path,
    fake_kaggle: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_kaggle_credentials: Path,
) -> None:
    """`make submit` runs .venv/bin/speechstack without .venv/bin on PATH: the kaggle CLI
    that `make install` put there is found beside the interpreter."""
    executable, record = fake_kaggle
    (no_kaggle_credentials / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(sys, "executable", str(executable.parent / "python"))
    command = submit(submission_file, "msg")
    assert command[0] == str(executable)
    assert json.loads(record.read_text())[1:4] == ["competitions", "submit", "-c"]


@pytest.mark.parametrize("credentials", ["kaggle.json", "environment"])
def test_submit_runs_the_cli_with_exactly_the_arguments_and_no_shell(
    submission_file: Path,
    fake_kaggle: tuple[Path, Path],
    no_kaggle_credentials: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    credentials: str,
) -> None:
    if credentials == "kaggle.json":
        (no_kaggle_credentials / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    else:
        monkeypatch.setenv("KAGGLE_USERNAME", "u")
        monkeypatch.setenv("KAGGLE_KEY", "k")
    executable, record = fake_kaggle
    message = 'cnn; touch pwned && echo "$HOME" `id` | cat > leaked'  # a shell would act on it
    monkeypatch.chdir(tmp_path)
    command = submit(submission_file, message)
    assert command == expected_command(str(executable), submission_file, message)
    assert json.loads(record.read_text()) == command
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "leaked").exists()


def test_a_failing_cli_is_an_error_with_its_exit_code(
    submission_file: Path, fake_kaggle: tuple[Path, Path], no_kaggle_credentials: Path
) -> None:
    executable, record = fake_kaggle
    (no_kaggle_credentials / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    (executable.parent / "exit_code").write_text("3")
    with pytest.raises(SubmissionError, match="exit code 3"):
        submit(submission_file, "msg")
    assert record.exists()


# ---------------------------------------------------------------- shares and conditions


def test_share_warnings_flag_labels_predicted_far_above_their_training_share() -> None:
    from speechstack.submission import share_warnings

    labels = ["yes", "silence", "unknown"]
    training = pl.Series(["yes"] * 80 + ["silence"] * 10 + ["unknown"] * 10)
    predicted = pl.Series(["yes"] * 50 + ["silence"] * 35 + ["unknown"] * 15)
    (warning,) = share_warnings(predicted, training, labels)
    assert warning.startswith("'silence' is predicted for 35.0% of the test clips, 3.5x")
    assert share_warnings(training, training, labels) == []


def test_accuracy_by_condition_bands_numbers_and_keeps_blanks(tmp_path: Path) -> None:
    from speechstack.submission import accuracy_by_condition

    conditions = tmp_path / "demo_conditions.csv"
    conditions.write_text(
        "fname,label,kind,snr_db,channel\n"
        "a.wav,yes,command,2.0,telephone\n"
        "b.wav,no,command,15.0,\n"
        "c.wav,silence,silence,,\n"
        "d.wav,unknown,absent,25.0,low-pass\n"
    )
    submission = pl.DataFrame(
        {"fname": ["a.wav", "b.wav", "c.wav", "d.wav"], "label": ["yes", "yes", "silence", "no"]}
    )
    table = accuracy_by_condition(submission, conditions)
    assert table["kind"] == [("absent", 0.0, 1), ("command", 0.5, 2), ("silence", 1.0, 1)]
    assert table["snr_db"] == [
        ("-", 1.0, 1),
        ("< 5", 1.0, 1),
        ("10 to 20", 0.0, 1),
        (">= 20", 0.0, 1),
    ]
    assert table["channel"] == [("-", 0.5, 2), ("low-pass", 0.0, 1), ("telephone", 1.0, 1)]


# ---------------------------------------------------------------- --out FILE.csv


def test_write_submission_to_a_csv_path_writes_exactly_that_file(tmp_path: Path) -> None:
    frame = pl.DataFrame({"fname": ["b.wav", "a.wav"], "label": ["yes", "no"]})
    out = tmp_path / "picked" / "final.csv"
    assert write_submission(frame, out, "sc", 0.9, LABELS, None) == out
    assert out.is_file() and pl.read_csv(out).equals(frame)
    assert [p.name for p in out.parent.iterdir()] == ["final.csv"]  # no temp files


def test_write_submission_never_overwrites_a_named_csv(tmp_path: Path) -> None:
    out = tmp_path / "final.csv"
    out.write_text("fname,label\nkept.wav,yes\n")
    frame = pl.DataFrame({"fname": ["a.wav"], "label": ["no"]})
    with pytest.raises(FileExistsError, match=rf"^{re.escape(str(out))} already exists"):
        write_submission(frame, out, "sc", 0.9, LABELS, None)
    assert out.read_text() == "fname,label\nkept.wav,yes\n"


@pytest.fixture
def stacked(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_speech_commands: Path,
    repo_root: Path,
) -> tuple[list[str], Path]:
    """A copy of the tiny data, its folds and a stack's test predictions made up for
    `speechstack submission` (nothing trained): (the CLI's common arguments, the data)."""
    monkeypatch.chdir(tmp_path)
    data = shutil.copytree(tiny_speech_commands, tmp_path / "data")
    common = [
        "--config", str(repo_root / "configs" / "speech_commands" / "cnn.yaml"),
        "--data", str(data),
        "--set", "folds.k=3",
        "--set", "task.params.silence_clips=12",
    ]  # fmt: skip
    assert main(["folds", *common]) == 0
    fnames = pl.read_csv(data / "sample_submission.csv")["fname"]
    probabilities = np.random.default_rng(0).dirichlet(np.ones(len(LABELS)), len(fnames))
    stack = tmp_path / "runs" / "speech_commands" / "stack"
    stack.mkdir(parents=True)
    pl.DataFrame(
        {"fname": fnames, **dict(zip(LABELS, probabilities.T, strict=True))}
    ).write_parquet(stack / "test.parquet")
    (stack / "metrics.json").write_text(json.dumps({"stack_accuracy": 0.5}))
    return common, data


def test_submission_out_csv_is_that_file_and_never_overwritten(
    stacked: tuple[list[str], Path], capsys: pytest.CaptureFixture
) -> None:
    common, data = stacked
    assert main(["submission", *common, "--out", "picked/mine.csv"]) == 0
    written = Path("picked/mine.csv")
    assert written.is_file()
    assert (
        pl.read_csv(written)["fname"].to_list()
        == pl.read_csv(data / "sample_submission.csv")["fname"].to_list()
    )
    captured = capsys.readouterr()
    assert "wrote picked/mine.csv" in captured.out
    assert "skipped" not in captured.err  # the data has its sample submission
    before = written.read_text()
    assert main(["submission", *common, "--out", "picked/mine.csv"]) == 2
    error = capsys.readouterr().err
    assert error == (
        "error: picked/mine.csv already exists; a submission never overwrites: choose "
        "another --out or remove it\n"
    )
    assert written.read_text() == before
    assert main(["submission", *common, "--out", "picked"]) == 0  # a folder: a new name
    assert len(list(Path("picked").glob("speech_commands-*-cv0.5000.csv"))) == 1


def test_submission_without_a_sample_says_validation_was_skipped(
    stacked: tuple[list[str], Path], capsys: pytest.CaptureFixture
) -> None:
    common, data = stacked
    (data / "sample_submission.csv").unlink()
    assert main(["submission", *common]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "sample submission" in line]
    assert lines == [
        f"warning: validation against the sample submission skipped: "
        f"{data / 'sample_submission.csv'} not found (columns, labels and duplicate fnames "
        "were still checked)"
    ]
    assert len(list(Path("submissions").glob("*.csv"))) == 1
