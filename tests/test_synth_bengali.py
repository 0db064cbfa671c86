"""The synthetic Bengali speech-recognition corpus in the Bengali.AI layout, tiny."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import soundfile as sf

from speechstack.audio import read_audio
from speechstack.config import TaskConfig
from speechstack.synth import DEMOS, Espeak, bengali, generate_demo
from speechstack.synth.bengali import generate_bengali_ai
from speechstack.tasks import create_task
from speechstack.text import Vocabulary, normalise

TINY = {"speakers": 4, "holdout_speakers": 2, "sentences_per_speaker": 2, "progress": False}
TRAIN_CLIPS, VALID_CLIPS, TEST_CLIPS = 3 * 2, 1 * 2, 2 * 2  # 4 speakers: 3 train, 1 valid
CLIP_ID = re.compile(r"^[0-9a-f]{12}$")
BENGALI = re.compile(r"[\u0980-\u09ff]")


def read_csv(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, infer_schema_length=0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_bengali_ai(tmp_path_factory.mktemp("bengali") / "demo", seed=0, **TINY)


@pytest.fixture(scope="module")
def tables(corpus: Path) -> dict[str, pl.DataFrame]:
    train = read_csv(corpus / "train.csv")
    return {
        "train": train.filter(pl.col("split") == "train"),
        "valid": train.filter(pl.col("split") == "valid"),
        "sample": read_csv(corpus / "sample_submission.csv"),
        "solution": read_csv(corpus / "demo_solution.csv"),
    }


def test_bengali_ai_layout_columns_and_ids(corpus: Path, tables: dict[str, pl.DataFrame]) -> None:
    assert sorted(path.name for path in corpus.iterdir()) == [
        "demo_solution.csv",
        "sample_submission.csv",
        "test_mp3s",
        "train.csv",
        "train_mp3s",
    ]
    assert read_csv(corpus / "train.csv").columns == ["id", "sentence", "split"]
    for name in ("sample", "solution"):
        assert tables[name].columns == ["id", "sentence"]
    assert tables["train"].height == TRAIN_CLIPS and tables["valid"].height == VALID_CLIPS
    assert tables["sample"].height == TEST_CLIPS
    train_ids = [*tables["train"]["id"], *tables["valid"]["id"]]
    test_ids = list(tables["sample"]["id"])
    assert all(CLIP_ID.match(clip_id) for clip_id in train_ids + test_ids)
    assert len(set(train_ids + test_ids)) == len(train_ids) + len(test_ids)
    assert list(tables["solution"]["id"]) == test_ids  # the answer key, in the sample's order
    assert set(tables["sample"]["sentence"]) == {bengali.PLACEHOLDER}
    assert {p.stem for p in (corpus / "train_mp3s").iterdir()} == set(train_ids)
    assert {p.stem for p in (corpus / "test_mp3s").iterdir()} == set(test_ids)
    assert all(p.suffix == ".mp3" for p in (corpus / "test_mp3s").iterdir())


def test_clips_decode_as_16k_speech(corpus: Path) -> None:
    for folder in ("train_mp3s", "test_mp3s"):
        clips = sorted((corpus / folder).iterdir())
        assert clips
        for clip in clips:
            info = sf.info(clip)
            assert (info.format, info.samplerate, info.channels) == ("MP3", 16_000, 1), clip
            audio = read_audio(clip, 16_000)
            assert 0.5 < len(audio) / 16_000 < 8.0, clip
            assert np.all(np.isfinite(audio)) and np.max(np.abs(audio)) <= 1.0
            assert np.sqrt(np.mean(np.square(audio))) > 0.01, clip  # not silence


def test_splits_share_no_sentence_and_train_holds_every_character(
    tables: dict[str, pl.DataFrame],
) -> None:
    said = {
        "train": set(tables["train"]["sentence"]),
        "valid": set(tables["valid"]["sentence"]),
        "test": set(tables["solution"]["sentence"]),
    }
    assert not said["train"] & said["valid"] and not said["train"] & said["test"]
    assert not said["valid"] & said["test"]
    for sentences in said.values():
        for sentence in sentences:
            assert BENGALI.search(sentence) and unicodedata.is_normalized("NFC", sentence)
    for split in ("valid", "test"):
        assert "".join(said[split]) and set("".join(said[split])) <= set("".join(said["train"]))


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_sentence_pools_are_disjoint_and_cover_characters(seed: int) -> None:
    pools = bengali.split_sentences(seed)
    assert sum(map(len, pools.values())) == len(bengali.SENTENCES)
    assert len(set().union(*map(set, pools.values()))) == len(bengali.SENTENCES)
    train_characters = set("".join(pools["train"]))
    for split in ("valid", "test"):
        assert len(pools[split]) == bengali.max_sentences_per_speaker()
        assert set("".join(pools[split])) <= train_characters
        # held-out sentences are new, but mostly made of words heard in training
        words = [word.strip("।?") for sentence in pools[split] for word in sentence.split()]
        heard = {word.strip("।?") for sentence in pools["train"] for word in sentence.split()}
        assert sum(word in heard for word in words) > 0.7 * len(words)


def test_built_in_sentences_are_short_nfc_bengali() -> None:
    assert 60 <= len(bengali.SENTENCES) <= 120
    assert len(set(bengali.SENTENCES)) == len(bengali.SENTENCES)
    for sentence in bengali.SENTENCES:
        assert 3 <= len(sentence.split()) <= 8, sentence
        assert unicodedata.is_normalized("NFC", sentence), sentence
        assert not re.search(r"[A-Za-z0-9\u09e6-\u09ef]", sentence), sentence  # no digits
    # espeak-ng is given the nukta letters precomposed; nothing else changes
    assert bengali.spoken_form("বড় ভাই যায়") == "ব\u09dc ভাই যা\u09df"
    assert bengali.spoken_form("আমি চা খাই।") == "আমি চা খাই।"


def test_speakers_differ_between_splits_and_from_the_holdout() -> None:
    train, holdout = bengali.make_speakers(0, 12, 4)
    voices = [(s.variant, s.pitch, s.rate, s.pitch_range) for s in [*train, *holdout]]
    assert len(set(voices)) == len(voices)
    assert len({s.id for s in [*train, *holdout]}) == 16
    assert [s.gender for s in train[:4]] == ["male", "female", "male", "female"]
    assert not {s.variant for s in holdout} & {s.variant for s in train}
    assert all(s.shift is not None for s in holdout) and all(s.shift is None for s in train)
    assert bengali.valid_speaker_count(12) == 2 and bengali.valid_speaker_count(4) == 1
    assert bengali.make_speakers(0, 12, 0)[0] == train  # train does not depend on the holdout


def test_reader_gives_manifests(corpus: Path, tables: dict[str, pl.DataFrame]) -> None:
    task = create_task(TaskConfig(name="bengali_ai", data_dir=corpus, params={}))
    train, dev, test = task.train_manifest(), task.dev_manifest(), task.test_manifest()
    assert (train.height, dev.height, test.height) == (TRAIN_CLIPS, VALID_CLIPS, TEST_CLIPS)
    assert "sentence" in train.columns and "sentence" in dev.columns
    assert "sentence" not in test.columns
    assert sorted(dev["sentence"]) == sorted(tables["valid"]["sentence"])
    assert list(test["fname"]) == list(tables["sample"]["id"])
    assert task.sample_submission() == corpus / "sample_submission.csv"
    assert all(Path(path).is_file() for path in [*train["path"], *test["path"]])


def test_bengali_text_round_trips_through_the_vocabulary(
    tables: dict[str, pl.DataFrame],
) -> None:
    vocabulary = Vocabulary.build(bengali.split_sentences(0)["train"])
    for sentence in [*tables["train"]["sentence"], *tables["solution"]["sentence"]]:
        ids = vocabulary.encode(sentence)
        assert Vocabulary.UNKNOWN_ID not in ids
        assert vocabulary.text(ids) == normalise(sentence)


def test_same_seed_same_bytes_other_seed_differs_force_replaces(
    corpus: Path, tmp_path: Path
) -> None:
    Espeak().speak(  # leave libespeak-ng in another state: the generator must reset it
        "disturb the engine", voice="en-us", variant="klatt2", rate=250, pitch=20, pitch_range=80
    )
    again = generate_bengali_ai(tmp_path / "again", seed=0, **TINY)
    assert (again / "train.csv").read_bytes() == (corpus / "train.csv").read_bytes()
    first = read_csv(corpus / "train.csv")["id"][0]
    clip = f"train_mp3s/{first}.mp3"
    assert (again / clip).read_bytes() == (corpus / clip).read_bytes()
    test_clip = f"test_mp3s/{read_csv(corpus / 'sample_submission.csv')['id'][0]}.mp3"
    assert (again / test_clip).read_bytes() == (corpus / test_clip).read_bytes()

    with pytest.raises(FileExistsError, match="already exists and is not empty"):
        generate_bengali_ai(again, seed=1, **TINY)
    assert (again / "train.csv").read_bytes() == (corpus / "train.csv").read_bytes()
    generate_bengali_ai(again, seed=1, force=True, **TINY)
    assert (again / "train.csv").read_bytes() != (corpus / "train.csv").read_bytes()
    assert not (again / clip).exists()  # new ids


def test_bad_sizes_are_refused(tmp_path: Path) -> None:
    most = bengali.max_sentences_per_speaker()
    with pytest.raises(ValueError, match="sentences_per_speaker"):
        generate_bengali_ai(tmp_path / "x", sentences_per_speaker=most + 1, progress=False)
    with pytest.raises(ValueError, match="at least two training speakers"):
        generate_bengali_ai(tmp_path / "x", speakers=1, progress=False)
    with pytest.raises(ValueError, match="one holdout speaker"):
        generate_bengali_ai(tmp_path / "x", holdout_speakers=0, progress=False)
    with pytest.raises(ValueError, match="train clips do not hold the characters"):
        generate_bengali_ai(tmp_path / "x", speakers=2, sentences_per_speaker=1, progress=False)
    assert not (tmp_path / "x").exists()


def test_registered_as_a_demo(tmp_path: Path) -> None:
    assert DEMOS["bengali_ai"] == DEMOS["asr"].__class__(
        "bengali", "generate_bengali_ai", "speakers"
    )
    out = generate_demo("bengali_ai", tmp_path / "demo", seed=3, force=False, speakers=2)
    train = read_csv(out / "train.csv")
    assert sorted(train["split"].unique()) == ["train", "valid"] and train.height == 2 * 12
    assert read_csv(out / "sample_submission.csv").height == 6 * 12
