"""The benchmark suite: ``python -m speechstack.bench`` (``make bench``).

Seven measurements, each against a target, all taken side by side in one run (interleaved,
best of N), so ratios hold on a busy machine:

1. featurisation   LogMel vs per-clip librosa and vs a bare ``torch.stft`` (the floor)
2. data pipeline   clips/s from the training DataLoader (store + augmentation + batching)
3. training loop   seconds per batch of ``train_epoch`` vs the bare forward/backward/step
                   plus the loader's own work (what the loop itself adds)
4. inference       clips/s of batched prediction from disk; projected Kaggle test time
5. deployment      the default CNN's folds and the student: PyTorch vs ONNX vs ONNX int8
                   clips/s; the shipped student's size and one-thread latency
6. scaling         epoch time and peak memory at 1x, 2x, 4x the data (a process per size)
7. end to end      ``make demo`` in a temporary folder (run first)

Prints a table and writes ``bench/results.json`` (atomically). Stages 1-6 run on the demo
data that ``make demo`` generated (generated once more only with ``--skip-demo``), unless
``--data`` names a dataset.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from speechstack.bench.report import Check, Stage, format_report

__all__ = ["Check", "Sizes", "Stage", "format_report", "main", "run_benchmarks"]

DEFAULT_OUT = Path("bench/results.json")
DEFAULT_CONFIG = Path("configs/speech_commands/cnn.yaml")
DEMO_DATA = Path("demo/data/speech_commands")  # where bench_demo's make demo writes its data


@dataclass(frozen=True)
class Sizes:
    """How much each stage measures: ``full`` for the real run, ``quick`` for a smoke run."""

    feature_clips: int = 512
    feature_rounds: int = 3
    loader_epochs: int = 3
    overhead_rounds: int = 4
    overhead_batches: int | None = 10  # None: one whole epoch of the data
    inference_rounds: int = 3
    inference_clips: int | None = None  # None: the whole test set
    deploy_rounds: int = 3
    deploy_clips: int = 256
    deploy_folds: int | None = None  # None: the config's folds.k
    scaling_factors: tuple[int, ...] = (1, 2, 4)
    scaling_base_clips: int | None = None  # None: the whole train manifest is 1x
    demo_speakers: int = 60  # generated data when --data is not given
    demo_test_clips: int = 600

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            feature_clips=32,
            feature_rounds=2,
            loader_epochs=2,
            overhead_rounds=1,
            overhead_batches=2,
            inference_rounds=1,
            inference_clips=32,
            deploy_rounds=1,
            deploy_clips=16,
            deploy_folds=2,
            scaling_factors=(1, 2),
            scaling_base_clips=64,
            demo_speakers=6,
            demo_test_clips=32,
        )


def repo_root() -> Path:
    """The source checkout: the current folder when it holds the Makefile, else the folder
    above ``src/`` of this (editable) install."""
    here = Path.cwd()
    if (here / "Makefile").is_file():
        return here
    return Path(__file__).resolve().parents[3]


def machine() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def generate_data(folder: Path, sizes: Sizes) -> Path:
    from speechstack.synth import generate_speech_commands

    return generate_speech_commands(
        folder,
        speakers=sizes.demo_speakers,
        test_clips=sizes.demo_test_clips,
        test_speakers=16 if sizes.demo_speakers >= 16 else 2,
        noise_seconds=40.0 if sizes.demo_speakers >= 16 else 5.0,
        seed=0,
        progress=False,
    )


def run_benchmarks(
    data_dir: Path | None = None,
    *,
    config_path: Path | None = None,
    sizes: Sizes | None = None,
    skip_demo: bool = False,
    work_dir: Path | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> tuple[list[Stage], dict[str, Any]]:
    """Run every stage; returns the stages and the JSON-ready results.

    ``threads``: torch threads for every stage (default: 2 for featurisation, as its targets
    are set, and torch's default elsewhere); ``make demo`` runs with the environment's."""
    started = time.perf_counter()  # the whole run's clock, torch's import included
    from speechstack.bench.deploy import bench_deploy
    from speechstack.bench.processes import bench_demo, bench_scaling
    from speechstack.bench.stages import (
        Setup,
        bench_featurisation,
        bench_inference,
        bench_loader,
        bench_train_overhead,
        torch_threads,
    )

    sizes = sizes or Sizes()
    root = repo_root()
    config_path = config_path or root / DEFAULT_CONFIG
    info: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine_at_start": machine(),
        "sizes": dataclasses.asdict(sizes),
    }

    def say(text: str) -> None:
        if progress:
            print(f"[bench {time.perf_counter() - started:6.1f} s] {text}", file=sys.stderr)

    with (
        tempfile.TemporaryDirectory(prefix="speechstack-bench-", dir=work_dir) as temp,
        torch_threads(threads),
    ):
        temp_dir = Path(temp)
        demo_stage = None
        if not skip_demo:
            # First, so that the demo data it generates feeds the other stages too.
            say("7/7 make demo, run first (minutes); its demo data then feeds stages 1-6")
            demo_stage = bench_demo(root, temp_dir)
        demo_data = temp_dir / DEMO_DATA
        if data_dir is not None:
            info["data"] = {"source": str(data_dir)}
        elif (demo_data / "train" / "audio").is_dir():
            data_dir = demo_data
            info["data"] = {"source": "generated by make demo"}
        else:
            say(f"generating demo data ({sizes.demo_speakers} speakers) in a temporary folder")
            data_start = time.perf_counter()
            data_dir = generate_data(temp_dir / "data", sizes)
            info["data"] = {
                "source": "generated",
                "speakers": sizes.demo_speakers,
                "seconds": time.perf_counter() - data_start,
            }
        stages: list[Stage] = []
        say("1/7 featurisation")
        stages.append(bench_featurisation(sizes.feature_clips, sizes.feature_rounds, threads or 2))
        say("decoding the clips into the waveform store")
        setup = Setup.load(Path(config_path), Path(data_dir), temp_dir)
        info["data"]["train_clips"] = setup.manifest.height
        say("2/7 data pipeline")
        stages.append(bench_loader(setup, sizes.loader_epochs))
        say("3/7 training-loop overhead")
        stages.append(bench_train_overhead(setup, sizes.overhead_rounds, sizes.overhead_batches))
        say("4/7 inference")
        stages.append(bench_inference(setup, sizes.inference_rounds, sizes.inference_clips))
        say("5/7 deployment (ONNX export, int8, the student)")
        deploy_dir = temp_dir / "deploy"
        deploy_dir.mkdir()
        stages.append(
            bench_deploy(
                setup, deploy_dir, sizes.deploy_rounds, sizes.deploy_clips, sizes.deploy_folds
            )
        )
        say("6/7 scaling (one process per size)")
        stages.append(
            bench_scaling(setup, sizes.scaling_factors, sizes.scaling_base_clips, threads)
        )
        stages.append(demo_stage or Stage("demo", "end to end (make demo)", skipped="--skip-demo"))
    seconds = time.perf_counter() - started
    total = Stage("total", "whole benchmark", measured={"seconds": seconds})
    total.lines = [("wall time, all stages", f"{seconds / 60:.1f} min")]
    if not skip_demo:  # the target covers the full run, make demo included
        total.checks = [Check("make bench wall time", seconds, 600.0, "s", at_least=False)]
    stages.append(total)
    checks = [check for stage in stages for check in stage.checks]
    info |= {
        "seconds": seconds,
        "machine_at_end": machine(),
        "stages": {stage.key: stage.as_dict() for stage in stages},
        "checks_passed": sum(check.passed for check in checks),
        "checks_total": len(checks),
        "passed": all(check.passed for check in checks),
    }
    return stages, info


def header(info: dict[str, Any]) -> str:
    start, end = info["machine_at_start"], info["machine_at_end"]
    load = [round(x, 1) for x in start["load_average"] or []]
    load_end = [round(x, 1) for x in end["load_average"] or []]
    return (
        f"speechstack bench  {info['created']}  {info['seconds'] / 60:.1f} min  "
        f"{start['cpu_count']} CPUs, torch {start['torch']} ({start['torch_threads']} threads), "
        f"CUDA: {start['cuda'] or 'none'}\n"
        f"load average at start {load}, at end {load_end} (numbers on a busy machine are "
        "noisy; the ratios are measured side by side)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m speechstack.bench",
        description="Benchmark featurisation, data loading, the training loop, inference, "
        "scaling and make demo against their targets.",
    )
    parser.add_argument("--data", type=Path, help="dataset folder (default: generate demo data)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON file")
    parser.add_argument("--config", type=Path, help=f"experiment config (default {DEFAULT_CONFIG})")
    parser.add_argument("--skip-demo", action="store_true", help="do not time make demo")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads for every stage (default: 2 for featurisation, torch's default "
        "for the rest)",
    )
    parser.add_argument(
        "--warm-up",
        action="store_true",
        help="only compile librosa's numba kernels (its reference's first call, ~35 s on a "
        "new venv; numba caches them in the venv) and exit: `make bench` does it once per venv",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and no make demo: a smoke run, not numbers to compare with the targets",
    )
    return parser


def warm_up() -> int:
    """Call the librosa reference once, so that numba compiles (and caches) its kernels."""
    import numpy as np

    from speechstack.bench.stages import librosa_log_mel
    from speechstack.config import FeatureConfig

    start = time.perf_counter()
    librosa_log_mel(np.zeros(16_000, np.float32), FeatureConfig(), 16_000)
    print(f"librosa reference compiled in {time.perf_counter() - start:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from speechstack.artifacts import atomic_write_json

    args = build_parser().parse_args(argv)
    if args.warm_up:
        return warm_up()
    if args.data is not None and not (args.data / "train" / "audio").is_dir():
        message = f"error: {args.data} is not a Speech Commands folder (no train/audio)"
        print(message, file=sys.stderr)
        return 2
    stages, info = run_benchmarks(
        args.data,
        config_path=args.config,
        sizes=Sizes.quick() if args.quick else Sizes(),
        skip_demo=args.skip_demo or args.quick,
        threads=args.threads,
    )
    info["quick"] = args.quick
    print(format_report(stages, header(info)))
    atomic_write_json(args.out, info)
    print(f"results written to {args.out}")
    return 0 if info["passed"] else 1
