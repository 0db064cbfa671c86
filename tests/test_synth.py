"""The espeak-ng wrapper and the synthetic Kaggle speech-commands dataset, at a tiny size."""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechstack.synth import Espeak, english_voices, generate_speech_commands
from speechstack.synth import speech_commands as sc

TINY = {
    "speakers": 4,
    "test_speakers": 2,
    "test_clips": 20,
    "noise_seconds": 2.0,
    "progress": False,
}
TRAIN_CLIP = re.compile(r"^(?P<speaker>[0-9a-f]{8})_nohash_(?P<index>\d+)\.wav$")
TEST_CLIP = re.compile(r"^clip_[0-9a-f]{9}\.wav$")
NOISE_FILES = {
    "white_noise.wav",
    "pink_noise.wav",
    "brown_noise.wav",
    "running_tap.wav",
    "electric_hum.wav",
    "babble.wav",
    "README.md",
}


def file_digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha1(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_speech_commands(tmp_path_factory.mktemp("sc") / "demo", seed=0, **TINY)


# ---------------------------------------------------------------- espeak


def test_speak_returns_16khz_float_speech() -> None:
    audio = Espeak().speak(
        "marvin", voice="en-us", variant="f3", rate=175, pitch=50, pitch_range=50
    )
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.2 * 16_000 < len(audio) < 1.5 * 16_000
    assert 0.01 < np.abs(audio).max() <= 1.0


def test_english_voices_include_several_accents() -> None:
    voices = english_voices()
    assert {"en", "en-us", "en-gb-scotland"} <= set(voices.accents)
    assert {"f3", "m1"} <= set(voices.variants)
    for accent in voices.accents:
        assert (
            len(
                Espeak().speak(
                    "yes", voice=accent, variant=None, rate=175, pitch=50, pitch_range=50
                )
            )
            > 0
        )


def test_reset_makes_a_sequence_reproducible() -> None:
    espeak = Espeak()

    def say() -> list[np.ndarray]:
        espeak.reset()
        return [
            espeak.speak(
                word, voice="en-gb-scotland", variant=variant, rate=160, pitch=40, pitch_range=60
            )
            for word in ("yes", "sheila")
            for variant in ("f3", "m3", "whisper")
        ]

    first = say()
    espeak.speak(
        "something else in between",
        voice="en-029",
        variant="m1",
        rate=300,
        pitch=10,
        pitch_range=10,
    )
    assert all(np.array_equal(a, b) for a, b in zip(first, say(), strict=True))


def test_ssml_prosody_slows_speech_down() -> None:
    espeak = Espeak()

    def speak(ssml: str) -> np.ndarray:
        return espeak.speak(
            ssml, voice="en-us", variant="f2", rate=175, pitch=50, pitch_range=50, ssml=True
        )

    plain = speak("<speak>I am so happy</speak>")
    slow = speak('<speak><prosody rate="x-slow">I am so happy</prosody></speak>')
    assert len(slow) > 1.3 * len(plain)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"voice": "xx-nowhere", "variant": None}, "not found"),
        ({"voice": "en-us", "variant": "nobody"}, "unknown espeak-ng variant"),
        ({"voice": "en-us", "variant": None, "rate": 10}, "rate"),
        ({"voice": "en-us", "variant": None, "pitch": 101}, "pitch"),
    ],
)
def test_speak_rejects_bad_arguments(arguments: dict, message: str) -> None:
    settings = {"rate": 175, "pitch": 50, "pitch_range": 50, **arguments}
    with pytest.raises(ValueError, match=message):
        Espeak().speak("yes", **settings)


def test_missing_library_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from speechstack.synth import espeak

    monkeypatch.setattr(
        espeak, "_espeak_paths", lambda: (tmp_path / "libespeak-ng.so", tmp_path / "espeak-ng-data")
    )
    with pytest.raises(RuntimeError, match="cannot load libespeak-ng"):
        espeak._Engine().load()


# ---------------------------------------------------------------- dataset layout


