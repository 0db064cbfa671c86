"""Predictions for new audio from finished runs: ``speechstack predict`` / ``make predict``.

A *source* is an experiment (its fold models' probabilities are averaged) or a stack (each
stacked experiment predicts as above, then the saved fold stackers; see ``stack.py``).
Every clip goes through the same sliding windows as validation (``ClipDataset``), so long
recordings are averaged over windows exactly as during training's evaluation.

The output CSV has ``path`` (relative to the audio folder), ``label`` (the most probable)
and one probability column per label, written atomically. Every file is decoded first
(``data.unreadable_clips``): the ones that cannot be read are left out and listed with their
reasons (``speechstack predict`` writes them to ``<out>.bad.csv``), or refused with
``strict``.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl
import torch
from torch import nn
from tqdm import tqdm

from speechstack.acoustic import clip_features, extraction_processes
from speechstack.artifacts import damaged_files
from speechstack.audio import read_audio
from speechstack.config import Config, Runtime, TtaView, load_config
from speechstack.data import prediction_loader, unreadable_clips
from speechstack.exported import exported_probabilities
from speechstack.models import ModelContext, create_model
from speechstack.speakers import levelled
from speechstack.spot import (
    ScoreWindows,
    SpotResult,
    spot_recording,
    window_batches,
    window_sizes,
    window_starts,
)
from speechstack.tasks import TASKS, TEST_COLUMNS, manifest_frame
from speechstack.train import FEATURE_MODEL, Precision, predict_probabilities, resolve_device
from speechstack.tta import adapt_batch_norm, apply_view, views_or_identity

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3"}

RecordingScorer = Callable[[np.ndarray], ScoreWindows]
"""A recording's mono waveform -> the function that scores its windows (``spot_files``)."""


class PredictError(ValueError):
    """Missing audio or runs; the message names the folder."""


class FolderPredictions(NamedTuple):
    """``predict_folder``'s result: the readable files' predictions and the unreadable
    files (``fname,reason``, empty when every file was read)."""

    predictions: pl.DataFrame
    unreadable: pl.DataFrame


