"""Submission CSVs (``fname,label``; transcripts as ``id,sentence``), validated against the
sample submission, and the Kaggle CLI upload."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from speechstack.artifacts import atomic_path

if TYPE_CHECKING:
    from speechstack.tasks import Task

COMPETITION = "tensorflow-speech-recognition-challenge"


class SubmissionError(ValueError):
    """A submission does not match the competition's format; the message says how."""


def predicted_labels(
    frame: pl.DataFrame, labels: list[str], columns: list[str] | None = None
) -> np.ndarray:
    """The label of each row's largest probability; ``columns`` hold the probabilities in
    ``labels`` order (default: columns named after the labels)."""
    return np.asarray(labels)[frame.select(columns or labels).to_numpy().argmax(axis=1)]


def label_accuracy(
    frame: pl.DataFrame,
    truth: pl.Series | np.ndarray,
    labels: list[str],
    columns: list[str] | None = None,
) -> float:
    """Share of rows whose largest-probability label (``predicted_labels``) is ``truth``."""
    chosen = predicted_labels(frame, labels, columns)
    return float((chosen == np.asarray(truth)).mean()) if len(chosen) else 0.0


def predictions_to_submission(probabilities: pl.DataFrame, labels: list[str]) -> pl.DataFrame:
    """Argmax of the label columns -> ``fname,label``."""
    chosen = predicted_labels(probabilities, labels)
    return pl.DataFrame({"fname": probabilities["fname"], "label": chosen})


def share_warnings(
    predicted: pl.Series, training: pl.Series, labels: list[str], factor: float = 2.0
) -> list[str]:
    """One line per label predicted on the test set at more than ``factor`` times its share
    of the training labels: the usual sign of a model (or stacker) that mistakes the test's
    noise or speakers for a class (``silence`` or ``unknown``)."""
    warnings = []
    for label in labels:
        test_share = float((predicted == label).mean()) if len(predicted) else 0.0
        train_share = float((training == label).mean()) if len(training) else 0.0
        if test_share > factor * train_share and test_share > 0:
            warnings.append(
                f"'{label}' is predicted for {test_share:.1%} of the test clips, "
                f"{test_share / train_share if train_share else float('inf'):.1f}x its "
                f"{train_share:.1%} share of the training labels"
            )
    return warnings


def validate_submission(
    submission: pl.DataFrame, labels: list[str], sample: Path | None, source: str
) -> None:
    """Same columns and clips as the sample submission, one row per clip, valid labels."""
    if submission.columns != ["fname", "label"]:
        raise SubmissionError(
            f"{source}: columns are {submission.columns}, expected ['fname', 'label']"
        )
    if submission["fname"].null_count():
        raise SubmissionError(f"{source}: {submission['fname'].null_count()} rows have no fname")
    if submission["fname"].is_duplicated().any():
        duplicated = submission.filter(pl.col("fname").is_duplicated())["fname"].head(3).to_list()
        raise SubmissionError(f"{source}: duplicate fname rows, e.g. {duplicated}")
    bad = submission.filter(~pl.col("label").is_in(labels).fill_null(False))
    if bad.height:
        raise SubmissionError(
            f"{source}: {bad.height} rows have labels outside the task "
            f"({sorted(set(bad['label']))[:5]}); valid labels: {labels}"
        )
    if sample is None:
        return
    expected = pl.read_csv(sample, schema_overrides={"fname": pl.String})
    _same_ids(expected["fname"], submission["fname"], f"{source} does not match {sample}", "clips")


def _same_ids(expected: pl.Series, given: pl.Series, problem: str, what: str) -> None:
    """A ``SubmissionError`` starting with ``problem`` unless ``given`` holds exactly the
    ``expected`` ids (``what`` they are, for the message)."""
    missing, extra = set(expected) - set(given), set(given) - set(expected)
    if missing or extra:
        raise SubmissionError(
            f"{problem}: {len(missing)} {what} missing (e.g. {sorted(missing)[:3]}), "
            f"{len(extra)} unexpected (e.g. {sorted(extra)[:3]})"
        )


