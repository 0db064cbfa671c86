"""ONNX export of an experiment (``speechstack export`` / ``make export``); the exported
file is read back by ``exported.py``.

One graph per experiment: every fold model, and the test-time views the experiment
predicts with, take waveform windows ``(batch, samples)`` and give label probabilities
(each fold's softmax mapped to the task's labels, averaged over the views and the folds):
what ``inference.predict_experiment`` computes with PyTorch. The log-mel front-end is in the
graph in its export form (``features.DftLogMel``), computed once per view for all folds
(each fold keeps its own normalisation). The file's metadata carries the labels, sample
rate, window length, views and the experiment (``exported.OnnxModel`` checks data against
them).

Export compares the graph with the PyTorch folds on real clips before it is written
(``PARITY_TOLERANCE``); int8 quantisation (onnxruntime's ``quantize_static``, calibrated
on training clips, or ``quantize_dynamic``) writes a second file beside the float one.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from speechstack.artifacts import atomic_path
from speechstack.config import Config, TtaView
from speechstack.data import ClipDataset
from speechstack.exported import EXPORT_FOLDER, FLOAT_MODEL, INT8_MODEL, ExportError, OnnxModel
from speechstack.features import DftLogMel, LogMel
from speechstack.folds import fold_count, read_folds
from speechstack.inference import load_fold_model, window_probabilities
from speechstack.models import model_trainer
from speechstack.tasks import create_task
from speechstack.tta import apply_view, views_or_identity

OPSET = 18  # onnxruntime >= 1.14 runs every operator of the graph at this opset
PARITY_TOLERANCE = 1e-4  # largest |ONNX - PyTorch| label probability accepted (fp32)
CALIBRATION_CLIPS = 256  # training clips that calibrate static int8 quantisation
Quantize = Literal["static", "dynamic"]


class _SharedMelPower(nn.Module):
    """The mel power of an experiment's ``LogMel`` in export form, computed once for every
    fold: the folds share the STFT and filterbank (same feature settings), each then
    applies its own compression (dB, or its own learnt PCEN)."""

    def __init__(self, exportable: DftLogMel) -> None:
        super().__init__()
        self.exportable = exportable

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.exportable.mel_power(waveform)


class FoldEnsemble(nn.Module):
    """Waveform windows ``(batch, samples)`` -> label probabilities ``(batch, labels)``: the
    mean over ``views`` and fold models of ``softmax(logits) @ class_to_label``.

    With ``share_log_mel``, the mel power of every fold's ``LogMel`` is computed once per view
    in its export form (the folds of one experiment have the same feature settings) and
    each fold compresses it; otherwise each fold computes its own (still in export form)."""

    def __init__(
        self,
        models: Sequence[nn.Module],
        class_to_labels: Sequence[np.ndarray],
        views: Sequence[TtaView],
        sample_rate: int,
        share_log_mel: bool,
    ) -> None:
        super().__init__()
        copies = [copy.deepcopy(model).eval() for model in models]
        log_mels = [_replace_log_mels(model, share_log_mel) for model in copies]
        self.shared = log_mels[0] if share_log_mel else None
        self.folds = nn.ModuleList(copies)
        for index, matrix in enumerate(class_to_labels):
            self.register_buffer(f"class_to_label{index}", torch.as_tensor(matrix).float())
        self.views = views_or_identity(views)
        self.sample_rate = sample_rate

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        # the views go through as one batch, so each fold appears once in the graph
        heard = torch.cat([apply_view(waveform, view, self.sample_rate) for view in self.views])
        given = self.shared(heard) if self.shared is not None else heard
        total = torch.zeros(())
        for index, model in enumerate(self.folds):
            probabilities = torch.softmax(model(given).float(), dim=1)
            total = total + probabilities @ getattr(self, f"class_to_label{index}")
        labels = total.reshape(len(self.views), waveform.shape[0], -1)
        return labels.mean(dim=0) / len(self.folds)


def _replace_log_mels(model: nn.Module, share: bool) -> nn.Module | None:
    """Swap every ``LogMel`` of ``model`` for its export form, or (``share``) for its own
    compression step alone (the model is then called with the mel power in place of the
    waveform); returns the shared mel power of the (first) one replaced."""
    found: nn.Module | None = None
    for name, module in list(model.named_modules()):
        if not isinstance(module, LogMel):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        exportable = module.exportable()
        found = found or _SharedMelPower(exportable)
        setattr(parent, child, exportable.compress if share else exportable)
    return found


@dataclass(frozen=True)
class ExportResult:
    """What ``export_experiment`` wrote and measured."""

    paths: list[Path]  # the float model, then the int8 one when asked for
    folds: int
    parity: float  # largest |ONNX - PyTorch| probability on the check clips
    bytes: dict[str, int]  # file name -> size


def finished_folds(
    config: Config, run_dir: Path, chosen: Sequence[int] | None = None
) -> list[Path]:
    """The fold folders of the experiment (every fold of the folds file, or the ``chosen``
    ones), each with its model; an unfinished run (a fold without ``model.pt``) is refused
    with the folds it lacks."""
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir}: no such run (train it first: `make train`)")
    trainer = model_trainer(config.model.name)
    if trainer != "network":
        kind = {"features": "a features classifier (openSMILE + scikit-learn/LightGBM)",
                "transcriber": "a speech recogniser"}.get(trainer, trainer)  # fmt: skip
        raise ExportError(
            f"{run_dir}: the '{config.model.name}' family is {kind}; only the classifier "
            "networks export to ONNX"
        )
    k = fold_count(read_folds(config.folds_file))
    folds = list(range(k)) if chosen is None else sorted(set(chosen))
    outside = [fold for fold in folds if not 0 <= fold < k]
    if outside or not folds:
        raise ExportError(
            f"folds {outside or '(none)'} are not folds of {config.folds_file} (0-{k - 1})"
        )
    missing = [f"fold{i}" for i in folds if not (run_dir / f"fold{i}" / "model.pt").is_file()]
    if missing:
        raise ExportError(
            f"{run_dir}: unfinished run, {', '.join(missing)} of {k} folds not trained "
            "(`make train` finishes it; or export the trained ones with --folds)"
        )
    return [run_dir / f"fold{i}" for i in folds]


def export_experiment(
    config: Config,
    quantize: Quantize | None = None,
    tta: bool = True,
    folds: Sequence[int] | None = None,
    check_clips: int = 32,
    calibration_clips: int = CALIBRATION_CLIPS,
) -> ExportResult:
    """Write ``<run>/export/model.onnx`` (and ``model.int8.onnx`` with ``quantize``) for the
    experiment ``config`` names (all its folds, or ``folds``), after checking the graph
    against the PyTorch folds on ``check_clips`` training clips."""
    run_dir = config.run_dir
    folders = finished_folds(config, run_dir, folds)
    device = torch.device("cpu")
    loaded = [load_fold_model(folder, device) for folder in folders]
    models = [model for model, _, _ in loaded]
    fold_config = loaded[0][1]
    views: list[TtaView] = list(fold_config.predict.tta) if tta else []
    labels = create_task(config.task).labels
    if loaded[0][2].shape[1] != len(labels):
        raise ExportError(
            f"{run_dir}: its models predict {loaded[0][2].shape[1]} labels, "
            f"the task has {len(labels)}"
        )
    audio = fold_config.audio
    clips = _training_windows(config, max(check_clips, calibration_clips if quantize else 0))
    matrices = [class_to_label for _, _, class_to_label in loaded]
    reference = torch.as_tensor(clips[:check_clips])
    with torch.no_grad():
        wanted = window_probabilities(
            list(zip(models, matrices, strict=True)), views, audio.sample_rate, reference
        )
        ensemble = FoldEnsemble(models, matrices, views, audio.sample_rate, share_log_mel=True)
        if ensemble.shared is None or not torch.allclose(
            ensemble(reference), wanted, atol=PARITY_TOLERANCE / 10
        ):  # a family that uses its log-mel otherwise: each fold computes its own
            ensemble = FoldEnsemble(models, matrices, views, audio.sample_rate, False)
    metadata = {
        "experiment": config.experiment,
        "task": config.task.name,
        "labels": json.dumps(labels),
        "sample_rate": str(audio.sample_rate),
        "window_samples": str(audio.clip_samples),
        "views": json.dumps([view.model_dump() for view in views]),
        "folds": ",".join(folder.name.removeprefix("fold") for folder in folders),
        "speaker_level": str(audio.speaker_level).lower(),
        "model": config.model.name,
    }
    out_dir = run_dir / EXPORT_FOLDER
    float_path = out_dir / FLOAT_MODEL
    write_onnx(ensemble, audio.clip_samples, metadata, float_path)
    parity = float(np.abs(OnnxModel(float_path)(clips[:check_clips]) - wanted.numpy()).max())
    if parity > PARITY_TOLERANCE:
        float_path.unlink()
        raise ExportError(
            f"{float_path}: ONNX Runtime differs from PyTorch by {parity:.2e} in a probability "
            f"(tolerance {PARITY_TOLERANCE:g}); not written"
        )
    paths = [float_path]
    if quantize:
        int8_path = out_dir / INT8_MODEL
        quantize_onnx(float_path, int8_path, quantize, clips[:calibration_clips])
        paths.append(int8_path)
    return ExportResult(
        paths, len(folders), parity, {path.name: path.stat().st_size for path in paths}
    )


def _training_windows(config: Config, count: int) -> np.ndarray:
    """``count`` evaluation windows of training clips, spread over the labels (the parity
    check's and the calibration's inputs)."""
    manifest = create_task(config.task).train_manifest()
    step = max(1, manifest.height // count)
    chosen = manifest[::step].head(count)
    dataset = ClipDataset(chosen, config.audio)
    windows = [dataset[i][0] for i in range(len(dataset))]
    return torch.cat([w.reshape(-1, config.audio.clip_samples) for w in windows])[:count].numpy()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's and quantiser's progress lines, INFO logs and warnings are kept from
    the user's screen (an error still names what failed)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def write_onnx(ensemble: nn.Module, samples: int, metadata: dict[str, str], path: Path) -> None:
    """Export ``ensemble`` (dynamic batch) with ``metadata``, atomically."""
    import onnx

    example = torch.zeros(2, samples)
    with atomic_path(path, ".onnx") as temp, _quiet():
        try:
            program = torch.onnx.export(
                ensemble,
                (example,),
                input_names=["waveform"],
                output_names=["probabilities"],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
        except Exception as error:
            raise ExportError(
                f"{path}: the '{metadata['model']}' family does not export to ONNX "
                f"({type(error).__name__}: {str(error).splitlines()[0]})"
            ) from error
        assert program is not None
        program.save(str(temp))
        model = onnx.load(str(temp))
        onnx.helper.set_model_props(model, metadata)
        onnx.save(model, str(temp))


def quantize_onnx(source: Path, target: Path, mode: Quantize, clips: np.ndarray) -> None:
    """int8 weights (``dynamic``), or weights and activations calibrated on ``clips``
    (``static``: QDQ, per channel) of the convolutions and linear layers; the front-end's
    matrix products stay float (its dB scale needs the precision)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(np.array_split(clips, max(1, len(clips) // 32)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"waveform": batch}

    with atomic_path(target, ".onnx") as temp, _quiet():
        prepared = temp.with_suffix(".pre.onnx")
        try:
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            excluded = _probability_products(prepared)
            if mode == "dynamic":
                quantize_dynamic(
                    str(prepared), str(temp), op_types_to_quantize=["Conv", "Gemm"],
                    nodes_to_exclude=excluded, weight_type=QuantType.QInt8,
                )  # fmt: skip
            else:
                quantize_static(
                    str(prepared), str(temp), Reader(), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["Conv", "Gemm"], nodes_to_exclude=excluded,
                    per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                )  # fmt: skip
        finally:
            prepared.unlink(missing_ok=True)
        _copy_metadata(source, temp)


def _probability_products(path: Path) -> list[str]:
    """The Gemm nodes without constant weights: the probabilities-to-labels products (fused
    with their running sum), which int8 would only make less exact."""
    import onnx

    graph = onnx.load(str(path)).graph
    constants = {initializer.name for initializer in graph.initializer}
    return [
        node.name
        for node in graph.node
        if node.op_type == "Gemm" and not all(name in constants for name in node.input[1:])
    ]


def _copy_metadata(source: Path, target: Path) -> None:
    import onnx

    props = {entry.key: entry.value for entry in onnx.load(str(source)).metadata_props}
    model = onnx.load(str(target))
    onnx.helper.set_model_props(model, props | {"quantized": "int8"})
    onnx.save(model, str(target))
