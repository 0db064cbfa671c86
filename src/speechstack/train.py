"""``train_fold(config, fold) -> metrics``: the plain training loop every experiment (and the
tuner) calls.

Trains on every fold but ``fold``, picks the epoch with the best accuracy on ``fold``, and
writes ``runs/<task>/<experiment>/fold<k>/`` as one atomic folder:

* ``model.pt``       best weights (state dict) with the class names
* ``oof.parquet``    fold-k rows: ``fname`` + one probability column per label
* ``test.parquet``   test clips: ``fname`` + one probability column per label (if a test set)
* ``metrics.json``   best epoch, validation accuracy/loss, timings, sizes
* ``history.csv``    per-epoch train loss, validation loss and accuracy
* ``config.yaml``    the resolved config
* ``dataset.parquet`` the training clips' names and sizes (what the fold was trained on)
* ``pseudo_labels.csv`` a copy of ``train.pseudo_labels``, when set (a fold trained on other
  pseudo labels than the file now holds is refused, not reused)
* ``report.md``, ``confusion.png``, ``report.json``   the fold's classification report

Once every fold is done, ``write_experiment_report`` writes the same report over the whole
out-of-fold table into ``runs/<task>/<experiment>/``.

A fold whose folder exists (and matches the sizes and SHA-256 its ``metrics.json``
recorded) is finished: re-running skips it. A crash or Ctrl-C leaves no partial folder, only
the last epoch's checkpoint (``checkpoint``), where a re-run resumes.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import pickle
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from speechstack import interrupt
from speechstack.acoustic import (
    AugmentedCopy,
    augmented_key,
    clip_features,
    extraction_processes,
)
from speechstack.artifacts import (
    atomic_directory,
    atomic_write_frame,
    atomic_write_json,
    damaged_files,
    file_digest,
    read_frame,
    remove_orphans,
)
from speechstack.augment import build_waveform_augment, shifted_condition
from speechstack.checkpoint import FoldCheckpoint, capture_random_state, restore_random_state
from speechstack.config import (
    Config,
    ConfigError,
    DistillConfig,
    ShiftedValidationConfig,
    TtaView,
    load_config,
    save_config,
)
from speechstack.data import (
    ClipDataset,
    QuotaSampler,
    SegmentSource,
    SyntheticUnknown,
    WaveformStore,
    checked_decodable,
    clip_means,
    make_loader,
)
from speechstack.distributed import Distributed
from speechstack.folds import FoldsError, attach_folds, fold_count, read_folds, scored_rows
from speechstack.lock import RunLock
from speechstack.models import ModelContext, create_model, model_trainer
from speechstack.report import report_oof, with_manifest, write_report
from speechstack.speakers import levelled
from speechstack.submission import label_accuracy
from speechstack.tasks import TEST_COLUMNS, Task, create_task
from speechstack.tta import adapt_batch_norm, apply_view, views_or_identity

log = logging.getLogger(__name__)


class RunMismatchError(RuntimeError):
    """A finished fold exists for this experiment name but was made with another config."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but CUDA is not available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass(frozen=True)
class Precision:
    """Autocast settings: bf16 where the GPU supports it, fp16 with loss scaling otherwise,
    full fp32 on CPU or when ``train.amp`` is off."""

    device: torch.device
    enabled: bool
    dtype: torch.dtype

    @classmethod
    def choose(cls, device: torch.device, amp: bool) -> Precision:
        if device.type != "cuda" or not amp:
            return cls(device, False, torch.float32)
        bf16 = torch.cuda.is_bf16_supported()
        return cls(device, True, torch.bfloat16 if bf16 else torch.float16)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.enabled)

    def scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the peak learning rate, then cosine decay to zero, per step."""
    warmup = max(1, round(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fold_dir(config: Config, fold: int) -> Path:
    return config.run_dir / f"fold{fold}"


def _recorded_metrics(folder: Path) -> tuple[dict[str, Any], list[str]]:
    """A fold folder's ``metrics.json`` and what is wrong with the files it recorded (size
    and SHA-256: missing, truncated, changed), or with ``metrics.json`` itself."""
    path = folder / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
        return metrics, damaged_files(folder, metrics.get("files", {}))
    except (OSError, ValueError, AttributeError) as error:
        return {}, [f"{path} cannot be read ({error})"]


def load_fold_metrics(config: Config, fold: int) -> dict[str, Any] | None:
    """Metrics of a finished fold, or None: not trained, or damaged (a file differs from the
    size and SHA-256 its ``metrics.json`` recorded, or that is unreadable: named in a
    warning, and the fold is trained again). Refuses a fold trained with another config."""
    folder = fold_dir(config, fold)
    if not folder.is_dir():
        return None
    metrics, problems = _recorded_metrics(folder)
    if problems:
        log.warning("fold %d of %s is damaged, so not finished; it is trained again: %s",
                    fold, config.experiment, "; ".join(problems))  # fmt: skip
        return None
    if _saved_identity(folder / "config.yaml") != config.identity():
        raise RunMismatchError(
            f"{folder} was trained with a different config than {config.experiment!r} now has "
            f"(see {folder / 'config.yaml'}). Use a new experiment name "
            "(experiment=... / EXP=...), or delete the folder to retrain it."
        )
    pseudo = config.train.pseudo_labels
    if pseudo is not None:
        recorded = metrics.get("files", {}).get(PSEUDO_COPY)
        if recorded is None or not pseudo.is_file() or file_digest(pseudo) != recorded:
            raise RunMismatchError(
                f"{folder} was trained on other pseudo labels than {pseudo} holds now "
                f"(its own are in {folder / PSEUDO_COPY}, if recorded): a new pseudo round "
                "needs new fold models. Use a new experiment name (experiment=... / EXP=...), "
                "or delete the folder to retrain it."
            )
    listing = folder / DATA_LISTING
    if listing.is_file():
        differ = listing_differences(read_frame(listing), training_listing(config))
        if differ:
            raise RunMismatchError(
                f"{folder} was trained on other data: {differ} training files differ (added, "
                f"removed or resized) in {config.task.data_dir}. Use a new experiment name "
                "(experiment=... / EXP=...), or delete the folder to retrain it."
            )
    return metrics


# The pseudo labels a fold trained on, copied beside it: a recipe's later round writes the
# same path with other clips, and a fold trained on the old ones must not count as finished.
PSEUDO_COPY = "pseudo_labels.csv"

# What a fold was trained on, by content rather than by where it lies (``task.data_dir`` is
# not part of a run's identity): a moved dataset is accepted, a changed one refused.
DATA_LISTING = "dataset.parquet"
_listings: dict[str, pl.DataFrame] = {}


def data_listing(manifest: pl.DataFrame) -> pl.DataFrame:
    """``fname,bytes`` of a manifest's clips (a file's size stands for its content: the
    clips' names and sizes change when a dataset is regenerated or edited)."""
    sizes = [Path(path).stat().st_size for path in manifest["path"]]
    return pl.DataFrame({"fname": manifest["fname"], "bytes": sizes}).sort("fname")


