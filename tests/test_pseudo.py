"""Pseudo-labelling of confident test clips, on hand-made run folders (no training).

The runs are written with polars in the layout training and stacking produce:
``runs/<task>/<experiment>/fold<k>/test.parquet`` (fname + one probability column per
label) and ``runs/<task>/<stack>/{test.parquet,stacker.json}``; the test clips are those
of the tiny demo dataset, so the paths come from the task's real test manifest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest

from speechstack.cli import main
from speechstack.config import Config, load_config
from speechstack.pseudo import (
    PseudoLabelError,
    class_counts,
    pseudo_labels_path,
    read_pseudo_labels,
    select_pseudo_labels,
    source_predictions,
    write_pseudo_labels,
)
from speechstack.tasks import Task, create_task

K = 2  # folds: the mean of two equal probabilities is exactly that probability


def make_config(data_dir: Path, runs_dir: Path, *overrides: str) -> Config:
    return load_config(
        None,
        [f"task.data_dir={data_dir}", f"runs_dir={runs_dir}", f"folds.k={K}", *overrides],
    )


@pytest.fixture
def setup(tiny_speech_commands: Path, tmp_path: Path) -> tuple[Config, Task, list[str]]:
    """A config whose runs live in tmp_path, its task and the test clips' names."""
    config = make_config(tiny_speech_commands, tmp_path / "runs")
    task = create_task(config.task)
    manifest = task.test_manifest()
    assert manifest is not None
    return config, task, sorted(manifest["fname"])


def probabilities(
    names: list[str], labels: list[str], predicted: dict[str, tuple[str, float]]
) -> pl.DataFrame:
    """fname + label columns: ``predicted[name] = (label, p)`` puts p on that label and
    spreads the rest evenly; clips not in ``predicted`` get a flat (unconfident) row."""
    rows: dict[str, list] = {"fname": list(names), **{label: [] for label in labels}}
    for name in names:
        label, top = predicted.get(name, (labels[0], 1.0 / len(labels)))
        rest = (1.0 - top) / (len(labels) - 1)
        for column in labels:
            rows[column].append(top if column == label else rest)
    return pl.DataFrame(rows)


def write_experiment(runs: Path, name: str, folds: list[pl.DataFrame]) -> Path:
    for fold, frame in enumerate(folds):
        (runs / name / f"fold{fold}").mkdir(parents=True, exist_ok=True)
        frame.write_parquet(runs / name / f"fold{fold}" / "test.parquet")
    return runs / name


def write_stack(runs: Path, name: str, members: list[str], test: pl.DataFrame) -> Path:
    folder = runs / name
    folder.mkdir(parents=True, exist_ok=True)
    test.write_parquet(folder / "test.parquet")
    spec = {
        "experiments": members,
        "labels": [c for c in test.columns if c != "fname"],
        "features": [],
        "folds": [{"file": f"stacker_fold{f}.txt", "classes": []} for f in range(K)],
    }
    (folder / "stacker.json").write_text(json.dumps(spec))
    return folder


# ---------------------------------------------------------------------------------------
# Selection


def test_threshold_keeps_clips_at_or_above_it(setup: tuple[Config, Task, list[str]]) -> None:
    config, task, names = setup
    labels = task.labels
    predicted = {names[0]: ("yes", 0.95), names[1]: ("no", 0.9), names[2]: ("up", 0.89)}
    frame = probabilities(names, labels, predicted)
    write_experiment(config.task_runs_dir, "cnn", [frame] * K)
    config.pseudo.source, config.pseudo.threshold = "cnn", 0.9

    chosen = select_pseudo_labels(config, task)

    assert chosen.columns == ["fname", "path", "label", "confidence"]
    assert chosen["fname"].to_list() == sorted([names[0], names[1]])
    assert dict(zip(chosen["fname"], chosen["label"], strict=True)) == {
        names[0]: "yes",
        names[1]: "no",
    }
    assert chosen.filter(pl.col("fname") == names[0])["confidence"].item() == pytest.approx(0.95)


def test_default_source_is_the_stack(setup: tuple[Config, Task, list[str]]) -> None:
    config, task, names = setup
    labels = task.labels
    write_stack(
        config.task_runs_dir,
        "stack",
        ["cnn"],
        probabilities(names, labels, {names[3]: ("go", 0.99)}),
    )
    write_experiment(
        config.task_runs_dir, "cnn", [probabilities(names, labels, {names[3]: ("go", 0.6)})] * K
    )
    chosen = select_pseudo_labels(config, task)  # pseudo.source unset: stack.name
    assert chosen.rows() == [(names[3], chosen["path"][0], "go", pytest.approx(0.99))]


