"""Optuna studies over experiment configs: the search space lives in the config, each trial
is a config override that runs the same ``train_fold`` the training uses.

* The study is ``<task>-<experiment>``, stored in ``studies/<task>.db`` (SQLite) or any RDB
  URL (``tune.storage`` / ``--storage``, e.g. PostgreSQL for many workers and machines).
* ``tune.space`` maps dotted config keys to Optuna distributions; a trial's values are
  applied with :func:`speechstack.config.override_config`, so every value is validated like
  a config file. The whole space is checked (both ends of every range, every choice) before
  the first trial starts.
* A trial trains ``tune.folds`` (default ``[0]``) into
  ``studies/<study>/runs/<task>/trial<N>/fold<k>/`` (never ``runs/``); the objective is the
  mean best-epoch validation accuracy, maximised. After every epoch it reports the fold's
  best accuracy so far and the pruner may stop it. Trials do not predict the test set.
  For a speech recogniser (a ``transcriber`` family) a trial trains the corpus's train
  split into ``studies/<study>/runs/<dataset>/trial<N>/`` and the objective is the best
  epoch's dev WER, minimised (``study_goal``); it reports the best WER so far per epoch.
* ``tune.trials`` is the study's exact total, shared by every worker (processes and
  machines): a worker adds a trial only while finished + running + queued trials are fewer,
  counted under a lock all workers share (:class:`BudgetedStudy`). Failed trials keep their
  error (user attribute ``error``) and count; the study goes on.
* Resuming: the same command continues the study (``load_if_exists``). A trial stopped by
  Ctrl-C is marked failed (``interrupted``) and does not count. Running trials write a
  heartbeat; one whose worker died (SIGKILL, lost machine) is failed once it is older than
  ``tune.grace_seconds`` and re-queued with the same parameters.
"""

from __future__ import annotations

import fcntl
import logging
import math
import multiprocessing
import os
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, Trial, TrialState

from speechstack.artifacts import atomic_path
from speechstack.config import (
    Config,
    ConfigError,
    SearchDimension,
    TuneConfig,
    load_config,
    nest_keys,
    override_config,
)

log = logging.getLogger(__name__)

Objective = Callable[[Trial], float]


@dataclass(frozen=True)
class Goal:
    """What a study optimises: a classifier's mean best-epoch validation accuracy
    (maximised), or a recogniser's best-epoch dev WER (minimised)."""

    metric: str
    direction: str  # "maximize" | "minimize"

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"


def study_goal(config: Config) -> Goal:
    from speechstack.models import model_trainer

    if model_trainer(config.model.name) == "transcriber":
        return Goal("dev WER", "minimize")
    return Goal("mean val accuracy", "maximize")


# Keys a search space may not tune: where runs go and what the study is called.
UNTUNABLE = ("experiment", "runs_dir", "tune")

PLOTS = ("optimization_history", "param_importances", "intermediate_values")


def train_fold(config: Config, fold: int, **options: Any) -> dict[str, Any]:
    """:func:`speechstack.train.train_fold`, imported when a trial first trains, so workers
    with another objective (and ``speechstack dashboard``) start without torch."""
    from speechstack.train import train_fold as train

    return train(config, fold, **options)


@contextmanager
def _quiet_experimental() -> Iterator[None]:
    """Heartbeats and the matplotlib plots are 'experimental' in Optuna; say it once here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


# ---------------------------------------------------------------------------------------
# Names, storage, study


def study_name(config: Config) -> str:
    return f"{config.task.dataset_name}-{config.experiment}"


def study_dir(config: Config) -> Path:
    """``studies/<study>/``: plots, the dashboard screenshot and the trials' runs."""
    return config.tune.studies_dir / study_name(config)


def storage_url(config: Config, storage: str | None = None) -> str:
    """``storage``, else ``tune.storage``, else SQLite at ``studies/<task>.db`` (absolute, so
    worker processes started elsewhere open the same file)."""
    url = storage or config.tune.storage
    if url:
        return url
    folder = config.tune.studies_dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / f'{config.task.dataset_name}.db'}"


