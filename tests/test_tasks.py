"""speechstack.tasks.speech_commands on the tiny synthetic Kaggle-layout dataset."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import soundfile as sf

from speechstack.config import TaskConfig
from speechstack.tasks import MANIFEST_COLUMNS, TASKS, TEST_COLUMNS, DatasetError, create_task
from speechstack.tasks.speech_commands import COMMANDS, LABELS, SpeechCommands, word_label

TWELVE_LABELS = [
    "yes",
    "no",
    "up",
    "down",
    "left",
    "right",
    "on",
    "off",
    "stop",
    "go",
    "silence",
    "unknown",
]


def make_task(data_dir: Path, **params: Any) -> SpeechCommands:
    task = create_task(TaskConfig(name="speech_commands", data_dir=data_dir, params=params))
    assert isinstance(task, SpeechCommands)
    return task


def word_folders(data_dir: Path) -> list[Path]:
    return [
        p
        for p in sorted((data_dir / "train" / "audio").iterdir())
        if p.is_dir() and p.name != "_background_noise_"
    ]


def mean_command_count(data_dir: Path) -> float:
    return float(
        np.mean([len(list((data_dir / "train" / "audio" / w).glob("*.wav"))) for w in COMMANDS])
    )


@pytest.fixture
def dataset_copy(tiny_speech_commands: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_speech_commands, tmp_path / "copy"))


# ---------------------------------------------------------------- manifest shape


def test_task_is_registered() -> None:
    assert "speech_commands" in TASKS


def test_manifest_has_the_standard_columns_and_the_twelve_labels(
    tiny_speech_commands: Path,
) -> None:
    task = make_task(tiny_speech_commands)
    manifest = task.train_manifest()
    assert manifest.columns[: len(MANIFEST_COLUMNS)] == MANIFEST_COLUMNS
    assert task.labels == LABELS == TWELVE_LABELS
    assert set(manifest["label"]) == set(TWELVE_LABELS)
    assert not manifest["fname"].is_duplicated().any()
    assert manifest["fname"].to_list() == sorted(manifest["fname"])
    assert (
        manifest.select(
            pl.col(c).null_count()
            for c in ["fname", "path", "start", "gain_db", "label", "target", "group"]
        )
        .sum_horizontal()
        .item()
        == 0
    )
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in manifest["path"])
    np.testing.assert_array_equal(task.class_to_label(), np.eye(12, dtype=np.float32))


def test_word_clips_are_labelled_by_folder_and_grouped_by_speaker(
    tiny_speech_commands: Path,
) -> None:
    manifest = make_task(tiny_speech_commands, unknown_ratio=None).train_manifest()
    words = manifest.filter(pl.col("label") != "silence")
    on_disk = sorted(
        f"{p.parent.name}/{p.name}"
        for folder in word_folders(tiny_speech_commands)
        for p in folder.glob("*.wav")
    )
    assert sorted(words["fname"]) == on_disk  # unknown_ratio=None keeps every clip
    for row in words.iter_rows(named=True):
        word, name = row["fname"].split("/")
        assert row["label"] == word_label(word) == row["target"]
        assert row["group"] == name.split("_nohash_")[0]
        assert Path(row["path"]).name == name and Path(row["path"]).parent.name == word
        assert (row["start"], row["duration"], row["gain_db"]) == (0.0, None, 0.0)
    assert set(words.filter(pl.col("label") == "unknown")["word"]) - set(COMMANDS)


# ---------------------------------------------------------------- sampling


@pytest.mark.parametrize("ratio", [0.5, 1.0])
def test_unknown_ratio_scores_ratio_times_the_mean_command_count_and_keeps_the_rest(
    tiny_speech_commands: Path, ratio: float
) -> None:
    manifest = make_task(tiny_speech_commands, unknown_ratio=ratio).train_manifest()
    everything = make_task(tiny_speech_commands, unknown_ratio=None).train_manifest()
    assert everything["scored"].all()
    all_unknown = everything.filter(pl.col("label") == "unknown")
    expected = round(ratio * mean_command_count(tiny_speech_commands))
    assert 0 < expected < all_unknown.height  # the fixture is big enough to subsample
    # every clip is kept; only the scored ones are folded and validated
    assert set(manifest["fname"]) == set(everything["fname"])
    unknown = manifest.filter(pl.col("label") == "unknown")
    assert unknown["scored"].sum() == expected
    assert not manifest.filter(~pl.col("scored"))["label"].is_in(COMMANDS).any()
    # The commands themselves are always scored.
    for command in COMMANDS:
        assert manifest.filter(pl.col("label") == command)["scored"].all()


def test_silence_defaults_to_the_mean_command_count(tiny_speech_commands: Path) -> None:
    manifest = make_task(tiny_speech_commands).train_manifest()
    expected = round(mean_command_count(tiny_speech_commands))
    assert (manifest["label"] == "silence").sum() == expected


@pytest.mark.parametrize("count", [0, 7, 40])
def test_silence_clip_count_is_honoured(tiny_speech_commands: Path, count: int) -> None:
    manifest = make_task(tiny_speech_commands, silence_clips=count).train_manifest()
    assert (manifest["label"] == "silence").sum() == count


def test_a_large_silence_count_is_honoured_exactly(tiny_speech_commands: Path) -> None:
    """600 one-second clips from six 3 s noise files: start offsets drawn on a 1 ms grid
    collide now and then; a collision must not silently drop a requested clip."""
    manifest = make_task(tiny_speech_commands, silence_clips=600).train_manifest()
    assert (manifest["label"] == "silence").sum() == 600


def test_silence_rows_are_cut_from_noise_files_grouped_by_file(
    tiny_speech_commands: Path,
) -> None:
    task = make_task(tiny_speech_commands, silence_clips=30)
    silence = task.train_manifest().filter(pl.col("label") == "silence")
    noise_files = {str(p.resolve()): p for p in task.noise_files()}
    assert len(noise_files) == 6
    for row in silence.iter_rows(named=True):
        noise = noise_files[row["path"]]
        assert row["group"] == f"noise:{noise.stem}"
        assert row["target"] == "silence"
        assert row["duration"] == 1.0
        assert 0.0 <= row["start"] <= sf.info(noise).duration - 1.0
        assert row["gain_db"] == 0.0  # a level is invisible to the model: none is drawn
        assert row["fname"].startswith(f"_background_noise_/{noise.name}@")
    assert silence["group"].n_unique() == 6  # spread over every file


def test_manifest_is_deterministic_for_a_seed(tiny_speech_commands: Path) -> None:
    first = make_task(tiny_speech_commands, unknown_ratio=0.5, seed=3).train_manifest()
    again = make_task(tiny_speech_commands, unknown_ratio=0.5, seed=3).train_manifest()
    other = make_task(tiny_speech_commands, unknown_ratio=0.5, seed=4).train_manifest()
    assert first.equals(again)
    assert not first.equals(other)
    assert first.height == other.height
    assert first["scored"].sum() == other["scored"].sum()


# ---------------------------------------------------------------- label modes and splits


def test_words_mode_targets_words_and_maps_them_to_labels(tiny_speech_commands: Path) -> None:
    task = make_task(tiny_speech_commands, label_mode="words", unknown_ratio=None)
    manifest = task.train_manifest()
    classes = task.classes()
    assert classes == [p.name for p in word_folders(tiny_speech_commands)] + ["silence"]
    assert len(classes) == 31
    assert set(manifest["target"]) == set(classes)
    words = manifest.filter(pl.col("label") != "silence")
    assert (words["target"] == words["word"]).all()
    matrix = task.class_to_label()
    assert matrix.shape == (31, 12)
    np.testing.assert_array_equal(matrix.sum(axis=1), np.ones(31))
    assert set(np.unique(matrix)) == {0.0, 1.0}
    for row, name in enumerate(classes):
        assert LABELS[int(matrix[row].argmax())] == word_label(name)
    assert LABELS[int(matrix[classes.index("marvin")].argmax())] == "unknown"
    assert LABELS[int(matrix[classes.index("silence")].argmax())] == "silence"
    # Word probabilities summed into labels: every label column has at least one class.
    assert (matrix.sum(axis=0) >= 1).all()


def test_official_split_comes_from_the_validation_and_testing_lists(dataset_copy: Path) -> None:
    train = dataset_copy / "train"
    clips = sorted(
        f"{p.parent.name}/{p.name}"
        for folder in word_folders(dataset_copy)
        for p in folder.glob("*.wav")
    )
    validation, testing = clips[:5], clips[5:9]
    (train / "validation_list.txt").write_text("\n".join(validation) + "\n")
    (train / "testing_list.txt").write_text("\n".join(testing) + "\n")
    manifest = make_task(dataset_copy, unknown_ratio=None).train_manifest()
    split = dict(zip(manifest["fname"], manifest["official_split"], strict=True))
    assert all(split[name] == "validation" for name in validation)
    assert all(split[name] == "testing" for name in testing)
    others = set(split) - set(validation) - set(testing)
    assert others and all(split[name] == "train" for name in others)


def test_official_split_of_the_generated_lists(tiny_speech_commands: Path) -> None:
    manifest = make_task(tiny_speech_commands, unknown_ratio=None).train_manifest()
    testing = set((tiny_speech_commands / "train" / "testing_list.txt").read_text().split())
    assert testing  # the fixture's seed puts a speaker in the testing list
    marked = set(manifest.filter(pl.col("official_split") == "testing")["fname"])
    assert marked == testing


def test_test_manifest_lists_the_test_clips(tiny_speech_commands: Path) -> None:
    test = make_task(tiny_speech_commands).test_manifest()
    assert test is not None
    assert test.columns == TEST_COLUMNS
    on_disk = sorted(p.name for p in (tiny_speech_commands / "test" / "audio").glob("*.wav"))
    assert test["fname"].to_list() == on_disk and len(on_disk) == 24
    assert all(
        Path(p).is_file() and Path(p).name == f
        for p, f in zip(test["path"], test["fname"], strict=True)
    )
    sample = pl.read_csv(tiny_speech_commands / "sample_submission.csv")
    assert set(sample["fname"]) == set(test["fname"])


def test_no_test_folder_means_no_test_manifest(dataset_copy: Path) -> None:
    shutil.rmtree(dataset_copy / "test")
    assert make_task(dataset_copy).test_manifest() is None


# ---------------------------------------------------------------- bad layouts


def test_missing_dataset_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found") as error:
        make_task(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(error.value)


def test_missing_train_audio_folder_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "data" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError) as error:
        make_task(tmp_path / "data")
    assert str(tmp_path / "data" / "train" / "audio") in str(error.value)


def test_badly_named_wav_names_the_file(dataset_copy: Path) -> None:
    good = next((dataset_copy / "train" / "audio" / "yes").glob("*.wav"))
    bad = dataset_copy / "train" / "audio" / "yes" / "badname.wav"
    shutil.copy(good, bad)
    with pytest.raises(DatasetError, match="_nohash_") as error:
        make_task(dataset_copy).train_manifest()
    assert str(bad) in str(error.value)


def test_silence_without_noise_files_is_a_clear_error(dataset_copy: Path) -> None:
    shutil.rmtree(dataset_copy / "train" / "audio" / "_background_noise_")
    with pytest.raises(DatasetError, match="noise") as error:
        make_task(dataset_copy, silence_clips=5).train_manifest()
    assert "silence_clips=0" in str(error.value)
    # Without silence the same folder is fine.
    manifest = make_task(dataset_copy, silence_clips=0).train_manifest()
    assert "silence" not in set(manifest["label"])


def test_unknown_task_param_is_rejected(tiny_speech_commands: Path) -> None:
    with pytest.raises(ValueError, match="unknown_ration"):
        make_task(tiny_speech_commands, unknown_ration=0.5)