def training_listing(config: Config) -> pl.DataFrame:
    """``data_listing`` of the task's training clips, computed once per process and task."""
    key = config.task.model_dump_json()
    if key not in _listings:
        _listings[key] = data_listing(create_task(config.task).train_manifest())
    return _listings[key]


def listing_differences(saved: pl.DataFrame, current: pl.DataFrame) -> int:
    """How many clips are in one listing only, or in both with another size."""
    joined = saved.join(current, on="fname", how="full", suffix="_now")
    return joined.filter(
        pl.col("fname").is_null()
        | pl.col("fname_now").is_null()
        | (pl.col("bytes") != pl.col("bytes_now"))
    ).height


def _saved_identity(path: Path) -> str | None:
    """The identity of a fold's saved config under today's rules (None if unreadable), read
    through the same validated path as any config file (params filled in by their schemas),
    so settings that later became result-neutral or gained defaults do not invalidate
    finished folds."""
    try:
        return load_config(path).identity()
    except ConfigError:
        return None


def preflight(config: Config) -> None:
    """What would otherwise fail after hours, checked in seconds before any training (and
    before fold processes start): the folds file is there, holds this dataset's clips and
    ``folds.k`` folds; every test clip decodes (a bad one would fail each fold after its
    last epoch; remembered per file state in the cache folder, so checked once); and a test
    set without the competition's sample submission is said. Training clips are decoded by
    the cache pass at the start of each fold; the run folder's writability by its lock."""
    task = create_task(config.task)
    folded = attach_folds(
        scored_rows(task.train_manifest()), read_folds(config.folds_file), config.folds_file
    )
    if fold_count(folded) != config.folds.k:
        raise FoldsError(
            f"{config.folds_file} has {fold_count(folded)} folds but folds.k is "
            f"{config.folds.k}; run `make folds` again or set folds.k"
        )
    test = task.test_manifest()
    if test is not None:
        checked_decodable(test, config.audio.sample_rate, config.cache_dir, "test")
        if task.sample_submission() is None:
            log.info("submissions of %s will not be checked against a sample submission: %s",
                     config.task.dataset_name, task.no_sample_submission_reason())  # fmt: skip