def test_stack_agreement_needs_every_member_to_have_the_stacks_label(
    setup: tuple[Config, Task, list[str]],
) -> None:
    config, task, names = setup
    labels = task.labels
    runs = config.task_runs_dir
    stack = {names[0]: ("yes", 0.97), names[1]: ("no", 0.96), names[2]: ("left", 0.95)}
    write_stack(runs, "stack", ["cnn", "lstm"], probabilities(names, labels, stack))
    cnn = {names[0]: ("yes", 0.8), names[1]: ("no", 0.7), names[2]: ("left", 0.9)}
    lstm = {names[0]: ("yes", 0.6), names[1]: ("off", 0.7), names[2]: ("left", 0.5)}
    write_experiment(runs, "cnn", [probabilities(names, labels, cnn)] * K)
    # lstm's fold models disagree on names[2], but their mean still says "left": a stack's
    # agreement is between fold-averaged member predictions and the stack
    write_experiment(
        runs,
        "lstm",
        [
            probabilities(names, labels, lstm),
            probabilities(names, labels, {**lstm, names[2]: ("right", 0.3)}),
        ],
    )

    agreed = select_pseudo_labels(config, task)
    assert agreed["fname"].to_list() == sorted([names[0], names[2]])  # lstm says off for [1]

    config.pseudo.agreement = False
    assert select_pseudo_labels(config, task)["fname"].to_list() == sorted(names[:3])


def test_experiment_agreement_needs_every_fold_model_to_agree(
    setup: tuple[Config, Task, list[str]],
) -> None:
    config, task, names = setup
    labels = task.labels
    fold0 = probabilities(names, labels, {names[0]: ("yes", 0.95), names[1]: ("stop", 0.9)})
    fold1 = probabilities(names, labels, {names[0]: ("yes", 0.93), names[1]: ("go", 0.5)})
    # names[1]: mean "stop" = (0.9 + 0.5/11) / 2 ~ 0.47: confident only under a low threshold
    write_experiment(config.task_runs_dir, "cnn", [fold0, fold1])
    config.pseudo.source, config.pseudo.threshold = "cnn", 0.4

    predictions = source_predictions(config, task)
    agree = dict(zip(predictions["fname"], predictions["agree"], strict=True))
    assert agree[names[0]] and not agree[names[1]]
    assert select_pseudo_labels(config, task)["fname"].to_list() == [names[0]]

    config.pseudo.agreement = False
    chosen = select_pseudo_labels(config, task)
    assert chosen["fname"].to_list() == sorted(names[:2])
    assert chosen.filter(pl.col("fname") == names[1])["label"].item() == "stop"


def test_max_share_keeps_the_most_confident(setup: tuple[Config, Task, list[str]]) -> None:
    config, task, names = setup
    labels = task.labels
    # every clip confident, with distinct confidences 0.905, 0.910, ...
    predicted = {name: (labels[i % len(labels)], 0.905 + 0.004 * i) for i, name in enumerate(names)}
    write_experiment(config.task_runs_dir, "cnn", [probabilities(names, labels, predicted)] * K)
    config.pseudo.source, config.pseudo.max_share = "cnn", 0.25

    chosen = select_pseudo_labels(config, task)

    limit = int(0.25 * len(names))
    most_confident = sorted(names, key=lambda n: -predicted[n][1])[:limit]
    assert chosen.height == limit
    assert chosen["fname"].to_list() == sorted(most_confident)  # sorted by fname
    config.pseudo.max_share = 1.0
    assert select_pseudo_labels(config, task).height == len(names)


def test_paths_come_from_the_task_test_manifest(setup: tuple[Config, Task, list[str]]) -> None:
    config, task, names = setup
    predicted = {name: ("unknown", 0.99) for name in names}
    write_experiment(
        config.task_runs_dir, "cnn", [probabilities(names, task.labels, predicted)] * K
    )
    config.pseudo.source = "cnn"

    chosen = select_pseudo_labels(config, task)

    manifest = task.test_manifest()
    assert manifest is not None
    expected = dict(zip(manifest["fname"], manifest["path"], strict=True))
    assert chosen.height == len(names)
    for name, path in zip(chosen["fname"], chosen["path"], strict=True):
        assert os.path.isabs(path) and Path(path).is_file()
        assert Path(path).resolve() == Path(expected[name]).resolve()
        assert Path(path).name == name