def display_url(url: str) -> str:
    """The storage URL with its password hidden, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL; the storage will say what is wrong
        return url


def open_storage(url: str, tune: TuneConfig) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats: a RUNNING trial whose worker died is failed after
    ``grace_seconds`` and re-queued (same parameters) up to ``max_retries`` times."""
    engine_kwargs: dict[str, Any] = (
        {"connect_args": {"timeout": 60}}  # several processes on one SQLite file wait, not fail
        if url.startswith("sqlite")
        else {"pool_pre_ping": True}
    )
    with _quiet_experimental():
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=tune.heartbeat_seconds,
            grace_period=tune.grace_seconds,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=tune.max_retries
            ),
        )


def build_sampler(tune: TuneConfig, seed_offset: int = 0) -> optuna.samplers.TPESampler:
    return optuna.samplers.TPESampler(
        seed=tune.seed + seed_offset, n_startup_trials=max(1, tune.startup_trials)
    )


def build_pruner(config: Config) -> optuna.pruners.BasePruner:
    """Steps are epochs, counted across the trial's folds."""
    tune = config.tune
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=tune.startup_trials, n_warmup_steps=tune.warmup_epochs
        )
    if tune.pruner == "hyperband":
        max_resource = config.train.epochs * len(tune.folds)
        return optuna.pruners.HyperbandPruner(
            min_resource=min(max(1, tune.warmup_epochs), max_resource),
            max_resource=max_resource,
            reduction_factor=3,
        )
    return optuna.pruners.NopPruner()


def open_study(
    config: Config, url: str, worker: int = 0, budget: int | None = None
) -> optuna.Study:
    """Create the study, or load it to resume. The TPE seed is ``tune.seed`` for a fresh
    single-worker study (repeatable); workers and resumed runs offset it so they do not
    re-draw the parameters already tried. With ``budget``, a :class:`BudgetedStudy` that
    adds trials only while the study holds fewer than ``budget``."""
    storage = open_storage(url, config.tune)
    goal = study_goal(config)
    study = optuna.create_study(
        study_name=study_name(config),
        storage=storage,
        pruner=build_pruner(config),
        direction=goal.direction,
        load_if_exists=True,
    )
    if study.direction.name.lower() != goal.direction:
        raise ValueError(
            f"study {study.study_name!r} in {display_url(url)} does not {goal.direction} "
            f"(it was made for another goal than the {goal.metric})"
        )
    if budget is not None:
        study = BudgetedStudy(study.study_name, storage, budget, study.pruner)
    offset = 1000 * worker + len(study.get_trials(deepcopy=False))
    study.sampler = build_sampler(config.tune, offset)
    return study


# ---------------------------------------------------------------------------------------
# Search space


def _suggest(trial: Trial, key: str, dimension: SearchDimension) -> Any:
    if dimension.type == "categorical":
        return trial.suggest_categorical(key, dimension.choices or [])
    assert dimension.low is not None and dimension.high is not None
    if dimension.type == "int":
        step = int(dimension.step) if dimension.step is not None else 1
        return trial.suggest_int(
            key, int(dimension.low), int(dimension.high), step=step, log=dimension.log
        )
    return trial.suggest_float(
        key, dimension.low, dimension.high, step=dimension.step, log=dimension.log
    )


def suggest_values(trial: Trial, space: dict[str, SearchDimension]) -> dict[str, Any]:
    """One value per dotted config key, drawn by the study's sampler."""
    return {key: _suggest(trial, key, dimension) for key, dimension in space.items()}


def check_space(config: Config, source: str) -> None:
    """Validate every key of ``tune.space`` against the config schema with each end of its
    range and each choice, so a typo or an impossible value fails before any trial runs."""
    space = config.tune.dimensions
    if not space:
        raise ConfigError(
            f"{source}: tune.space is empty; declare the keys to tune, e.g.\n"
            "tune:\n  space:\n    train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}"
        )
    for key, dimension in space.items():
        if key.split(".")[0] in UNTUNABLE:
            raise ConfigError(
                f"{source}: tune.space key '{key}' cannot be tuned "
                f"(the keys under {', '.join(UNTUNABLE)} name the study and its runs)"
            )
        if dimension.type == "categorical":
            candidates = list(dimension.choices or [])
        else:
            candidates = [dimension.low, dimension.high]
            if dimension.type == "int":
                candidates = [int(value) for value in candidates if value is not None]
        for value in candidates:
            try:
                override_config(config, {key: value}, f"{source}: tune.space '{key}' = {value!r}")
            except ConfigError as error:
                raise ConfigError(f"tune.space key '{key}' is not valid:\n{error}") from None