class FoldData:
    """Manifests, targets and the waveform store of one fold.

    Validation: the scored clips of fold ``fold``. Training: the scored clips of the other
    folds, the training-only clips (``scored`` false) of speakers outside fold ``fold``,
    and the pseudo-labelled test clips of ``train.pseudo_labels`` (never validated)."""

    def __init__(self, config: Config, task: Task, fold: int, progress: bool) -> None:
        manifest = task.train_manifest()
        manifest = levelled(config, manifest, manifest["group"].to_list())
        folded = attach_folds(
            scored_rows(manifest), read_folds(config.folds_file), config.folds_file
        )
        if fold not in set(folded["fold"].unique().to_list()):
            raise ValueError(
                f"fold {fold} is not in {config.folds_file} (folds.k={config.folds.k})"
            )
        self.classes = task.classes()
        self.labels = task.labels
        self.class_to_label = task.class_to_label()
        valid_groups = folded.filter(pl.col("fold") == fold)["group"].unique()
        extra = manifest.join(folded.select("fname"), on="fname", how="anti")
        extra = extra.filter(~pl.col("group").is_in(valid_groups.implode())).with_columns(
            pl.lit(-1, dtype=pl.Int64).alias("fold")
        )
        pseudo = self._pseudo_rows(config)
        teacher: dict[str, np.ndarray] = {}
        if config.train.distill.teacher is not None:
            taught, teacher = self._teacher(config, task)
            pseudo = pl.concat([pseudo, taught])
        pseudo = levelled(config, pseudo, task.speakers_of(pseudo["fname"]))
        self.train_only_clips, self.pseudo_clips = extra.height, pseudo.height
        self.valid = folded.filter(pl.col("fold") == fold)
        self.train = pl.concat(
            [folded.filter(pl.col("fold") != fold), extra, pseudo], how="diagonal_relaxed"
        )
        unknown_targets = set(self.train["target"]) - set(self.classes)
        if unknown_targets:
            raise ValueError(f"targets outside the task's classes: {sorted(unknown_targets)}")
        index = {name: i for i, name in enumerate(self.classes)}
        self.train_targets = self.train["target"].replace_strict(index).to_numpy()
        self.valid_targets = self.valid["target"].replace_strict(index).to_numpy()
        self.train_soft = (
            self.soft_targets(config.train.distill, teacher) if teacher else None
        )  # (train clips, classes) under train.distill, else None: the labels
        test = task.test_manifest()
        self.test = (
            None if test is None else levelled(config, test, task.speakers_of(test["fname"]))
        )
        # One store for all of the task's clips (+ this round's pseudo-labelled ones), in a
        # fixed order: every fold (and experiment) of a round reuses its cache file.
        stored = pl.concat([manifest.select(TEST_COLUMNS), pseudo.select(TEST_COLUMNS)])
        self.stored = stored
        row_of = {name: row for row, name in enumerate(stored["fname"])}
        self.train_rows = np.array([row_of[n] for n in self.train["fname"]], dtype=np.int64)
        self.valid_rows = np.array([row_of[n] for n in self.valid["fname"]], dtype=np.int64)
        audio = config.audio
        self.store = WaveformStore.build(
            stored, audio.sample_rate, audio.max_samples, config.cache_dir, progress,
            variable_length=audio.variable_length,
        )  # fmt: skip

    def _pseudo_rows(self, config: Config) -> pl.DataFrame:
        """``train.pseudo_labels`` as manifest rows (fold -1: training side only); labels
        that are no training class (``unknown`` when training on words) are left out."""
        path = config.train.pseudo_labels
        kept = pl.DataFrame(schema=PSEUDO_SCHEMA)
        if path is not None:
            from speechstack.pseudo import read_pseudo_labels

            pseudo = read_pseudo_labels(path, self.labels)
            kept = pseudo.filter(pl.col("label").is_in(self.classes))
            if kept.height < pseudo.height:
                log.info("%s: %d pseudo labels are no training class; left out",
                         path, pseudo.height - kept.height)  # fmt: skip
        return _training_only_rows(kept, "pseudo:")

    def _teacher(self, config: Config, task: Task) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
        """``train.distill``: the test clips as training rows labelled with the teacher's
        most probable label (``teacher:<fname>``; none without ``test_clips``), and the
        teacher's label probabilities of every clip it predicted (folded clips: out of fold;
        test clips: averaged over its folds), by row name."""
        from speechstack.stack import source_oof, source_predictions

        distill, runs_dir = config.train.distill, config.task_runs_dir
        assert distill.teacher is not None
        if self.classes != self.labels:
            raise ValueError(
                f"train.distill needs a student that learns the task's labels (classes "
                f"{len(self.classes)} != labels {len(self.labels)}: set "
                "task.params.label_mode=labels)"
            )
        oof = source_oof(runs_dir, distill.teacher, config.folds_file, self.labels)
        probabilities = dict(zip(oof["fname"], oof.select(self.labels).to_numpy(), strict=True))
        test = task.test_manifest()
        if not distill.test_clips or test is None:
            return _training_only_rows(
                pl.DataFrame(schema=PSEUDO_SCHEMA), "teacher:"
            ), probabilities
        predicted = source_predictions(
            runs_dir, distill.teacher, config.folds_file, self.labels
        ).test
        matrix = predicted.select(self.labels).to_numpy()
        rows = test.select("fname", "path").join(
            predicted.select("fname", label=pl.Series(np.asarray(self.labels)[matrix.argmax(1)])),
            on="fname",
        )
        if rows.height < test.height:
            raise ValueError(
                f"teacher {distill.teacher!r} has no test probabilities for "
                f"{test.height - rows.height} of the {test.height} test clips; predict them first"
            )
        for fname, row in zip(predicted["fname"], matrix, strict=True):
            probabilities[f"teacher:{fname}"] = row
        return _training_only_rows(rows, "teacher:"), probabilities

    def soft_targets(
        self, distill: DistillConfig, probabilities: dict[str, np.ndarray]
    ) -> np.ndarray:
        """``(train clips, classes)``: each training clip's teacher distribution,
        ``p ** (1 / temperature)`` renormalised, mixed with its label's one-hot by
        ``distill.weight`` (a clip the teacher did not predict: the one-hot alone)."""
        onehot = np.eye(len(self.classes), dtype=np.float64)[self.train_targets]
        soft = onehot.copy()
        for row, fname in enumerate(self.train["fname"]):
            teacher = probabilities.get(fname)
            if teacher is None:
                continue
            sharpened = np.clip(teacher, 1e-8, None) ** (1.0 / distill.temperature)
            soft[row] = (
                distill.weight * sharpened / sharpened.sum() + (1 - distill.weight) * onehot[row]
            )
        return soft.astype(np.float32)


PSEUDO_SCHEMA = {"fname": pl.String, "path": pl.String, "label": pl.String}


def _training_only_rows(clips: pl.DataFrame, prefix: str) -> pl.DataFrame:
    """Clips (``fname``, ``path``, ``label``) as manifest rows of the training side only
    (fold -1, group ``pseudo``), named ``<prefix><fname>`` apart from the task's own."""
    return clips.select(
        pl.concat_str(pl.lit(prefix), "fname").alias("fname"),
        "path",
        pl.lit(0.0).alias("start"),
        pl.lit(None, dtype=pl.Float64).alias("duration"),
        pl.lit(0.0).alias("gain_db"),
        "label",
        pl.col("label").alias("target"),
        pl.lit("pseudo").alias("group"),
        pl.lit(-1, dtype=pl.Int64).alias("fold"),
    )


def predict_probabilities(
    model: nn.Module,
    loader: DataLoader,
    precision: Precision,
    progress: bool = False,
    views: Sequence[TtaView] = (),
    sample_rate: int = 16000,
) -> np.ndarray:
    """Softmax class probabilities ``(clips, classes)`` for every clip of ``loader`` (an
    evaluation ``ClipDataset`` loader: each clip's windows' probabilities are averaged),
    averaged over the test-time ``views`` (``predict.tta``; none: the windows as they are)."""
    model.eval()
    chosen = views_or_identity(views)
    outputs = []
    with torch.inference_mode():
        for windows, _, counts in tqdm(loader, desc="predict", disable=not progress, leave=False):
            interrupt.check()
            windows = windows.to(precision.device, non_blocking=True)
            probabilities = torch.zeros(())
            for view in chosen:
                with precision.autocast():
                    logits = model(apply_view(windows, view, sample_rate))
                probabilities = probabilities + torch.softmax(logits.float(), dim=1).cpu()
            probabilities = clip_means(probabilities / len(chosen), counts)
            outputs.append(probabilities.numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), dtype=np.float32)


def probability_frame(
    fnames: pl.Series, probabilities: np.ndarray, labels: list[str]
) -> pl.DataFrame:
    columns = {label: probabilities[:, i].astype(np.float32) for i, label in enumerate(labels)}
    return pl.DataFrame({"fname": fnames, **columns})


