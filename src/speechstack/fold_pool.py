"""The fold runner: ``train_folds`` trains an experiment's folds (``train.train_fold``
each), one after another or several at once, each in its own process, sharing the cores.

Small models on a CPU use cores poorly from one process: one-thread processes, one per
core, train more clips per second than one process with every core (README, Benchmarks).
So ``train_folds`` runs ``train.parallel_folds`` folds at a time (``auto``: one per core
when training on the CPU). The cores are shared out again at every epoch among the folds
that run now or wait to (``cores // min(processes, unfinished folds)`` threads each), so
the last fold does not run on one core while the others sit idle, and a fold that starts
before its neighbour never takes the neighbour's cores (oversubscribed cores train slower
than either share).

Every fold writes its own artefacts atomically, as ``train_fold`` always does: a fold that
fails or is interrupted leaves nothing behind and the finished ones stay.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from speechstack import interrupt
from speechstack.config import Config
from speechstack.distributed import Distributed
from speechstack.lock import RunLock
from speechstack.models import model_trainer
from speechstack.train import (
    fold_dir,
    load_fold_metrics,
    preflight,
    resolve_device,
    train_fold,
    write_experiment_report,
)

log = logging.getLogger(__name__)


def train_folds(
    config: Config, folds: list[int] | None = None, progress: bool = True
) -> list[dict[str, Any]]:
    """Train the given folds (default: all), skipping finished ones; returns their metrics.
    Folds run ``train.parallel_folds`` at a time, each in its own process, or one after the
    other in this one (``train.train_fold``). When every fold of the experiment is then
    finished, its report is (re)written. The experiment is locked meanwhile: a second
    ``train`` of it is refused at once (``RunLockedError``)."""
    if not Distributed.from_environment().is_main:
        return _train_folds(config, folds, progress)
    with RunLock(config.run_dir, "train", f"experiment {config.experiment!r}"):
        return _train_folds(config, folds, progress)


def _train_folds(config: Config, folds: list[int] | None, progress: bool) -> list[dict[str, Any]]:
    chosen = folds if folds is not None else list(range(config.folds.k))
    finished = {fold: load_fold_metrics(config, fold) for fold in chosen}
    pending = [fold for fold in chosen if finished[fold] is None]
    if pending:
        preflight(config)
    distributed = Distributed.from_environment()
    cpu = resolve_device(config.train.device).type == "cpu"
    processes = fold_processes(config, len(pending), cpu, distributed.enabled)
    if processes > 1:
        trained = train_folds_in_parallel(config, pending, processes)
        metrics = [
            trained[fold] if finished[fold] is None else finished[fold] | {"skipped": True}
            for fold in chosen
        ]
    else:
        metrics = []
        for fold in chosen:
            try:
                metrics.append(train_fold(config, fold, progress=progress))
            except KeyboardInterrupt:
                done = [k for k in chosen if (fold_dir(config, k) / "metrics.json").is_file()]
                left = [k for k in chosen if k not in done]
                raise interrupt.FoldsInterrupted(
                    interrupt.summary(config.experiment, done, left)
                ) from None
    if distributed.is_main:
        write_experiment_report(config)
    return metrics


def fold_processes(config: Config, pending: int, cpu_device: bool, distributed: bool) -> int:
    """How many folds to train at once: ``train.parallel_folds`` (at most ``pending``); with
    ``auto`` one per CPU core on the CPU when not under torchrun and ``train.threads`` is
    unset, else 1. A ``features`` family (one fit per fold) trains its folds one after
    another: the first extracts every clip's features once (in ``parallel_folds``
    processes, `acoustic.extraction_processes`), the others read the cache."""
    setting = config.train.parallel_folds
    if setting == "auto":
        features = model_trainer(config.model.name) == "features"
        if features or not cpu_device or distributed or config.train.threads:
            return 1
        setting = os.cpu_count() or 1
    return max(1, min(setting, pending))


def train_folds_in_parallel(config: Config, folds: list[int], processes: int) -> dict[int, Any]:
    """Train ``folds`` in ``processes`` worker processes; returns each fold's metrics. A
    failed fold does not stop the others; the first failure is raised once all are done.

    Ctrl-C (or SIGTERM) sets a shared stop event: the workers, which ignore SIGINT, stop
    at their next batch, folds not yet started are not started, and
    :class:`interrupt.FoldsInterrupted` names the folds that finished."""
    context = multiprocessing.get_context("spawn")
    unfinished = context.Value("i", len(folds))
    stop = context.Event()
    cores = os.cpu_count() or 1
    print(f"training folds {folds} of {config.experiment}, {processes} at a time", flush=True)
    results: dict[int, Any] = {}
    failures: list[tuple[int, BaseException]] = []
    with ProcessPoolExecutor(
        processes,
        mp_context=context,
        initializer=_worker_init,
        initargs=(unfinished, processes, cores, stop),
    ) as pool:
        futures: dict[Future[Any], int] = {
            pool.submit(_train_one_fold, config, fold): fold for fold in folds
        }
        try:
            for future in _as_completed(futures):
                fold = futures[future]
                error = future.exception()
                if error is None:
                    results[fold] = future.result()
                elif isinstance(error, KeyboardInterrupt):
                    stop.set()  # a worker saw the stop: the parent is being interrupted
                else:
                    log.error("fold %d of %s failed: %s", fold, config.experiment, error)
                    failures.append((fold, error))
        except KeyboardInterrupt:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            for future, fold in futures.items():  # folds that finished while stopping
                if future.done() and not future.cancelled() and future.exception() is None:
                    results[fold] = future.result()
            left = [fold for fold in folds if fold not in results]
            raise interrupt.FoldsInterrupted(
                interrupt.summary(config.experiment, sorted(results), left)
            ) from None
    if failures:
        fold, error = failures[0]
        failed = ", ".join(str(k) for k, _ in failures)
        raise RuntimeError(
            f"fold(s) {failed} of {config.experiment} failed (finished folds are kept; a re-run "
            f"trains the rest); fold {fold}: {error}"
        ) from error
    return results


def _as_completed(futures: dict[Future[Any], int]) -> Iterator[Future[Any]]:
    """``as_completed`` that wakes every half second: a blocking wait on the pool's lock can
    hold a Ctrl-C in the parent until a fold ends, by which time the others trained on."""
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
        yield from done


def core_share(cores: int, processes: int, unfinished: int) -> int:
    """Threads for each fold when ``unfinished`` folds (this one included) are left for
    ``processes`` workers on ``cores`` cores: the folds running together split the cores."""
    return max(1, cores // max(1, min(processes, unfinished)))


# ---------------------------------------------------------------------------------------
# In the worker processes

_unfinished: Synchronized[int] | None = None
_processes = 1
_cores = 1


def _worker_init(
    unfinished: Synchronized[int], processes: int, cores: int, stop: interrupt.StopEvent
) -> None:
    global _unfinished, _processes, _cores
    _unfinished, _processes, _cores = unfinished, processes, cores
    interrupt.watch(stop)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")


def _share_cores(config: Config) -> int:
    """Set this process's torch threads to its share of the cores (``train.threads`` when
    set); returns it."""
    import torch

    threads = config.train.threads
    if threads is None:
        assert _unfinished is not None
        threads = core_share(_cores, _processes, _unfinished.value)
    torch.set_num_threads(threads)
    return threads


def _train_one_fold(config: Config, fold: int) -> Any:
    assert _unfinished is not None
    try:
        interrupt.check()  # queued before a stop: never started
        threads = _share_cores(config)
        print(f"fold {fold}: training ({threads} thread{'s' * (threads > 1)})", flush=True)

        def after_epoch(epoch: int, val_accuracy: float) -> None:
            print(
                f"fold {fold} epoch {epoch + 1:>2}/{config.train.epochs}: "
                f"val acc {val_accuracy:.4f}",
                flush=True,
            )
            _share_cores(config)

        return train_fold(config, fold, progress=False, epoch_callback=after_epoch)
    finally:
        with _unfinished.get_lock():
            _unfinished.value -= 1