def skipped_validation(task: Task) -> str:
    """The line that says a submission was not checked against a sample submission."""
    return (
        f"validation against the sample submission skipped: "
        f"{task.no_sample_submission_reason()} (columns, labels and duplicate fnames were "
        "still checked)"
    )


def write_submission(
    submission: pl.DataFrame,
    out: Path,
    task_name: str,
    cv_score: float,
    labels: list[str],
    sample: Path | None,
) -> Path:
    """Validate and write the submission, atomically and never over an existing file:
    ``out`` ending in ``.csv`` is that file (refused when it exists); anything else is a
    folder, where the file is named ``<task>-<time>-cv<score>.csv``."""
    path = _new_path(Path(out), task_name, f"cv{cv_score:.4f}")
    validate_submission(submission, labels, sample, "submission")
    if sample is not None:  # keep the sample's row order
        order = pl.read_csv(sample, columns=["fname"], schema_overrides={"fname": pl.String})
        submission = order.join(submission, on="fname", how="left")
    with atomic_path(path, ".csv") as temp:
        submission.write_csv(temp)
    return path


def write_transcript_submission(
    transcripts: pl.DataFrame, out: Path, task_name: str, dev_wer: float, sample: Path
) -> Path:
    """``transcripts`` (``fname``, ``sentence``) as a speech-recognition submission in the
    sample's form and row order (``id,sentence``: Bengali.AI), written as ``write_submission``
    writes (``<task>-<time>-devwer<wer>.csv`` in a folder); every id of the sample must be
    transcribed, and no other."""
    path = _new_path(Path(out), task_name, f"devwer{dev_wer:.4f}")
    expected = pl.read_csv(sample, infer_schema_length=0)
    if expected.columns[:1] != ["id"] or "sentence" not in expected.columns:
        raise SubmissionError(f"{sample}: expected columns id, sentence, found {expected.columns}")
    _same_ids(expected["id"], transcripts["fname"], f"transcripts do not match {sample}", "ids")
    submission = expected.select("id").join(
        transcripts.select(id="fname", sentence=pl.col("sentence").fill_null("")),
        on="id",
        how="left",  # keeps the sample's row order
    )
    with atomic_path(path, ".csv") as temp:
        submission.write_csv(temp)
    return path


def _new_path(out: Path, task_name: str, score: str) -> Path:
    """``out`` when it names a ``.csv`` file that does not exist yet (refused when it
    does), else a new ``<task>-<time>-<score>.csv`` in the folder ``out``."""
    if out.suffix.lower() == ".csv":
        if out.exists():
            raise FileExistsError(
                f"{out} already exists; a submission never overwrites: choose another --out "
                "or remove it"
            )
        return out
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out / f"{task_name}-{stamp}-{score}.csv"
    suffix = 1
    while path.exists():
        path = out / f"{task_name}-{stamp}-{suffix}-{score}.csv"
        suffix += 1
    return path


def score_submission(submission: pl.DataFrame, solution: Path) -> float:
    """Accuracy against an answer key ``fname,label`` (the demo data ships one)."""
    truth = pl.read_csv(solution, schema_overrides={"fname": pl.String})
    joined = truth.join(submission, on="fname", how="left", suffix="_predicted")
    return float((joined["label"] == joined["label_predicted"]).fill_null(False).mean())  # type: ignore[arg-type]


CONDITION_BANDS = {"snr_db": [5.0, 10.0, 20.0], "rt60_s": [0.5], "peak_dbfs": [-30.0, -15.0]}