def _loss(
    logits: torch.Tensor, target: torch.Tensor, smoothing: float, temperature: float
) -> torch.Tensor:
    """Cross-entropy against class indices (label-smoothed), or against soft targets
    (``train.distill``: rows of class probabilities) at ``temperature``, scaled by its
    square so the gradients keep their size (Hinton et al., 2015)."""
    if not target.is_floating_point():
        return F.cross_entropy(logits.float(), target, label_smoothing=smoothing)
    return F.cross_entropy(logits.float() / temperature, target) * temperature**2


def train_epoch(
    model: nn.Module,
    loader: DataLoader,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    precision: Precision,
    config: Config,
    rng: np.random.Generator,
    description: str = "train",
    progress: bool = False,
) -> float:
    """One pass over ``loader`` (mixup, loss, gradient clipping, a scheduler step per batch);
    the mean training loss. What ``FoldRun.fit_epoch`` and the benchmarks run."""
    model.train()
    mixup = config.augment.mixup
    smoothing = config.train.label_smoothing
    temperature = config.train.distill.temperature
    total, count = 0.0, 0
    for waveform, target in tqdm(loader, desc=description, disable=not progress, leave=False):
        interrupt.check()
        waveform = waveform.to(precision.device, non_blocking=True)
        target = target.to(precision.device, non_blocking=True)
        mix = mixup.p > 0 and rng.random() < mixup.p
        if mix:
            weight = float(rng.beta(mixup.alpha, mixup.alpha))
            order = torch.from_numpy(rng.permutation(waveform.shape[0])).to(precision.device)
            waveform = weight * waveform + (1 - weight) * waveform[order]
        with precision.autocast():
            logits = model(waveform)
            loss = _loss(logits, target, smoothing, temperature)
            if mix:
                loss = weight * loss + (1 - weight) * _loss(
                    logits, target[order], smoothing, temperature
                )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.train.grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        total += loss.item() * waveform.shape[0]
        count += waveform.shape[0]
    return total / max(count, 1)


def _evaluate(
    class_probabilities: np.ndarray, targets: np.ndarray, class_to_label: np.ndarray
) -> tuple[float, float]:
    """(log loss over training classes, accuracy over the task's labels)."""
    picked = class_probabilities[np.arange(len(targets)), targets]
    loss = float(-np.log(np.clip(picked, 1e-7, 1.0)).mean())
    label_probabilities = class_probabilities @ class_to_label
    label_targets = class_to_label[targets].argmax(axis=1)
    accuracy = float((label_probabilities.argmax(axis=1) == label_targets).mean())
    return loss, accuracy


class FoldOutputs:
    """Label-probability tables of a fold's best model: its OOF rows (clean and shifted)
    and the test set, each averaged over the ``predict.tta`` views."""

    def __init__(
        self, network: nn.Module, precision: Precision, config: Config, data: FoldData
    ) -> None:
        self.network, self.precision, self.config, self.data = network, precision, config, data

    def predict(
        self, dataset: ClipDataset, progress: bool = False, adapt: bool = False
    ) -> np.ndarray:
        """Class probabilities ``(clips, classes)`` of an evaluation dataset; with ``adapt``
        and ``predict.adapt_norm``, by the network with the dataset's own batch-norm
        statistics (``tta.adapt_batch_norm``) when it holds ``predict.adapt_min_clips``."""
        loader = make_loader(
            dataset,
            self.config.predict.batch_size,
            shuffle=False,
            num_workers=self.config.predict.num_workers,
            seed=0,
        )
        network = self.network
        settings = self.config.predict
        if adapt and settings.adapt_norm and len(dataset) >= settings.adapt_min_clips:
            windows = (batch for batch, _, _ in loader)
            network = adapt_batch_norm(network, windows, self.precision.device)
        return predict_probabilities(
            network,
            loader,
            self.precision,
            progress,
            self.config.predict.tta,
            self.config.audio.sample_rate,
        )

    def frame(self, manifest: pl.DataFrame, class_probabilities: np.ndarray) -> pl.DataFrame:
        """``fname`` + one label-probability column per label."""
        data = self.data
        return probability_frame(
            manifest["fname"], class_probabilities @ data.class_to_label, data.labels
        )


def synthetic_unknown(config: Config, classes: Sequence[str]) -> SyntheticUnknown | None:
    """``train.synthetic_unknown`` as the dataset's transform (None when 0); it needs an
    ``unknown`` class to label the non-words with."""
    p = config.train.synthetic_unknown
    if p == 0:
        return None
    if "unknown" not in classes:
        raise ConfigError(
            f"train.synthetic_unknown={p} needs an `unknown` class, which the task's classes "
            f"lack ({', '.join(classes)}); with Speech Commands words set "
            "task.params.unknown_class=true"
        )
    return SyntheticUnknown(p, list(classes).index("unknown"))


def warm_start(network: nn.Module, config: Config, fold: int, data: FoldData) -> None:
    """``train.init_from``: that experiment's fold ``fold`` (its best weights) starts this
    fold. Refused, before any training, unless it is finished, validated exactly this
    fold's clips (so no weight has seen them: the OOF rows stay honest) and learnt the same
    classes with the same network."""
    name = config.train.init_from
    source = config.task_runs_dir / str(name) / f"fold{fold}"
    weights, oof, metrics = source / "model.pt", source / "oof.parquet", source / "metrics.json"
    where = f"train.init_from={name!r}"
    if not all(path.is_file() for path in (weights, oof, metrics)):
        raise RunMismatchError(
            f"{where}: {source} is not a finished fold (no model.pt, oof.parquet or "
            f"metrics.json); train that experiment's fold {fold} first"
        )
    _, problems = _recorded_metrics(source)
    if problems:
        raise RunMismatchError(
            f"{where}: {source} is damaged ({'; '.join(problems)}); train that experiment's "
            f"fold {fold} again"
        )
    validated = set(pl.read_parquet(oof, columns=["fname"])["fname"].to_list())
    ours = set(data.valid["fname"].to_list())
    if validated != ours:
        raise RunMismatchError(
            f"{where}: {source} validated other clips than fold {fold} of "
            f"{config.folds_file} ({len(validated ^ ours)} differ): its weights may have "
            "trained on this fold's validation clips. Warm-start only from runs of the same "
            "folds file."
        )
    try:
        saved = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as error:
        raise RunMismatchError(
            f"{where}: {weights} cannot be loaded ({type(error).__name__}: {error}); train "
            f"that experiment's fold {fold} again"
        ) from error
    if list(saved["classes"]) != list(data.classes):
        raise RunMismatchError(
            f"{where}: {weights} learnt the classes {list(saved['classes'])}, this run "
            f"learns {list(data.classes)} (task.params.label_mode must agree)"
        )
    try:
        network.load_state_dict(saved["state_dict"])
    except RuntimeError as error:
        raise RunMismatchError(
            f"{where}: {weights} does not fit this network ({config.model.name} with "
            f"these model/features settings): {str(error).splitlines()[0]}"
        ) from error
    log.info("fold %d of %s starts from %s", fold, config.experiment, weights)


