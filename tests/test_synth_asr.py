"""The synthetic English/French speech-recognition corpus in Common Voice's layout, tiny."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import soundfile as sf

from speechstack.synth import DEMOS, Espeak, asr, generate_asr, generate_demo

TINY = {"speakers": 4, "holdout_speakers": 2, "sentences_per_speaker": 3, "progress": False}
HEADER = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccent\tlocale\tsegment"
FILE_NAME = re.compile(r"^common_voice_(?P<locale>en|fr)_\d{8}\.wav$")
FRENCH_LETTERS = re.compile(r"[àâçéèêëîïôùûœÀÇ]")


def file_digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def read_tsv(path: Path) -> pl.DataFrame:
    """As a Common Voice TSV is read: tabs, no quoting, every column text."""
    return pl.read_csv(path, separator="\t", quote_char=None, infer_schema_length=0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_asr(tmp_path_factory.mktemp("asr") / "demo", seed=0, **TINY)


@pytest.fixture(scope="module")
def splits(corpus: Path) -> dict[str, pl.DataFrame]:
    return {split: read_tsv(corpus / f"{split}.tsv") for split in asr.SPLITS}


def test_common_voice_layout_and_headers(corpus: Path, splits: dict[str, pl.DataFrame]) -> None:
    assert {p.name for p in corpus.iterdir()} == {"clips", "train.tsv", "dev.tsv", "test.tsv"}
    assert not list(corpus.parent.glob("*.partial-*"))
    for split in asr.SPLITS:
        raw = (corpus / f"{split}.tsv").read_bytes()
        assert raw.startswith(HEADER.encode() + b"\n") and raw.endswith(b"\n")
        assert b"\r" not in raw and b'"' not in raw
        assert list(splits[split].columns) == list(asr.TSV_COLUMNS)
    # 4 speakers: one English-French pair trains, one is dev; 2 holdout speakers test.
    assert {split: frame.height for split, frame in splits.items()} == {
        "train": 6,
        "dev": 6,
        "test": 6,
    }
    paths = [path for frame in splits.values() for path in frame["path"]]
    assert len(set(paths)) == len(paths)
    assert set(paths) == {path.name for path in (corpus / "clips").iterdir()}
    for frame in splits.values():
        for path, locale in frame.select("path", "locale").iter_rows():
            match = FILE_NAME.match(path)
            assert match is not None and match["locale"] == locale, path


def test_clips_are_16k_mono_pcm16_speech(corpus: Path) -> None:
    for path in (corpus / "clips").iterdir():
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype, info.format) == (
            16_000,
            1,
            "PCM_16",
            "WAV",
        ), path
        assert 0.7 < info.duration <= asr.MAX_CLIP_SECONDS, path
        audio, _ = sf.read(path)
        assert np.abs(audio).max() > 0.01 and np.count_nonzero(audio) > 0.9 * len(audio), path


def test_splits_share_no_speaker_and_no_sentence(splits: dict[str, pl.DataFrame]) -> None:
    speakers = {split: set(frame["client_id"]) for split, frame in splits.items()}
    sentences = {split: set(frame["sentence"]) for split, frame in splits.items()}
    for first, second in [("train", "dev"), ("train", "test"), ("dev", "test")]:
        assert not speakers[first] & speakers[second]
        assert not sentences[first] & sentences[second]
    for frame in splits.values():
        assert all(re.fullmatch(r"[0-9a-f]{128}", client) for client in frame["client_id"])
        per_speaker = frame.group_by("client_id").agg(
            pl.col("locale", "gender", "age", "accent").n_unique(),
            pl.col("sentence").n_unique().alias("sentences"),
            pl.len(),
        )
        # One person, one profile; nobody reads a sentence twice.
        assert per_speaker.filter(
            (pl.col("locale") > 1) | (pl.col("gender") > 1) | (pl.col("sentences") != pl.col("len"))
        ).is_empty()
    assert len(speakers["train"]) == len(speakers["dev"]) == len(speakers["test"]) == 2


def test_both_languages_with_their_own_letters(splits: dict[str, pl.DataFrame]) -> None:
    everything = pl.concat(list(splits.values()))
    for split, frame in splits.items():
        assert set(frame["locale"]) == {"en", "fr"}, split
    for sentence, locale in everything.select("sentence", "locale").iter_rows():
        assert sentence in asr.SENTENCES[locale]  # read back exactly, accents included
    french = everything.filter(pl.col("locale") == "fr")["sentence"]
    english = everything.filter(pl.col("locale") == "en")["sentence"]
    assert any(FRENCH_LETTERS.search(sentence) for sentence in french)
    assert not any(FRENCH_LETTERS.search(sentence) for sentence in english)


def test_profile_columns_take_common_voice_values(splits: dict[str, pl.DataFrame]) -> None:
    everything = pl.concat(list(splits.values()))
    assert set(everything["gender"]) <= set(asr.GENDERS)
    assert set(everything["age"].drop_nulls()) <= set(asr.AGES)
    assert set(everything["accent"].drop_nulls()) <= set(asr.ACCENTS.values())
    assert everything["segment"].null_count() == everything.height
    votes = everything.select(pl.col("up_votes", "down_votes").cast(pl.Int64))
    assert votes.filter(
        (pl.col("up_votes") < 2) | (pl.col("up_votes") <= pl.col("down_votes"))
    ).is_empty()
    assert set(splits["test"]["gender"]) == {"male"}  # holdout positions 0, 1: a male pair


def test_tsv_round_trips_french_text_exactly(tmp_path: Path) -> None:
    sentences = ["L'été est chaud.", "Où est la gare ?", "Ça coûte trop cher, n'est-ce pas ?"]
    rows = [
        ("a" * 128, f"common_voice_fr_{10_000_000 + n}.wav", s, "2", "0", "", "male", "", "fr", "")
        for n, s in enumerate(sentences)
    ]
    (tmp_path / "fr.tsv").write_text(asr.tsv_text(rows), encoding="utf-8", newline="\n")
    assert read_tsv(tmp_path / "fr.tsv")["sentence"].to_list() == sentences
    with pytest.raises(ValueError, match="tab, line break or double quote"):
        asr.tsv_text([(*rows[0][:2], 'He said "hi".', *rows[0][3:])])


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_sentence_pools_are_disjoint_and_train_holds_every_character(seed: int) -> None:
    pools = asr.split_sentences(seed)
    for language, sentences in asr.SENTENCES.items():
        split = pools[language]
        assert sorted(split["train"] + split["dev"] + split["test"]) == sorted(sentences)
        assert len(split["dev"]) == len(split["test"]) == round(0.2 * len(sentences))
        train_characters = set("".join(split["train"]))
        assert set("".join(split["dev"] + split["test"])) <= train_characters
    assert asr.split_sentences(seed, shared=True)["fr"]["test"] == asr.SENTENCES["fr"]


def test_every_built_in_sentence_is_short_and_writable() -> None:
    for language, sentences in asr.SENTENCES.items():
        assert len(set(sentences)) == len(sentences) >= 60, language
        for sentence in sentences:
            words = [word for word in sentence.split() if re.search(r"\w", word)]
            assert 3 <= len(words) <= 8, sentence
            assert not re.search(r'[\d\t\n"]', sentence), sentence
    assert asr.max_sentences_per_speaker() >= 12


@pytest.mark.parametrize("seed", [0, 1])
def test_holdout_speakers_use_voices_no_train_speaker_uses(seed: int) -> None:
    train, holdout = asr.make_speakers(seed, 24, 6)
    assert not {s.variant for s in train} & {s.variant for s in holdout}
    assert all(s.shift is None for s in train) and all(s.shift is not None for s in holdout)
    assert all(s.variant.startswith("klatt") for s in holdout if s.gender == "male")
    assert [(s.language, s.gender) for s in holdout[:4]] == [
        ("en", "male"),
        ("fr", "male"),
        ("en", "female"),
        ("fr", "female"),
    ]
    assert {s.voice for s in train + holdout if s.language == "fr"} <= set(asr.FRENCH_VOICES)
    assert len({s.variant for s in train}) == len(train)  # 24 speakers, all different variants
    assert asr.make_speakers(seed, 24, 0)[0] == train


def test_same_seed_same_bytes_force_replaces(corpus: Path, tmp_path: Path) -> None:
    Espeak().speak(  # leave libespeak-ng in another state: the generator must reset it
        "disturb the engine", voice="fr-ch", variant="klatt2", rate=250, pitch=20, pitch_range=80
    )
    again = generate_asr(tmp_path / "again", seed=0, **TINY)
    assert file_digests(again) == file_digests(corpus)
    with pytest.raises(FileExistsError, match="already exists and is not empty"):
        generate_asr(again, seed=1, **TINY)
    assert file_digests(again) == file_digests(corpus)  # refused: nothing touched
    generate_asr(again, seed=1, force=True, **TINY)
    assert file_digests(again) != file_digests(corpus)


def test_train_files_do_not_depend_on_the_holdout(corpus: Path, tmp_path: Path) -> None:
    alone = generate_asr(tmp_path / "alone", seed=0, **{**TINY, "holdout_speakers": 0})
    assert (alone / "test.tsv").read_text(encoding="utf-8") == HEADER + "\n"
    digests = {name: d for name, d in file_digests(alone).items() if name != "test.tsv"}
    holdout_files = {f"clips/{name}" for name in read_tsv(corpus / "test.tsv")["path"]}
    assert digests == {
        name: d
        for name, d in file_digests(corpus).items()
        if name != "test.tsv" and name not in holdout_files
    }


def test_bad_sizes_are_refused(tmp_path: Path) -> None:
    most = asr.max_sentences_per_speaker()
    with pytest.raises(ValueError, match="sentences_per_speaker"):
        generate_asr(tmp_path / "x", sentences_per_speaker=most + 1, progress=False)
    with pytest.raises(ValueError, match="at least one speaker"):
        generate_asr(tmp_path / "x", speakers=0, progress=False)
    assert not (tmp_path / "x").exists()


def test_registered_as_a_demo(tmp_path: Path) -> None:
    assert DEMOS["asr"] == DEMOS["asr"].__class__("asr", "generate_asr", "speakers")
    assert asr.dev_speaker_count(24) == 4 and asr.dev_speaker_count(3) == 0
    out = generate_demo("asr", tmp_path / "demo", seed=0, force=False, speakers=2, test_clips=5)
    train = read_tsv(out / "train.tsv")
    assert set(train["locale"]) == {"en", "fr"} and train.height == 2 * 12
    assert read_tsv(out / "dev.tsv").height == 0
    assert read_tsv(out / "test.tsv").height == 6 * 12
