"""Keyword spotting: a fixed-window command classifier slid over a recording of any length.

A trained classifier scores windows of ``window_samples`` (the model's ``clip_seconds``).
``spot_recording`` cuts a recording into windows ``hop_seconds`` apart (the last one
zero-padded), scores them in batches through a caller's ``score_windows`` function (the
model lives above this layer), and reports a keyword where its score, smoothed over a few
windows, peaks at or above a threshold. Peaks of any keyword closer than
``refractory_seconds`` to a stronger one are dropped, so one spoken word is one detection
even when its neighbours (``no`` for ``go``) also score high. Labels such as ``silence``
and ``unknown`` are scored (the model needs them) but never reported.

Times are seconds from the start of the recording; waveforms are mono float arrays at the
model's sample rate. Detections are written as CSV ``file,start,end,label,score``, and
scored against the true word spans (``file,start,end,label``, as the demo's
``demo_long.csv``) by ``score_detections``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl
from scipy.ndimage import uniform_filter1d
from scipy.signal import find_peaks

from speechstack.artifacts import atomic_path, atomic_write_frame
from speechstack.config import SpotConfig

DETECTION_COLUMNS = ("file", "start", "end", "label", "score")
TRUTH_COLUMNS = ("file", "start", "end", "label")
IGNORED_BY_DEFAULT = ("silence", "unknown")  # as SpotConfig.ignore

ScoreWindows = Callable[[np.ndarray], np.ndarray]
"""``(n, window_samples)`` float32 windows -> ``(n, len(labels))`` label probabilities."""


@dataclass(frozen=True)
class Detection:
    """One keyword found: the scored window around its peak (s, clipped to the recording)
    and the smoothed probability at the peak."""

    start: float
    end: float
    label: str
    score: float


@dataclass(frozen=True)
class SpotResult:
    """What ``spot_recording`` saw and decided, for one recording.

    times: ``(n,)`` centre of each window, seconds (the last may lie past the end).
    scores: ``(n, len(labels))`` float32 probabilities as ``score_windows`` gave them.
    smoothed: the same after the moving average that detection looks at.
    """

    times: np.ndarray
    scores: np.ndarray
    smoothed: np.ndarray
    labels: tuple[str, ...]
    keywords: tuple[str, ...]  # the labels that may be reported (the others are ignored)
    detections: tuple[Detection, ...]
    duration: float  # seconds
    window_seconds: float
    threshold: float


class DetectionScore(NamedTuple):
    """Precision and recall of detections against the true word spans; ``matched`` is the
    number of (detection, truth) pairs. With no detections precision is 1.0 (no false
    alarm); with no truth recall is 1.0 (nothing missed)."""

    precision: float
    recall: float
    matched: int


# ---------------------------------------------------------------------------- windows


def window_starts(total_samples: int, window_samples: int, hop_samples: int) -> np.ndarray:
    """First sample of every window, ``hop_samples`` apart, until the recording is covered:
    the last window may run past the end (it is zero-padded); a recording no longer than
    one window gives the single start 0. int64, ``(n,)``."""
    if window_samples < 1 or hop_samples < 1:
        raise ValueError(
            f"window and hop must be at least one sample (got {window_samples}, {hop_samples})"
        )
    if total_samples < 0:
        raise ValueError(f"total_samples must be >= 0, got {total_samples}")
    count = 1 + math.ceil(max(total_samples - window_samples, 0) / hop_samples)
    return np.arange(count, dtype=np.int64) * hop_samples


def cut_windows(waveform: np.ndarray, starts: np.ndarray, window_samples: int) -> np.ndarray:
    """``(len(starts), window_samples)`` float32 windows of a mono ``waveform``, zero past
    its end. Only the stretch the windows span is copied, so a batch of windows of an hour
    long recording costs what the batch holds."""
    if waveform.ndim != 1:
        raise ValueError(f"expected a mono waveform (samples,), got shape {waveform.shape}")
    starts = np.asarray(starts, dtype=np.int64)
    if not len(starts):
        return np.zeros((0, window_samples), dtype=np.float32)
    first, last = int(starts.min()), int(starts.max()) + window_samples
    if first < 0:
        raise ValueError(f"window starts must be >= 0, got {first}")
    stretch = np.zeros(last - first, dtype=np.float32)
    available = waveform[first : min(last, len(waveform))]
    stretch[: len(available)] = available
    views = np.lib.stride_tricks.sliding_window_view(stretch, window_samples)
    return np.ascontiguousarray(views[starts - first])


def window_sizes(
    sample_rate: int, settings: SpotConfig, window_seconds: float = 1.0
) -> tuple[int, int]:
    """``(window_samples, hop_samples)`` of ``spot_recording``: windows of the model's
    ``window_seconds``, ``settings.hop_seconds`` apart, at least one sample each."""
    if sample_rate < 1 or window_seconds <= 0:
        raise ValueError(
            f"sample_rate and window_seconds must be positive (got {sample_rate}, {window_seconds})"
        )
    return (
        max(1, round(window_seconds * sample_rate)),
        max(1, round(settings.hop_seconds * sample_rate)),
    )


def window_batches(
    waveform: np.ndarray, window_samples: int, hop_samples: int, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(starts, windows)`` chunks of at most ``batch_size`` windows, in order, covering
    every window of ``window_starts`` once: an hour-long file never holds all its windows
    at once."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    starts = window_starts(len(waveform), window_samples, hop_samples)
    for first in range(0, len(starts), batch_size):
        chunk = starts[first : first + batch_size]
        yield chunk, cut_windows(waveform, chunk, window_samples)


# ---------------------------------------------------------------------------- detection


def spot_recording(
    waveform: np.ndarray,
    sample_rate: int,
    score_windows: ScoreWindows,
    labels: Sequence[str],
    settings: SpotConfig,
    *,
    window_seconds: float = 1.0,
) -> SpotResult:
    """Score every window of a mono ``waveform`` (``sample_rate`` Hz, the model's rate)
    and find the keywords in it (see the module notes).

    score_windows: ``(n, window_samples)`` float32 -> ``(n, len(labels))`` probabilities,
        called on batches of ``settings.batch_size`` windows.
    window_seconds: the length the model was trained on (``audio.clip_seconds``).
    """
    waveform = np.asarray(waveform)
    if waveform.ndim != 1:
        raise ValueError(f"expected a mono waveform (samples,), got shape {waveform.shape}")
    if not len(waveform):
        raise ValueError("the recording is empty: nothing to spot")
    labels = tuple(labels)
    window_samples, hop_samples = window_sizes(sample_rate, settings, window_seconds)
    starts_seen: list[np.ndarray] = []
    batches: list[np.ndarray] = []
    for starts, windows in window_batches(
        waveform, window_samples, hop_samples, settings.batch_size
    ):
        scores = np.asarray(score_windows(windows), dtype=np.float32)
        if scores.shape != (len(starts), len(labels)):
            raise ValueError(
                f"score_windows gave shape {scores.shape} for {len(starts)} windows and "
                f"{len(labels)} labels; expected {(len(starts), len(labels))}"
            )
        starts_seen.append(starts)
        batches.append(scores)
    starts = np.concatenate(starts_seen)
    scores = np.concatenate(batches)
    smoothed = smooth_scores(scores, settings.smooth_windows)
    keywords = tuple(label for label in labels if label not in settings.ignore)
    detections = detect_keywords(
        smoothed,
        labels,
        keywords,
        starts / sample_rate,
        window_seconds,
        duration=len(waveform) / sample_rate,
        threshold=settings.threshold,
        refractory_seconds=settings.refractory_seconds,
    )
    return SpotResult(
        times=(starts + window_samples / 2) / sample_rate,
        scores=scores,
        smoothed=smoothed,
        labels=labels,
        keywords=keywords,
        detections=tuple(detections),
        duration=len(waveform) / sample_rate,
        window_seconds=window_samples / sample_rate,
        threshold=settings.threshold,
    )


def smooth_scores(scores: np.ndarray, windows: int) -> np.ndarray:
    """Centred moving average of each column over ``windows`` consecutive rows (the edge
    rows repeated beyond the ends, so a word at the very start keeps its score);
    ``windows`` 1 leaves the scores as they are. float32, the shape of ``scores``."""
    if windows < 1:
        raise ValueError(f"smooth_windows must be >= 1, got {windows}")
    scores = np.asarray(scores, dtype=np.float32)
    if windows == 1 or len(scores) == 0:
        return scores.copy()
    return uniform_filter1d(scores, size=windows, axis=0, mode="nearest")


def detect_keywords(
    smoothed: np.ndarray,
    labels: Sequence[str],
    keywords: Sequence[str],
    window_start_seconds: np.ndarray,
    window_seconds: float,
    *,
    duration: float,
    threshold: float,
    refractory_seconds: float,
) -> list[Detection]:
    """Detections in time order from smoothed ``(n, len(labels))`` scores.

    A candidate is a local maximum (the middle of a flat top; the first and last window
    count) of a keyword's column at or above ``threshold``. Candidates are taken strongest
    first; one closer than ``refractory_seconds`` (peak to peak) to a kept detection, of
    any keyword, is dropped.
    """
    window_start_seconds = np.asarray(window_start_seconds, dtype=np.float64)
    candidates: list[tuple[float, float, int, str]] = []  # (score, peak time, row, label)
    for label in keywords:
        column = smoothed[:, list(labels).index(label)].astype(np.float64)
        padded = np.concatenate([[-np.inf], column, [-np.inf]])
        peaks, _ = find_peaks(padded, height=threshold)
        for peak in peaks - 1:
            centre = window_start_seconds[peak] + window_seconds / 2
            candidates.append((float(column[peak]), float(centre), int(peak), label))
    candidates.sort(key=lambda candidate: (-candidate[0], candidate[1], candidate[3]))
    kept: list[tuple[float, float, int, str]] = []
    kept_times: list[float] = []  # sorted: only the two neighbours of a time can be too close
    for candidate in candidates:
        place = bisect.bisect_left(kept_times, candidate[1])
        neighbours = kept_times[max(0, place - 1) : place + 1]
        if all(abs(candidate[1] - time) >= refractory_seconds for time in neighbours):
            kept.append(candidate)
            kept_times.insert(place, candidate[1])
    kept.sort(key=lambda candidate: (candidate[1], candidate[3]))
    return [
        Detection(
            start=max(0.0, float(window_start_seconds[row])),
            end=min(duration, float(window_start_seconds[row]) + window_seconds),
            label=label,
            score=score,
        )
        for score, _, row, label in kept
    ]


# ---------------------------------------------------------------------------- tables


def detections_frame(detections: Mapping[str, Sequence[Detection]]) -> pl.DataFrame:
    """``file,start,end,label,score`` rows, from each recording's detections keyed by its
    file name, in the mapping's order (seconds to the millisecond)."""
    rows = [
        (file, round(d.start, 3), round(d.end, 3), d.label, round(d.score, 4))
        for file, found in detections.items()
        for d in found
    ]
    schema = {
        "file": pl.String,
        "start": pl.Float64,
        "end": pl.Float64,
        "label": pl.String,
        "score": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


def write_detections(path: Path, detections: Mapping[str, Sequence[Detection]]) -> Path:
    """Write ``detections_frame(detections)`` to the CSV ``path`` atomically; returns it."""
    path = Path(path)
    if path.suffix != ".csv":
        raise ValueError(f"{path}: detections are written as CSV (name it .csv)")
    atomic_write_frame(path, detections_frame(detections))
    return path


def _as_rows(table: pl.DataFrame | Sequence[Detection], what: str) -> list[tuple]:
    """(file, start, end, label, score) tuples of a frame (``file`` and ``score`` optional)
    or of ``Detection``s (file "")."""
    if isinstance(table, pl.DataFrame):
        missing = {"start", "end", "label"} - set(table.columns)
        if missing:
            raise ValueError(
                f"{what} table lacks the column(s) {sorted(missing)}; it has {table.columns}"
            )
        files = table["file"].cast(pl.String) if "file" in table.columns else [""] * len(table)
        scores = table["score"] if "score" in table.columns else [1.0] * len(table)
        return list(
            zip(
                files,
                table["start"].cast(pl.Float64),
                table["end"].cast(pl.Float64),
                table["label"].cast(pl.String),
                scores,
                strict=True,
            )
        )
    return [("", d.start, d.end, d.label, getattr(d, "score", 1.0)) for d in table]


def _names_files(table: pl.DataFrame | Sequence[Detection]) -> bool:
    return isinstance(table, pl.DataFrame) and "file" in table.columns


def score_detections(
    detections: pl.DataFrame | Sequence[Detection],
    truth: pl.DataFrame | Sequence[Detection],
    tolerance_seconds: float = 0.0,
    *,
    ignore: Collection[str] = IGNORED_BY_DEFAULT,
) -> DetectionScore:
    """Match detections to true word occurrences and count.

    A detection matches a truth of the same file and label when their spans overlap, or
    their centres are at most ``tolerance_seconds`` apart. Each truth and each detection is
    matched at most once, strongest detection first, each to the free truth it overlaps
    most (then the nearest): a second detection of one word is a false alarm. Rows (of
    either side) labelled in ``ignore`` are left out: the words a spotter never reports
    are not misses. Tables carry ``start,end,label`` and optionally ``file``
    (``demo_long.csv``, the detections CSV): files are matched only when both sides name
    them; otherwise (a ``Detection`` list) everything is one recording.
    """
    if tolerance_seconds < 0:
        raise ValueError(f"tolerance_seconds must be >= 0, got {tolerance_seconds}")
    found = [row for row in _as_rows(detections, "detections") if row[3] not in ignore]
    true = [row for row in _as_rows(truth, "truth") if row[3] not in ignore]
    if not (_names_files(detections) and _names_files(truth)):  # one recording
        found = [("", *row[1:]) for row in found]
        true = [("", *row[1:]) for row in true]
    free: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for file, start, end, label, _ in true:
        free.setdefault((file, label), []).append((start, end))
    matched = 0
    for file, start, end, label, _ in sorted(found, key=lambda row: -row[4]):
        spans = free.get((file, label), [])
        best: tuple[float, float, int] | None = None  # (-overlap, centre distance, index)
        for index, (true_start, true_end) in enumerate(spans):
            overlap = min(end, true_end) - max(start, true_start)
            distance = abs((start + end) / 2 - (true_start + true_end) / 2)
            if overlap > 0 or distance <= tolerance_seconds:
                key = (-max(overlap, 0.0), distance, index)
                best = key if best is None or key < best else best
        if best is not None:
            spans.pop(best[2])
            matched += 1
    precision = matched / len(found) if found else 1.0
    recall = matched / len(true) if true else 1.0
    return DetectionScore(precision, recall, matched)


# ---------------------------------------------------------------------------- picture


def plot_scores(
    result: SpotResult,
    labels: Sequence[str] | None,
    path: Path,
    truth: pl.DataFrame | Sequence[Detection] | None = None,
) -> Path:
    """A PNG of the smoothed scores over time: one line per label of ``labels`` (default
    the keywords), the threshold, each detection marked at its window, and (when given)
    the true word spans of this recording shaded along the bottom. Written atomically;
    returns ``path``."""
    # the Agg canvas drawn directly: no pyplot, no process-wide backend switch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    drawn = tuple(result.keywords if labels is None else labels)
    unknown = [label for label in drawn if label not in result.labels]
    if unknown:
        raise ValueError(f"no scores for {unknown}; the result has {list(result.labels)}")
    colours = {label: f"C{index % 10}" for index, label in enumerate(drawn)}
    width = min(40.0, max(10.0, result.duration / 6))
    figure = Figure(figsize=(width, 4.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for label in drawn:
        column = result.labels.index(label)
        axes.plot(result.times, result.smoothed[:, column], color=colours[label], lw=1, label=label)
    axes.axhline(result.threshold, color="0.4", ls="--", lw=0.8)
    for detection in result.detections:
        colour = colours.get(detection.label, "0.2")
        axes.axvspan(detection.start, detection.end, ymin=0.92, ymax=1.0, color=colour, alpha=0.6)
        middle = (detection.start + detection.end) / 2
        axes.text(middle, 1.098, detection.label, ha="center", va="center", fontsize=7)
    if truth is not None:
        for _, start, end, label, _ in _as_rows(truth, "truth"):
            axes.axvspan(start, end, ymin=0.0, ymax=0.05, color=colours.get(label, "0.6"))
            axes.text((start + end) / 2, -0.08, label, ha="center", va="bottom", fontsize=7)
    axes.set_xlim(0.0, result.duration)
    axes.set_ylim(-0.15, 1.15)
    axes.set_xlabel("time (s): detections above, true words below")
    axes.set_ylabel("smoothed probability")
    if drawn:
        axes.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7, frameon=False)
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as temp:
        figure.savefig(temp, format="png")
    return path
