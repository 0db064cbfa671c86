"""The synthetic RAVDESS and CREMA-D corpora, at a tiny size: layout, design, prosody."""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from speechstack.synth import (
    Espeak,
    emotion,
    generate_crema_d,
    generate_ravdess,
    sentiment,
    variants_by_gender,
)
from speechstack.synth.common import room_tone, soft_limit
from speechstack.synth.shift import NOISE_KINDS, snr_db

TINY_RAVDESS = {"actors": 2, "holdout_actors": 1, "progress": False}
TINY_CREMA_D = {"actors": 3, "holdout_actors": 1, "sentences_per_actor": 2, "progress": False}
RAVDESS_FILE = re.compile(
    r"^03-01-(?P<emotion>0[1-8])-(?P<intensity>0[12])-(?P<statement>0[12])-"
    r"(?P<repetition>0[12])-(?P<actor>\d\d)\.wav$"
)
CREMA_D_FILE = re.compile(
    r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>ANG|DIS|FEA|HAP|NEU|SAD)_"
    r"(?P<level>LO|MD|HI|XX)\.wav$"
)
RAVDESS_DESIGN = {
    (emotion_code, intensity, statement, repetition)
    for emotion_code in range(1, 9)
    for intensity in ((1,) if emotion_code == 1 else (1, 2))
    for statement in (1, 2)
    for repetition in (1, 2)
}


