"""The synthetic English/Bengali speech-sentiment manifest corpus, at a tiny size."""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechstack.synth import Espeak, emotion, generate_sentiment, sentiment
from speechstack.synth.common import room_tone
from speechstack.synth.shift import NOISE_KINDS, snr_db

TINY = {"speakers": 4, "holdout_speakers": 2, "clips_per_speaker": 6, "progress": False}
CLIP_PATH = re.compile(r"^clips/(?P<speaker>(?:en|bn)\d{2,})/(?P<number>\d{3})\.wav$")
BENGALI_SCRIPT = re.compile(r"[\u0980-\u09ff]")


def file_digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha1(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_sentiment(tmp_path_factory.mktemp("sentiment") / "demo", seed=0, **TINY)


def test_bengali_voice_reads_bengali_script() -> None:
    audio = Espeak().speak(
        "খাবারটা চমৎকার ছিল", voice="bn", variant="f2", rate=160, pitch=50, pitch_range=50
    )
    assert len(audio) > 0.6 * 16_000 and np.abs(audio).max() > 0.05


def test_manifest_lists_every_clip(corpus: Path) -> None:
    assert (
        (corpus / "manifest.csv")
        .read_text(encoding="utf-8")
        .startswith("path,label,speaker,transcript,language\n")
    )
    rows = read_csv(corpus / "manifest.csv")
    assert len(rows) == 4 * 6
    assert {row["path"] for row in rows} == {
        str(path.relative_to(corpus)) for path in (corpus / "clips").rglob("*.wav")
    }
    for row in rows:
        match = CLIP_PATH.match(row["path"])
        assert match is not None, row["path"]
        assert match["speaker"] == row["speaker"]
        assert row["speaker"].startswith(row["language"])
        assert row["label"] in {"positive", "negative"}
    assert {p.name for p in corpus.iterdir()} == {"clips", "manifest.csv", "demo_holdout"}
    assert not list(corpus.parent.glob("*.partial-*"))


def test_labels_are_balanced_and_both_languages_present(corpus: Path) -> None:
    rows = read_csv(corpus / "manifest.csv")
    per_speaker = Counter((row["speaker"], row["label"]) for row in rows)
    speakers = {row["speaker"] for row in rows}
    assert speakers == {"en01", "bn01", "en02", "bn02"}
    assert all(
        per_speaker[(speaker, label)] == 3
        for speaker in speakers
        for label in ("positive", "negative")
    )
    assert Counter(row["language"] for row in rows) == {"en": 12, "bn": 12}


def test_transcripts_decide_the_label(corpus: Path) -> None:
    rows = read_csv(corpus / "manifest.csv")
    for row in rows:
        bengali = bool(BENGALI_SCRIPT.search(row["transcript"]))
        assert bengali == (row["language"] == "bn"), row
        assert row["transcript"].strip()
    by_label = {
        label: {row["transcript"] for row in rows if row["label"] == label}
        for label in ("positive", "negative")
    }
    assert not by_label["positive"] & by_label["negative"]
    # The label is carried by sentiment words: every sentence holds one of its label's words.
    for language, lexicon in sentiment._LEXICONS.items():
        for label in ("positive", "negative"):
            cues = [word for choices in lexicon.words[label].values() for word in choices]
            for row in rows:
                if row["language"] == language and row["label"] == label:
                    assert any(cue in row["transcript"] for cue in cues), row


def test_clips_are_16k_mono_pcm16_speech(corpus: Path) -> None:
    for path in corpus.rglob("*.wav"):
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype, info.format) == (
            16_000,
            1,
            "PCM_16",
            "WAV",
        ), path
        assert 0.7 < info.duration < 6.0, path
    audio, _ = sf.read(next((corpus / "clips" / "bn01").iterdir()))
    assert np.abs(audio).max() > 0.01 and np.count_nonzero(audio) > 0.9 * len(audio)


def test_holdout_answers_point_at_new_speakers(corpus: Path) -> None:
    holdout = corpus / "demo_holdout"
    rows = read_csv(holdout / "answers.csv")
    assert list(rows[0]) == ["path", "label"]
    assert {row["path"] for row in rows} == {
        str(path.relative_to(holdout)) for path in holdout.rglob("*.wav")
    }
    speakers = {CLIP_PATH.match(row["path"])["speaker"] for row in rows}  # type: ignore[index]
    assert speakers == {"en03", "bn03"}
    assert Counter(row["label"] for row in rows) == {"positive": 6, "negative": 6}
    train, holdout_speakers = sentiment.make_speakers(0, 4, 2)

    def voice(speaker: sentiment.Speaker) -> tuple:
        return (speaker.voice, speaker.variant, speaker.pitch, speaker.rate, speaker.pitch_range)

    assert not {voice(s) for s in train} & {voice(s) for s in holdout_speakers}
    assert {s.voice for s in train if s.language == "bn"} == {"bn"}


