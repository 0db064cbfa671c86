"""The benchmarks that run in child processes: one training epoch per data size (scaling of
time and peak memory), and ``make demo`` end to end in a temporary folder."""

from __future__ import annotations

import multiprocessing
import os
import re
import subprocess
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from speechstack.bench.report import Check, Stage, number, rate
from speechstack.bench.stages import Setup

DEMO_TARGET_SECONDS = 600.0
STAMP = ".venv/.installed"  # the Makefile's marker of an installed .venv
STAMP_INPUTS = ("requirements.lock", "pyproject.toml")  # what the marker must be newer than
DEMO_LINKS = ("Makefile", "configs", *STAMP_INPUTS)


# ---------------------------------------------------------------------------------------
# 5. Scaling


class MemorySampler:
    """Samples this process's resident memory (``/proc/self/status``) every ``interval``
    seconds in a thread: peak total RSS, and its anonymous (heap) and file-backed parts
    (memory-mapped files, shared libraries). Linux only; elsewhere the peaks stay None."""

    FIELDS: ClassVar[dict[str, str]] = {
        "VmRSS": "rss",
        "RssAnon": "anonymous",
        "RssFile": "file",
        "VmHWM": "high_water",
    }

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peaks: dict[str, float | None] = dict.fromkeys(self.FIELDS.values())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def read() -> dict[str, float]:
        """Current values in MB (empty where /proc is not available)."""
        values = {}
        try:
            lines = Path("/proc/self/status").read_text().splitlines()
        except OSError:
            return values
        for line in lines:
            key, _, rest = line.partition(":")
            if key in MemorySampler.FIELDS:
                values[MemorySampler.FIELDS[key]] = int(rest.split()[0]) / 1024  # kB -> MB
        return values

    def sample(self) -> None:
        for name, value in self.read().items():
            peak = self.peaks[name]
            self.peaks[name] = value if peak is None else max(peak, value)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> MemorySampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def scaling_epoch(spec: dict[str, Any]) -> dict[str, Any]:
    """One training epoch of the default model on ``spec['factor']`` x the data, in this
    process (run in a fresh child per size): epoch seconds and peak memory (MB).

    ``spec``: config_path, overrides, factor, base_clips, threads. The store's cache file
    must exist already (the parent decodes it), so the child only memory-maps it."""
    import torch

    from speechstack.train import Precision, train_epoch, warmup_cosine

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    with MemorySampler() as sampler:
        setup = Setup.from_config(
            Path(spec["config_path"]), spec["overrides"], spec["factor"], spec["base_clips"]
        )
        config = setup.config
        loader = setup.train_loader()
        device = torch.device("cpu")
        torch.manual_seed(config.train.seed)
        model = setup.model(device)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay
        )
        precision = Precision.choose(device, config.train.amp)
        before_epoch = MemorySampler.read()
        start = time.perf_counter()
        train_epoch(
            model=model,
            loader=loader,
            optimizer=optimizer,
            scheduler=warmup_cosine(optimizer, len(loader), config.train.warmup_fraction),
            scaler=precision.scaler(),
            precision=precision,
            config=config,
            rng=np.random.default_rng(config.train.seed),
            description="bench",
            progress=False,
        )
        seconds = time.perf_counter() - start
    return {
        "factor": spec["factor"],
        "clips": setup.manifest.height,
        "batches": len(loader),
        "epoch_seconds": seconds,
        "store_megabytes": setup.store.waveforms.nbytes / 2**20,
        "memory_before_epoch_mb": before_epoch,
        "peak_mb": sampler.peaks,
    }


# Modules every scaling child needs, imported once by the forkserver that forks the children
# (~10 s of imports per child otherwise); nothing of torch runs before the fork.
CHILD_PRELOAD = ("speechstack.bench.processes", "speechstack.train", "timm")


def _scaling_child(spec: dict[str, Any], connection: Connection) -> None:
    """A scaling child: ``scaling_epoch(spec)``, the result (or the traceback) sent back."""
    try:
        connection.send(("ok", scaling_epoch(spec)))
    except BaseException:
        connection.send(("error", traceback.format_exc()))
    finally:
        connection.close()


