"""An exported experiment in ONNX Runtime (``predict --runtime onnx``, ``spot``): the file
``export.py`` writes, its metadata, and prediction of a manifest through it.

The graph takes waveform windows ``(batch, samples)`` and gives label probabilities (the
experiment's fold models and test-time views averaged). Its metadata carries the labels,
sample rate, window length and views it was exported with; ``OnnxModel.check`` refuses
data that does not fit them, so a model is never applied to audio it was not made for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from tqdm import tqdm

from speechstack.config import Config, Runtime
from speechstack.data import clip_means, prediction_loader
from speechstack.speakers import with_speaker_levels
from speechstack.tasks import TASKS

EXPORT_FOLDER = "export"  # in the experiment's run folder
FLOAT_MODEL = "model.onnx"
INT8_MODEL = "model.int8.onnx"


class ExportError(ValueError):
    """An experiment that cannot be exported, or an exported model that does not fit the
    data; the message names the folder or file."""


def exported_path(config: Config, source: str, runtime: Runtime) -> Path:
    """The file ``runtime`` (``onnx`` or ``onnx-int8``) predicts experiment ``source`` with."""
    name = INT8_MODEL if runtime == "onnx-int8" else FLOAT_MODEL
    return config.task_runs_dir / source / EXPORT_FOLDER / name


class OnnxModel:
    """An exported experiment: windows ``(n, samples)`` float32 -> label probabilities
    ``(n, labels)``, with the metadata it was exported with."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ExportError(f"{path} not found: export the experiment first (`make export`)")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:
            raise ExportError(
                f"{path} cannot be loaded ({type(error).__name__}: {error}); export it again"
            ) from error
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.labels: list[str] = json.loads(meta["labels"])
            self.sample_rate = int(meta["sample_rate"])
            self.window_samples = int(meta["window_samples"])
            self.views: list[dict[str, Any]] = json.loads(meta["views"])
            self.speaker_level = meta.get("speaker_level", "false") == "true"
        except (KeyError, ValueError) as error:
            raise ExportError(
                f"{path}: not a speechstack export (metadata {error} missing or damaged)"
            ) from error
        self.path = path
        self.metadata = dict(meta)

    def check(self, labels: Sequence[str], sample_rate: int, window_samples: int) -> None:
        """Refuse data whose labels, sample rate or window length differ from the model's."""
        problems = []
        if list(labels) != self.labels:
            problems.append(f"labels {self.labels} (the data's: {list(labels)})")
        if sample_rate != self.sample_rate:
            problems.append(
                f"a sample rate of {self.sample_rate} Hz (the data's: {sample_rate} Hz)"
            )
        if window_samples != self.window_samples:
            problems.append(
                f"windows of {self.window_samples} samples (the data's: {window_samples})"
            )
        if problems:
            raise ExportError(f"{self.path} was exported for {'; '.join(problems)}")

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"waveform": np.ascontiguousarray(windows, np.float32)})[0]


def predict_onnx(
    model: OnnxModel, manifest: pl.DataFrame, config: Config, progress: bool = True
) -> np.ndarray:
    """Label probabilities ``(clips, labels)`` for every clip of ``manifest``: clips are
    decoded by loader workers and cut into the model's windows batch by batch (a large test
    set never sits in memory), each clip's windows averaged; the progress bar counts clips
    (rate and time left). A model exported with ``audio.speaker_level`` hears each speaker
    levelled as its training did."""
    if model.speaker_level:
        audio = config.audio
        speakers = TASKS.get(config.task.name).speakers_of(manifest["fname"])
        manifest = with_speaker_levels(
            manifest, speakers, audio.sample_rate, audio.max_samples, config.cache_dir
        )
    loader = prediction_loader(manifest, config)
    outputs = []
    with tqdm(
        total=manifest.height, unit="clip", desc="predict (onnx)", disable=not progress
    ) as bar:
        for windows, _, counts in loader:
            probabilities = clip_means(torch.from_numpy(model(windows.numpy())), counts)
            outputs.append(probabilities.numpy())
            bar.update(counts.shape[0])
    if not outputs:
        return np.zeros((0, len(model.labels)), dtype=np.float32)
    return np.concatenate(outputs)


def exported_probabilities(
    config: Config,
    source: str,
    manifest: pl.DataFrame,
    labels: Sequence[str],
    runtime: Runtime,
    tta: bool = True,
    progress: bool = True,
) -> np.ndarray:
    """What ``inference.predict_experiment`` computes for experiment ``source``, through its
    exported model (``runtime`` ``onnx`` or ``onnx-int8``)."""
    model = OnnxModel(exported_path(config, source, runtime))
    model.check(labels, config.audio.sample_rate, config.audio.clip_samples)
    if not tta and model.views:
        raise ExportError(
            f"{model.path} averages {len(model.views)} test-time views; for predictions "
            "without them export with `--no-tta` (`make export NO_TTA=1`)"
        )
    return predict_onnx(model, manifest, config, progress)