# ---------------------------------------------------------------------------------------
# Objective and budget


class TrainObjective:
    """The study's objective: override the config with the trial's values and train
    ``tune.folds`` with ``train_fold``; returns the mean best-epoch validation accuracy.
    Picklable, so worker processes can run it."""

    def __init__(self, config: Config, runs_dir: Path, progress: bool = True) -> None:
        self.config = config
        self.runs_dir = runs_dir
        self.progress = progress

    def __call__(self, trial: Trial) -> float:
        """The trial's score; a failure keeps its error (or ``interrupted``) on the trial."""
        values = suggest_values(trial, self.config.tune.dimensions)
        run = {"runs_dir": str(self.runs_dir), "experiment": f"trial{trial.number}"}
        try:
            config = override_config(self.config, values | run, f"trial {trial.number}")
            trial.set_user_attr("run_dir", str(config.run_dir))
            return self.score(trial, config)
        except optuna.TrialPruned:
            raise
        except Exception as error:
            trial.set_user_attr("error", f"{type(error).__name__}: {error}")
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise

    def score(self, trial: Trial, config: Config) -> float:
        """Train the trial's ``config`` on ``tune.folds``: the mean best-epoch accuracy."""
        trial.set_user_attr("folds", list(self.config.tune.folds))
        accuracies = []
        for position, fold in enumerate(self.config.tune.folds):
            report = _pruning_reporter(trial, fold, position * config.train.epochs)
            metrics = train_fold(
                config, fold, progress=self.progress, epoch_callback=report, predict_test=False
            )
            accuracies.append(float(metrics["val_accuracy"]))
            trial.set_user_attr(f"fold{fold}_val_accuracy", accuracies[-1])
        return sum(accuracies) / len(accuracies)


class TranscriberObjective(TrainObjective):
    """The study's objective for a speech recogniser: the trial's config trained by
    ``transcribe.train_transcriber`` (the corpus's train split, the epoch chosen on dev);
    returns that epoch's dev WER, to be minimised."""

    def score(self, trial: Trial, config: Config) -> float:
        from speechstack.transcribe import train_transcriber

        report = _pruning_reporter(trial, None, 0, maximize=False)
        metrics = train_transcriber(config, progress=self.progress, epoch_callback=report)
        trial.set_user_attr("dev_cer", float(metrics["dev_cer"]))
        return float(metrics["dev_wer"])


def _pruning_reporter(
    trial: Trial, fold: int | None, first_step: int, maximize: bool = True
) -> Callable[[int, float], None]:
    """``epoch_callback`` for ``train_fold`` (or ``train_transcriber``): report the best
    value so far (what the run would return if stopped now) at step ``first_step + epoch``;
    prune if told."""
    best = -math.inf if maximize else math.inf
    where = f"fold {fold} " if fold is not None else ""

    def report(epoch: int, value: float) -> None:
        nonlocal best
        best = max(best, value) if maximize else min(best, value)
        trial.report(best, first_step + epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"{where}epoch {epoch + 1}: best so far {best:.4f}")

    return report


def counts_toward_budget(trial: FrozenTrial) -> bool:
    """Finished, running and queued trials use up ``tune.trials``; a trial stopped by Ctrl-C
    or by its worker's death (failed without an ``error``) does not: it is redone."""
    if trial.state == TrialState.FAIL:
        return "error" in trial.user_attrs
    return True


def budget_has_room(trials: list[FrozenTrial], total: int) -> bool:
    """Whether a worker may run another trial: fewer than ``total`` trials count
    (:func:`counts_toward_budget`), or one is queued (queued trials count already, and a
    dead worker's re-queued trial must be redone)."""
    used = sum(map(counts_toward_budget, trials))
    return used < total or any(t.state == TrialState.WAITING for t in trials)