def _shifted_clip(
    waveform: np.ndarray, key: str, *, sample_rate: int, config: ShiftedValidationConfig
) -> np.ndarray:
    """``shifted_condition`` as a picklable ``(waveform, fname)`` clip condition."""
    return shifted_condition(waveform, sample_rate, config, key)


def train_fold(
    config: Config,
    fold: int,
    *,
    progress: bool = True,
    epoch_callback: Any = None,
    predict_test: bool = True,
) -> dict[str, Any]:
    """Train one fold (or return the metrics of the finished one) and write its artefacts.

    ``epoch_callback(epoch, val_accuracy)`` is called after each epoch (the tuner reports and
    prunes through it; it may raise to stop the fold, in which case nothing is written but
    the epoch checkpoint). ``predict_test=False`` skips the test-set prediction (tuning
    trials need only the validation score). The fold is locked while it trains: a second
    process training the same fold of the same experiment is refused (``RunLockedError``).
    """
    is_main = Distributed.from_environment().is_main  # the main rank holds the lock for all
    lock = RunLock(config.run_dir, f"fold{fold}", f"fold {fold} of {config.experiment}")
    with lock if is_main else contextlib.nullcontext():
        if is_main:
            for orphan in remove_orphans(config.run_dir):
                log.info("removed %s, left by a killed run", orphan)
        finished = load_fold_metrics(config, fold)
        if finished is not None:
            log.info("fold %d of %s is finished; skipping", fold, config.experiment)
            return finished | {"skipped": True}
        if is_main:
            preflight(config)
        return _train_fold(
            config, fold, progress=progress, epoch_callback=epoch_callback,
            predict_test=predict_test,
        )  # fmt: skip


