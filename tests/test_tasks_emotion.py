"""The RAVDESS and CREMA-D readers on generated files: names, labels, gender, groups,
malformed names, missing folders, and actor-independent folds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from speechstack.config import TaskConfig
from speechstack.folds import assign_folds
from speechstack.tasks import DatasetError, create_task
from speechstack.tasks.crema_d import EMOTIONS as CREMA_EMOTIONS
from speechstack.tasks.ravdess import EMOTIONS as RAVDESS_EMOTIONS

TONE = 0.1 * np.sin(np.linspace(0, 400 * np.pi, 8000))


def ravdess_tree(root: Path, write_wav, actors: range) -> Path:
    """Actor folders with one normal and one strong clip per emotion (neutral: normal only),
    statement 1, repetition 1, plus a song file that the reader must skip."""
    for actor in actors:
        folder = root / f"Actor_{actor:02d}"
        for emotion in range(1, 9):
            for intensity in (1,) if emotion == 1 else (1, 2):
                name = f"03-01-{emotion:02d}-{intensity:02d}-01-01-{actor:02d}.wav"
                write_wav(folder / name, TONE, 48000)
        write_wav(folder / f"03-02-03-01-01-01-{actor:02d}.wav", TONE, 48000)  # a song
    return root


def ravdess(root: Path, **params) -> pl.DataFrame:
    return create_task(TaskConfig(name="ravdess", data_dir=root, params=params)).train_manifest()


def test_ravdess_reads_emotion_intensity_gender_and_actor(tmp_path: Path, write_wav) -> None:
    manifest = ravdess(ravdess_tree(tmp_path, write_wav, range(1, 3)))
    assert manifest.height == 2 * 15  # songs skipped
    row = manifest.filter(pl.col("fname") == "Actor_01/03-01-05-02-01-01-01.wav").row(0, named=True)
    assert row["label"] == row["target"] == "angry"
    assert (row["intensity"], row["gender"], row["group"]) == ("strong", "male", "actor01")
    assert set(manifest.filter(pl.col("actor") == 2)["gender"]) == {"female"}
    assert set(manifest["label"]) == set(RAVDESS_EMOTIONS)
    assert set(manifest.filter(pl.col("label") == "neutral")["intensity"]) == {"normal"}
    subset = ravdess(tmp_path, emotions=["sad", "angry"])
    assert set(subset["label"]) == {"sad", "angry"} and subset.height == 8


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("03-01-09-01-01-01-01.wav", "RAVDESS pattern"),  # emotion 09 does not exist
        ("03-01-05-01-01-01.wav", "RAVDESS pattern"),
        ("03-01-05-01-01-01-07.wav", "actor 07 in the name"),
    ],
)
def test_ravdess_malformed_names_are_clear_errors(
    tmp_path: Path, write_wav, name: str, message: str
) -> None:
    root = ravdess_tree(tmp_path, write_wav, range(1, 2))
    write_wav(root / "Actor_01" / name, TONE, 48000)
    with pytest.raises(DatasetError, match=message) as error:
        ravdess(root)
    assert name in str(error.value)


def test_ravdess_missing_layout_and_unknown_emotion(tmp_path: Path, write_wav) -> None:
    with pytest.raises(DatasetError, match="no Actor_XX folders"):
        ravdess(tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        ravdess(tmp_path / "absent")
    ravdess_tree(tmp_path, write_wav, range(1, 2))
    with pytest.raises(DatasetError, match="unknown RAVDESS emotions"):
        ravdess(tmp_path, emotions=["sad", "bored"])


def test_emotion_folds_never_split_an_actor(tmp_path: Path, write_wav) -> None:
    manifest = ravdess(ravdess_tree(tmp_path, write_wav, range(1, 7)))
    folds = assign_folds(manifest, 3, seed=0)
    per_actor = folds.group_by("group").agg(pl.col("fold").n_unique().alias("folds"))
    assert (per_actor["folds"] == 1).all()
    assert folds["fold"].n_unique() == 3


def crema_tree(root: Path, write_wav, actors: list[int], demographics: bool = True) -> Path:
    audio = root / "AudioWAV"
    for actor in actors:
        for emotion in CREMA_EMOTIONS:
            write_wav(audio / f"{actor}_DFA_{emotion}_XX.wav", TONE, 16000)
        write_wav(audio / f"{actor}_IEO_ANG_HI.wav", TONE, 16000)
    if demographics:
        rows = [f"{a},{30 + i},{'Male' if i % 2 == 0 else 'Female'},Caucasian,Not Hispanic"
                for i, a in enumerate(actors)]  # fmt: skip
        (root / "VideoDemographics.csv").write_text(
            "ActorID,Age,Sex,Race,Ethnicity\n" + "\n".join(rows) + "\n"
        )
    return root


def crema(root: Path, **params) -> pl.DataFrame:
    return create_task(TaskConfig(name="crema_d", data_dir=root, params=params)).train_manifest()


def test_crema_d_reads_emotion_level_sentence_and_gender(tmp_path: Path, write_wav) -> None:
    manifest = crema(crema_tree(tmp_path, write_wav, [1001, 1002]))
    assert manifest.height == 14
    row = manifest.filter(pl.col("fname") == "1002_IEO_ANG_HI.wav").row(0, named=True)
    assert (row["label"], row["level"], row["sentence"]) == ("ANG", "HI", "IEO")
    assert (row["gender"], row["group"], row["actor"]) == ("female", "actor1002", 1002)
    assert set(manifest.filter(pl.col("actor") == 1001)["gender"]) == {"male"}
    assert set(manifest["label"]) == set(CREMA_EMOTIONS)
    assert set(crema(tmp_path, emotions=["ANG", "SAD"])["label"]) == {"ANG", "SAD"}


def test_crema_d_without_demographics_has_unknown_gender(tmp_path: Path, write_wav) -> None:
    manifest = crema(crema_tree(tmp_path, write_wav, [1001], demographics=False))
    assert set(manifest["gender"]) == {"unknown"}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("1001_DFA_ANGRY_XX.wav", "CREMA-D pattern"),
        ("1001_DFA_BOR_XX.wav", "unknown emotion 'BOR'"),
        ("1001_ABC_ANG_XX.wav", "unknown sentence 'ABC'"),
        ("1001_DFA_ANG_QQ.wav", "unknown level 'QQ'"),
    ],
)
def test_crema_d_malformed_names_are_clear_errors(
    tmp_path: Path, write_wav, name: str, message: str
) -> None:
    root = crema_tree(tmp_path, write_wav, [1001])
    write_wav(root / "AudioWAV" / name, TONE, 16000)
    with pytest.raises(DatasetError, match=message) as error:
        crema(root)
    assert name in str(error.value)


def test_crema_d_missing_folder_and_bad_demographics(tmp_path: Path, write_wav) -> None:
    with pytest.raises(DatasetError, match="AudioWAV: missing folder"):
        crema(tmp_path)
    crema_tree(tmp_path, write_wav, [1001])
    (tmp_path / "VideoDemographics.csv").write_text("Actor,Sex\n1001,Male\n")
    with pytest.raises(DatasetError, match=r"VideoDemographics\.csv: missing columns"):
        crema(tmp_path)