def audio_manifest(folder: Path) -> pl.DataFrame:
    """Every audio file under ``folder`` (recursively, sorted) as a test manifest whose
    ``fname`` is the path relative to ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PredictError(f"{folder}: audio folder not found")
    paths = sorted(
        path
        for path in folder.rglob("*")
        if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES
    )
    if not paths:
        raise PredictError(
            f"{folder}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) in it or below"
        )
    rows = {
        "fname": [path.relative_to(folder).as_posix() for path in paths],
        "path": [str(path.resolve()) for path in paths],
    }
    return manifest_frame(rows, TEST_COLUMNS)


def _check_intact(folder: Path) -> None:
    """Refuse a fold whose files differ from the sizes and SHA-256 its metrics recorded."""
    metrics_path = folder / "metrics.json"
    recorded = (
        json.loads(metrics_path.read_text()).get("files", {}) if metrics_path.is_file() else {}
    )
    problems = damaged_files(folder, recorded)
    if problems:
        raise PredictError(
            f"fold {folder} is damaged: {'; '.join(problems)}; `make train` trains it again"
        )


def load_fold_model(folder: Path, device: torch.device) -> tuple[nn.Module, Config, np.ndarray]:
    """A finished fold's model (best weights, eval mode, on ``device``), its resolved config
    and its class-to-label matrix ``(classes, labels)``."""
    weights = folder / "model.pt"
    if not weights.is_file():
        raise PredictError(f"{weights} not found: the fold is not trained")
    _check_intact(folder)
    config = load_config(folder / "config.yaml")
    try:
        saved: dict[str, Any] = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as error:
        raise PredictError(
            f"{weights} cannot be loaded ({type(error).__name__}: {error}); delete the fold "
            "folder and `make train` trains it again"
        ) from error
    classes = list(saved["classes"])
    class_to_label = np.asarray(
        saved.get("class_to_label", np.eye(len(classes)).tolist()), dtype=np.float32
    )
    context = ModelContext.of(config, classes)
    model = create_model(config.model.name, context, **config.model.params)
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval(), config, class_to_label


def predict_experiment(
    run_dir: Path,
    manifest: pl.DataFrame,
    device: torch.device,
    progress: bool = True,
    views: Sequence[TtaView] | None = None,
) -> np.ndarray:
    """Label probabilities ``(clips, labels)``: the mean over the experiment's fold models,
    each averaging the test-time ``views`` it was trained with (or the given ``views``;
    ``[]``: none), and each with the batch-norm statistics of these clips when it was
    trained with ``predict.adapt_norm`` and they are at least ``predict.adapt_min_clips``."""
    folds = sorted(
        path
        for path in run_dir.glob("fold*")
        if (path / "model.pt").is_file() or (path / FEATURE_MODEL).is_file()
    )
    if not folds:
        raise PredictError(f"{run_dir}: no trained folds (run `make train` first)")
    total: np.ndarray | None = None
    for folder in folds:
        if (folder / FEATURE_MODEL).is_file():
            labels = feature_fold_probabilities(folder, manifest, progress)
            total = labels if total is None else total + labels
            continue
        model, config, class_to_label = load_fold_model(folder, device)
        speakers = TASKS.get(config.task.name).speakers_of(manifest["fname"])
        loader = prediction_loader(levelled(config, manifest, speakers), config)
        precision = Precision.choose(device, config.train.amp)
        if config.predict.adapt_norm and manifest.height >= config.predict.adapt_min_clips:
            model = adapt_batch_norm(model, (batch for batch, _, _ in loader), device)
        elif config.predict.adapt_norm and folder == folds[0] and progress:
            print(
                f"note: {manifest.height} clips are fewer than predict.adapt_min_clips "
                f"({config.predict.adapt_min_clips}): predicted with the training's "
                "batch-norm statistics, not the clips' own"
            )
        labels = (
            predict_probabilities(
                model,
                loader,
                precision,
                progress,
                config.predict.tta if views is None else views,
                config.audio.sample_rate,
            )
            @ class_to_label
        )
        total = labels if total is None else total + labels
    assert total is not None
    return total / len(folds)


def window_probabilities(
    models: Sequence[tuple[nn.Module, np.ndarray]],
    views: Sequence[TtaView],
    sample_rate: int,
    windows: torch.Tensor,
) -> torch.Tensor:
    """Label probabilities ``(windows, labels)`` of ``(model, class_to_label)`` fold models
    for windows of the models' length: softmax, mapped to labels, averaged over the
    test-time ``views`` and the folds (what ``predict_experiment`` does per window)."""
    total = torch.zeros(())
    chosen = views_or_identity(views)
    with torch.no_grad():
        for model, class_to_label in models:
            for view in chosen:
                logits = model(apply_view(windows, view, sample_rate))
                probabilities = torch.softmax(logits.float(), dim=1)
                total = total + probabilities @ torch.as_tensor(class_to_label)
    return total / (len(chosen) * len(models))


def feature_fold_probabilities(
    folder: Path, manifest: pl.DataFrame, progress: bool = False
) -> np.ndarray:
    """Label probabilities ``(clips, labels)`` of a ``features`` family's fold
    (``model.pkl``): the clips' features (cached like training's), each clip standardised
    with the clips of its own speaker among ``manifest`` (``Task.speaker_of`` its file name;
    an unknown speaker: the training side's statistics)."""
    _check_intact(folder)
    config = load_config(folder / "config.yaml")
    try:
        with open(folder / FEATURE_MODEL, "rb") as stream:
            saved: dict[str, Any] = pickle.load(stream)  # our own fold file, digest-checked
    except Exception as error:
        raise PredictError(
            f"{folder / FEATURE_MODEL} cannot be loaded ({type(error).__name__}: {error}); "
            "delete the fold folder and `make train` trains it again"
        ) from error
    model = saved["model"]
    features = clip_features(
        manifest, model.params.feature_set, config.audio.sample_rate, config.audio.max_samples,
        config.cache_dir, progress, processes=extraction_processes(config.train.parallel_folds),
    )  # fmt: skip
    speakers = TASKS.get(config.task.name).speakers_of(manifest["fname"])
    class_to_label = np.asarray(saved["class_to_label"], dtype=np.float32)
    return model.predict_proba(features, speakers) @ class_to_label


def predict_folder(
    config: Config,
    audio_dir: Path,
    source: str,
    labels: list[str],
    progress: bool = True,
    tta: bool = True,
    strict: bool = False,
    runtime: Runtime = "torch",
) -> FolderPredictions:
    """Predictions of ``source`` (an experiment or the stack named ``config.stack.name``)
    for every readable audio file under ``audio_dir``: path, label, one probability per
    label; and the unreadable files with their reasons. Every file is decoded before any
    model is loaded; ``strict`` refuses a folder with any unreadable file, and a folder
    with no readable one is always refused. ``tta=False`` predicts the windows as they are
    (to measure what the views add). ``runtime`` ``onnx`` / ``onnx-int8`` predicts each
    experiment with its exported model (``make export``) instead of its PyTorch folds."""
    manifest = audio_manifest(audio_dir)
    source_dir = config.task_runs_dir / source
    if not source_dir.is_dir():
        raise PredictError(f"{source_dir}: no such run (train or stack it first)")
    unreadable = unreadable_clips(manifest, config.audio.sample_rate, progress)
    if unreadable.height:
        first, reason = unreadable.row(0)
        if unreadable.height == manifest.height:
            raise PredictError(
                f"{audio_dir}: none of its {manifest.height} audio files can be read "
                f"(e.g. {first}: {reason})"
            )
        if strict:
            raise PredictError(
                f"{Path(audio_dir) / first}: {reason}; {unreadable.height} of "
                f"{manifest.height} audio files cannot be read (--strict; without it the "
                "readable ones are predicted and the rest listed)"
            )
        manifest = manifest.filter(~pl.col("fname").is_in(unreadable["fname"].to_list()))
    probabilities = source_probabilities(config, manifest, source, labels, runtime, tta, progress)
    predicted = np.asarray(labels)[probabilities.argmax(axis=1)]
    predictions = pl.DataFrame(
        {
            "path": manifest["fname"],
            "label": predicted,
            **{label: probabilities[:, i].astype(np.float32) for i, label in enumerate(labels)},
        }
    )
    return FolderPredictions(predictions, unreadable)


def source_probabilities(
    config: Config,
    manifest: pl.DataFrame,
    source: str,
    labels: list[str],
    runtime: Runtime = "torch",
    tta: bool = True,
    progress: bool = True,
) -> np.ndarray:
    """Label probabilities ``(clips, labels)`` of ``source`` (an experiment, or a stack: its
    members, then its saved stackers) for every clip of ``manifest``, with the PyTorch fold
    models or (``runtime`` ``onnx`` / ``onnx-int8``) each experiment's exported model."""
    from speechstack.stack import apply_stack, stack_members

    source_dir = config.task_runs_dir / source
    if not source_dir.is_dir():
        raise PredictError(f"{source_dir}: no such run (train or stack it first)")
    device = resolve_device(config.train.device)
    views = None if tta else []

    def experiment(name: str) -> np.ndarray:
        if runtime == "torch":
            run_dir = config.task_runs_dir / name
            return predict_experiment(run_dir, manifest, device, progress, views)
        return exported_probabilities(config, name, manifest, labels, runtime, tta, progress)

    experiments = stack_members(source_dir)
    if experiments is None:
        return experiment(source)
    return apply_stack(source_dir, member_frame({n: experiment(n) for n in experiments}, labels))


def member_frame(probabilities: dict[str, np.ndarray], labels: list[str]) -> pl.DataFrame:
    """The stacker's input: each member's ``(rows, labels)`` probabilities as its
    ``<experiment>:<label>`` columns (``stack.member_columns``)."""
    from speechstack.stack import member_columns

    return pl.DataFrame(
        {
            column_name: column
            for name, matrix in probabilities.items()
            for column_name, column in zip(member_columns(name, labels), matrix.T, strict=True)
        }
    )


def score_predictions(predictions: pl.DataFrame, answers: Path) -> tuple[float, int]:
    """(accuracy, clips scored) against an answer CSV with ``path,label`` (or Kaggle's
    ``fname,label``) columns, paths relative to the audio folder; every predicted path
    must have an answer."""
    truth = pl.read_csv(answers, infer_schema_length=0)
    key = next((c for c in ("path", "fname") if c in truth.columns), None)
    if key is None or "label" not in truth.columns:
        raise PredictError(f"{answers}: needs columns path (or fname) and label")
    joined = predictions.select("path", pl.col("label").alias("predicted")).join(
        truth.select(pl.col(key).alias("path"), "label"), on="path", how="left"
    )
    if joined["label"].is_null().any():
        example = joined.filter(pl.col("label").is_null())["path"].head(3).to_list()
        raise PredictError(f"{answers}: no answer for some predicted files, e.g. {example}")
    return float((joined["label"] == joined["predicted"]).mean()), joined.height


def window_scorer(
    config: Config, experiment: str, labels: list[str], runtime: Runtime
) -> RecordingScorer:
    """A recording -> the function that turns its ``(n, window_samples)`` float32 windows
    into ``(n, len(labels))`` label probabilities of ``experiment``: its PyTorch fold models
    with its test-time views, or its exported model (``runtime`` ``onnx`` / ``onnx-int8``,
    checked against the labels and audio).

    A fold trained with ``predict.adapt_norm`` hears each recording with the batch-norm
    statistics of that recording's own windows (``config.spot``'s windows; at least
    ``predict.adapt_min_clips`` of them, else the training's), as ``predict`` hears a
    folder: a recording is one room, microphone and background. The exported graphs hold
    the training's statistics."""
    from speechstack.exported import OnnxModel, exported_path

    audio = config.audio
    if runtime != "torch":
        model = OnnxModel(exported_path(config, experiment, runtime))
        model.check(labels, audio.sample_rate, audio.clip_samples)
        return lambda waveform: model
    run_dir = config.task_runs_dir / experiment
    folds = sorted(path for path in run_dir.glob("fold*") if (path / "model.pt").is_file())
    if not folds:
        raise PredictError(f"{run_dir}: no trained folds (run `make train` first)")
    loaded = [load_fold_model(folder, torch.device("cpu")) for folder in folds]
    views = loaded[0][1].predict.tta
    window, hop = window_sizes(audio.sample_rate, config.spot, audio.clip_seconds)

    def for_recording(waveform: np.ndarray) -> ScoreWindows:
        count = len(window_starts(len(waveform), window, hop))
        models = []
        for model, fold_config, class_to_label in loaded:
            if fold_config.predict.adapt_norm and count >= fold_config.predict.adapt_min_clips:
                batches = window_batches(waveform, window, hop, config.spot.batch_size)
                windows = (torch.from_numpy(chunk) for _, chunk in batches)
                model = adapt_batch_norm(model, windows, torch.device("cpu"))
            models.append((model, class_to_label))

        def score(windows: np.ndarray) -> np.ndarray:
            tensor = torch.from_numpy(windows)
            return window_probabilities(models, views, audio.sample_rate, tensor).numpy()

        return score

    return for_recording


def spot_files(
    config: Config,
    source: str,
    target: Path,
    labels: list[str],
    runtime: Runtime = "torch",
    progress: bool = True,
) -> dict[str, SpotResult]:
    """Keywords in recordings of any length (``speechstack spot``): ``source``'s windows
    slid over ``target`` (an audio file, or every audio file below a folder;
    ``spot.spot_recording``), by file name relative to the folder. ``source`` is an
    experiment (its fold models, or its exported model) or a stack: each member scores the
    windows and the stack's kept source (the mean, a member or the LightGBM stackers)
    combines them, as for clips. Each recording is heard with its own batch-norm
    statistics where the experiment predicts so (``window_scorer``)."""
    from speechstack.stack import apply_stack, stack_members

    target = Path(target)
    if target.is_dir():
        files = audio_manifest(target)
        paths = dict(zip(files["fname"], map(Path, files["path"]), strict=True))
    else:
        paths = {target.name: target}
    run_dir = config.task_runs_dir / source
    if not run_dir.is_dir():
        raise PredictError(f"{run_dir}: no such run (train or stack it first)")
    members = stack_members(run_dir)
    if members is None:
        scorer = window_scorer(config, source, labels, runtime)
    else:
        scorers = {name: window_scorer(config, name, labels, runtime) for name in members}

        def scorer(waveform: np.ndarray) -> ScoreWindows:
            member_scores = {name: of(waveform) for name, of in scorers.items()}

            def score(windows: np.ndarray) -> np.ndarray:
                scored = {name: member(windows) for name, member in member_scores.items()}
                return apply_stack(run_dir, member_frame(scored, labels)).astype(np.float32)

            return score

    audio = config.audio
    results = {}
    for name, path in tqdm(paths.items(), desc="spot", unit="file", disable=not progress):
        waveform = read_audio(path, audio.sample_rate)
        results[name] = spot_recording(
            waveform, audio.sample_rate, scorer(waveform), labels, config.spot,
            window_seconds=audio.clip_seconds,
        )  # fmt: skip
    return results


def predicted_test_frame(
    config: Config, source: str, labels: list[str], runtime: Runtime
) -> pl.DataFrame:
    """The task's test set predicted again by ``source`` (``fname`` + one probability column
    per label), e.g. through the exported models (``submission --runtime onnx``)."""
    from speechstack.tasks import create_task

    test = create_task(config.task).test_manifest()
    if test is None:
        raise PredictError(f"{config.task.data_dir}: the data has no test set to predict")
    matrix = source_probabilities(config, test, source, labels, runtime)
    return pl.DataFrame(
        {"fname": test["fname"], **{label: matrix[:, i] for i, label in enumerate(labels)}}
    )