@dataclass
class FoldRun:
    """One fold's training, built by :meth:`build`: its data, loaders, network, optimiser
    and the loop's state (history, best epoch so far), which :meth:`state` and
    :meth:`resume` move to and from the epoch checkpoint."""

    config: Config
    fold: int
    task: Task
    data: FoldData
    distributed: Distributed
    precision: Precision
    seed: int
    train_set: ClipDataset
    valid_set: ClipDataset
    train_loader: DataLoader
    valid_loader: DataLoader
    network: nn.Module  # the model itself (``model`` may be its data-parallel wrapper)
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    rng: np.random.Generator  # mixup draws
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"accuracy": -1.0, "loss": math.inf})
    first_epoch: int = 0
    elapsed_before: float = 0.0  # training seconds of the runs this one resumes

    @classmethod
    def build(cls, config: Config, fold: int, progress: bool) -> FoldRun:
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        seed = config.train.seed + 1000 * fold
        distributed = Distributed.from_environment()
        device = distributed.device(resolve_device(config.train.device))
        distributed.initialise(device)
        seed_everything(seed + distributed.rank)
        precision = Precision.choose(device, config.train.amp)
        task = create_task(config.task)
        data = FoldData(config, task, fold, progress and distributed.is_main)
        audio = config.audio
        train_set = ClipDataset(
            data.train,
            audio,
            data.train_targets,
            store=data.store,
            store_rows=data.train_rows,
            seed=seed,
            train=True,
            segments=SegmentSource(audio.sample_rate) if config.train.fresh_segments else None,
            synthetic=synthetic_unknown(config, data.classes),
            soft_targets=data.train_soft,
        )
        train_set.augment = build_waveform_augment(
            config.augment, task.noise_files(), mix_source=train_set.random_clip
        )
        valid_set = ClipDataset(
            data.valid, audio, data.valid_targets, store=data.store, store_rows=data.valid_rows
        )
        shard = (distributed.rank, distributed.world_size) if distributed.enabled else None
        sampler = None
        if config.train.label_quota:
            labels = data.train["label"].to_list()
            sampler = QuotaSampler(labels, config.train.label_quota, seed, shard)
        train_loader = make_loader(
            train_set,
            config.train.batch_size,
            shuffle=True,
            num_workers=config.train.num_workers,
            seed=seed,
            drop_last=len(train_set) > config.train.batch_size * distributed.world_size,
            shard=shard,
            sampler=sampler,
        )
        valid_loader = make_loader(
            valid_set,
            config.predict.batch_size,
            shuffle=False,
            num_workers=config.predict.num_workers,
            seed=seed,
        )
        context = ModelContext.of(config, data.classes)
        network = create_model(config.model.name, context, **config.model.params)
        if config.train.init_from is not None:
            warm_start(network, config, fold, data)
        network = network.to(device)
        model = distributed.wrap(network, device)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay
        )
        scheduler = warmup_cosine(
            optimizer, config.train.epochs * len(train_loader), config.train.warmup_fraction
        )
        return cls(
            config, fold, task, data, distributed, precision, seed, train_set, valid_set,
            train_loader, valid_loader, network, model, optimizer, scheduler,
            precision.scaler(), np.random.default_rng(seed),
        )  # fmt: skip

    @property
    def clips_per_epoch(self) -> int:
        sampler = self.train_loader.sampler
        return len(sampler) if isinstance(sampler, QuotaSampler) else len(self.train_set)

    def fit_epoch(self, epoch: int, progress: bool) -> float:
        """One epoch of training; the mean training loss."""
        sampler = self.train_loader.sampler
        if isinstance(sampler, DistributedSampler | QuotaSampler):
            sampler.set_epoch(epoch)
        return train_epoch(
            self.model,
            self.train_loader,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            precision=self.precision,
            config=self.config,
            rng=self.rng,
            description=f"fold {self.fold} epoch {epoch + 1}/{self.config.train.epochs}",
            progress=progress,
        )

    def evaluate(self, epoch: int, train_loss: float, seconds: float) -> float:
        """Score the validation clips, add the epoch to the history and keep the weights of
        the best epoch (accuracy, then loss); returns the validation accuracy."""
        data = self.data
        probabilities = predict_probabilities(self.network, self.valid_loader, self.precision)
        val_loss, val_accuracy = _evaluate(probabilities, data.valid_targets, data.class_to_label)
        self.history.append(
            {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "seconds": seconds,
            }
        )
        if (val_accuracy, -val_loss) > (self.best["accuracy"], -self.best["loss"]):
            weights = {k: v.detach().cpu() for k, v in self.network.state_dict().items()}
            self.best = {
                "accuracy": val_accuracy,
                "loss": val_loss,
                "epoch": epoch + 1,
                "state": copy.deepcopy(weights),
                "probabilities": probabilities,
            }
        return val_accuracy

    def _generators(self) -> tuple[dict[str, np.random.Generator], dict[str, torch.Generator]]:
        return {"mixup": self.rng, "dataset": self.train_set.rng}, {
            "loader": self.train_loader.generator
        }

    def state(self, epochs_done: int, elapsed: float) -> dict[str, Any]:
        """What the epoch checkpoint holds after ``epochs_done`` epochs."""
        return {
            "epoch": epochs_done,
            "elapsed": elapsed,
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": self.history,
            "best": self.best,
            "random": capture_random_state(*self._generators()),
        }

    def resume(self, saved: dict[str, Any]) -> None:
        """Continue from a checkpoint's ``state``."""
        self.network.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        self.history, self.best = saved["history"], saved["best"]
        self.first_epoch, self.elapsed_before = saved["epoch"], saved["elapsed"]
        if self.distributed.is_main:
            restore_random_state(saved["random"], *self._generators())
        else:  # only the main rank's generators are saved: the others draw anew
            seed_everything(self.seed + self.distributed.rank + 7919 * self.first_epoch)

    def predict(self, predict_test: bool, progress: bool) -> FoldPredictions:
        """The best epoch's OOF rows (clean and, if configured, shifted) and test table,
        each averaged over the ``predict.tta`` views."""
        config, data, audio = self.config, self.data, self.config.audio
        self.network.load_state_dict(self.best["state"])
        outputs = FoldOutputs(self.network, self.precision, config, data)
        clean = self.best["probabilities"] if not config.predict.tta else None
        oof = outputs.frame(
            data.valid, clean if clean is not None else outputs.predict(self.valid_set)
        )
        oof_shifted = None
        shifted = config.predict.shifted_validation
        if shifted.enabled:
            condition = partial(_shifted_clip, sample_rate=audio.sample_rate, config=shifted)
            shifted_set = ClipDataset(
                data.valid, audio, store=data.store, store_rows=data.valid_rows,
                condition=condition,
            )  # fmt: skip
            oof_shifted = outputs.frame(data.valid, outputs.predict(shifted_set, adapt=True))
        test, test_seconds = None, 0.0
        if predict_test and data.test is not None and self.distributed.is_main:
            test_start = time.perf_counter()
            test_set = ClipDataset(data.test, audio)
            test = outputs.frame(data.test, outputs.predict(test_set, progress, adapt=True))
            test_seconds = time.perf_counter() - test_start
        return FoldPredictions(oof, oof_shifted, test, test_seconds)

    def metrics(self, predictions: FoldPredictions, train_seconds: float) -> dict[str, Any]:
        best = self.best
        return fold_metrics(self.config, self.fold, self.data, predictions, train_seconds) | {
            "best_epoch": best["epoch"],
            "val_accuracy": best["accuracy"],
            "val_loss": best["loss"],
            "epochs": self.config.train.epochs,
            "clips_per_epoch": self.clips_per_epoch,
            "parameters": sum(p.numel() for p in self.network.parameters()),
            "device": str(self.precision.device),
            "world_size": self.distributed.world_size,
            "precision": str(self.precision.dtype).removeprefix("torch."),
        }

    def write(self, predictions: FoldPredictions, metrics: dict[str, Any]) -> None:
        """The fold folder, atomically; the best epoch's weights as ``model.pt``."""
        data = self.data

        def save_model(folder: Path) -> None:
            torch.save(
                {
                    "state_dict": self.best["state"],
                    "classes": data.classes,
                    "labels": data.labels,
                    "class_to_label": data.class_to_label.tolist(),
                },
                folder / "model.pt",
            )

        write_fold(self.config, self.fold, self.task, data, predictions, metrics, self.history,
                   save_model)  # fmt: skip


def fold_metrics(
    config: Config,
    fold: int,
    data: FoldData,
    predictions: FoldPredictions,
    train_seconds: float,
) -> dict[str, Any]:
    """What every fold's ``metrics.json`` holds whatever trained it: the clips on each side,
    the OOF accuracy (with the ``predict.tta`` views, clean and shifted) and the timings."""
    labels, truth, shifted = data.labels, data.valid["label"], predictions.oof_shifted
    return {
        "experiment": config.experiment,
        "fold": fold,
        "train_clips": data.train.height,
        "train_only_clips": data.train_only_clips,
        "pseudo_clips": data.pseudo_clips,
        "val_accuracy_tta": label_accuracy(predictions.oof, truth, labels),
        "val_accuracy_shifted": (
            None if shifted is None else label_accuracy(shifted, truth, labels)
        ),
        "valid_clips": data.valid.height,
        "test_clips": 0 if predictions.test is None else predictions.test.height,
        "train_seconds": round(train_seconds, 2),
        "test_seconds": round(predictions.test_seconds, 2),
    }