def file_digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha1(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def ravdess_fields(path: Path) -> tuple[int, ...]:
    match = RAVDESS_FILE.match(path.name)
    assert match is not None, path.name
    return tuple(
        int(match[key]) for key in ("emotion", "intensity", "statement", "repetition", "actor")
    )


@pytest.fixture(scope="module")
def ravdess(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_ravdess(tmp_path_factory.mktemp("ravdess") / "demo", seed=0, **TINY_RAVDESS)


@pytest.fixture(scope="module")
def crema_d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_crema_d(tmp_path_factory.mktemp("crema_d") / "demo", seed=0, **TINY_CREMA_D)


# ---------------------------------------------------------------- espeak extensions


def test_speak_resamples_to_any_rate() -> None:
    espeak = Espeak()
    settings = {"voice": "en-us", "variant": "m3", "rate": 175, "pitch": 50, "pitch_range": 50}
    espeak.reset()
    at_16k = espeak.speak("Dogs are sitting by the door", **settings)
    espeak.reset()
    at_48k = espeak.speak("Dogs are sitting by the door", sample_rate=48_000, **settings)
    assert at_48k.dtype == np.float32
    assert abs(len(at_48k) - 3 * len(at_16k)) <= 3
    assert np.allclose(resample_poly(at_48k, 1, 3), at_16k, atol=0.02)
    with pytest.raises(ValueError, match="sample_rate"):
        espeak.speak("yes", sample_rate=0, **settings)


def test_variants_by_gender_reads_the_variant_files() -> None:
    genders = variants_by_gender()
    assert {"m1", "m3", "m7"} <= set(genders["male"])
    assert {"f1", "f3", "f5"} <= set(genders["female"])
    assert not set(genders["male"]) & set(genders["female"])


# ---------------------------------------------------------------- RAVDESS


def test_ravdess_layout_covers_the_real_design(ravdess: Path) -> None:
    assert {p.name for p in ravdess.iterdir()} == {"Actor_01", "Actor_02", "demo_holdout"}
    for actor in (1, 2):
        files = list((ravdess / f"Actor_{actor:02d}").iterdir())
        assert len(files) == 60
        fields = [ravdess_fields(path) for path in files]
        assert {field[-1] for field in fields} == {actor}
        assert {field[:4] for field in fields} == RAVDESS_DESIGN
    assert not list(ravdess.parent.glob("*.partial-*"))


def test_ravdess_files_are_48k_mono_pcm16_sentences(ravdess: Path) -> None:
    for path in ravdess.rglob("*.wav"):
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype, info.format) == (
            48_000,
            1,
            "PCM_16",
            "WAV",
        ), path
        assert 1.5 < info.duration < 5.0, path


def test_ravdess_holdout_answers_point_at_its_files(ravdess: Path) -> None:
    holdout = ravdess / "demo_holdout"
    rows = read_csv(holdout / "answers.csv")
    assert list(rows[0]) == ["path", "label"]
    assert len(rows) == 60
    assert {row["path"] for row in rows} == {
        str(path.relative_to(holdout)) for path in holdout.rglob("*.wav")
    }
    for row in rows:
        assert row["path"].startswith("Actor_03/")
        emotion_code, *_, actor = ravdess_fields(Path(row["path"]))
        assert actor == 3
        assert row["label"] == emotion.RAVDESS_EMOTIONS[emotion_code - 1]


def test_ravdess_actors_have_distinct_voices_of_their_gender() -> None:
    actors, _ = emotion.ravdess_actors(0, 24, 0)
    genders = variants_by_gender()
    for actor in actors:
        assert actor.sex == ("male" if actor.number % 2 else "female")
        assert actor.variant in genders[actor.sex]
    assert len({actor.variant for actor in actors if actor.sex == "male"}) == 12
    assert (
        len(
            {
                (actor.accent, actor.variant, actor.pitch, actor.rate, actor.pitch_range)
                for actor in actors
            }
        )
        == 24
    )
    assert len({actor.accent for actor in actors}) > 3
    assert all(actor.shift is None for actor in actors)


def voices(actors: list[emotion.Actor]) -> set[tuple]:
    return {(a.accent, a.variant, a.pitch, a.rate, a.pitch_range) for a in actors}


@pytest.mark.parametrize("seed", [0, 1])
def test_holdout_actors_are_made_unlike_train_actors(seed: int) -> None:
    klatt = set(emotion.klatt_variants())
    female = set(emotion._gendered_pools()["female"])  # natural, voiced
    assert len(klatt) >= 4 and all(v.startswith("klatt") for v in klatt)
    casts = [
        emotion.ravdess_actors(seed, 12, 4),
        emotion.crema_d_actors(seed, 20, 4),
        emotion.ravdess_actors(seed, 40, 6),  # every female variant taken by train
    ]
    for train, holdout in casts:
        train_variants = {actor.variant for actor in train}
        assert not {actor.variant for actor in holdout} & (train_variants | {None})
        assert not train_variants & klatt
        assert not voices(train) & voices(holdout)
        assert all(actor.shift is None for actor in train)
        for actor in holdout:
            assert actor.shift is not None
            if actor.sex == "male" or female <= train_variants:
                assert actor.variant in klatt
            else:
                assert actor.variant in female
            if actor.variant in klatt and actor.sex == "female":  # raised to a female register
                assert 1.25 <= actor.shift.warp <= 1.35
            else:
                assert 1.03 <= max(actor.shift.warp, 1 / actor.shift.warp) <= 1.19
    # The train cast does not depend on the holdout.
    assert emotion.ravdess_actors(seed, 12, 0)[0] == emotion.ravdess_actors(seed, 12, 4)[0]
    assert {a.sex for a in emotion.crema_d_actors(seed, 20, 4)[1]} == {"male", "female"}


def test_holdout_recordings_follow_the_planned_conditions() -> None:
    recordings = [
        emotion.draw_recording(emotion.holdout_recording_rng(0, 2, actor, take), NOISE_KINDS)
        for actor in range(4)
        for take in range(60)
    ]
    planned = emotion.HOLDOUT_CONDITIONS
    noisy = [r for r in recordings if r.noise_kind is not None]
    assert 0.7 < len(noisy) / len(recordings) < 0.9
    assert {r.noise_kind for r in noisy} == set(NOISE_KINDS)
    assert all(planned.snr_db[0] <= r.snr_db <= planned.snr_db[1] for r in noisy)  # type: ignore[operator]
    assert 0.4 < np.mean([r.room is not None for r in recordings]) < 0.6
    assert 0.25 < np.mean([r.channel is not None for r in recordings]) < 0.45
    rooms = [r.room for r in recordings if r.room is not None]
    assert all(planned.rt60_s[0] <= room.rt60_s <= planned.rt60_s[1] for room in rooms)


def test_holdout_clips_carry_noise_at_the_planned_snr(ravdess: Path) -> None:
    """Re-render the holdout actor's clean takes and measure what the files add to them."""
    _, (actor,) = emotion.ravdess_actors(0, 2, 1)
    studio = emotion._RAVDESS_STUDIO
    tone = room_tone(
        np.random.default_rng([0, emotion._ROOM_TONE, emotion._RAVDESS_TAKE, actor.number]),
        actor.noise_exponent,
        studio.sample_rate,
    )
    espeak = Espeak()
    espeak.reset()  # as the generator does before each actor; takes follow in order
    measured, untouched = [], 0
    for index, take in enumerate(emotion._ravdess_takes(actor.number)):
        rng = np.random.default_rng([0, emotion._RAVDESS_TAKE, actor.number, index])
        clean = emotion._perform(espeak, actor, take, tone, rng, studio)
        recording = emotion.draw_recording(
            emotion.holdout_recording_rng(0, emotion._RAVDESS_TAKE, actor.number, index),
            NOISE_KINDS,
        )
        written, _ = sf.read(ravdess / "demo_holdout" / take.path)
        if recording.room is not None or recording.channel is not None:
            continue
        if np.max(np.abs(written)) > 0.45:  # soft_limit bends samples above 0.485
            continue
        if recording.noise_kind is None:
            assert np.max(np.abs(written - soft_limit(clean))) < 2 / 32768
            untouched += 1
        else:
            noise = written - clean
            assert snr_db(clean, noise) == pytest.approx(recording.snr_db, abs=0.3)
            measured.append(snr_db(clean, noise))
    assert len(measured) >= 5
    low, high = emotion.HOLDOUT_CONDITIONS.snr_db
    assert all(low - 0.3 <= value <= high + 0.3 for value in measured)
    assert max(measured) - min(measured) > 5  # drawn per clip, not one fixed level


def test_crowd_words_carry_no_emotion_or_sentiment() -> None:
    crowd = set(emotion.CROWD_VOCABULARY)
    sentences = [*emotion.RAVDESS_STATEMENTS, *emotion.CREMA_D_SENTENCES.values()]
    spoken = {word.strip("'.").lower() for text in sentences for word in text.split()}
    cues = {
        word
        for choices in sentiment._LEXICONS["en"].words.values()
        for slots in choices.values()
        for phrase in slots
        for word in phrase.split()
    }
    assert not crowd & (spoken | cues | set(sentiment._LEXICONS["en"].nouns))


def clip_features(path: Path) -> tuple[float, float, float]:
    """(speech RMS, seconds of speech, median f0 in Hz) of one RAVDESS clip."""
    audio, rate = sf.read(path)
    audio = resample_poly(audio, 1, rate // 16_000)
    frames = librosa.feature.rms(y=audio, frame_length=512, hop_length=160)[0]
    speaking = frames > 0.05 * frames.max()
    f0 = librosa.yin(audio, fmin=60, fmax=600, sr=16_000, frame_length=1024, hop_length=160)
    voiced = f0[: len(speaking)][speaking[: len(f0)]]
    return (
        float(np.sqrt(np.mean(frames[speaking] ** 2))),
        float(np.flatnonzero(speaking)[-1] - np.flatnonzero(speaking)[0]) * 0.01,
        float(np.median(voiced)),
    )


def test_emotions_differ_in_prosody(ravdess: Path) -> None:
    def mean_features(emotion_code: int, intensity: int) -> np.ndarray:
        paths = sorted((ravdess / "Actor_01").glob(f"03-01-{emotion_code:02d}-{intensity:02d}-*"))
        assert len(paths) == 4
        return np.mean([clip_features(path) for path in paths], axis=0)

    neutral = mean_features(1, 1)
    sad, angry, surprised = mean_features(4, 2), mean_features(5, 2), mean_features(8, 2)
    angry_normal = mean_features(5, 1)
    # loudness: angry > neutral > sad, and strong angry > normal angry
    assert angry[0] > 2.0 * neutral[0] > 4.0 * sad[0]
    assert angry[0] > 1.3 * angry_normal[0]
    # speaking time: angry fast, sad slow
    assert angry[1] < 0.85 * neutral[1] < 0.85**2 * sad[1]
    # pitch: surprised high, sad low
    assert surprised[2] > 1.2 * neutral[2] > 1.2**2 * sad[2]


def test_emotions_keep_their_prosody_in_the_shifted_holdout(ravdess: Path) -> None:
    """A shifted voice, noise, rooms and channels blur the cues but do not remove them."""

    def mean_features(emotion_code: int, intensity: int) -> np.ndarray:
        folder = ravdess / "demo_holdout" / "Actor_03"
        paths = sorted(folder.glob(f"03-01-{emotion_code:02d}-{intensity:02d}-*"))
        assert len(paths) == 4
        return np.mean([clip_features(path) for path in paths], axis=0)

    neutral = mean_features(1, 1)
    sad, angry, surprised = mean_features(4, 2), mean_features(5, 2), mean_features(8, 2)
    assert angry[0] > 2.0 * neutral[0] > 4.0 * sad[0]
    assert angry[1] < neutral[1] < 0.85 * sad[1]
    assert surprised[2] > 1.2 * neutral[2] > 1.2 * sad[2]


# ---------------------------------------------------------------- CREMA-D


def test_crema_d_layout_covers_the_real_design(crema_d: Path) -> None:
    assert {p.name for p in crema_d.iterdir()} == {
        "AudioWAV",
        "VideoDemographics.csv",
        "demo_holdout",
    }
    by_actor: dict[int, list[re.Match]] = {}
    for path in (crema_d / "AudioWAV").iterdir():
        match = CREMA_D_FILE.match(path.name)
        assert match is not None, path.name
        assert match["sentence"] in emotion.CREMA_D_SENTENCES
        by_actor.setdefault(int(match["actor"]), []).append(match)
    assert sorted(by_actor) == [1001, 1002, 1003]
    for matches in by_actor.values():
        takes = {(m["sentence"], m["emotion"], m["level"]) for m in matches}
        assert len(takes) == len(matches) == 16 + 2 * 6
        ieo = {take for take in takes if take[0] == "IEO"}
        assert ieo == {("IEO", "NEU", "XX")} | {
            ("IEO", code, level)
            for code in ("ANG", "DIS", "FEA", "HAP", "SAD")
            for level in ("LO", "MD", "HI")
        }
        others = takes - ieo
        assert {level for *_, level in others} == {"XX"}
        sentences = {sentence for sentence, *_ in others}
        assert len(sentences) == 2
        assert others == {(s, code, "XX") for s in sentences for code in emotion.CREMA_D_EMOTIONS}
    assert len({frozenset(m["sentence"] for m in ms) for ms in by_actor.values()}) > 1


def test_crema_d_files_are_16k_mono_pcm16(crema_d: Path) -> None:
    for path in crema_d.rglob("*.wav"):
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype, info.format) == (
            16_000,
            1,
            "PCM_16",
            "WAV",
        ), path
        assert 0.8 < info.duration < 5.0, path


def test_crema_d_demographics_match_the_voices(crema_d: Path) -> None:
    train, holdout = emotion.crema_d_actors(0, 3, 1)
    genders = variants_by_gender()
    for folder, actors in ((crema_d, train), (crema_d / "demo_holdout", holdout)):
        text = (folder / "VideoDemographics.csv").read_text()
        assert text.startswith("ActorID,Age,Sex,Race,Ethnicity\n")
        rows = read_csv(folder / "VideoDemographics.csv")
        assert [int(row["ActorID"]) for row in rows] == [actor.number for actor in actors]
        for row, actor in zip(rows, actors, strict=True):
            assert row["Sex"] == actor.sex.capitalize()
            # Holdout men speak with a Klatt variant (see test_holdout_actors_are_made_...).
            assert actor.variant in genders[actor.sex] or (
                actor in holdout and actor.variant.startswith("klatt")
            )
            assert 20 <= int(row["Age"]) <= 74
            assert row["Race"] in {"Caucasian", "African American", "Asian", "Unknown"}
            assert row["Ethnicity"] in {"Hispanic", "Not Hispanic"}
    assert {actor.sex for actor in emotion.crema_d_actors(0, 4, 0)[0]} == {"male", "female"}


def test_crema_d_holdout_answers_point_at_its_files(crema_d: Path) -> None:
    holdout = crema_d / "demo_holdout"
    rows = read_csv(holdout / "answers.csv")
    assert len(rows) == 28
    assert {row["path"] for row in rows} == {
        str(path.relative_to(holdout)) for path in holdout.rglob("*.wav")
    }
    for row in rows:
        match = CREMA_D_FILE.match(Path(row["path"]).name)
        assert match is not None and row["path"].startswith("AudioWAV/")
        assert match["actor"] == "1004"
        assert row["label"] == match["emotion"]


# ---------------------------------------------------------------- determinism and safety


def test_ravdess_same_seed_same_bytes_other_seed_other(ravdess: Path, tmp_path: Path) -> None:
    Espeak().speak(
        "disturb the engine state", voice="en-029", variant="m3", rate=250, pitch=20, pitch_range=80
    )
    again = generate_ravdess(tmp_path / "again", seed=0, **TINY_RAVDESS)
    assert file_digests(again) == file_digests(ravdess)
    other = generate_ravdess(tmp_path / "other", seed=1, actors=1, holdout_actors=0, progress=False)
    first = {
        name: digest
        for name, digest in file_digests(ravdess).items()
        if name.startswith("Actor_01/")
    }
    assert set(file_digests(other)) == set(first)
    assert not set(file_digests(other).values()) & set(first.values())


def test_ravdess_train_files_do_not_depend_on_the_holdout(ravdess: Path, tmp_path: Path) -> None:
    alone = generate_ravdess(tmp_path / "alone", seed=0, **{**TINY_RAVDESS, "holdout_actors": 0})
    train = {n: d for n, d in file_digests(ravdess).items() if not n.startswith("demo_holdout")}
    assert file_digests(alone) == train


def test_crema_d_holdout_recording_never_touches_train(
    crema_d: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unrecorded(clip: np.ndarray, *_: object, **__: object) -> np.ndarray:
        return clip

    monkeypatch.setattr(emotion, "record_holdout_clip", unrecorded)
    clean = file_digests(generate_crema_d(tmp_path / "clean", seed=0, **TINY_CREMA_D))
    shifted = file_digests(crema_d)
    assert set(clean) == set(shifted)
    train = [name for name in shifted if not name.startswith("demo_holdout")]
    assert all(clean[name] == shifted[name] for name in train)
    holdout = [name for name in shifted if name.startswith("demo_holdout/AudioWAV/")]
    assert sum(clean[name] != shifted[name] for name in holdout) > 0.6 * len(holdout)
    assert all(
        clean[name] == shifted[name] for name in shifted if name.endswith(".csv")
    )  # answers and demographics


def test_crema_d_same_seed_same_bytes_other_seed_other(crema_d: Path, tmp_path: Path) -> None:
    again = generate_crema_d(tmp_path / "again", seed=0, **TINY_CREMA_D)
    assert file_digests(again) == file_digests(crema_d)
    other = generate_crema_d(tmp_path / "other", seed=1, **TINY_CREMA_D)
    assert not set(file_digests(other).values()) & set(file_digests(crema_d).values())


def test_refuses_to_overwrite_then_force_replaces(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    small = {"actors": 1, "holdout_actors": 0, "sentences_per_actor": 0, "progress": False}
    with pytest.raises(FileExistsError, match="force"):
        generate_crema_d(out, **small)
    assert (out / "precious.txt").read_text() == "keep me"
    generate_crema_d(out, force=True, **small)
    assert not (out / "precious.txt").exists()
    assert len(list((out / "AudioWAV").iterdir())) == 16
    assert not (out / "demo_holdout").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_a_crash_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    write_wav = emotion.write_wav

    def failing_write(path: Path, waveform: np.ndarray, sample_rate: int) -> None:
        nonlocal calls
        calls += 1
        if calls > 5:
            raise KeyboardInterrupt
        write_wav(path, waveform, sample_rate)

    monkeypatch.setattr(emotion, "write_wav", failing_write)
    with pytest.raises(KeyboardInterrupt):
        generate_ravdess(tmp_path / "demo", actors=1, holdout_actors=0, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("generate", "arguments", "message"),
    [
        (generate_ravdess, {"actors": 0}, "actor"),
        (generate_ravdess, {"holdout_actors": -1}, "holdout"),
        (generate_ravdess, {"actors": 90, "holdout_actors": 10}, "two digits"),
        (generate_ravdess, {"seed": -1}, "seed"),
        (generate_crema_d, {"sentences_per_actor": 12}, "sentences_per_actor"),
        (generate_crema_d, {"actors": 0}, "actor"),
    ],
)
def test_rejects_bad_sizes(tmp_path: Path, generate, arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate(tmp_path / "demo", progress=False, **arguments)
    assert list(tmp_path.iterdir()) == []
