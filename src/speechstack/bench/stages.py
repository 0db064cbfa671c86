"""The measurements: featurisation, data pipeline, training-loop overhead, inference.

Every stage returns a ``Stage`` whose checks compare numbers measured side by side in one
process, interleaved and repeated (best of N), so a busy machine slows all candidates alike.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from speechstack.augment import build_waveform_augment
from speechstack.bench.report import Check, Stage, interleaved, number, rate, summary
from speechstack.config import Config, FeatureConfig, load_config
from speechstack.data import (
    ClipDataset,
    SegmentSource,
    WaveformStore,
    make_loader,
    prediction_loader,
)
from speechstack.features import AMIN, LogMel, frame_count
from speechstack.models import ModelContext, create_model
from speechstack.tasks import Task, create_task
from speechstack.train import Precision, predict_probabilities, train_epoch, warmup_cosine

KAGGLE_TEST_CLIPS = 158_538  # clips in the Kaggle TF speech test set


@dataclass
class Setup:
    """The experiment the pipeline stages run: the default config on the benchmark data, the
    task's train manifest (every row a training clip) and its decoded-waveform store."""

    config_path: Path
    overrides: list[str]
    config: Config
    task: Task
    manifest: pl.DataFrame
    targets: np.ndarray
    store: WaveformStore

    @classmethod
    def load(
        cls, config_path: Path, data_dir: Path, work_dir: Path, overrides: Sequence[str] = ()
    ) -> Setup:
        """The config at ``config_path`` (plus ``overrides``) on ``data_dir``; caches and runs
        go to ``work_dir``."""
        paths = [
            f"task.data_dir={data_dir}",
            f"cache_dir={work_dir / 'cache'}",
            f"runs_dir={work_dir / 'runs'}",
        ]
        return cls.from_config(config_path, [*paths, *overrides])

    @classmethod
    def from_config(
        cls, config_path: Path, overrides: list[str], factor: int = 1, base_clips: int | None = None
    ) -> Setup:
        """As ``load``; the manifest is the first ``base_clips`` rows (or all) repeated
        ``factor`` times (the scaling benchmark's larger data: the same clips again)."""
        config = load_config(config_path, overrides)
        task = create_task(config.task)
        manifest = task.train_manifest()
        if base_clips is not None:
            manifest = manifest.head(base_clips)
        manifest = pl.concat([manifest] * factor)
        index = {name: i for i, name in enumerate(task.classes())}
        targets = manifest["target"].replace_strict(index).to_numpy()
        audio = config.audio
        store = WaveformStore.build(
            manifest,
            audio.sample_rate,
            audio.max_samples,
            config.cache_dir,
            progress=False,
            variable_length=audio.variable_length,
        )
        return cls(Path(config_path), overrides, config, task, manifest, targets, store)

    def model(self, device: torch.device) -> nn.Module:
        """The config's model (the default CNN), freshly initialised, on ``device``."""
        config = self.config
        context = ModelContext.of(config, self.task.classes())
        return create_model(config.model.name, context, **config.model.params).to(device)

    def train_dataset(self, clips: int | None = None, augment: bool = True) -> ClipDataset:
        """Training clips (the first ``clips`` rows, or all) from the store, augmented as in
        ``train_fold``."""
        total = self.manifest.height
        rows = np.arange(total if clips is None else min(clips, total))
        audio = self.config.audio
        dataset = ClipDataset(
            self.manifest[rows.tolist()],
            audio,
            self.targets[rows],
            store=self.store,
            store_rows=rows,
            seed=self.config.train.seed,
            train=True,
            segments=SegmentSource(audio.sample_rate) if self.config.train.fresh_segments else None,
        )
        if augment:
            dataset.augment = build_waveform_augment(
                self.config.augment, self.task.noise_files(), mix_source=dataset.random_clip
            )
        return dataset

    def train_loader(self, clips: int | None = None, augment: bool = True) -> DataLoader:
        """The training loader of ``train_fold``: shuffled, seeded, the default workers."""
        train = self.config.train
        return make_loader(
            self.train_dataset(clips, augment),
            train.batch_size,
            shuffle=True,
            num_workers=train.num_workers,
            seed=train.seed,
            drop_last=True,
        )


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------
# 1. Featurisation