def write_fold(
    config: Config,
    fold: int,
    task: Task,
    data: FoldData,
    predictions: FoldPredictions,
    metrics: dict[str, Any],
    history: list[dict[str, float]],
    save_model: Callable[[Path], None],
) -> None:
    """A fold folder, atomically (the whole folder appears at once, or not at all):
    ``save_model(folder)`` writes the model file, then the prediction tables, history,
    data listing, config and report; ``metrics.json`` last, with every file's digest."""
    with atomic_directory(fold_dir(config, fold)) as folder:
        save_model(folder)
        atomic_write_frame(folder / "oof.parquet", predictions.oof)
        if predictions.oof_shifted is not None:
            atomic_write_frame(folder / "oof_shifted.parquet", predictions.oof_shifted)
        if predictions.test is not None:
            atomic_write_frame(folder / "test.parquet", predictions.test)
        atomic_write_frame(folder / "history.csv", pl.DataFrame(history))
        atomic_write_frame(folder / DATA_LISTING, data_listing(task.train_manifest()))
        if config.train.pseudo_labels is not None:
            shutil.copyfile(config.train.pseudo_labels, folder / PSEUDO_COPY)  # in the temp folder
        save_config(config, folder / "config.yaml")
        columns = task.report_columns()
        write_report(
            folder,
            f"{config.task.dataset_name} / {config.experiment} / fold {fold}",
            with_manifest(predictions.oof, data.valid, columns),
            data.labels,
            columns,
        )
        files = sorted(p for p in folder.iterdir() if p.is_file())
        metrics["files"] = {p.name: file_digest(p) for p in files}
        atomic_write_json(folder / "metrics.json", metrics)


class FoldPredictions(NamedTuple):
    oof: pl.DataFrame
    oof_shifted: pl.DataFrame | None
    test: pl.DataFrame | None
    test_seconds: float


@dataclass
class FeatureFoldRun:
    """One fold of a ``features`` family (``acoustic``): clip features of every clip (cached
    across folds and experiments), a classifier fitted once on the training side, then the
    same OOF, shifted-OOF and test tables and fold folder as a network's. Each clip is
    standardised with its own speaker's clips (the manifest's ``group``; test and
    pseudo-labelled clips: ``Task.speaker_of`` their file name). TTA views do not apply:
    the functionals summarise the whole clip."""

    config: Config
    fold: int
    task: Task
    data: FoldData
    model: Any
    seed: int
    history: list[dict[str, float]] = field(default_factory=list)
    valid_probabilities: np.ndarray | None = None  # class probabilities, after `fit`

    @classmethod
    def build(cls, config: Config, fold: int, progress: bool) -> FeatureFoldRun:
        if config.train.init_from is not None:
            raise RunMismatchError(
                f"train.init_from={config.train.init_from!r}: {config.model.name} is fitted "
                "once, not trained from weights; a warm start is for network families"
            )
        task = create_task(config.task)
        data = FoldData(config, task, fold, progress)
        model = create_model(
            config.model.name, ModelContext.of(config, data.classes), **config.model.params
        )
        return cls(config, fold, task, data, model, config.train.seed + 1000 * fold)

    def _features(
        self, manifest: pl.DataFrame, condition: Any = None, condition_key: str | None = None
    ) -> np.ndarray:
        audio = self.config.audio
        return clip_features(
            manifest, self.model.params.feature_set, audio.sample_rate, audio.max_samples,
            self.config.cache_dir, condition=condition, condition_key=condition_key,
            processes=extraction_processes(self.config.train.parallel_folds),
        )  # fmt: skip

    def _speakers(self, manifest: pl.DataFrame) -> list[str | None]:
        """The manifest's ``group`` for training clips; the file name's speaker for test
        and pseudo-labelled clips."""
        groups = manifest["group"] if "group" in manifest.columns else [None] * manifest.height
        return [
            group if group not in (None, "pseudo") else self.task.speaker_of(fname)
            for fname, group in zip(manifest["fname"], groups, strict=True)
        ]

    def _augmented_copies(self) -> list[np.ndarray]:
        """Features of every stored clip through the training augmentation, once per
        ``augment_copies`` (cached like the clean ones)."""
        config, data = self.config, self.data
        copies = self.model.params.augment_copies
        noise_files = self.task.noise_files()
        transform = build_waveform_augment(
            config.augment, noise_files,
            mix_source=lambda: data.store.read(random.randrange(len(data.store))),
        )  # fmt: skip
        if transform is None or copies == 0:
            return []
        augment_json = config.augment.model_dump_json()
        return [
            self._features(
                data.stored,
                AugmentedCopy(transform, config.audio.sample_rate, config.train.seed, copy),
                augmented_key(augment_json, noise_files, config.train.seed, copy),
            )
            for copy in range(copies)
        ]

    def fit(self) -> float:
        """Fit on the training side (its clean clips and their augmented copies, each copy
        standardised as a speaker group of its own) and score the validation side; the
        accuracy."""
        data, started = self.data, time.perf_counter()
        stored = self._features(data.stored)
        speakers = self._speakers(data.train)
        features, groups = [stored[data.train_rows]], list(speakers)
        for index, augmented in enumerate(self._augmented_copies()):
            features.append(augmented[data.train_rows])
            groups += [None if s is None else f"{s}#copy{index}" for s in speakers]
        targets = np.tile(data.train_targets, len(features))
        threads = torch.get_num_threads()  # the fold's share of the cores (fold_pool)
        self.model.fit(np.concatenate(features), groups, targets, self.seed, threads)
        probabilities = self.model.predict_proba(
            stored[data.valid_rows], self._speakers(data.valid)
        )
        self.valid_probabilities = probabilities
        val_loss, val_accuracy = _evaluate(probabilities, data.valid_targets, data.class_to_label)
        self.history = [
            {
                "epoch": 1,
                "train_loss": math.nan,
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "seconds": time.perf_counter() - started,
            }
        ]
        return val_accuracy

    def predict(self, predict_test: bool, progress: bool) -> FoldPredictions:
        config, data = self.config, self.data
        probability = partial(probability_frame, labels=data.labels)
        if self.valid_probabilities is None:
            raise RuntimeError("predict before fit")
        oof = probability(data.valid["fname"], self.valid_probabilities @ data.class_to_label)
        oof_shifted = None
        shifted = config.predict.shifted_validation
        if shifted.enabled:
            condition = partial(_shifted_clip, sample_rate=config.audio.sample_rate, config=shifted)
            features = self._features(data.valid, condition)
            shifted_probabilities = self.model.predict_proba(features, self._speakers(data.valid))
            oof_shifted = probability(
                data.valid["fname"], shifted_probabilities @ data.class_to_label
            )
        test, test_seconds = None, 0.0
        if predict_test and data.test is not None:
            test_start = time.perf_counter()
            features = self._features(data.test)
            test_probabilities = self.model.predict_proba(features, self._speakers(data.test))
            test = probability(data.test["fname"], test_probabilities @ data.class_to_label)
            test_seconds = time.perf_counter() - test_start
        return FoldPredictions(oof, oof_shifted, test, test_seconds)

    def metrics(self, predictions: FoldPredictions, train_seconds: float) -> dict[str, Any]:
        last = self.history[-1]
        return fold_metrics(self.config, self.fold, self.data, predictions, train_seconds) | {
            "best_epoch": 1,
            "val_accuracy": last["val_accuracy"],
            "val_loss": last["val_loss"],
            "epochs": 1,
            "clips_per_epoch": self.data.train.height,
            "parameters": self.model.parameters,
            "device": "cpu",
            "world_size": 1,
            "precision": "float32",
        }

    def write(self, predictions: FoldPredictions, metrics: dict[str, Any]) -> None:
        """The fold folder, atomically; the fitted classifier as ``model.pkl``."""
        data = self.data

        def save_model(folder: Path) -> None:
            saved = {
                "model": self.model,
                "classes": data.classes,
                "labels": data.labels,
                "class_to_label": data.class_to_label.tolist(),
                "task": self.config.task.name,
            }
            with open(folder / FEATURE_MODEL, "wb") as stream:
                pickle.dump(saved, stream, protocol=pickle.HIGHEST_PROTOCOL)

        write_fold(self.config, self.fold, self.task, data, predictions, metrics, self.history,
                   save_model)  # fmt: skip