def run_scaling_child(spec: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
    """``scaling_epoch(spec)`` in a fresh process (so its peak memory is its own), forked
    from a forkserver that has imported ``CHILD_PRELOAD`` once for every child."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(CHILD_PRELOAD))
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_scaling_child, args=(spec, send), daemon=True)
    process.start()
    send.close()
    failure = f"scaling child for factor {spec['factor']}"
    try:
        if not receive.poll(timeout):
            process.kill()
            raise RuntimeError(f"{failure} took over {timeout:.0f} s; killed")
        status, payload = receive.recv()
    except EOFError:  # it died without a word (killed, out of memory, a crash)
        process.join()
        raise RuntimeError(f"{failure} died (exit {process.exitcode})") from None
    finally:
        receive.close()
    process.join()
    if status != "ok":
        raise RuntimeError(f"{failure} failed:\n{payload[-3000:]}")
    return payload


def bench_scaling(
    setup: Setup,
    factors: tuple[int, ...] = (1, 2, 4),
    base_clips: int | None = None,
    threads: int | None = None,
    run_child: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Stage:
    """Wall time and peak memory of one training epoch at each size, each in its own
    process. Time should grow linearly (per-clip time flat) and peak memory stay flat: the
    clips live in the memory-mapped store, read a row at a time."""
    run_child = run_child or run_scaling_child  # tests pass scaling_epoch (in-process)
    stage = Stage("scaling", "scaling")
    results = []
    for factor in factors:
        # Decode here (the cache is shared), so the child's memory is the epoch's alone.
        Setup.from_config(setup.config_path, setup.overrides, factor, base_clips)
        spec = {
            "config_path": str(setup.config_path),
            "overrides": setup.overrides,
            "factor": factor,
            "base_clips": base_clips,
            "threads": threads,
        }
        results.append(run_child(spec))
    base, largest = results[0], results[-1]
    per_clip = [result["epoch_seconds"] / result["clips"] for result in results]
    time_growth = per_clip[-1] / per_clip[0]
    peak = [result["peak_mb"]["rss"] for result in results]
    anonymous = [result["peak_mb"]["anonymous"] for result in results]
    stage.measured = {
        "how": "manifest rows replicated (the same clips repeated), one process per size",
        "factors": list(factors),
        "runs": results,
        "per_clip_time_growth": time_growth,
        "peak_rss_growth": None if None in peak else peak[-1] / peak[0],
    }
    for result in results:
        peaks = result["peak_mb"]
        memory = "memory n/a"
        if peaks["rss"] is not None:
            memory = (
                f"peak RSS {peaks['rss']:,.0f} MB "
                f"(anon {peaks['anonymous']:,.0f}, file {peaks['file']:,.0f})"
            )
        speed = number(rate(result["clips"], result["epoch_seconds"]), "clips/s")
        store = f"store {result['store_megabytes']:,.0f} MB"
        label = f"{result['factor']}x: {result['clips']} clips, {store}"
        stage.lines.append((label, f"{result['epoch_seconds']:.1f} s ({speed}), {memory}"))
    factor = largest["factor"] // base["factor"]
    stage.checks.append(
        Check(f"time per clip, {factor}x data / 1x", time_growth, 1.25, "x", at_least=False)
    )
    if None not in peak:
        stage.checks.append(
            Check(f"peak RSS, {factor}x data / 1x", peak[-1] / peak[0], 1.10, "x", at_least=False)
        )
        stage.measured["peak_anonymous_growth"] = anonymous[-1] / anonymous[0]
    else:
        stage.notes.append("peak memory needs /proc (Linux); not measured here")
    stage.notes.append("sizes made by repeating the manifest rows (the same clips again)")
    return stage


# ---------------------------------------------------------------------------------------
# 6. End to end


DEMO_STEP = re.compile(r"^demo step (\S+): (\d+) s$")  # printed by the Makefile's demo


def demo_steps(lines: list[str]) -> dict[str, float]:
    """Seconds of each step of ``make demo`` (data, folds, train, ...) from its log."""
    steps = {}
    for line in lines:
        match = DEMO_STEP.match(line.strip())
        if match:
            steps[match[1]] = float(match[2])
    return steps


def bench_demo(repo_root: Path, work_dir: Path, timeout: float = 3600.0) -> Stage:
    """Wall time of ``make demo`` from the warm venv, run in a temporary folder (links to the
    Makefile, configs and the venv) so the user's data, folds, runs and submissions are
    untouched."""
    stage = Stage("demo", "end to end (make demo)")
    missing = [name for name in (*DEMO_LINKS, STAMP) if not (repo_root / name).exists()]
    if missing:
        stage.skipped = f"{repo_root} lacks {', '.join(missing)} (make install first)"
        return stage
    folder = work_dir / "demo"
    folder.mkdir(parents=True)
    for name in DEMO_LINKS:
        (folder / name).symlink_to(repo_root / name)
    # The venv's entries are links too, but its install marker is a fresh one of its own:
    # make never rebuilds the user's venv from here (the demo is timed from a warm venv).
    venv = Path(STAMP).parent
    (folder / venv).mkdir()
    for entry in (repo_root / venv).iterdir():
        if entry.name != Path(STAMP).name:
            (folder / venv / entry.name).symlink_to(entry)
    (folder / STAMP).touch()
    inputs = max((repo_root / name).stat().st_mtime for name in STAMP_INPUTS)
    if (repo_root / STAMP).stat().st_mtime < inputs:
        stage.notes.append(
            f"{venv} is older than {' / '.join(STAMP_INPUTS)}; timed as it is "
            "(make install refreshes it)"
        )
    environment = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MAKELEVEL"}}
    log_path = folder / "demo.log"
    start = time.perf_counter()
    with open(log_path, "w") as log:
        completed = subprocess.run(
            ["make", "--no-print-directory", "demo"],
            cwd=folder,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
    seconds = time.perf_counter() - start
    # the last lines, progress-bar redraws (carriage returns) split apart
    lines = log_path.read_text(errors="replace").replace("\r", "\n").splitlines()
    tail = [line.strip() for line in lines if line.strip()][-15:]
    steps = demo_steps(lines)
    stage.measured = {
        "seconds": seconds,
        "returncode": completed.returncode,
        "steps": steps,
        "log_tail": tail,
    }
    stage.lines = [("make demo, warm .venv, fresh folder", f"{seconds / 60:.1f} min")]
    if steps:
        split = ", ".join(f"{name} {value:.0f} s" for name, value in steps.items())
        stage.lines.append(("  its steps", split))
    if completed.returncode != 0:
        last = " | ".join(tail[-3:])
        stage.notes.append(f"make demo failed (exit {completed.returncode}): {last}")
    stage.checks = [
        Check("make demo exit status", completed.returncode, 0, "", at_least=False),
        Check("make demo wall time", seconds, DEMO_TARGET_SECONDS, "s", at_least=False),
    ]
    return stage