def test_layout_matches_kaggle(dataset: Path) -> None:
    audio = dataset / "train" / "audio"
    assert {p.name for p in audio.iterdir()} == {*sc.WORDS, sc.NOISE_FOLDER}
    for word in sc.WORDS:
        names = [p.name for p in (audio / word).iterdir()]
        assert names and all(TRAIN_CLIP.match(name) for name in names), word
    assert {p.name for p in (audio / sc.NOISE_FOLDER).iterdir()} == NOISE_FILES
    test_names = [p.name for p in (dataset / "test" / "audio").iterdir()]
    assert len(test_names) == TINY["test_clips"]
    assert all(TEST_CLIP.match(name) for name in test_names)
    assert {p.name for p in dataset.iterdir()} == {
        "train",
        "test",
        "sample_submission.csv",
        "demo_solution.csv",
        "demo_conditions.csv",
        sc.LONG_FOLDER,
        "demo_long.csv",
    }
    assert {p.name for p in (dataset / sc.LONG_FOLDER).iterdir()} == {
        "long_000.wav",
        "long_001.wav",
        "long_002.wav",
    }
    assert not list(dataset.parent.glob("*.partial-*"))


def test_every_speaker_says_every_command(dataset: Path) -> None:
    audio = dataset / "train" / "audio"
    train, _ = sc.make_speakers(0, TINY["speakers"], TINY["test_speakers"])
    for word in sc.COMMANDS:
        found: dict[str, list[int]] = {}
        for path in (audio / word).iterdir():
            match = TRAIN_CLIP.match(path.name)
            assert match is not None
            found.setdefault(match["speaker"], []).append(int(match["index"]))
        assert set(found) == {speaker.id for speaker in train}
        assert all(
            sorted(indexes) == list(range(len(indexes))) and len(indexes) <= 3
            for indexes in found.values()
        )


def test_wav_format(dataset: Path) -> None:
    for path in dataset.rglob("*.wav"):
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype, info.format) == (
            16_000,
            1,
            "PCM_16",
            "WAV",
        ), path
        expected = 16_000
        if sc.NOISE_FOLDER in path.parts:
            expected = 2 * 16_000
        elif sc.LONG_FOLDER in path.parts:
            expected = 45 * 16_000
        assert info.frames == expected, path


def test_clips_hold_sound_with_some_noise(dataset: Path) -> None:
    for path in list((dataset / "train" / "audio" / "yes").iterdir())[:5]:
        audio, _ = sf.read(path)
        assert np.abs(audio).max() > 0.01
        assert np.count_nonzero(audio) > 0.9 * len(audio)  # never perfectly clean


def test_validation_and_testing_lists_follow_the_hash_rule(dataset: Path) -> None:
    train = dataset / "train"
    clips = sorted(
        f"{p.parent.name}/{p.name}"
        for p in (train / "audio").glob("*/*.wav")
        if p.parent.name != sc.NOISE_FOLDER
    )
    for name in ("validation", "testing"):
        lines = (train / f"{name}_list.txt").read_text().splitlines()
        assert all((train / "audio" / line).is_file() for line in lines)
        assert lines == [clip for clip in clips if sc.which_set(clip) == name]


def test_which_set_is_the_speech_commands_rule() -> None:
    # The set depends only on the speaker, and about 10% of speakers land in each.
    assert sc.which_set("yes/0a7c2a8d_nohash_0.wav") == sc.which_set("no/0a7c2a8d_nohash_3.wav")
    sets = [sc.which_set(f"yes/{i:08x}_nohash_0.wav") for i in range(2000)]
    assert 0.07 < sets.count("validation") / 2000 < 0.13
    assert 0.07 < sets.count("testing") / 2000 < 0.13


def test_submission_files(dataset: Path) -> None:
    test_names = sorted(p.name for p in (dataset / "test" / "audio").iterdir())
    sample = read_csv(dataset / "sample_submission.csv")
    solution = read_csv(dataset / "demo_solution.csv")
    assert (dataset / "sample_submission.csv").read_text().startswith("fname,label\n")
    assert [row["fname"] for row in sample] == test_names
    assert {row["label"] for row in sample} == {"silence"}
    assert [row["fname"] for row in solution] == test_names
    labels = [row["label"] for row in solution]
    assert set(labels) <= set(sc.LABELS)
    assert labels.count("silence") == 2 and labels.count("unknown") == 4
    assert all(labels.count(command) >= 1 for command in sc.COMMANDS)


