"""The transcript readers besides Common Voice: a transcript sheet of one's own
(``transcript_manifest``: its split column, or speakers held out as dev) and the Bengali.AI
competition layout (mp3 clips, a test without sentences, ``id,sentence`` submissions); bad
rows named with their file and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import soundfile

from speechstack.cli import main
from speechstack.config import TaskConfig
from speechstack.submission import SubmissionError, write_transcript_submission
from speechstack.tasks import DatasetError, create_task

RATE = 16000
BENGALI = ["আমি ভাত খাই", "তুমি কোথায় যাও", "সে বই পড়ে", "আমরা গান গাই", "ওরা মাঠে খেলে"]


def tone(seconds: float = 0.5, pitch: float = 220.0) -> np.ndarray:
    time = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * pitch * time)).astype(np.float32)


def task(data: Path, name: str, **params: object):
    return create_task(TaskConfig(name=name, data_dir=data, params=params))


@pytest.fixture
def sheet_corpus(tmp_path: Path) -> Path:
    (tmp_path / "audio").mkdir()
    rows = []
    for index in range(12):
        path = f"audio/{index:02d}.flac"
        soundfile.write(tmp_path / path, tone(pitch=200 + 10 * index), RATE)
        rows.append(
            {
                "path": path,
                "sentence": f"words number {index}",
                "speaker": f"s{index % 6}",
                "gender": "female" if index % 2 else "male",
            }
        )
    pl.DataFrame(rows).write_csv(tmp_path / "manifest.csv")
    return tmp_path


def test_a_sheet_without_a_split_column_holds_out_whole_speakers_as_dev(
    sheet_corpus: Path,
) -> None:
    reader = task(sheet_corpus, "transcript_manifest", dev_fraction=0.3)
    train, dev = reader.train_manifest(), reader.dev_manifest()
    assert reader.test_manifest() is None and reader.labels == []
    assert train.height + dev.height == 12 and not set(train["group"]) & set(dev["group"])
    assert dev["group"].n_unique() == 2  # ceil(0.3 x 6 speakers)
    assert {"sentence", "gender", "path"} <= set(dev.columns)
    again = task(sheet_corpus, "transcript_manifest", dev_fraction=0.3).dev_manifest()
    assert again["fname"].to_list() == dev["fname"].to_list()  # deterministic per seed
    other = task(sheet_corpus, "transcript_manifest", dev_fraction=0.3, seed=3).dev_manifest()
    assert set(other["fname"]) != set(dev["fname"])


def test_a_sheet_with_a_split_column_keeps_its_splits(sheet_corpus: Path) -> None:
    sheet = pl.read_csv(sheet_corpus / "manifest.csv")
    splits = ["train"] * 8 + ["valid"] * 2 + ["TEST"] * 2
    sheet.with_columns(split=pl.Series(splits)).write_csv(sheet_corpus / "manifest.csv")
    reader = task(sheet_corpus, "transcript_manifest")
    assert [reader.train_manifest().height, reader.dev_manifest().height] == [8, 2]
    assert reader.test_manifest()["fname"].to_list() == ["audio/10.flac", "audio/11.flac"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.with_columns(split=pl.lit("holdout")), r"row 1: split 'holdout' is none of"),
        (lambda f: f.with_columns(sentence=pl.lit(" ")), r"row 1: empty path or sentence"),
        (lambda f: f.with_columns(path=pl.lit("../x.flac")), r"row 1: path '../x.flac' leaves"),
        (lambda f: f.drop("sentence"), r"missing columns \['sentence'\]"),
    ],
)
def test_a_bad_sheet_row_is_named(sheet_corpus: Path, change, message: str) -> None:
    change(pl.read_csv(sheet_corpus / "manifest.csv")).write_csv(sheet_corpus / "manifest.csv")
    with pytest.raises(DatasetError, match=message):
        task(sheet_corpus, "transcript_manifest")


def write_bengali_ai(root: Path, train: int = 6, valid: int = 2, test: int = 3) -> Path:
    for folder in ("train_mp3s", "test_mp3s"):
        (root / folder).mkdir(parents=True)
    rows = []
    for index in range(train + valid):
        clip_id = f"{index:012x}"
        soundfile.write(root / "train_mp3s" / f"{clip_id}.mp3", tone(), RATE, format="MP3")
        split = "train" if index < train else "valid"
        rows.append({"id": clip_id, "sentence": BENGALI[index % len(BENGALI)], "split": split})
    pl.DataFrame(rows).write_csv(root / "train.csv")
    test_ids = [f"{0xA000 + index:012x}" for index in range(test)]
    for clip_id in test_ids:
        soundfile.write(root / "test_mp3s" / f"{clip_id}.mp3", tone(0.7), RATE, format="MP3")
    pl.DataFrame({"id": test_ids[::-1], "sentence": ["ক"] * test}).write_csv(
        root / "sample_submission.csv"
    )
    answers = {"id": test_ids, "sentence": [BENGALI[i % len(BENGALI)] for i in range(test)]}
    pl.DataFrame(answers).write_csv(root / "demo_solution.csv")
    return root


def test_bengali_ai_reads_mp3_clips_and_a_test_without_sentences(tmp_path: Path) -> None:
    from speechstack.audio import read_audio

    reader = task(write_bengali_ai(tmp_path / "bn"), "bengali_ai")
    train, dev, test = reader.train_manifest(), reader.dev_manifest(), reader.test_manifest()
    assert [train.height, dev.height, test.height] == [6, 2, 3]
    assert "sentence" not in test.columns and set(train["sentence"]) <= set(BENGALI)
    assert read_audio(train["path"][0], RATE).shape[0] == pytest.approx(RATE / 2, abs=1200)
    assert task(tmp_path / "bn", "bengali_ai", dev_limit=1).dev_manifest().height == 1
    assert reader.sample_submission() == tmp_path / "bn" / "sample_submission.csv"


def test_bengali_ai_names_a_missing_clip_and_a_bad_split(tmp_path: Path) -> None:
    root = write_bengali_ai(tmp_path / "bn")
    first = pl.read_csv(root / "train.csv", infer_schema_length=0)["id"][0]
    (root / "train_mp3s" / f"{first}.mp3").unlink()
    with pytest.raises(DatasetError, match=r"train\.csv, line 2: clip .* not found"):
        task(root, "bengali_ai").train_manifest()
    frame = pl.read_csv(root / "train.csv", infer_schema_length=0).with_columns(split=pl.lit("dev"))
    frame.write_csv(root / "train.csv")
    with pytest.raises(DatasetError, match=r"line 2: split 'dev' is not train or valid"):
        task(root, "bengali_ai").dev_manifest()


def test_transcripts_become_a_submission_in_the_sample_order(tmp_path: Path) -> None:
    sample = write_bengali_ai(tmp_path / "bn") / "sample_submission.csv"
    ids = pl.read_csv(sample, infer_schema_length=0)["id"].to_list()
    said = pl.DataFrame({"fname": sorted(ids), "sentence": ["আমি", None, "সে বই"]})
    path = write_transcript_submission(said, tmp_path / "out", "bengali_ai", 0.5, sample)
    assert path.name.startswith("bengali_ai-") and path.name.endswith("-devwer0.5000.csv")
    written = pl.read_csv(path, infer_schema_length=0)
    assert written.columns == ["id", "sentence"] and written["id"].to_list() == ids
    assert dict(zip(written["id"], written["sentence"].fill_null(""), strict=True)) == {
        sorted(ids)[0]: "আমি",
        sorted(ids)[1]: "",
        sorted(ids)[2]: "সে বই",
    }
    with pytest.raises(SubmissionError, match="1 ids missing"):
        write_transcript_submission(said.head(2), tmp_path / "out", "bengali_ai", 0.5, sample)
    with pytest.raises(FileExistsError, match="never overwrites"):
        write_transcript_submission(said, path, "bengali_ai", 0.5, sample)


def test_a_bengali_ai_run_writes_its_test_transcripts_as_the_submission(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo_root: Path,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    data = write_bengali_ai(tmp_path / "bn")
    common = [
        "--config",
        str(repo_root / "configs" / "bengali_ai" / "ctc.yaml"),
        "--data",
        str(data),
    ]
    settings = [
        "train.epochs=1",
        "train.batch_size=4",
        "model.params={channels: 16, hidden_size: 16, layers: 1, dropout: 0.0}",
    ]
    assert main(["train", *common, *(a for s in settings for a in ("--set", s))]) == 0
    assert "no sentences to score" in capsys.readouterr().out
    assert main(["submission", *common, "--out", "submissions"]) == 0
    out = capsys.readouterr().out
    assert "3 transcripts by 'ctc'" in out
    assert "demo test (unseen speakers, from demo_solution.csv): WER " in out
    (written,) = Path("submissions").glob("bengali_ai-*-devwer*.csv")
    sample = pl.read_csv(data / "sample_submission.csv", infer_schema_length=0)
    assert pl.read_csv(written, infer_schema_length=0)["id"].to_list() == sample["id"].to_list()
