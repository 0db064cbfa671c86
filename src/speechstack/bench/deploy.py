"""The deployment benchmark (``make bench``, stage 5): the default CNN's fold models and the
distilled student (``configs/<task>/student.yaml``) predicted with PyTorch, ONNX Runtime
(fp32) and ONNX Runtime int8, side by side on the same windows; the shipped student file's
size and its latency for one clip on one thread; the projected time of the whole Kaggle
test set with each.

The models are freshly initialised (speed does not depend on the weights' values), exported
as ``make export`` exports a run: every fold and the test-time views in one graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from speechstack.bench.report import Check, Stage, interleaved, number, rate, summary
from speechstack.bench.stages import KAGGLE_TEST_CLIPS, Setup, torch_threads
from speechstack.config import Config, TtaView, load_config
from speechstack.data import prediction_loader
from speechstack.export import FoldEnsemble, quantize_onnx, write_onnx
from speechstack.exported import OnnxModel
from speechstack.inference import window_probabilities
from speechstack.models import ModelContext, create_model

STUDENT_CONFIG = "student.yaml"  # beside the benchmarked config
MAX_STUDENT_BYTES = 5_000_000  # the challenge's special prize: a model under 5,000,000 bytes
MAX_STUDENT_MS = 20.0  # per clip, one thread


def _fold_models(config: Config, setup: Setup, folds: int) -> list[tuple[nn.Module, np.ndarray]]:
    context = ModelContext.of(config, setup.task.classes())
    class_to_label = setup.task.class_to_label().astype(np.float32)
    models = []
    for fold in range(folds):
        torch.manual_seed(fold)
        model = create_model(config.model.name, context, **config.model.params).eval()
        models.append((model, class_to_label))
    return models


def _export(
    models: list[tuple[nn.Module, np.ndarray]],
    views: list[TtaView],
    config: Config,
    path: Path,
    calibration: np.ndarray | None,
) -> tuple[Path, Path | None]:
    """The float graph at ``path`` and, with ``calibration`` windows, its int8 twin."""
    ensemble = FoldEnsemble(
        [model for model, _ in models],
        [matrix for _, matrix in models],
        views,
        config.audio.sample_rate,
        share_log_mel=True,
    )
    metadata = {"labels": "[]", "sample_rate": str(config.audio.sample_rate),
                "window_samples": str(config.audio.clip_samples), "views": "[]",
                "model": config.model.name}  # fmt: skip
    write_onnx(ensemble, config.audio.clip_samples, metadata, path)
    if calibration is None:
        return path, None
    int8 = path.with_name(f"{path.stem}.int8.onnx")
    quantize_onnx(path, int8, "static", calibration)
    return path, int8


def bench_deploy(
    setup: Setup, work_dir: Path, rounds: int = 3, clips: int = 256, folds: int | None = None
) -> Stage:
    """PyTorch vs ONNX fp32 vs ONNX int8 clips/s for the default CNN (every fold, its
    test-time views) and the student, model only, on ``clips`` test windows in prediction
    batches; the shipped student (one fold with its views, int8) in bytes, clips/s and ms
    per clip on one thread; projected Kaggle test times. ``folds``: models per family (default
    ``folds.k``; fewer only to keep a smoke run short)."""
    config = setup.config
    stage = Stage("deploy", "deployment (ONNX, student)")
    student_path = setup.config_path.parent / STUDENT_CONFIG
    if not student_path.is_file():
        stage.skipped = f"no {student_path}"
        return stage
    student = load_config(student_path, setup.overrides)
    manifest = setup.task.test_manifest()
    manifest = (manifest if manifest is not None else setup.manifest).head(clips)
    windows = torch.cat([batch for batch, _, _ in prediction_loader(manifest, config)])
    batches = list(windows.split(config.predict.batch_size))
    count = windows.shape[0]
    folds = folds or config.folds.k
    views = list(config.predict.tta)
    calibration = windows[:64].numpy()
    stage.measured = {"windows": count, "folds": folds, "views": len(views), "families": {}}
    stage.lines = [(f"{count} windows, {folds} folds x {len(views)} test-time views per model", "")]
    rates: dict[str, dict[str, float]] = {}
    for name, family_config in (("default CNN", config), ("student", student)):
        models = _fold_models(family_config, setup, folds)
        stem = work_dir / name.replace(" ", "-")
        float_path, int8_path = _export(
            models, views, family_config, stem.with_suffix(".onnx"), calibration
        )
        assert int8_path is not None
        sessions = {"onnx": OnnxModel(float_path), "onnx_int8": OnnxModel(int8_path)}
        sample_rate = family_config.audio.sample_rate

        def pytorch(models: list = models, rate_hz: int = sample_rate) -> None:
            for batch in batches:
                window_probabilities(models, views, rate_hz, batch)

        functions = {"pytorch": pytorch}
        for key, session in sessions.items():
            functions[key] = lambda session=session: [session(b.numpy()) for b in batches]
        for function in functions.values():
            function()  # warm-up
        seconds = interleaved(functions, rounds)
        rates[name] = {key: rate(count, min(values)) for key, values in seconds.items()}
        stage.measured["families"][name] = {
            "parameters_per_fold": sum(p.numel() for p in models[0][0].parameters()),
            "clips_per_second": rates[name],
            "seconds": {key: summary(values) for key, values in seconds.items()},
            "bytes": {"onnx": float_path.stat().st_size, "onnx_int8": int8_path.stat().st_size},
        }
        shown = " / ".join(number(rates[name][key]) for key in ("pytorch", "onnx", "onnx_int8"))
        stage.lines.append((f"{name}: PyTorch / ONNX / ONNX int8", f"{shown} clips/s"))
    cnn, pupil = rates["default CNN"], rates["student"]
    speedup = cnn["onnx"] / cnn["pytorch"]
    stage.checks.append(Check("default CNN: ONNX fp32 vs PyTorch", speedup, 1.5, "x"))

    # The shipped student (what `make distill` exports): one fold with its test-time views,
    # int8; batches on every thread, and one clip at a time on one thread.
    shipped_models = _fold_models(student, setup, 1)
    _, shipped = _export(shipped_models, views, student, work_dir / "shipped.onnx", calibration)
    assert shipped is not None
    size = shipped.stat().st_size
    batched = OnnxModel(shipped)
    with torch_threads(1):
        one_thread = OnnxModel(shipped, threads=1)
        singles = [windows[i : i + 1].numpy() for i in range(min(count, 64))]
        for single in singles[:5]:
            one_thread(single)
        batched(batches[0].numpy())
        seconds = interleaved(
            {
                "one_clip_one_thread": lambda: [one_thread(s) for s in singles],
                "batches": lambda: [batched(b.numpy()) for b in batches],
            },
            rounds,
        )
    milliseconds = 1000 * min(seconds["one_clip_one_thread"]) / len(singles)
    shipped_rate = rate(count, min(seconds["batches"]))
    stage.measured["shipped_student"] = {
        "bytes": size,
        "ms_per_clip_one_thread": milliseconds,
        "clips_per_second": shipped_rate,
    }
    stage.lines.append(("shipped student (one fold, its views, int8)", f"{size:,} bytes"))
    speeds = f"{number(shipped_rate)} clips/s / {milliseconds:.1f} ms per clip"
    stage.lines.append(("  batches / one clip on one thread", speeds))
    stage.checks.append(
        Check("shipped student size", size / 1e6, MAX_STUDENT_BYTES / 1e6, "MB", at_least=False)
    )
    stage.checks.append(
        Check("shipped student, one clip, one thread", milliseconds, MAX_STUDENT_MS, "ms",
              at_least=False)
    )  # fmt: skip

    projected = {
        "default CNN's folds, PyTorch": KAGGLE_TEST_CLIPS / cnn["pytorch"],
        "default CNN's folds, ONNX": KAGGLE_TEST_CLIPS / cnn["onnx"],
        "student's folds, ONNX int8": KAGGLE_TEST_CLIPS / pupil["onnx_int8"],
        "shipped student, ONNX int8": KAGGLE_TEST_CLIPS / shipped_rate,
    }
    stage.measured["projected_kaggle_test_seconds"] = projected
    for label, value in projected.items():
        stage.lines.append(
            (f"{KAGGLE_TEST_CLIPS:,} Kaggle test clips: {label}", f"{value / 60:.1f} min")
        )
    faster = projected["default CNN's folds, PyTorch"] / projected["shipped student, ONNX int8"]
    stage.checks.append(
        Check("shipped student vs the CNN's folds in PyTorch, whole test", faster, 5.0, "x")
    )
    return stage