def test_test_set_plan_has_absent_words_and_matches_the_files(dataset: Path) -> None:
    plan = sc.plan_test_clips(0, TINY["test_clips"], TINY["test_speakers"])
    words = {clip.word for clip in plan}
    assert words & set(sc.ABSENT_WORDS)
    assert not set(sc.ABSENT_WORDS) & set(sc.WORDS)
    assert all(clip.label == "unknown" for clip in plan if clip.word in sc.ABSENT_WORDS)
    solution = {row["fname"]: row["label"] for row in read_csv(dataset / "demo_solution.csv")}
    assert solution == {clip.fname: clip.label for clip in plan}
    # what each clip holds, for accuracy by condition
    conditions = {row["fname"]: row for row in read_csv(dataset / "demo_conditions.csv")}
    test_ids = {s.id for s in sc.make_speakers(0, TINY["speakers"], TINY["test_speakers"])[1]}
    for clip in plan:
        row = conditions[clip.fname]
        assert row["label"] == clip.label and row["word"] == (clip.word or "")
        if clip.word is None:
            assert row["kind"] == "silence" and row["snr_db"] == ""
            continue
        assert row["kind"] == (
            "absent"
            if clip.word in sc.ABSENT_WORDS
            else "command"
            if clip.label != "unknown"
            else "unknown"
        )
        assert row["speaker"] in test_ids and row["voice"] in {"klatt", "held-out"}
        assert -46.0 <= float(row["peak_dbfs"]) <= -1.0 and 0.0 <= float(row["snr_db"]) <= 45.0
        assert row["channel"] in {"", "telephone", "low-pass"}
        assert row["rt60_s"] == "" or 0.2 <= float(row["rt60_s"]) <= 0.9


def test_test_speakers_are_new(dataset: Path) -> None:
    train, test = sc.make_speakers(0, TINY["speakers"], TINY["test_speakers"])
    train_ids = {
        TRAIN_CLIP.match(p.name)["speaker"]  # type: ignore[index]
        for p in (dataset / "train" / "audio").glob("*/*_nohash_*.wav")
    }
    assert train_ids == {speaker.id for speaker in train}
    assert not train_ids & {speaker.id for speaker in test}

    def voice(speaker: sc.Speaker) -> tuple:
        return (speaker.accent, speaker.variant, speaker.pitch, speaker.rate, speaker.pitch_range)

    assert not {voice(s) for s in train} & {voice(s) for s in test}
    # Test speakers are made differently: variants train never uses, a shifted voice each.
    assert not {s.variant for s in train} & {s.variant for s in test}
    assert any(s.variant.startswith("klatt") for s in test)
    assert all(s.shift is not None for s in test) and all(s.shift is None for s in train)


# ---------------------------------------------------------------- determinism and safety


def test_same_seed_gives_identical_bytes(dataset: Path, tmp_path: Path) -> None:
    Espeak().speak(
        "disturb the engine state", voice="en-029", variant="m3", rate=250, pitch=20, pitch_range=80
    )
    again = generate_speech_commands(tmp_path / "again", seed=0, **TINY)
    assert file_digests(again) == file_digests(dataset)


def test_another_seed_gives_another_dataset(dataset: Path, tmp_path: Path) -> None:
    other = generate_speech_commands(tmp_path / "other", seed=1, **TINY)
    assert set(file_digests(other).values()) != set(file_digests(dataset).values())
    assert {p.name for p in (other / "test" / "audio").iterdir()} != {
        p.name for p in (dataset / "test" / "audio").iterdir()
    }


def test_refuses_to_overwrite_then_force_replaces(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="force"):
        generate_speech_commands(out, **TINY)
    assert (out / "precious.txt").read_text() == "keep me"

    generate_speech_commands(out, force=True, **TINY)
    assert not (out / "precious.txt").exists()
    assert (out / "demo_solution.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_empty_existing_folder_is_filled(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    generate_speech_commands(out, **{**TINY, "speakers": 1, "test_clips": 0})
    assert (out / "train" / "audio" / "yes").is_dir()


def test_a_crash_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    write_wav = sc._write_wav

    def failing_write(path: Path, waveform: np.ndarray) -> None:
        nonlocal calls
        calls += 1
        if calls > 10:
            raise KeyboardInterrupt
        write_wav(path, waveform)

    monkeypatch.setattr(sc, "_write_wav", failing_write)
    with pytest.raises(KeyboardInterrupt):
        generate_speech_commands(tmp_path / "demo", **TINY)
    assert list(tmp_path.iterdir()) == []


def test_rejects_bad_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="speaker"):
        generate_speech_commands(tmp_path / "demo", **{**TINY, "speakers": 0})
    with pytest.raises(ValueError, match="noise_seconds"):
        generate_speech_commands(tmp_path / "demo", **{**TINY, "noise_seconds": 0.5})
    assert list(tmp_path.iterdir()) == []