def test_class_counts_cover_every_label(setup: tuple[Config, Task, list[str]]) -> None:
    _, task, _ = setup
    frame = pl.DataFrame(
        {"fname": ["a", "b", "c"], "label": ["yes", "yes", "go"], "confidence": [0.9, 0.96, 1.0]}
    )
    table = class_counts(frame, task.labels)
    assert table["label"].to_list() == task.labels
    counts = {row["label"]: row for row in table.iter_rows(named=True)}
    assert counts["yes"]["clips"] == 2 and counts["yes"]["mean_confidence"] == pytest.approx(0.93)
    assert counts["go"]["share"] == pytest.approx(1 / 3)
    assert counts["no"]["clips"] == 0 and counts["no"]["mean_confidence"] is None


# ---------------------------------------------------------------------------------------
# Selection errors


def test_missing_source_names_the_folder_and_the_make_target(
    setup: tuple[Config, Task, list[str]],
) -> None:
    config, task, _ = setup
    with pytest.raises(FileNotFoundError, match=r"runs/speech_commands/stack.*make stack"):
        select_pseudo_labels(config, task)
    config.pseudo.source = "lstm"
    with pytest.raises(FileNotFoundError, match=r"lstm not found.*make train EXP=lstm"):
        select_pseudo_labels(config, task)


def test_missing_fold_predictions_name_the_file(setup: tuple[Config, Task, list[str]]) -> None:
    config, task, names = setup
    write_experiment(config.task_runs_dir, "cnn", [probabilities(names, task.labels, {})])
    config.pseudo.source = "cnn"
    with pytest.raises(FileNotFoundError, match=r"cnn/fold1/test.parquet is missing.*FOLD=1"):
        select_pseudo_labels(config, task)
    # a stack's member with a missing fold: the same message
    write_stack(config.task_runs_dir, "stack", ["cnn"], probabilities(names, task.labels, {}))
    config.pseudo.source = None
    with pytest.raises(FileNotFoundError, match=r"cnn/fold1/test.parquet is missing"):
        select_pseudo_labels(config, task)


def test_stack_without_test_predictions(setup: tuple[Config, Task, list[str]]) -> None:
    config, task, names = setup
    folder = write_stack(
        config.task_runs_dir, "stack", ["cnn"], probabilities(names, task.labels, {})
    )
    (folder / "test.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=r"stack/test.parquet not found.*make stack"):
        select_pseudo_labels(config, task)


def test_predictions_of_other_clips_are_rejected(setup: tuple[Config, Task, list[str]]) -> None:
    config, task, names = setup
    other = [*names[:-1], "clip_not_in_this_dataset.wav"]
    write_experiment(config.task_runs_dir, "cnn", [probabilities(other, task.labels, {})] * K)
    config.pseudo.source = "cnn"
    with pytest.raises(PseudoLabelError, match=r"clip_not_in_this_dataset.*retrain"):
        select_pseudo_labels(config, task)


# ---------------------------------------------------------------------------------------
# The file: writing and reading back


def chosen_frame(task: Task, names: list[str]) -> pl.DataFrame:
    manifest = task.test_manifest()
    assert manifest is not None
    paths = dict(zip(manifest["fname"], manifest["path"], strict=True))
    return pl.DataFrame(
        {
            "fname": names[:3],
            "path": [paths[n] for n in names[:3]],
            "label": ["yes", "no", "silence"],
            "confidence": [0.99, 0.95, 0.91],
        }
    )


def test_write_then_read_round_trip(setup: tuple[Config, Task, list[str]]) -> None:
    config, task, names = setup
    path = pseudo_labels_path(config)
    assert path == config.task_runs_dir / "pseudo" / "round1.csv"
    frame = chosen_frame(task, names)
    assert write_pseudo_labels(frame, path) == path
    assert pl.read_csv(path).columns == ["fname", "path", "label", "confidence"]
    read = read_pseudo_labels(path, task.labels)
    assert read.columns == ["fname", "path", "label"]
    assert read.rows() == frame.select("fname", "path", "label").rows()


def test_write_is_atomic(setup: tuple[Config, Task, list[str]], monkeypatch) -> None:
    config, task, names = setup
    path = pseudo_labels_path(config)
    write_pseudo_labels(chosen_frame(task, names), path)
    before = path.read_bytes()

    def crash(self: pl.DataFrame, file: Path, *args: object, **kwargs: object) -> None:
        Path(file).write_text("fname,path,la")  # half a file, then the crash
        raise KeyboardInterrupt

    monkeypatch.setattr(pl.DataFrame, "write_csv", crash)
    with pytest.raises(KeyboardInterrupt):
        write_pseudo_labels(chosen_frame(task, names[3:]), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["round1.csv"]  # no temp left


def test_relative_paths_are_read_from_the_csv_folder(tmp_path: Path) -> None:
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "a.wav").write_bytes(b"")
    csv = tmp_path / "labels.csv"
    csv.write_text("fname,path,label\na.wav,audio/a.wav,yes\n")
    read = read_pseudo_labels(csv, ["yes", "no"])
    assert read["path"].to_list() == [str((tmp_path / "audio" / "a.wav").resolve())]


def write_csv(tmp_path: Path, text: str) -> Path:
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "b.wav").write_bytes(b"")
    path = tmp_path / "round1.csv"
    path.write_text(text.format(dir=tmp_path))
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "fname,path,label\na.wav,{dir}/a.wav,yes\nb.wav,{dir}/b.wav,maybe\n",
            r"round1.csv, line 3 \(fname 'b.wav'\): label 'maybe' is not one of",
        ),
        (
            "fname,path,label\na.wav,{dir}/a.wav,yes\na.wav,{dir}/b.wav,no\n",
            r"round1.csv: clip 'a.wav' is listed more than once \(lines \[2, 3\]\)",
        ),
        (
            "fname,path,label\na.wav,{dir}/a.wav,yes\nc.wav,{dir}/c.wav,no\n",
            r"round1.csv, line 3 \(fname 'c.wav'\): audio file .*c.wav does not exist",
        ),
        (
            "fname,label\na.wav,yes\n",
            r"round1.csv: missing column\(s\) \['path'\]",
        ),
        (
            "fname,path,label\na.wav,,yes\n",
            r"round1.csv, line 2 \(fname 'a.wav'\): empty path",
        ),
        ("", r"round1.csv: empty file"),
    ],
    ids=["unknown label", "duplicate", "missing file", "missing column", "empty cell", "empty"],
)
def test_reader_errors_name_the_file_and_row(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PseudoLabelError, match=message):
        read_pseudo_labels(write_csv(tmp_path, text), ["yes", "no"])