FEATURE_MODEL = "model.pkl"  # a features family's fold model (a network's: model.pt)


def _train_feature_fold(
    config: Config, fold: int, *, progress: bool, epoch_callback: Any, predict_test: bool
) -> dict[str, Any]:
    """A ``features`` family's fold: build, fit once, predict, write (no checkpoint: the
    fold is one fit: an interrupted one is simply fitted again)."""
    started = time.perf_counter()
    run = FeatureFoldRun.build(config, fold, progress)
    val_accuracy = run.fit()
    if progress:
        tqdm.write(f"fold {fold}: val acc {val_accuracy:.4f}")
    if epoch_callback is not None:
        epoch_callback(0, val_accuracy)
    train_seconds = time.perf_counter() - started
    predictions = run.predict(predict_test, progress)
    metrics = run.metrics(predictions, train_seconds)
    run.write(predictions, metrics)
    return metrics


def _train_fold(
    config: Config,
    fold: int,
    *,
    progress: bool,
    epoch_callback: Any,
    predict_test: bool,
) -> dict[str, Any]:
    """Build, resume from the checkpoint if there is one, fit and evaluate each epoch
    (checkpointing after each), predict with the best epoch, write the fold (an unfinished
    fold: ``train_fold`` checked). A ``features`` family is fitted once instead."""
    if model_trainer(config.model.name) == "features":
        return _train_feature_fold(
            config, fold, progress=progress, epoch_callback=epoch_callback,
            predict_test=predict_test,
        )  # fmt: skip
    started = time.perf_counter()
    run = FoldRun.build(config, fold, progress)
    is_main = run.distributed.is_main
    progress = progress and is_main
    checkpoint = FoldCheckpoint(
        config.run_dir / "checkpoints" / f"fold{fold}.pt",
        config.identity(),
        enabled=config.train.checkpoint,
    )
    saved = checkpoint.load()
    if saved is not None:
        run.resume(saved)
        log.info("fold %d of %s resumes after epoch %d (%s)", fold, config.experiment,
                 run.first_epoch, checkpoint.path)  # fmt: skip
    for epoch in range(run.first_epoch, config.train.epochs):
        epoch_start = time.perf_counter()
        train_loss = run.fit_epoch(epoch, progress)
        val_accuracy = run.evaluate(epoch, train_loss, time.perf_counter() - epoch_start)
        if progress:
            last = run.history[-1]
            tqdm.write(
                f"fold {fold} epoch {epoch + 1:>2}: train loss {train_loss:.4f}  "
                f"val loss {last['val_loss']:.4f}  val acc {val_accuracy:.4f}"
            )
        if is_main:
            elapsed = run.elapsed_before + time.perf_counter() - started
            checkpoint.save(run.state(epoch + 1, elapsed))
        if epoch_callback is not None:
            epoch_callback(epoch, val_accuracy)
    train_seconds = run.elapsed_before + time.perf_counter() - started

    predictions = run.predict(predict_test, progress)
    metrics = run.metrics(predictions, train_seconds)
    if is_main:
        run.write(predictions, metrics)
        checkpoint.remove()
    run.distributed.barrier()
    return metrics


def write_experiment_report(
    config: Config, task: Task | None = None, manifest: pl.DataFrame | None = None
) -> dict[str, Any] | None:
    """The report over the experiment's out-of-fold predictions (all folds), in its run
    folder; None (nothing written) while a fold is unfinished. ``task`` and its train
    ``manifest`` are built from the config unless given."""
    if not all((fold_dir(config, k) / "metrics.json").is_file() for k in range(config.folds.k)):
        return None
    task = task or create_task(config.task)
    manifest = manifest if manifest is not None else task.train_manifest()
    title = f"{config.task.dataset_name} / {config.experiment} (out of fold)"
    return report_oof(config.run_dir, title, manifest, task.labels, task.report_columns())