def librosa_log_mel(waveform: np.ndarray, config: FeatureConfig, sample_rate: int) -> np.ndarray:
    """The reference: ``librosa.feature.melspectrogram`` + ``power_to_db`` of one clip."""
    import librosa

    power = librosa.feature.melspectrogram(
        y=waveform,
        sr=sample_rate,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        win_length=config.win_length,
        window="hann",
        center=True,
        pad_mode="constant",
        power=2.0,
        n_mels=config.n_mels,
        fmin=config.f_min,
        fmax=config.f_max,
    )
    return librosa.power_to_db(power, ref=1.0, amin=AMIN, top_db=None)


def plain_log_mel(log_mel: LogMel, waveform: torch.Tensor) -> torch.Tensor:
    """The straightforward torch version (this package's LogMel before it was tuned):
    one ``torch.stft`` of the batch, ``re² + im²``, a dense filterbank matmul, ``10·log10``."""
    spectrum = torch.stft(
        waveform,
        n_fft=log_mel.n_fft,
        hop_length=log_mel.hop_length,
        win_length=log_mel.win_length,
        window=torch.hann_window(log_mel.win_length),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    power = spectrum.real.square() + spectrum.imag.square()
    return 10.0 * torch.log10(torch.matmul(log_mel.filterbank, power).clamp_min(AMIN))


def bench_featurisation(
    clips: int = 512,
    rounds: int = 5,
    threads: int = 2,
    sample_rate: int = 16_000,
    config: FeatureConfig | None = None,
    seed: int = 0,
) -> Stage:
    """LogMel vs per-clip librosa (warmed up) vs one bare ``torch.stft`` of the batch (the
    floor), on ``clips`` one-second clips, ``threads`` threads for torch and for numpy's BLAS."""
    from threadpoolctl import threadpool_limits

    config = config or FeatureConfig()
    stage = Stage("featurisation", "featurisation")
    waveforms = (np.random.default_rng(seed).standard_normal((clips, sample_rate)) * 0.1).astype(
        np.float32
    )
    batch = torch.from_numpy(waveforms)
    log_mel = LogMel(config, sample_rate)
    window = torch.hann_window(config.win_length)
    chunk = max(1, LogMel.CPU_CHUNK_FRAMES // frame_count(sample_rate, config.hop_length))

    def stft(part: torch.Tensor) -> torch.Tensor:
        return torch.stft(
            part,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            win_length=config.win_length,
            window=window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )

    def reference() -> None:
        for waveform in waveforms:
            librosa_log_mel(waveform, config, sample_rate)

    functions = {
        "logmel": lambda: log_mel(batch),
        "librosa": reference,
        "stft": lambda: stft(batch),
        "stft_chunked": lambda: [stft(part) for part in batch.split(chunk)],
        "plain_torch": lambda: plain_log_mel(log_mel, batch),
    }
    blas_threads = threadpool_limits(limits=threads, user_api="blas")
    with blas_threads, torch_threads(threads), torch.inference_mode():
        start = time.perf_counter()
        librosa_log_mel(waveforms[0], config, sample_rate)
        first_call = time.perf_counter() - start
        for name, function in functions.items():
            if name != "librosa":
                function()  # warm-up
        reference()
        seconds = interleaved(functions, rounds)
        ours = log_mel(batch[:8]).numpy()
    expected = np.stack([librosa_log_mel(w, config, sample_rate) for w in waveforms[:8]])
    audible = expected > -80.0
    throughput = {name: rate(clips, min(values)) for name, values in seconds.items()}
    ratios = {
        "logmel_vs_librosa": throughput["logmel"] / throughput["librosa"],
        "logmel_vs_stft": throughput["logmel"] / throughput["stft"],
        "logmel_vs_stft_chunked": throughput["logmel"] / throughput["stft_chunked"],
        "plain_torch_vs_librosa": throughput["plain_torch"] / throughput["librosa"],
    }
    stage.measured = {
        "clips": clips,
        "rounds": rounds,
        "threads": threads,
        "chunk_clips": chunk,
        "clips_per_second": throughput,
        "seconds": {name: summary(values) for name, values in seconds.items()},
        "ratios": ratios,
        "librosa_first_call_seconds": first_call,
        "max_abs_db_difference_vs_librosa": float(np.abs(ours - expected)[audible].max()),
    }
    stage.lines = [
        (f"LogMel (this package), batch of {clips}", number(throughput["logmel"], "clips/s")),
        (
            "librosa melspectrogram + power_to_db, per clip",
            number(throughput["librosa"], "clips/s"),
        ),
        ("bare torch.stft, one call on the batch (floor)", number(throughput["stft"], "clips/s")),
        (
            f"bare torch.stft in {chunk}-clip chunks (as LogMel)",
            number(throughput["stft_chunked"], "clips/s"),
        ),
        (
            "plain torch log-mel (stft, |.|², matmul, log)",
            number(throughput["plain_torch"], "clips/s"),
        ),
        ("LogMel / stft in chunks (info)", number(ratios["logmel_vs_stft_chunked"], "x")),
        ("librosa first call (not timed above)", number(first_call, "s")),
        (
            "max |LogMel - librosa| above -80 dB",
            f"{stage.measured['max_abs_db_difference_vs_librosa']:.1e} dB",
        ),
    ]
    stage.checks = [
        Check("LogMel / librosa", ratios["logmel_vs_librosa"], 2.0, "x"),
        Check("LogMel / bare torch.stft", ratios["logmel_vs_stft"], 0.75, "x"),
    ]
    return stage


# ---------------------------------------------------------------------------------------
# 2. Data pipeline


def bench_loader(setup: Setup, epochs: int = 3, transform_clips: int = 256) -> Stage:
    """Clips/s the training DataLoader delivers (store + default augmentation + batching) at
    the default worker count; the first epoch (one-time costs) is reported apart."""
    config = setup.config
    stage = Stage("data_pipeline", "data pipeline")

    def epoch_rates(loader: DataLoader, count: int) -> list[float]:
        rates = []
        for _ in range(count):
            clips, start = 0, time.perf_counter()
            for waveform, _target in loader:
                clips += waveform.shape[0]
            rates.append(rate(clips, time.perf_counter() - start))
        return rates

    augmented = epoch_rates(setup.train_loader(), max(epochs, 1))
    plain = epoch_rates(setup.train_loader(augment=False), max(epochs, 1))
    steady = max(augmented[1:] or augmented)
    stage.measured = {
        "clips": setup.manifest.height,
        "batch_size": config.train.batch_size,
        "num_workers": config.train.num_workers,
        "epochs": epochs,
        "clips_per_second": steady,
        "clips_per_second_by_epoch": augmented,
        "clips_per_second_without_augmentation": max(plain[1:] or plain),
        "augment_microseconds_per_clip": transform_costs(setup, transform_clips),
    }
    stage.lines = [
        (
            f"first epoch (one-time costs), {setup.manifest.height} clips",
            number(augmented[0], "clips/s"),
        ),
        (
            "without augmentation",
            number(stage.measured["clips_per_second_without_augmentation"], "clips/s"),
        ),
    ]
    for name, cost in stage.measured["augment_microseconds_per_clip"].items():
        stage.lines.append((f"  {name} at p=1", f"{cost:,.0f} µs/clip"))
    stage.checks = [
        Check(f"loader, {config.train.num_workers} workers, augmented", steady, 500.0, "clips/s")
    ]
    return stage


def transform_costs(setup: Setup, clips: int) -> dict[str, float]:
    """Microseconds per clip of each waveform transform of the default pipeline at p=1."""
    import copy
    import random

    rows = min(clips, len(setup.store))
    waveforms = np.array(setup.store.waveforms[:rows], dtype=np.float32)
    augment = build_waveform_augment(
        setup.config.augment,
        setup.task.noise_files(),
        mix_source=lambda: waveforms[random.randrange(rows)],
    )
    if augment is None:
        return {}
    random.seed(0)
    costs = {}
    for name, transform in augment.transforms:
        transform = copy.copy(transform)
        transform.p = 1.0
        transform(waveforms[0], setup.config.audio.sample_rate)  # decode noise files etc.
        start = time.perf_counter()
        for waveform in waveforms:
            transform(waveform, setup.config.audio.sample_rate)
        costs[name] = (time.perf_counter() - start) / rows * 1e6
    return costs


# ---------------------------------------------------------------------------------------
# 3. Training-loop overhead


def bench_train_overhead(
    setup: Setup, rounds: int = 3, max_batches: int | None = None, device: str = "cpu"
) -> Stage:
    """Seconds per batch of ``train.train_epoch`` (loader, augmentation, mixup, loss, clip,
    scheduler, ``loss.item()``) vs the bare forward/backward/step of the same model on the
    same (already loaded) batches."""
    config = setup.config
    stage = Stage("training_overhead", "training-loop overhead")
    torch_device = torch.device(device)
    batch_size = config.train.batch_size
    clips = None if max_batches is None else max_batches * batch_size
    loader = setup.train_loader(clips)
    torch.manual_seed(config.train.seed)
    model = setup.model(torch_device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay
    )
    scheduler = warmup_cosine(optimizer, (rounds + 1) * len(loader), config.train.warmup_fraction)
    precision = Precision.choose(torch_device, config.train.amp)
    scaler = precision.scaler()
    rng = np.random.default_rng(config.train.seed)
    batches = [(waveform.to(torch_device), target.to(torch_device)) for waveform, target in loader]

    def full_epoch() -> None:
        train_epoch(
            model=model,
            loader=loader,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            precision=precision,
            config=config,
            rng=rng,
            description="bench",
            progress=False,
        )

    def bare_epoch() -> None:
        model.train()
        for waveform, target in batches:
            with precision.autocast():
                loss = F.cross_entropy(
                    model(waveform).float(), target, label_smoothing=config.train.label_smoothing
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    def loader_epoch() -> None:
        for _ in loader:
            pass

    bare_epoch()  # warm-up: first-iteration allocations, optimizer state
    seconds = interleaved(
        {"full": full_epoch, "bare": bare_epoch, "loader": loader_epoch},
        rounds,
        lambda: synchronize(torch_device),
    )
    per_batch = {name: min(values) / len(batches) for name, values in seconds.items()}
    overhead = per_batch["full"] / per_batch["bare"] - 1.0
    # What the loop adds beyond the model's step and the loader's own work (decoding and
    # the waveform augmentation, which run in this process with 0 workers: deliberate
    # work for unseen speakers, measured per transform in stage 2)
    loop_overhead = per_batch["full"] / (per_batch["bare"] + per_batch["loader"]) - 1.0
    stage.measured = {
        "device": str(torch_device),
        "model": config.model.name,
        "batches": len(batches),
        "batch_size": batch_size,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "seconds_per_batch": per_batch,
        "seconds": {name: summary(values) for name, values in seconds.items()},
        "overhead": overhead,
        "loop_overhead_beyond_loader": loop_overhead,
        "loader_share_of_full_loop": per_batch["loader"] / per_batch["full"],
        "training_clips_per_second": rate(batch_size, per_batch["full"]),
    }
    stage.lines = [
        (
            f"full loop (train_epoch), {len(batches)} batches of {batch_size}",
            number(per_batch["full"] * 1000, "ms") + "/batch",
        ),
        ("bare forward/backward/step", number(per_batch["bare"] * 1000, "ms") + "/batch"),
        (
            "loader alone (decode + augmentation + batching)",
            number(per_batch["loader"] * 1000, "ms") + "/batch",
        ),
        ("full loop over the bare step", f"{overhead * 100:+.1f}%"),
        (
            "training throughput (full loop)",
            number(stage.measured["training_clips_per_second"], "clips/s"),
        ),
    ]
    stage.checks = [
        Check(
            "loop overhead beyond the step and the loader",
            loop_overhead * 100,
            10.0,
            "%",
            at_least=False,
        )
    ]
    return stage


# ---------------------------------------------------------------------------------------
# 4. Inference


def available_devices() -> list[torch.device]:
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    return devices


def bench_inference(
    setup: Setup,
    rounds: int = 3,
    max_clips: int | None = None,
    devices: list[torch.device] | None = None,
) -> Stage:
    """Clips/s of batched prediction with the default model, decoding each clip from disk as
    ``train_fold`` predicts the test set; the decode-only and model-only rates show which
    of the two bounds it. On every available device (CPU, and CUDA when present)."""
    config = setup.config
    stage = Stage("inference", "inference")
    manifest = setup.task.test_manifest()
    source = "test set"
    if manifest is None:  # Speech Commands v0.02 has no test folder: time the train clips
        manifest, source = setup.manifest, "train clips (the data has no test set)"
    if max_clips is not None:
        manifest = manifest.head(max_clips)
    loader = prediction_loader(manifest, config)
    batches = [windows for windows, _, _ in loader]
    clips = manifest.height
    stage.measured = {
        "clips": clips,
        "source": source,
        "batch_size": config.predict.batch_size,
        "num_workers": config.predict.num_workers,
        "devices": {},
    }
    stage.lines = [(f"{clips} clips from the {source}, batches of {config.predict.batch_size}", "")]
    for device in devices or available_devices():
        torch.manual_seed(0)
        model = setup.model(device).eval()
        precision = Precision.choose(device, config.train.amp)
        on_device = [waveform.to(device) for waveform in batches]

        def model_only(
            model: nn.Module = model, on_device: list = on_device, precision: Precision = precision
        ) -> None:
            with torch.inference_mode(), precision.autocast():
                for waveform in on_device:
                    torch.softmax(model(waveform).float(), dim=1).cpu()

        functions = {
            "predict": lambda model=model, precision=precision: predict_probabilities(
                model, loader, precision
            ),
            "decode_only": lambda: [None for _ in loader],
            "model_only": model_only,
        }
        model_only()  # warm-up (cuDNN autotuning, first allocations)
        seconds = interleaved(functions, rounds, lambda device=device: synchronize(device))
        throughput = {name: rate(clips, min(values)) for name, values in seconds.items()}
        projected = KAGGLE_TEST_CLIPS / throughput["predict"]
        stage.measured["devices"][device.type] = {
            "precision": str(precision.dtype).removeprefix("torch."),
            "clips_per_second": throughput,
            "seconds": {name: summary(values) for name, values in seconds.items()},
            "projected_kaggle_test_seconds": projected,
        }
        name = device.type.upper()
        stage.lines += [
            (
                f"{name}: decode + model (predict_probabilities)",
                number(throughput["predict"], "clips/s"),
            ),
            (
                f"{name}:   decode only / model only",
                f"{number(throughput['decode_only'])} / {number(throughput['model_only'])} clips/s",
            ),
            (
                f"{name}: projected for {KAGGLE_TEST_CLIPS:,} Kaggle test clips",
                f"{projected / 60:.1f} min",
            ),
        ]
        stage.checks.append(Check(f"{name} prediction", throughput["predict"], 265.0, "clips/s"))
    return stage