def test_reader_missing_csv(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing.csv.*make pseudo"):
        read_pseudo_labels(tmp_path / "nothing.csv", ["yes"])


def test_header_only_file_has_no_rows(tmp_path: Path) -> None:
    read = read_pseudo_labels(write_csv(tmp_path, "fname,path,label\n"), ["yes"])
    assert read.height == 0 and read.columns == ["fname", "path", "label"]


# ---------------------------------------------------------------------------------------
# The CLI verb


def test_cli_pseudo_end_to_end(
    setup: tuple[Config, Task, list[str]],
    tiny_speech_commands: Path,
    repo_root: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, task, names = setup
    runs = config.task_runs_dir
    stack = {names[0]: ("yes", 0.97), names[1]: ("no", 0.96), names[2]: ("left", 0.5)}
    write_stack(runs, "stack", ["cnn"], probabilities(names, task.labels, stack))
    write_experiment(runs, "cnn", [probabilities(names, task.labels, stack)] * K)
    arguments = [
        "pseudo",
        "--config",
        str(repo_root / "configs" / "speech_commands" / "cnn.yaml"),
        "--data",
        str(tiny_speech_commands),
        "--set",
        f"runs_dir={config.runs_dir}",
        "--set",
        f"folds.k={K}",
        "--set",
        "pseudo.round=2",
    ]

    assert main(arguments) == 0

    out = capsys.readouterr().out
    written = runs / "pseudo" / "round2.csv"
    csv = pl.read_csv(written)
    assert csv["fname"].to_list() == sorted(names[:2])
    assert csv["label"].to_list() == [stack[n][0] for n in sorted(names[:2])]
    assert f"{len(names)} test clips" in out and "kept 2" in out
    assert "clips added" in out and "mean confidence" in out
    assert f"wrote {written}" in out
    assert f'SET="train.pseudo_labels={written}"' in out and "EXP=cnn-r2" in out
    assert "EXPERIMENTS=cnn-r2" in out and "stack.name=stack-r2" in out
    yes_row = next(line for line in out.splitlines() if line.startswith("yes "))
    assert yes_row.split()[3:] == ["1", "0.9700"]  # clips added, mean confidence

    # nothing qualifies: exit 2, a hint, and no file written
    assert main([*arguments[:-1], "pseudo.round=3", "--set", "pseudo.threshold=0.999"]) == 2
    assert "no test clip qualifies" in capsys.readouterr().err
    assert not (runs / "pseudo" / "round3.csv").exists()


def test_cli_pseudo_reports_a_missing_stack(
    tiny_speech_commands: Path, tmp_path: Path, repo_root: Path, capsys
) -> None:
    code = main(
        [
            "pseudo",
            "--config",
            str(repo_root / "configs" / "speech_commands" / "cnn.yaml"),
            "--data",
            str(tiny_speech_commands),
            "--set",
            f"runs_dir={tmp_path / 'runs'}",
        ]
    )
    assert code == 2
    assert "make stack" in capsys.readouterr().err
