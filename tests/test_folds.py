"""speechstack.folds: speaker-grouped, stratified, seeded folds written once, atomically."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from speechstack.config import TaskConfig
from speechstack.folds import (
    FOLD_COLUMNS,
    FoldsError,
    assign_folds,
    attach_folds,
    read_folds,
    write_folds,
)
from speechstack.tasks import create_task

LABELS = ["yes", "no", "up", "down", "silence", "unknown"]


def synthetic_manifest(
    speakers: int = 20, clips_per_label: int = 2, noise_files: int = 6, silence_per_file: int = 8
) -> pl.DataFrame:
    """Every speaker says every label ``clips_per_label`` times; silence cut from noise
    files, grouped by file (as the speech-commands reader does)."""
    rows: dict[str, list[str]] = {"fname": [], "label": [], "group": []}
    for speaker in range(speakers):
        for label in [*LABELS[:4], "unknown"]:
            for index in range(clips_per_label):
                rows["fname"].append(f"{label}/s{speaker:03d}_nohash_{index}.wav")
                rows["label"].append(label)
                rows["group"].append(f"s{speaker:03d}")
    for noise in range(noise_files):
        for index in range(silence_per_file):
            rows["fname"].append(f"_background_noise_/n{noise}.wav@{index:.3f}")
            rows["label"].append("silence")
            rows["group"].append(f"noise:n{noise}")
    return pl.DataFrame(rows)


@pytest.fixture(scope="module")
def manifest() -> pl.DataFrame:
    return synthetic_manifest()


def test_every_clip_gets_one_fold_and_every_group_one_fold(manifest: pl.DataFrame) -> None:
    folds = assign_folds(manifest, k=5, seed=0)
    assert folds.height == manifest.height
    assert folds["fold"].is_between(0, 4).all()
    assert set(folds["fold"]) == set(range(5))
    folds_per_group = folds.group_by("group").agg(pl.col("fold").n_unique())
    assert (folds_per_group["fold"] == 1).all()
    assert folds.drop("fold").equals(manifest)  # rows and order untouched


def test_silence_clips_of_one_noise_file_share_a_fold(manifest: pl.DataFrame) -> None:
    silence = assign_folds(manifest, k=5, seed=0).filter(pl.col("label") == "silence")
    per_file = silence.group_by("group").agg(pl.col("fold").n_unique(), pl.len())
    assert per_file.height == 6
    assert (per_file["fold"] == 1).all() and (per_file["len"] == 8).all()


def test_folds_are_deterministic_for_a_seed_and_differ_for_another(
    manifest: pl.DataFrame,
) -> None:
    first = assign_folds(manifest, k=5, seed=0)["fold"]
    assert first.equals(assign_folds(manifest, k=5, seed=0)["fold"])
    assert not first.equals(assign_folds(manifest, k=5, seed=1)["fold"])


def test_folds_are_roughly_stratified(manifest: pl.DataFrame) -> None:
    folds = assign_folds(manifest, k=5, seed=0)
    counts = folds.group_by("fold", "label").len()
    for label in LABELS:
        per_fold = counts.filter(pl.col("label") == label)
        assert per_fold.height == 5, f"{label} missing from a fold"
    # 20 speakers over 5 folds: 4 speakers (8 clips of each word label) per fold.
    words = counts.filter(pl.col("label") != "silence")
    assert words["len"].min() >= 4 and words["len"].max() <= 12


def test_folds_of_the_tiny_dataset_are_grouped(tiny_speech_commands: Path) -> None:
    task = create_task(TaskConfig(data_dir=tiny_speech_commands))
    manifest = task.train_manifest()
    folds = assign_folds(manifest, k=3, seed=42)
    assert (folds.group_by("group").agg(pl.col("fold").n_unique())["fold"] == 1).all()
    assert set(folds["fold"]) == {0, 1, 2}
    for command in ("yes", "no", "stop"):  # every train speaker says every command
        assert set(folds.filter(pl.col("label") == command)["fold"]) == {0, 1, 2}


def test_too_few_groups_for_k_is_an_error() -> None:
    small = synthetic_manifest(speakers=2, noise_files=1)
    with pytest.raises(FoldsError, match="3 speakers/groups for 5 folds"):
        assign_folds(small, k=5, seed=0)


# ---------------------------------------------------------------- writing and reading


def test_write_then_read_round_trips(manifest: pl.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "folds" / "speech_commands.csv"
    written = write_folds(manifest, path, k=5, seed=0)
    assert written.columns == FOLD_COLUMNS
    assert read_folds(path).equals(written)
    assert [p.name for p in path.parent.iterdir()] == ["speech_commands.csv"]  # no temp files


def test_write_folds_refuses_to_overwrite_without_force(
    manifest: pl.DataFrame, tmp_path: Path
) -> None:
    path = tmp_path / "folds.csv"
    write_folds(manifest, path, k=5, seed=0)
    before = path.read_bytes()
    with pytest.raises(FoldsError, match="already exists") as error:
        write_folds(manifest, path, k=5, seed=1)
    assert "force" in str(error.value).lower()
    assert path.read_bytes() == before
    rewritten = write_folds(manifest, path, k=5, seed=1, force=True)
    assert path.read_bytes() != before
    assert read_folds(path)["fold"].equals(rewritten["fold"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folds.csv"]


@pytest.mark.parametrize("interruption", [KeyboardInterrupt(), OSError("disk full")])
def test_interrupted_rewrite_keeps_the_old_file_and_leaves_no_temp(
    manifest: pl.DataFrame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    interruption: BaseException,
) -> None:
    path = tmp_path / "folds.csv"
    write_folds(manifest, path, k=5, seed=0)
    before = path.read_bytes()

    def half_write(frame: pl.DataFrame, file: Path, *args: object, **kwargs: object) -> None:
        Path(file).write_text("fname,label\npartial")
        raise interruption

    monkeypatch.setattr(pl.DataFrame, "write_csv", half_write)
    with pytest.raises(type(interruption)):
        write_folds(manifest, path, k=5, seed=1, force=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folds.csv"]


def test_read_folds_on_a_missing_file_says_to_run_make_folds(tmp_path: Path) -> None:
    path = tmp_path / "folds" / "speech_commands.csv"
    with pytest.raises(FoldsError, match="make folds") as error:
        read_folds(path)
    assert str(path) in str(error.value)


def test_read_folds_rejects_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "folds.csv"
    path.write_text("fname,label,fold\na.wav,yes,0\n")
    with pytest.raises(FoldsError, match="group"):
        read_folds(path)


def test_attach_folds_joins_the_fold_column(manifest: pl.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "folds.csv"
    folds = write_folds(manifest, path, k=5, seed=0)
    shuffled = manifest.sample(fraction=1.0, shuffle=True, seed=0)
    attached = attach_folds(shuffled, read_folds(path), path)
    assert attached["fname"].equals(shuffled["fname"])
    expected = dict(zip(folds["fname"], folds["fold"], strict=True))
    assert attached["fold"].to_list() == [expected[name] for name in attached["fname"]]


def test_attach_folds_with_a_mismatching_manifest_explains_how_to_fix_it(
    manifest: pl.DataFrame, tmp_path: Path
) -> None:
    path = tmp_path / "folds.csv"
    write_folds(manifest, path, k=5, seed=0)
    extra = pl.DataFrame({"fname": ["yes/new_nohash_0.wav"], "label": ["yes"], "group": ["new"]})
    changed = pl.concat([manifest.slice(1), extra])
    with pytest.raises(FoldsError) as error:
        attach_folds(changed, read_folds(path), path)
    message = str(error.value)
    assert str(path) in message
    assert "1 clips have no fold" in message and "1 folded clips are not in the dataset" in message
    assert "yes/new_nohash_0.wav" in message
    assert "make folds FORCE=1" in message
