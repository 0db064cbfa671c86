"""Optuna tuning: a tiny study end to end (tune -> export -> train), pruning, resuming after
Ctrl-C and after a killed worker, bad search spaces, and worker processes filling one study
(SQLite, PostgreSQL) to its exact total."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from speechstack import tune
from speechstack.cli import main
from speechstack.config import Config, ConfigError, load_config, override_config

TINY = [
    "model.params.backbone=test_resnet",
    "model.params.backbone_args={}",
    "train.epochs=1",
    "train.batch_size=32",
    "folds.k=3",
    "task.params.silence_clips=12",
]
POSTGRES = os.environ.get("SPEECHSTACK_TEST_POSTGRES")


def cli_args(*overrides: str) -> list[str]:
    return [arg for text in (*TINY, *overrides) for arg in ("--set", text)]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo_root: Path) -> Path:
    """A working folder with its own copy of configs/ (the export writes beside them)."""
    shutil.copytree(repo_root / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def trials_of(config: Config) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=tune.study_name(config), storage=tune.storage_url(config))
    return study.get_trials()


def states(trials: list[optuna.trial.FrozenTrial]) -> list[str]:
    return [t.state.name for t in trials]


# ---------------------------------------------------------------------------------------
# The real thing: tiny train_fold trials through the CLI


def test_tiny_study_exports_a_config_that_loads_and_trains(
    workdir: Path, tiny_speech_commands: Path, capsys: pytest.CaptureFixture
) -> None:
    config_path = workdir / "configs" / "speech_commands" / "cnn.yaml"
    common = ["--config", str(config_path), "--data", str(tiny_speech_commands), *cli_args()]
    assert main(["folds", *common]) == 0
    assert main(["tune", *common, "--trials", "2"]) == 0
    out = capsys.readouterr().out
    assert "study 'speech_commands-cnn'" in out and "2 complete" in out

    config = load_config(config_path, [*TINY, f"task.data_dir={tiny_speech_commands}"])
    trials = trials_of(config)
    assert states(trials) == ["COMPLETE", "COMPLETE"]
    assert (workdir / "studies" / "speech_commands.db").is_file()
    folder = workdir / "studies" / "speech_commands-cnn"
    for trial in trials:
        assert set(trial.params) == set(config.tune.dimensions)
        run = folder / "runs" / "speech_commands" / f"trial{trial.number}" / "fold0"
        metrics = json.loads((run / "metrics.json").read_text())
        assert trial.value == pytest.approx(metrics["val_accuracy"])
        assert trial.intermediate_values == {0: pytest.approx(metrics["val_accuracy"])}
        assert metrics["test_clips"] == 0 and not (run / "test.parquet").exists()  # no test set
        saved = load_config(run / "config.yaml")
        assert saved.train.lr == pytest.approx(trial.params["train.lr"])
    assert not (workdir / "runs").exists()  # tuning never writes into runs/
    for plot in tune.PLOTS:
        assert (folder / f"{plot}.png").stat().st_size > 1000

    # The study is full: running it again adds nothing.
    assert main(["tune", *common, "--trials", "2"]) == 0
    assert len(trials_of(config)) == 2

    assert main(["tune", *common, "--export"]) == 0
    exported = workdir / "configs" / "speech_commands" / "cnn-best.yaml"
    data = yaml.safe_load(exported.read_text())
    assert data["base"] == "cnn.yaml" and data["experiment"] == "cnn-best"
    best = max(trials, key=lambda t: t.value or 0.0)
    assert data["train"]["lr"] == pytest.approx(best.params["train.lr"])
    assert data["model"]["params"]["drop_rate"] == pytest.approx(
        best.params["model.params.drop_rate"]
    )
    loaded = load_config(exported)
    assert loaded.experiment == "cnn-best"
    assert loaded.augment.mixup.p == pytest.approx(best.params["augment.mixup.p"])
    assert loaded.model.params["backbone"] == "resnet10t"  # the rest comes from cnn.yaml

    best_common = ["--config", str(exported), "--data", str(tiny_speech_commands), *cli_args()]
    assert main(["train-fold", *best_common, "--fold", "0"]) == 0
    trained = workdir / "runs" / "speech_commands" / "cnn-best" / "fold0"
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["experiment"] == "cnn-best"
    assert metrics["test_clips"] == 24 and (trained / "test.parquet").is_file()  # training does


# ---------------------------------------------------------------------------------------
# The tuner around a fake train_fold (fast, deterministic)


@pytest.fixture
def fake_config(workdir: Path) -> Config:
    """A config whose folds file exists (the fake training never reads it)."""
    folds = workdir / "folds" / "speech_commands.csv"
    folds.parent.mkdir()
    folds.write_text("fname,fold\n")
    config = load_config(workdir / "configs" / "speech_commands" / "cnn.yaml", TINY)
    return override_config(config, {"train.epochs": 4}, "test")


class FakeTraining:
    """Stands in for ``train_fold``: accuracy 0.9 for train.lr >= 1e-3, else 0.1, reported
    after every epoch; ``interrupt_call`` raises KeyboardInterrupt on that call."""

    def __init__(self, interrupt_call: int | None = None) -> None:
        self.calls = 0
        self.epochs: list[int] = []
        self.predict_test: list[bool] = []
        self.interrupt_call = interrupt_call

    def __call__(
        self,
        config: Config,
        fold: int,
        *,
        progress: bool = True,
        epoch_callback: Any = None,
        predict_test: bool = True,
    ) -> dict[str, Any]:
        self.calls += 1
        self.predict_test.append(predict_test)
        if self.calls == self.interrupt_call:
            raise KeyboardInterrupt
        accuracy = 0.9 if config.train.lr >= 1e-3 else 0.1
        done = 0
        try:
            for epoch in range(config.train.epochs):
                done = epoch + 1
                epoch_callback(epoch, accuracy)
        finally:
            self.epochs.append(done)
        return {"val_accuracy": accuracy}


def test_a_clearly_bad_trial_is_pruned_after_the_warm_up(
    fake_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    training = FakeTraining()
    monkeypatch.setattr(tune, "train_fold", training)
    config = override_config(
        fake_config,
        {"tune.pruner": "median", "tune.startup_trials": 1, "tune.warmup_epochs": 1},
        "test",
    )
    study = tune.open_study(config, tune.storage_url(config))
    for lr in (3e-3, 5e-4, 2e-3):
        study.enqueue_trial({"train.lr": lr}, skip_if_exists=False)
    tune.run_study(config, "test", trials=3, progress=False)

    trials = trials_of(config)
    assert states(trials) == ["COMPLETE", "PRUNED", "COMPLETE"]
    assert trials[1].intermediate_values == {0: 0.1, 1: 0.1}  # pruned at epoch 2 of 4
    assert training.epochs == [4, 2, 4]
    assert training.predict_test == [False, False, False]  # trials skip the test set
    assert "pruned after 2 epochs" in tune.trial_rows(trials)[1][-1]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("median", optuna.pruners.MedianPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
        ("none", optuna.pruners.NopPruner),
    ],
)
def test_pruner_is_chosen_by_config(name: str, kind: type) -> None:
    config = override_config(load_config(None), {"tune.pruner": name}, "test")
    assert isinstance(tune.build_pruner(config), kind)


def test_a_failing_trial_keeps_its_error_and_the_study_goes_on(
    fake_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}

    def flaky(config: Config, fold: int, **kwargs: Any) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("out of memory (simulated)")
        return {"val_accuracy": 0.5}

    monkeypatch.setattr(tune, "train_fold", flaky)
    tune.run_study(fake_config, "test", trials=3, progress=False)
    trials = trials_of(fake_config)
    assert states(trials) == ["FAIL", "COMPLETE", "COMPLETE"]  # the failure counts as a trial
    assert trials[0].user_attrs["error"] == "RuntimeError: out of memory (simulated)"


def test_ctrl_c_in_the_second_trial_then_resume_keeps_the_finished_trial(
    workdir: Path, fake_config: Config, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    config_path = workdir / "configs" / "speech_commands" / "cnn.yaml"
    common = ["--config", str(config_path), *cli_args("train.epochs=4")]
    monkeypatch.setattr(tune, "train_fold", FakeTraining(interrupt_call=2))
    assert main(["tune", *common, "--trials", "3"]) == 130
    assert "the same command resumes it" in capsys.readouterr().err
    before = trials_of(fake_config)
    assert states(before) == ["COMPLETE", "FAIL"]
    assert before[1].user_attrs["interrupted"] is True

    monkeypatch.setattr(tune, "train_fold", FakeTraining())
    assert main(["tune", *common, "--trials", "3"]) == 0
    after = trials_of(fake_config)
    assert states(after) == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    first = after[0]
    assert (first.params, first.value, first.datetime_complete) == (
        before[0].params,
        before[0].value,
        before[0].datetime_complete,
    )
    assert first.intermediate_values == before[0].intermediate_values
    assert "interrupted (redone on resume)" in capsys.readouterr().out


def test_trials_that_count_toward_the_budget() -> None:
    def frozen(state: TrialState, **user_attrs: Any) -> optuna.trial.FrozenTrial:
        trial = optuna.trial.create_trial(state=TrialState.WAITING, user_attrs=user_attrs)
        trial.state = state
        return trial

    assert tune.counts_toward_budget(frozen(TrialState.COMPLETE))
    assert tune.counts_toward_budget(frozen(TrialState.PRUNED))
    assert tune.counts_toward_budget(frozen(TrialState.RUNNING))
    assert tune.counts_toward_budget(frozen(TrialState.WAITING))
    assert tune.counts_toward_budget(frozen(TrialState.FAIL, error="ValueError: x"))
    assert not tune.counts_toward_budget(frozen(TrialState.FAIL, interrupted=True))
    assert not tune.counts_toward_budget(frozen(TrialState.FAIL))  # its worker died


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask() outside optimize()
def test_a_full_study_hands_out_only_queued_trials(fake_config: Config) -> None:
    study = tune.open_study(fake_config, tune.storage_url(fake_config), budget=2)
    study.tell(study.ask(), 0.5)
    study.tell(study.ask(), state=TrialState.FAIL)  # no error: interrupted or died, redone
    study.tell(study.ask(), 0.5)
    with pytest.raises(tune.BudgetFull, match="holds its 2 trials"):
        study.ask()
    study.enqueue_trial({"train.lr": 1e-3})  # queued (as a dead worker's retry is): it runs
    queued = study.ask()
    assert queued.number == 3 and queued.suggest_float("train.lr", 1e-4, 1e-2) == 1e-3
    with pytest.raises(tune.BudgetFull):
        study.ask()
    assert states(study.get_trials()) == ["COMPLETE", "FAIL", "COMPLETE", "RUNNING"]


# ---------------------------------------------------------------------------------------
# Worker processes: a killed worker, and workers sharing one study (SQLite, PostgreSQL)


@dataclass
class SlowSecondTrial:
    """A trivial objective; trial 1 signals ``marker`` and hangs the first time (until the
    test kills its process)."""

    marker: Path

    def __call__(self, trial: optuna.Trial) -> float:
        x = trial.suggest_float("train.lr", 1e-4, 1e-2, log=True)
        if trial.number == 1 and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            time.sleep(120)
        return x


@dataclass
class LoggedTrial:
    """A trivial objective that appends ``trial.number`` to ``<folder>/<pid>.log``."""

    folder: Path

    def __call__(self, trial: optuna.Trial) -> float:
        x = trial.suggest_float("train.lr", 1e-4, 1e-2, log=True)
        time.sleep(0.02 + 0.01 * (trial.number * 7 % 10))  # uneven, as real trials are
        with open(self.folder / f"{os.getpid()}.log", "a") as log:
            log.write(f"{trial.number}\n")
        return -abs(x - 3e-3)


def _storages() -> list[Any]:
    return [
        "sqlite",
        pytest.param(
            "postgres",
            marks=pytest.mark.skipif(
                not POSTGRES, reason="SPEECHSTACK_TEST_POSTGRES (a postgresql:// URL) is not set"
            ),
        ),
    ]


def _worker_config(workdir: Path, storage: str) -> Config:
    values: dict[str, Any] = {
        "experiment": f"workers-{uuid.uuid4().hex[:8]}",
        "tune.heartbeat_seconds": 1,
        "tune.grace_seconds": 2,
        "tune.studies_dir": str(workdir / "studies"),
    }
    if storage == "postgres":
        values["tune.storage"] = POSTGRES
    return override_config(load_config(None), values, "test")


@pytest.mark.parametrize("storage", _storages())
def test_a_killed_worker_s_trial_is_retried_and_no_finished_trial_is_lost(
    tmp_path: Path, storage: str
) -> None:
    config = _worker_config(tmp_path, storage)
    url = tune.storage_url(config)
    objective = SlowSecondTrial(tmp_path / "trial1-started")
    tune.open_study(config, url)
    worker = multiprocessing.get_context("spawn").Process(
        target=tune.run_worker, args=(config, url, 3, objective)
    )
    worker.start()
    try:
        deadline = time.monotonic() + 90
        while not objective.marker.exists():
            assert worker.is_alive() and time.monotonic() < deadline, "worker never reached trial 1"
            time.sleep(0.1)
    finally:
        worker.kill()  # SIGKILL: no clean-up, trial 1 stays RUNNING
        worker.join()
    before = trials_of(config)
    assert states(before) == ["COMPLETE", "RUNNING"]

    time.sleep(config.tune.grace_seconds + 1)  # trial 1's heartbeat goes stale
    tune.run_worker(config, url, 3, objective)
    after = trials_of(config)
    assert states(after) == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert (after[0].params, after[0].value) == (before[0].params, before[0].value)
    retry = after[2]
    assert retry.system_attrs["failed_trial"] == 1 and retry.params == before[1].params
    if storage == "postgres":
        optuna.delete_study(study_name=tune.study_name(config), storage=url)


@pytest.mark.parametrize("storage", _storages())
def test_two_workers_fill_one_study_without_losing_or_duplicating_trials(
    tmp_path: Path, storage: str
) -> None:
    total = 16
    config = _worker_config(tmp_path, storage)
    url = tune.storage_url(config)
    tune.open_study(config, url)
    logs = tmp_path / "logs"
    logs.mkdir()
    codes = tune.run_workers(config, url, total, LoggedTrial(logs), workers=2)
    assert codes == [0, 0]

    trials = trials_of(config)
    per_worker = [
        [int(line) for line in path.read_text().split()] for path in sorted(logs.iterdir())
    ]
    assert len(per_worker) == 2 and all(per_worker)  # both workers ran trials
    logged = [number for numbers in per_worker for number in numbers]
    assert len(logged) == len(set(logged))  # no trial ran twice
    assert sorted(logged) == [t.number for t in trials]  # none lost, none unaccounted for
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len(trials) == total  # exact
    assert len({t.params["train.lr"] for t in trials}) == len(trials)  # workers draw apart
    if storage == "postgres":
        optuna.delete_study(study_name=tune.study_name(config), storage=url)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
@pytest.mark.parametrize("storage", _storages())
def test_workers_asking_at_the_same_instant_do_not_overshoot_the_total(
    tmp_path: Path, storage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _worker_config(tmp_path, storage)
    url = tune.storage_url(config)
    workers = [tune.open_study(config, url, worker, budget=1) for worker in range(2)]
    count = tune.budget_has_room

    def slow_count(trials: list[optuna.trial.FrozenTrial], total: int) -> bool:
        room = count(trials, total)
        time.sleep(0.3)  # the other worker counts meanwhile, unless the lock holds it back
        return room

    monkeypatch.setattr(tune, "budget_has_room", slow_count)
    outcomes: list[str] = []

    def ask(study: optuna.Study) -> None:
        try:
            outcomes.append(f"trial {study.ask().number}")
        except tune.BudgetFull:
            outcomes.append("full")

    threads = [threading.Thread(target=ask, args=(study,)) for study in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["full", "trial 0"]
    assert len(trials_of(config)) == 1
    if storage == "postgres":
        optuna.delete_study(study_name=tune.study_name(config), storage=url)


# ---------------------------------------------------------------------------------------
# Search spaces


BAD_SPACES = {
    "unknown config key": (
        "train.lrr: {type: float, low: 1.0e-4, high: 1.0e-2}",
        ["train.lrr", "unknown key", "valid keys here", "weight_decay"],
    ),
    "unknown model param": (
        "model.params.dropout: {type: float, low: 0.0, high: 0.5}",
        ["model.params.dropout", "unknown key", "drop_rate"],
    ),
    "low above high": (
        "train.lr: {type: float, low: 0.1, high: 0.01}",
        ["train.lr", "low (0.1) is greater than high (0.01)"],
    ),
    "unknown type": (
        "train.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}",
        ["train.lr", "type", "'float', 'int' or 'categorical'"],
    ),
    "misspelt field": (
        "train.lr: {type: float, lo: 1.0e-4, high: 1.0e-2}",
        ["train.lr.lo", "valid keys here: choices, high, log, low, step, type"],
    ),
    "value out of range": (
        "augment.mixup.p: {type: float, low: 0.0, high: 1.5}",
        ["augment.mixup.p", "1.5", "less than or equal to 1"],
    ),
    "wrong value type": (
        "train.epochs: {type: categorical, choices: [ten]}",
        ["train.epochs", "'ten'"],
    ),
    "categorical without choices": (
        "train.lr: {type: categorical}",
        ["train.lr", "non-empty 'choices'"],
    ),
    "untunable key": (
        "experiment: {type: categorical, choices: [a, b]}",
        ["experiment", "cannot be tuned"],
    ),
}


@pytest.mark.parametrize("case", BAD_SPACES, ids=list(BAD_SPACES))
def test_a_bad_search_space_entry_is_a_clear_error_naming_the_key(
    workdir: Path, case: str, capsys: pytest.CaptureFixture
) -> None:
    entry, fragments = BAD_SPACES[case]
    bad = workdir / "configs" / "speech_commands" / "bad.yaml"
    bad.write_text(f"base: cnn.yaml\nexperiment: bad\ntune:\n  space:\n    {entry}\n")
    assert main(["tune", "--config", str(bad), "--trials", "1"]) == 2
    error = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in error, (fragment, error)
    assert not (workdir / "studies").exists()  # nothing started


def test_an_empty_search_space_says_how_to_declare_one() -> None:
    config = override_config(load_config(None), {}, "test")
    with pytest.raises(ConfigError, match=r"tune\.space is empty"):
        tune.check_space(config, "<defaults>")


def test_an_experiment_adds_to_and_removes_from_its_base_s_space(workdir: Path) -> None:
    child = workdir / "configs" / "speech_commands" / "child.yaml"
    child.write_text(
        "base: cnn.yaml\ntune:\n  space:\n    train.lr: null\n"
        "    train.epochs: {type: int, low: 2, high: 6, step: 2}\n"
    )
    space = load_config(child).tune.dimensions
    assert "train.lr" not in space and "model.params.drop_rate" in space
    assert space["train.epochs"].type == "int"


CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# every experiment a user can name: the files, and each task composed with each shared
# family (configs/models/, configs/recipes/ and configs/transcribers/ hold fragments, valid
# only over a task)
FRAGMENTS = {"models", "recipes", "transcribers"}
EXPERIMENTS = sorted(
    {p for p in CONFIGS.rglob("*.yaml") if p.parent.name not in FRAGMENTS}
    | {
        task.parent / family.name
        for task in CONFIGS.glob("*/base.yaml")
        for family in (CONFIGS / "models").glob("*.yaml")
    }
)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_search_space_is_valid(path: Path) -> None:
    tune.check_space(load_config(path), str(path))


def test_export_without_a_study_names_the_study(workdir: Path) -> None:
    config_path = workdir / "configs" / "speech_commands" / "cnn.yaml"
    with pytest.raises(FileNotFoundError, match="no study 'speech_commands-cnn'"):
        tune.export_best(load_config(config_path), config_path)
