"""Keyword spotting (speechstack.spot): windows, detection, tables, scoring, the picture,
and the demo's long recordings (speechstack.synth.long)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import soundfile as sf
from pydantic import ValidationError

from speechstack.config import Config, SpotConfig
from speechstack.spot import (
    DETECTION_COLUMNS,
    Detection,
    ScoreWindows,
    cut_windows,
    detect_keywords,
    detections_frame,
    plot_scores,
    score_detections,
    spot_recording,
    window_batches,
    window_starts,
    write_detections,
)
from speechstack.synth import speech_commands as sc

RATE = 16_000
LABELS = list(sc.LABELS)  # yes no up down left right on off stop go silence unknown


# ---------------------------------------------------------------- windows


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (0, [0]),
        (100, [0]),
        (1000, [0]),
        (1001, [0, 250]),
        (1250, [0, 250]),
        (1251, [0, 250, 500]),
        (2000, [0, 250, 500, 750, 1000]),
    ],
)
def test_window_starts_cover_the_recording(total: int, expected: list[int]) -> None:
    starts = window_starts(total, 1000, 250)
    assert starts.tolist() == expected
    assert starts.dtype == np.int64
    assert starts[-1] + 1000 >= total  # the last window reaches the end
    assert len(starts) == 1 or starts[-2] + 1000 < total  # and no window is spare


def test_window_starts_reject_a_bad_window_or_hop() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        window_starts(100, 0, 10)
    with pytest.raises(ValueError, match="at least one sample"):
        window_starts(100, 10, 0)


def test_cut_windows_copies_the_audio_and_zero_pads_the_end() -> None:
    waveform = np.arange(1, 2701, dtype=np.float64)  # never 0: padding is visible
    starts = window_starts(len(waveform), 1000, 400)
    windows = cut_windows(waveform, starts, 1000)
    assert windows.shape == (len(starts), 1000) and windows.dtype == np.float32
    assert starts.tolist() == [0, 400, 800, 1200, 1600, 2000]
    for row, start in zip(windows, starts, strict=True):
        inside = min(1000, len(waveform) - start)
        np.testing.assert_array_equal(row[:inside], waveform[start : start + inside])
        assert not row[inside:].any()
    assert (windows[-1] == 0).sum() == 300  # samples 2000..2699 real, 300 padded


def test_a_recording_shorter_than_a_window_is_one_padded_window() -> None:
    windows = cut_windows(np.ones(300, dtype=np.float32), window_starts(300, 1000, 100), 1000)
    assert windows.shape == (1, 1000)
    assert windows[0, :300].sum() == 300 and not windows[0, 300:].any()


def test_cut_windows_rejects_stereo() -> None:
    with pytest.raises(ValueError, match="mono"):
        cut_windows(np.zeros((100, 2)), np.array([0]), 10)


@pytest.mark.parametrize("batch_size", [1, 3, 7, 64])
def test_window_batches_cover_every_window_once_in_order(batch_size: int) -> None:
    waveform = np.random.default_rng(0).standard_normal(5_123).astype(np.float32)
    batches = list(window_batches(waveform, 1000, 300, batch_size))
    assert all(0 < len(starts) <= batch_size for starts, _ in batches)
    assert all(len(starts) == len(windows) for starts, windows in batches)
    starts = np.concatenate([starts for starts, _ in batches])
    np.testing.assert_array_equal(starts, window_starts(len(waveform), 1000, 300))
    windows = np.concatenate([windows for _, windows in batches])
    np.testing.assert_array_equal(windows, cut_windows(waveform, starts, 1000))


def test_a_long_recording_is_scored_batch_by_batch() -> None:
    """Twenty minutes at a 0.1 s hop are 12,000 windows (768 MB as one float32 array): the
    scorer sees batches of ``batch_size`` and memory stays at a few batches."""
    waveform = np.zeros(20 * 60 * RATE, dtype=np.float32)
    seen: list[int] = []

    def scorer(windows: np.ndarray) -> np.ndarray:
        seen.append(len(windows))
        probabilities = np.zeros((len(windows), len(LABELS)), dtype=np.float32)
        probabilities[:, LABELS.index("silence")] = 1.0
        return probabilities

    tracemalloc.start()
    try:
        result = spot_recording(waveform, RATE, scorer, LABELS, SpotConfig(batch_size=256))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert max(seen) == 256 and sum(seen) == len(result.times) == 11_991
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert result.detections == ()


# ---------------------------------------------------------------- detection


def position_waveform(seconds: float) -> np.ndarray:
    """A waveform whose every sample is its own index: a window's first sample says where
    it starts (exact in float32 up to 2**24 samples, 17 minutes)."""
    return np.arange(round(seconds * RATE), dtype=np.float32)


def oracle(spans: Sequence[tuple[float, float, str]]) -> ScoreWindows:
    """A scorer that knows where the words are: for a window, each word's label scores the
    share of the word inside it, ``silence`` the rest (windows of a position waveform)."""

    def score(windows: np.ndarray) -> np.ndarray:
        start = windows[:, 0].astype(np.float64) / RATE
        end = start + windows.shape[1] / RATE
        probabilities = np.zeros((len(windows), len(LABELS)), dtype=np.float32)
        for word_start, word_end, label in spans:
            inside = np.clip(np.minimum(end, word_end) - np.maximum(start, word_start), 0, None)
            probabilities[:, LABELS.index(label)] += inside / (word_end - word_start)
        probabilities[:, LABELS.index("silence")] = np.clip(1 - probabilities.sum(1), 0, 1)
        return probabilities

    return score


SPANS = [
    (0.1, 0.5, "yes"),  # at the very start
    (2.0, 2.6, "no"),
    (4.0, 4.4, "unknown"),  # scored, never reported
    (6.0, 6.5, "stop"),
    (7.7, 8.1, "go"),
    (9.5, 10.2, "left"),
    (13.4, 13.9, "yes"),  # ends 0.1 s before the recording does
]


def truth_frame(spans: Sequence[tuple[float, float, str]], file: str = "a.wav") -> pl.DataFrame:
    return pl.DataFrame(
        [(file, start, end, label) for start, end, label in spans],
        schema=["file", "start", "end", "label"],
        orient="row",
    )


def test_an_oracle_scorer_finds_every_keyword_and_nothing_else() -> None:
    result = spot_recording(position_waveform(14.0), RATE, oracle(SPANS), LABELS, SpotConfig())
    found = [(d.label, d.start, d.end) for d in result.detections]
    assert [label for label, *_ in found] == ["yes", "no", "stop", "go", "left", "yes"]
    for (label, start, end), (word_start, word_end, _) in zip(
        found, [s for s in SPANS if s[2] != "unknown"], strict=True
    ):
        assert start <= word_start and word_end <= end, (label, start, end)
        assert start >= 0.0 and end <= 14.0 and end - start <= 1.0
    assert result.detections[-1].end == 14.0  # clipped to the recording
    assert all(d.score >= 0.5 for d in result.detections)
    score = score_detections(
        list(result.detections), [Detection(s, e, label, 1.0) for s, e, label in SPANS]
    )
    assert score == (1.0, 1.0, 6)
    framed = detections_frame({"a.wav": result.detections})
    assert score_detections(framed, truth_frame(SPANS)) == (1.0, 1.0, 6)
    assert score_detections(framed, truth_frame(SPANS, file="b.wav")) == (0.0, 0.0, 0)
    # a Detection list names no file: it is matched against the table as one recording
    assert score_detections(list(result.detections), truth_frame(SPANS)) == (1.0, 1.0, 6)


def test_result_holds_centres_scores_and_smoothed_scores() -> None:
    settings = SpotConfig(hop_seconds=0.25, smooth_windows=3)
    result = spot_recording(position_waveform(3.0), RATE, oracle(SPANS), LABELS, settings)
    np.testing.assert_allclose(result.times, 0.5 + 0.25 * np.arange(9))
    assert result.scores.shape == result.smoothed.shape == (9, len(LABELS))
    assert result.labels == tuple(LABELS) and "unknown" not in result.keywords
    column = LABELS.index("no")
    middle = result.scores[3:6, column].mean()
    assert result.smoothed[4, column] == pytest.approx(middle)
    assert result.duration == 3.0 and result.window_seconds == 1.0


def table_scorer(table: np.ndarray, hop: int) -> ScoreWindows:
    """Scores read from ``table`` (one row per window) for windows of a position waveform."""
    return lambda windows: table[(windows[:, 0] // hop).astype(int)]


def jagged(rows: int, values: dict[tuple[int, str], float]) -> np.ndarray:
    table = np.zeros((rows, len(LABELS)), dtype=np.float32)
    for (row, label), value in values.items():
        table[row, LABELS.index(label)] = value
    return table


def test_smoothing_merges_the_peaks_of_a_jagged_score() -> None:
    hop = RATE // 10
    table = jagged(25, {(10, "up"): 0.9, (11, "up"): 0.4, (12, "up"): 0.9, (9, "up"): 0.2})
    table[13, LABELS.index("up")] = 0.2
    waveform = position_waveform(3.4)  # 25 windows at a 0.1 s hop
    raw = SpotConfig(smooth_windows=1, refractory_seconds=0.0)
    found = spot_recording(waveform, RATE, table_scorer(table, hop), LABELS, raw).detections
    assert [(d.label, round(d.start, 2)) for d in found] == [("up", 1.0), ("up", 1.2)]
    smooth = SpotConfig(smooth_windows=3, refractory_seconds=0.0)
    found = spot_recording(waveform, RATE, table_scorer(table, hop), LABELS, smooth).detections
    assert [(d.label, round(d.start, 2)) for d in found] == [("up", 1.1)]
    assert found[0].score == pytest.approx((0.9 + 0.4 + 0.9) / 3)


def test_refractory_time_keeps_the_strongest_of_close_peaks_of_any_keyword() -> None:
    hop = RATE // 10
    table = jagged(40, {(5, "no"): 0.8, (7, "go"): 0.95, (12, "go"): 0.7, (20, "yes"): 0.6})
    waveform = position_waveform(4.9)  # 40 windows
    settings = SpotConfig(smooth_windows=1, refractory_seconds=0.8)
    found = spot_recording(waveform, RATE, table_scorer(table, hop), LABELS, settings).detections
    # "no" is 0.2 s from the stronger "go", the second "go" 0.5 s: both dropped
    assert [(d.label, round(d.start, 2)) for d in found] == [("go", 0.7), ("yes", 2.0)]
    settings = SpotConfig(smooth_windows=1, refractory_seconds=0.0)
    found = spot_recording(waveform, RATE, table_scorer(table, hop), LABELS, settings).detections
    assert [d.label for d in found] == ["no", "go", "go", "yes"]


def test_refractory_suppression_matches_a_plain_greedy_search() -> None:
    """Random scores of every keyword: the kept peaks are those a plain strongest-first
    search keeps (each checked against every peak kept before it)."""
    rng = np.random.default_rng(1)
    table = rng.uniform(0, 1, (400, len(LABELS))).astype(np.float32)
    keywords = LABELS[:10]
    starts = np.arange(400) * 0.1
    found = detect_keywords(
        table, LABELS, keywords, starts, 1.0, duration=40.9, threshold=0.6,
        refractory_seconds=0.8,
    )  # fmt: skip
    candidates = []
    for label in keywords:
        column = np.concatenate([[-np.inf], table[:, LABELS.index(label)], [-np.inf]])
        for row in range(400):
            left, here, right = column[row : row + 3]
            if here >= 0.6 and here > left and here > right:
                candidates.append((float(here), starts[row] + 0.5, label))
    kept: list[tuple[float, float, str]] = []
    for candidate in sorted(candidates, key=lambda c: (-c[0], c[1], c[2])):
        if all(abs(candidate[1] - other[1]) >= 0.8 for other in kept):
            kept.append(candidate)
    assert len(found) > 20
    assert [(d.label, d.start + 0.5) for d in found] == [
        (label, time) for _, time, label in sorted(kept, key=lambda c: (c[1], c[2]))
    ]
    times = [d.start for d in found]
    assert min(np.diff(times)) >= 0.8 - 1e-9


def test_ignored_labels_are_never_reported() -> None:
    hop = RATE // 10
    table = jagged(20, {(3, "silence"): 0.99, (9, "unknown"): 0.99, (15, "stop"): 0.6})
    waveform = position_waveform(2.9)
    scorer = table_scorer(table, hop)
    found = spot_recording(waveform, RATE, scorer, LABELS, SpotConfig(smooth_windows=1))
    assert [d.label for d in found.detections] == ["stop"]
    settings = SpotConfig(smooth_windows=1, ignore=["silence", "unknown", "stop"])
    assert spot_recording(waveform, RATE, scorer, LABELS, settings).detections == ()
    settings = SpotConfig(smooth_windows=1, ignore=[], refractory_seconds=0.0)
    found = spot_recording(waveform, RATE, scorer, LABELS, settings).detections
    assert [d.label for d in found] == ["silence", "unknown", "stop"]


def test_a_threshold_above_every_score_finds_nothing() -> None:
    settings = SpotConfig(threshold=1.0)
    scorer = oracle([(s, e, label) for s, e, label in SPANS])
    capped = lambda windows: np.minimum(scorer(windows), 0.99)  # noqa: E731
    result = spot_recording(position_waveform(14.0), RATE, capped, LABELS, settings)
    assert result.detections == ()
    assert score_detections(list(result.detections), truth_frame(SPANS)) == (1.0, 0.0, 0)


def test_a_scorer_of_the_wrong_shape_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"score_windows gave shape \(10, 3\)"):
        spot_recording(
            position_waveform(1.9), RATE, lambda w: np.zeros((len(w), 3)), LABELS, SpotConfig()
        )


def test_an_empty_recording_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        spot_recording(np.zeros(0), RATE, oracle([]), LABELS, SpotConfig())


# ---------------------------------------------------------------- settings


def test_spot_settings_have_defaults_and_checked_ranges() -> None:
    settings = Config().spot
    assert (settings.hop_seconds, settings.smooth_windows, settings.threshold) == (0.1, 9, 0.4)
    assert (settings.refractory_seconds, settings.batch_size) == (0.8, 64)
    assert settings.ignore == ["silence", "unknown"]
    for bad in (
        {"hop_seconds": 0},
        {"smooth_windows": 0},
        {"threshold": 1.5},
        {"refractory_seconds": -1},
        {"batch_size": 0},
        {"hopp_seconds": 0.1},
    ):
        with pytest.raises(ValidationError):
            SpotConfig(**bad)


def test_spot_settings_leave_a_run_identity_alone() -> None:
    """Spotting runs after training: changing it must not make finished folds stale."""
    base = Config()
    changed = Config(spot=SpotConfig(threshold=0.9, hop_seconds=0.05))
    assert changed.identity() == base.identity()


# ---------------------------------------------------------------- tables and scores


def test_detections_are_written_as_csv_atomically(tmp_path: Path) -> None:
    detections = {
        "a.wav": [Detection(0.0, 1.0, "yes", 0.91234), Detection(2.25, 3.25, "no", 0.6)],
        "b.wav": [],
        "c.wav": [Detection(10.1234567, 11.1234567, "go", 0.5)],
    }
    path = write_detections(tmp_path / "out" / "detections.csv", detections)
    assert path.read_text().splitlines()[0] == ",".join(DETECTION_COLUMNS)
    table = pl.read_csv(path)
    assert table.columns == list(DETECTION_COLUMNS)
    assert table["file"].to_list() == ["a.wav", "a.wav", "c.wav"]
    assert table["label"].to_list() == ["yes", "no", "go"]
    assert table["start"].to_list() == [0.0, 2.25, 10.123]
    assert table["score"].to_list() == [0.9123, 0.6, 0.5]
    assert sorted(p.name for p in path.parent.iterdir()) == ["detections.csv"]
    empty = write_detections(tmp_path / "empty.csv", {})
    assert empty.read_text().strip() == ",".join(DETECTION_COLUMNS)
    with pytest.raises(ValueError, match="CSV"):
        write_detections(tmp_path / "detections.parquet", detections)


def spans(*rows: tuple[float, float, str]) -> list[Detection]:
    return [Detection(start, end, label, 1.0) for start, end, label in rows]


def test_score_detections_counts_duplicates_and_wrong_labels_as_false_alarms() -> None:
    truth = spans((1.0, 1.5, "yes"), (3.0, 3.4, "no"))
    assert score_detections(spans((0.8, 1.8, "yes"), (2.7, 3.7, "no")), truth) == (1.0, 1.0, 2)
    duplicate = spans((0.8, 1.8, "yes"), (1.1, 2.1, "yes"), (2.7, 3.7, "no"))
    assert score_detections(duplicate, truth) == (2 / 3, 1.0, 2)
    wrong_label = spans((0.8, 1.8, "no"), (2.7, 3.7, "no"))
    assert score_detections(wrong_label, truth) == (0.5, 0.5, 1)
    assert score_detections(spans((5.0, 6.0, "yes")), truth) == (0.0, 0.0, 0)
    assert score_detections([], truth) == (1.0, 0.0, 0)
    assert score_detections(spans((5.0, 6.0, "yes")), []) == (0.0, 1.0, 0)


def test_score_detections_gives_each_truth_to_the_stronger_detection() -> None:
    truth = spans((1.0, 1.4, "up"), (2.3, 2.7, "up"))
    # the weak one overlaps both words, the strong one only the first: both words found
    found = [Detection(1.2, 2.4, "up", 0.6), Detection(0.5, 1.5, "up", 0.9)]
    assert score_detections(found, truth) == (1.0, 1.0, 2)
    # the strong one overlaps the second word most: it takes that one, not the first
    truth = spans((1.0, 1.4, "up"), (1.8, 2.4, "up"))
    found = [Detection(1.3, 2.3, "up", 0.9), Detection(0.5, 1.2, "up", 0.6)]
    assert score_detections(found, truth) == (1.0, 1.0, 2)


def test_score_detections_tolerance_and_files() -> None:
    truth = spans((2.0, 2.4, "stop"))
    near = spans((2.5, 3.0, "stop"))  # no overlap; centres 0.55 s apart
    assert score_detections(near, truth).matched == 0
    assert score_detections(near, truth, tolerance_seconds=0.6).matched == 1
    detections = pl.DataFrame(
        {"file": ["a.wav", "b.wav"], "start": [1.5, 1.5], "end": [2.5, 2.5],
         "label": ["stop", "stop"], "score": [0.9, 0.8]}
    )  # fmt: skip
    truth_table = truth_frame([(2.0, 2.4, "stop"), (4.0, 4.4, "unknown")], file="a.wav")
    assert score_detections(detections, truth_table) == (0.5, 1.0, 1)  # unknown: not a miss
    assert score_detections(detections, truth_table, ignore=()) == (0.5, 0.5, 1)
    with pytest.raises(ValueError, match="lacks"):
        score_detections(detections.drop("end"), truth_table)


def test_plot_scores_writes_a_png(tmp_path: Path) -> None:
    result = spot_recording(position_waveform(14.0), RATE, oracle(SPANS), LABELS, SpotConfig())
    path = plot_scores(result, None, tmp_path / "plots" / "a.png", truth=truth_frame(SPANS))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.png"]
    again = plot_scores(result, ["yes", "silence"], tmp_path / "b.png")
    assert again.stat().st_size > 1000
    with pytest.raises(ValueError, match="no scores"):
        plot_scores(result, ["nope"], tmp_path / "c.png")


# ---------------------------------------------------------------- the demo's long recordings


def test_demo_long_recordings_agree_with_their_csv(tiny_speech_commands: Path) -> None:
    truth = pl.read_csv(tiny_speech_commands / "demo_long.csv")
    assert truth.columns == ["file", "start", "end", "label", "word"]
    files = sorted(p.name for p in (tiny_speech_commands / sc.LONG_FOLDER).iterdir())
    assert files == ["long_000.wav", "long_001.wav", "long_002.wav"]
    assert sorted(truth["file"].unique()) == files
    assert set(truth["label"]) <= set(sc.LABELS) - {"silence"}
    assert {"unknown"} < set(truth["label"])  # commands and unknown words both occur
    for word, label in zip(truth["word"], truth["label"], strict=True):
        assert label == (word if word in sc.COMMANDS else "unknown"), word
        assert word in sc.COMMANDS + sc.AUXILIARY_WORDS + sc.ABSENT_WORDS
    for file in files:
        audio, rate = sf.read(tiny_speech_commands / sc.LONG_FOLDER / file)
        assert rate == RATE and audio.ndim == 1 and len(audio) == 45 * RATE
        assert 0.01 < np.abs(audio).max() < 0.975  # under full scale (0.97 + PCM rounding)
        words = truth.filter(pl.col("file") == file)
        starts, ends = words["start"].to_numpy(), words["end"].to_numpy()
        assert len(words) >= 10
        assert (starts >= 0.6 - 1e-3).all() and (ends <= 45.0).all() and (starts < ends).all()
        assert ((ends - starts) < 1.0).all()  # a word fits a model window
        gaps = starts[1:] - ends[:-1]
        assert (gaps >= 0.6 - 2e-3).all() and (gaps <= 2.5 + 2e-3).all()  # in order, apart
        inside = np.zeros(len(audio), dtype=bool)
        for start, end in zip(starts, ends, strict=True):
            inside[round(start * RATE) : round(end * RATE)] = True
        between = np.sqrt(np.mean(audio[~inside] ** 2))
        assert between > 1e-4  # the background never stops
        speech_db = 20 * np.log10(np.sqrt(np.mean(audio[inside] ** 2)) / between)
        assert 3.0 < speech_db < 40.0, (file, speech_db)


def test_an_oracle_finds_the_demo_words(tiny_speech_commands: Path) -> None:
    """The demo's truth is consistent with spotting: an oracle scorer built from it gives
    precision and recall 1 (words are far enough apart for the refractory time)."""
    truth = pl.read_csv(tiny_speech_commands / "demo_long.csv").filter(
        pl.col("file") == "long_000.wav"
    )
    rows = list(zip(truth["start"], truth["end"], truth["label"], strict=True))
    result = spot_recording(position_waveform(45.0), RATE, oracle(rows), LABELS, SpotConfig())
    found = detections_frame({"long_000.wav": result.detections})
    assert score_detections(found, truth) == (1.0, 1.0, (truth["label"] != "unknown").sum())