@pytest.mark.parametrize("seed", [0, 1])
def test_holdout_speakers_use_voices_no_train_speaker_uses(seed: int) -> None:
    train, holdout = sentiment.make_speakers(seed, 24, 6)
    used = {speaker.variant for speaker in train}
    assert not used & {speaker.variant for speaker in holdout}
    assert all(speaker.shift is None for speaker in train)
    assert all(
        s.shift is not None and 1.05 <= max(s.shift.warp, 1 / s.shift.warp) <= 1.26 for s in holdout
    )
    klatt, _ = sentiment.holdout_variants(train)
    assert klatt  # 24 speakers leave some of the Klatt variants free
    assert [s.variant.startswith("klatt") for s in holdout] == [True, False] * 3
    # The train speakers do not depend on the holdout.
    assert sentiment.make_speakers(seed, 24, 0)[0] == train


def test_train_files_do_not_depend_on_the_holdout(corpus: Path, tmp_path: Path) -> None:
    alone = generate_sentiment(tmp_path / "alone", seed=0, **{**TINY, "holdout_speakers": 0})
    train = {n: d for n, d in file_digests(corpus).items() if not n.startswith("demo_holdout")}
    assert file_digests(alone) == train


def test_holdout_clips_carry_noise_at_the_planned_snr(corpus: Path) -> None:
    """Re-render the holdout speakers' clean clips and measure what the files add."""
    train, holdout = sentiment.make_speakers(0, TINY["speakers"], TINY["holdout_speakers"])
    espeak = Espeak()
    measured, untouched, shifted = [], 0, 0
    for index, speaker in enumerate(holdout, start=len(train)):
        espeak.reset()  # as the generator does before each speaker; clips follow in order
        key = sentiment._speaker_key(speaker)
        tone = room_tone(
            np.random.default_rng([0, sentiment._ROOM_TONE, *key]), speaker.noise_exponent, 16_000
        )
        clips = sentiment._plan_clips(0, speaker, index, TINY["clips_per_speaker"])
        for number, clip in enumerate(clips):
            rng = np.random.default_rng([0, sentiment._CLIP, *key, number])
            clean = sentiment._speak_sentence(espeak, speaker, clip, tone, rng)
            recording = emotion.draw_recording(
                sentiment.holdout_recording_rng(0, speaker, number), NOISE_KINDS
            )
            written, _ = sf.read(corpus / "demo_holdout" / clip.path)
            shifted += recording != emotion.Recording(None, None, None, None)
            if recording.room is not None or recording.channel is not None:
                continue
            if np.max(np.abs(written)) > 0.95:  # maybe turned down under the peak limit
                continue
            if recording.noise_kind is None:
                assert np.max(np.abs(written - clean)) < 2 / 32768
                untouched += 1
            else:
                noise = written - clean
                assert snr_db(clean, noise) == pytest.approx(recording.snr_db, abs=0.3)
                measured.append(snr_db(clean, noise))
    low, high = emotion.HOLDOUT_CONDITIONS.snr_db
    assert measured and all(low - 0.3 <= value <= high + 0.3 for value in measured)
    assert shifted >= 0.7 * len(holdout) * TINY["clips_per_speaker"]


def test_same_seed_same_bytes_other_seed_other(corpus: Path, tmp_path: Path) -> None:
    Espeak().speak(
        "disturb the engine state", voice="en-029", variant="m3", rate=250, pitch=20, pitch_range=80
    )
    again = generate_sentiment(tmp_path / "again", seed=0, **TINY)
    assert file_digests(again) == file_digests(corpus)
    other = generate_sentiment(tmp_path / "other", seed=1, **TINY)
    assert not set(file_digests(other).values()) & set(file_digests(corpus).values())


def test_refuses_to_overwrite_then_force_replaces(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    small = {"speakers": 1, "holdout_speakers": 0, "clips_per_speaker": 2, "progress": False}
    with pytest.raises(FileExistsError, match="force"):
        generate_sentiment(out, **small)
    assert (out / "precious.txt").read_text() == "keep me"
    generate_sentiment(out, force=True, **small)
    assert not (out / "precious.txt").exists()
    assert len(read_csv(out / "manifest.csv")) == 2
    assert not (out / "demo_holdout").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_a_crash_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    write_wav = sentiment.write_wav

    def failing_write(path: Path, waveform: np.ndarray) -> None:
        nonlocal calls
        calls += 1
        if calls > 5:
            raise KeyboardInterrupt
        write_wav(path, waveform)

    monkeypatch.setattr(sentiment, "write_wav", failing_write)
    with pytest.raises(KeyboardInterrupt):
        generate_sentiment(tmp_path / "demo", **TINY)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"speakers": 0}, "speaker"),
        ({"holdout_speakers": -1}, "holdout"),
        ({"clips_per_speaker": 1}, "clips_per_speaker"),
        ({"seed": -1}, "seed"),
    ],
)
def test_rejects_bad_sizes(tmp_path: Path, arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_sentiment(tmp_path / "demo", **{**TINY, **arguments})
    assert list(tmp_path.iterdir()) == []