class BudgetFull(Exception):
    """Raised by :meth:`BudgetedStudy.ask`: the study holds its trials; the worker is done."""


# Dialects :func:`trial_creation_lock` serialises; with others, workers asking at the same
# instant may each add a trial beyond the budget.
LOCKED_DIALECTS = ("postgresql", "sqlite")
# First key of the PostgreSQL advisory lock (the second is the study name's CRC-32).
_LOCK_SPACE = zlib.crc32(b"speechstack.tune.trial-creation") & 0x7FFFFFFF


@contextmanager
def trial_creation_lock(storage: optuna.storages.RDBStorage, name: str) -> Iterator[None]:
    """Held by a worker while it counts study ``name``'s trials and adds one, so no two
    workers on the storage do both at once: a PostgreSQL advisory lock (workers on any
    machine; it goes with the connection if a worker dies) or an exclusive ``flock`` on
    ``<database>.lock`` beside an SQLite file (one machine, as SQLite is). Other databases
    (and in-memory SQLite, one process) get no lock."""
    from sqlalchemy import text

    engine = storage.engine
    database = engine.url.database
    if engine.dialect.name == "postgresql":
        key = {"space": _LOCK_SPACE, "key": zlib.crc32(name.encode()) - 2**31}  # two int4s
        with engine.connect() as connection, connection.begin():
            connection.execute(text("SELECT pg_advisory_xact_lock(:space, :key)"), key)
            yield  # the transaction's end releases it
    elif engine.dialect.name == "sqlite" and database and database != ":memory:":
        with open(f"{database}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield  # closing the file releases it
    else:
        yield


class BudgetedStudy(optuna.Study):
    """A study whose :meth:`ask` (``optimize`` asks before every trial) hands out a trial
    only while :func:`budget_has_room`, else raises :class:`BudgetFull`. It counts the
    trials and then pops a queued trial or creates one under :func:`trial_creation_lock`,
    so workers asking at the same instant cannot go past ``total`` between them, and
    nothing is created that would have to be removed again."""

    def __init__(
        self,
        name: str,
        storage: optuna.storages.RDBStorage,
        total: int,
        pruner: optuna.pruners.BasePruner,
    ) -> None:
        super().__init__(study_name=name, storage=storage, pruner=pruner)
        self.total = total
        self._rdb = storage
        if storage.engine.dialect.name not in LOCKED_DIALECTS:
            log.warning(
                "no trial-creation lock for %s storages: workers finishing at the same "
                "instant may add a trial each beyond the %d", storage.engine.dialect.name, total
            )  # fmt: skip

    def has_room(self) -> bool:
        return budget_has_room(self.get_trials(deepcopy=False), self.total)

    def ask(self, fixed_distributions: dict[str, BaseDistribution] | None = None) -> Trial:
        with trial_creation_lock(self._rdb, self.study_name):
            if not self.has_room():
                raise BudgetFull(f"study {self.study_name!r} holds its {self.total} trials")
            return super().ask(fixed_distributions)


def run_worker(
    config: Config,
    url: str,
    total: int,
    objective: Objective,
    worker: int = 0,
    threads: int | None = None,
) -> None:
    """Run trials of the study until it holds ``total`` (see :class:`BudgetedStudy`). Any
    number of workers, in any processes or machines, may share one storage."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    study = open_study(config, url, worker, budget=total)
    queued = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    try:
        study.optimize(
            objective,
            n_trials=total + queued,  # a cap; the budget ends the loop first
            catch=(Exception,),
            gc_after_trial=isinstance(objective, TrainObjective),  # frees a model; ~0.5 s
        )
    except BudgetFull as full:
        log.debug("worker %d stops: %s", worker, full)


def _worker_process(*args: Any) -> None:
    """A worker process: Ctrl-C (its trial is already marked failed) ends it quietly."""
    try:
        run_worker(*args)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def run_workers(
    config: Config, url: str, total: int, objective: Objective, workers: int
) -> list[int]:
    """``workers`` processes on one storage; returns their exit codes. Ctrl-C reaches them
    too (same process group): each fails its running trial cleanly and exits."""
    context = multiprocessing.get_context("spawn")
    threads = config.train.threads or max(1, (os.cpu_count() or 1) // workers)
    processes = [
        context.Process(
            target=_worker_process,
            args=(config, url, total, objective, index, threads),
            name=f"tune-worker-{index}",
        )
        for index in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
        raise
    return [process.exitcode or 0 for process in processes]


# ---------------------------------------------------------------------------------------
# Running a study


@dataclass
class StudyReport:
    name: str
    storage: str
    folder: Path
    trials: list[FrozenTrial]
    plots: dict[str, Path | str] = field(default_factory=dict)  # name -> file, or why not
    worker_exit_codes: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def best(self) -> FrozenTrial | None:
        complete = [t for t in self.trials if t.state == TrialState.COMPLETE]
        return max(complete, key=lambda t: t.value or 0.0) if complete else None


def _check_folds(config: Config) -> None:
    if not config.folds_file.is_file():
        raise FileNotFoundError(
            f"{config.folds_file} not found; write the folds first (make folds / speechstack "
            "folds), so every trial validates on the same speakers"
        )
    outside = [fold for fold in config.tune.folds if fold >= config.folds.k]
    if outside:
        raise ConfigError(f"tune.folds {outside} are not folds of folds.k={config.folds.k}")


def run_study(
    config: Config,
    source: str,
    trials: int | None = None,
    workers: int = 1,
    storage: str | None = None,
    progress: bool = True,
    objective: Objective | None = None,
) -> StudyReport:
    """Fill the study ``<task>-<experiment>`` up to ``trials`` (default ``tune.trials``)
    with ``workers`` processes, then save its plots. ``source`` names the config in errors."""
    started = time.perf_counter()
    check_space(config, source)
    goal = study_goal(config)
    if objective is None and goal.maximize:
        _check_folds(config)
    total = trials if trials is not None else config.tune.trials
    if total < 1 or workers < 1:
        raise ValueError(f"trials ({total}) and workers ({workers}) must be at least 1")
    url = storage_url(config, storage)
    folder = study_dir(config)
    study = open_study(config, url)
    study.set_user_attr("config", source)
    if objective is None:
        _name_objective(study, goal)
        kind = TrainObjective if goal.maximize else TranscriberObjective
        objective = kind(config, folder / "runs", progress=progress and workers == 1)
    exit_codes: list[int] = []
    if workers == 1:
        run_worker(config, url, total, objective)
    else:
        if url.startswith("sqlite"):
            log.warning(
                "%d workers on one SQLite file: fine on one machine for a few workers; use "
                "STORAGE=postgresql://... for more", workers
            )  # fmt: skip
        exit_codes = run_workers(config, url, total, objective, workers)
    study = optuna.load_study(study_name=study.study_name, storage=url)
    report = StudyReport(
        study.study_name, display_url(url), folder, study.get_trials(deepcopy=False)
    )
    report.plots = save_plots(study, folder)
    report.worker_exit_codes = exit_codes
    report.seconds = time.perf_counter() - started
    return report


def _name_objective(study: optuna.Study, goal: Goal) -> None:
    """Label the value axis (optuna-dashboard, plots)."""
    with _quiet_experimental():
        study.set_metric_names([goal.metric])


def load_existing_study(config: Config, storage: str | None = None) -> optuna.Study:
    url = storage_url(config, storage)
    name = study_name(config)
    names = optuna.get_all_study_names(storage=url)
    if name not in names:
        raise FileNotFoundError(
            f"no study {name!r} in {display_url(url)} (it holds: {', '.join(names) or 'none'}); "
            "run `make tune` (speechstack tune) first"
        )
    return optuna.load_study(study_name=name, storage=url)


# ---------------------------------------------------------------------------------------
# Plots and export


def save_plots(study: optuna.Study, folder: Path) -> dict[str, Path | str]:
    """Optimisation history, parameter importance and intermediate values as PNGs in
    ``folder`` (matplotlib, Agg). Returns name -> file, or the reason a plot was not made
    (e.g. importance needs two finished trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    makers = {
        "optimization_history": plots.plot_optimization_history,
        "param_importances": plots.plot_param_importances,
        "intermediate_values": plots.plot_intermediate_values,
    }
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    results: dict[str, Path | str] = {}
    for name, maker in makers.items():
        if name == "param_importances" and len(complete) < 2:
            results[name] = f"not made: needs 2 finished trials, the study has {len(complete)}"
            continue
        try:
            with _quiet_experimental():
                axes = maker(study)
        except (ValueError, RuntimeError) as error:
            results[name] = f"not made: {error}"
            continue
        figure = axes.figure
        figure.set_size_inches(9, 5.5)
        figure.tight_layout()
        path = folder / f"{name}.png"
        with atomic_path(path, ".png") as temp:
            figure.savefig(temp, format="png", dpi=110)
        plt.close(figure)
        results[name] = path
    return results


def best_config_path(config: Config, config_path: Path) -> Path:
    """``configs/<task>/<experiment>-best.yaml``, beside the tuned experiment file."""
    return config_path.parent / f"{config.experiment}-best.yaml"


def export_best(
    config: Config,
    config_path: Path,
    storage: str | None = None,
    out: Path | None = None,
) -> tuple[Path, FrozenTrial]:
    """Write the best trial's values as an experiment file over ``config_path``
    (``base: <file>``, ``experiment: <experiment>-best``, nested keys); checked with
    ``load_config`` before it replaces anything."""
    study = load_existing_study(config, storage)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise ValueError(f"study {study.study_name!r} has no finished trial to export yet")
    best = study.best_trial
    out = Path(out) if out is not None else best_config_path(config, config_path)
    base = os.path.relpath(config_path.resolve(), out.resolve().parent)
    data = {"base": base, "experiment": f"{config.experiment}-best", **nest_keys(best.params)}
    goal = study_goal(config)
    scored_on = f" on folds {best.user_attrs.get('folds', config.tune.folds)}"
    header = (
        f"# Best trial of the Optuna study {study.study_name!r}: trial {best.number}, "
        f"{goal.metric} {best.value:.4f}{scored_on if goal.maximize else ''}\n"
        f"# ({len(complete)} finished trials). Written by `speechstack tune --export`; train "
        f"it with `make train MODEL={out.stem}`.\n"
    )
    if study.user_attrs.get("config"):
        header += f"# The study ran on: {study.user_attrs['config']}\n"
    text = header + yaml.safe_dump(data, sort_keys=False)
    with atomic_path(out, ".yaml") as temp:
        temp.write_text(text)
        try:  # the file must load (same folder, so `base` resolves), or nothing is written
            load_config(temp)
        except ConfigError as error:
            raise ConfigError(
                f"trial {best.number}'s values do not form a valid config over {config_path} "
                f"(did the config change since the study ran?); {out} not written:\n{error}"
            ) from None
    return out, best


def trial_rows(trials: list[FrozenTrial]) -> list[tuple[object, ...]]:
    """Rows for the CLI table: number, state, value, seconds, parameters, note."""
    rows = []
    for trial in trials:
        seconds = (
            f"{(trial.datetime_complete - trial.datetime_start).total_seconds():.0f}"
            if trial.datetime_complete and trial.datetime_start
            else "-"
        )
        params = " ".join(f"{k}={short_value(v)}" for k, v in trial.params.items())
        note = trial.user_attrs.get("error", "")
        if trial.user_attrs.get("interrupted"):
            note = "interrupted (redone on resume)"
        elif trial.state == TrialState.PRUNED and trial.intermediate_values:
            note = f"pruned after {max(trial.intermediate_values) + 1} epochs"
        elif trial.state == TrialState.FAIL and not note:
            note = "worker died (re-queued)"
        retried = trial.system_attrs.get("failed_trial")
        if retried is not None:
            note = f"retry of trial {retried} {note}".strip()
        value = trial.value if trial.value is not None else "-"
        rows.append((trial.number, trial.state.name, value, seconds, params, note))
    return rows


def short_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