def accuracy_by_condition(
    submission: pl.DataFrame, conditions: Path, columns: list[str] | None = None
) -> dict[str, list[tuple[str, float, int]]]:
    """Accuracy per value of each condition column of ``conditions`` (the demo's
    ``demo_conditions.csv``: word kind, voice, SNR, room, channel, level): ``column ->
    [(value, accuracy, clips)]``. Numeric columns are cut into the bands of
    ``CONDITION_BANDS``; an empty cell is ``-`` (silence has no SNR, a dry clip no room)."""
    table = pl.read_csv(conditions, infer_schema_length=None).join(
        submission.select("fname", pl.col("label").alias("predicted")), on="fname", how="inner"
    )
    correct = (table["label"] == table["predicted"]).to_numpy()
    wanted = columns or [c for c in ("kind", "voice", "snr_db", "rt60_s", "channel", "peak_dbfs")
                         if c in table.columns]  # fmt: skip
    out: dict[str, list[tuple[str, float, int]]] = {}
    for column in wanted:
        values = table[column]
        if column in CONDITION_BANDS and values.dtype.is_numeric():
            edges = CONDITION_BANDS[column]
            names = (
                [f"< {edges[0]:g}"]
                + [f"{low:g} to {high:g}" for low, high in itertools.pairwise(edges)]
                + [f">= {edges[-1]:g}"]
            )
            numbers = values.to_numpy()
            bands = np.where(
                values.is_null().to_numpy(),
                "-",
                np.asarray(names)[np.searchsorted(edges, numbers, side="right")],
            )
            order = ["-", *names]
        else:
            bands = values.cast(pl.String).fill_null("-").to_numpy()
            order = sorted(set(bands.tolist()))
        rows = []
        for value in [name for name in order if name in set(bands.tolist())]:
            chosen = bands == value
            rows.append((str(value), float(correct[chosen].mean()), int(chosen.sum())))
        out[column] = rows
    return out


def latest_submission(directory: Path) -> Path:
    files = sorted(directory.glob("*.csv"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise SubmissionError(f"no submission CSV in {directory}; run `make submission` first")
    return files[-1]


def find_kaggle() -> str | None:
    """The kaggle CLI: on PATH, else beside this Python (the venv's ``bin``, where `make
    install` puts it, which `make submit` does not add to PATH); None when neither has it."""
    found = shutil.which("kaggle")
    if found is None:
        found = shutil.which("kaggle", path=str(Path(sys.executable).parent))
    return found


def kaggle_command(file: Path, message: str, competition: str = COMPETITION) -> list[str]:
    executable = find_kaggle() or "kaggle"
    return [executable, "competitions", "submit", "-c", competition, "-f", str(file), "-m", message]


def has_kaggle_credentials() -> bool:
    """Any credential the Kaggle CLI accepts: env variables, kaggle.json or an access token."""
    if os.environ.get("KAGGLE_API_TOKEN") or (
        os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")
    ):
        return True
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    return (config_dir / "kaggle.json").is_file() or (config_dir / "access_token").is_file()


def submit(
    file: Path, message: str, dry_run: bool = False, competition: str = COMPETITION
) -> list[str]:
    """Upload ``file`` with the kaggle CLI (an argument list, no shell). Returns the command."""
    if not file.is_file():
        raise SubmissionError(f"{file}: submission file not found")
    command = kaggle_command(file, message, competition)
    if dry_run:
        return command
    if find_kaggle() is None:
        raise SubmissionError(
            f"the kaggle CLI is not on PATH nor in {Path(sys.executable).parent}; run `make "
            "install` (it installs kaggle into .venv) or `pip install kaggle`"
        )
    if not has_kaggle_credentials():
        raise SubmissionError(
            "no Kaggle credentials: put kaggle.json (Kaggle > Settings > API > Create New Token) "
            "in ~/.kaggle/ (chmod 600), or set KAGGLE_USERNAME and KAGGLE_KEY "
            "(or KAGGLE_API_TOKEN)"
        )
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise SubmissionError(f"kaggle CLI failed with exit code {result.returncode}")
    return command
