"""``speechstack solution`` / ``make solution``: the recommended recipe in one command.

A recipe file (``configs/<task>/solution-cpu.yaml``, ``solution-gpu.yaml``) names the
families (experiment files plus overrides) and the number of pseudo-label rounds:

1. folds (written once), then every family trained on every fold (finished folds are
   skipped, so an interrupted recipe resumes where it stopped);
2. the stack of round 0 (``stack``): LightGBM, the plain mean and every member, scored on
   the shifted OOF rows; the simplest within ``stack.margin_se`` standard errors of the
   best is kept;
3. each pseudo round r: the kept source's confident test clips (``pseudo`` settings) join
   the training side of every fold, the ``retrain`` families train again as
   ``<experiment>-r<r>`` (from nothing, or with ``solution.warm_start`` fine-tuned from
   their round r-1 fold models), and ``stack-r<r>`` stacks them with every earlier round's
   families (so a round that does not help is simply not kept);
4. the last stack's kept source writes the submission.

Every source's CV, shifted-OOF and (with an answer key, as the demo data has) test accuracy
is printed as one table and saved to ``runs/<dataset>/solution.json``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from speechstack.artifacts import atomic_write_json, read_frame
from speechstack.config import Config, SolutionConfig, composed_experiment, load_config
from speechstack.fold_pool import train_folds
from speechstack.folds import write_folds
from speechstack.pseudo import (
    class_counts,
    pseudo_labels_path,
    select_pseudo_labels,
    write_pseudo_labels,
)
from speechstack.stack import collect_test, member_columns, run_stack
from speechstack.submission import (
    accuracy_by_condition,
    predicted_labels,
    predictions_to_submission,
    score_submission,
    share_warnings,
    skipped_validation,
    write_submission,
)
from speechstack.tasks import Task, create_task

log = logging.getLogger(__name__)


class SolutionError(ValueError):
    """The recipe file is unusable; the message names it."""


@dataclass
class SourceScore:
    """One line of the recipe's table."""

    source: str
    round: int
    kind: str  # experiment | stack
    cv: float | None
    shifted: float | None
    test: float | None = None
    note: str = ""


@dataclass
class SolutionReport:
    dataset: str
    rows: list[SourceScore] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)  # pseudo labels per round
    submission: str | None = None
    submitted_source: str | None = None
    test_accuracy: float | None = None
    conditions: dict[str, list[tuple[str, float, int]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _settings(values: dict[str, Any]) -> list[str]:
    """``{"train.epochs": 36}`` -> ``["train.epochs=36"]`` (values as JSON, which YAML reads)."""
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def experiment_config(
    recipe: Config,
    recipe_path: Path,
    index: int,
    overrides: list[str],
    extra: list[str],
    retrained: bool = False,
) -> Config:
    """The resolved config of the recipe's ``index``-th family: its file, the recipe's
    ``set`` for it (and ``retrain_set`` when ``retrained`` in a pseudo round), the command
    line's overrides, then ``extra`` (round settings)."""
    solution = recipe.solution
    entry = solution.experiments[index]
    path = (recipe_path.parent / entry.config).resolve()
    if not path.is_file() and composed_experiment(path) is None:
        raise SolutionError(f"{recipe_path}: solution.experiments[{index}]: {path} not found")
    sets = _settings(entry.set) + (_settings(solution.retrain_set) if retrained else [])
    dataset = [] if recipe.task.dataset is None else [f"task.dataset={recipe.task.dataset}"]
    return load_config(path, [*sets, *overrides, *dataset, *extra])


def run_solution(
    recipe: Config, recipe_path: Path, overrides: list[str], progress: bool = True
) -> SolutionReport:
    """Run the recipe (see the module docstring); ``overrides`` are the command line's
    ``key=value`` settings, applied to every family after the recipe's own."""
    started = time.perf_counter()
    solution = recipe.solution
    if not solution.experiments:
        raise SolutionError(f"{recipe_path}: solution.experiments is empty")
    # every config is resolved (and so validated) before any data is read or work starts
    round_zero = [
        experiment_config(recipe, recipe_path, i, overrides, [])
        for i in range(len(solution.experiments))
    ]
    names = [config.experiment for config in round_zero]
    unknown = sorted(set(solution.retrain or []) - set(names))
    if unknown:
        raise SolutionError(
            f"{recipe_path}: solution.retrain names {unknown}, not among the experiments {names}"
        )
    retrain = [i for i, name in enumerate(names) if name in (solution.retrain or names)]
    if solution.pseudo_rounds:  # the rounds' settings (retrain_set) too, before any training
        for i in retrain:
            experiment_config(recipe, recipe_path, i, overrides, [], retrained=True)

    task = create_task(recipe.task)
    manifest = task.train_manifest()
    if not recipe.folds_file.is_file():
        write_folds(manifest, recipe.folds_file, recipe.folds.k, recipe.folds.seed)
        log.info("wrote %s", recipe.folds_file)
    report = SolutionReport(recipe.task.dataset_name)

    stack_name = "stack"
    _train_round(round_zero, progress)
    stacked = [c.experiment for c in round_zero]
    _stack(recipe, task, manifest, stacked, stack_name, report, 0)
    for number in range(1, solution.pseudo_rounds + 1):
        chooser = recipe.model_copy(deep=True)
        chooser.pseudo.source, chooser.pseudo.round = stack_name, number
        chosen = select_pseudo_labels(chooser, task)
        path = write_pseudo_labels(chosen, pseudo_labels_path(chooser))
        counts = class_counts(chosen, task.labels)
        report.rounds.append(
            {
                "round": number,
                "from": stack_name,
                "file": str(path),
                "clips": chosen.height,
                "per_label": dict(zip(counts["label"], counts["clips"], strict=True)),
            }
        )
        configs = [
            experiment_config(
                recipe,
                recipe_path,
                i,
                overrides,
                [
                    f"experiment={names[i]}-r{number}",
                    f"train.pseudo_labels={path}",
                    *_warm_start(solution, names[i], number),
                ],
                retrained=True,
            )
            for i in retrain
        ]
        _train_round(configs, progress)
        stack_name = f"stack-r{number}"
        # every round's families so far: the stack keeps a round's models only where they
        # beat the earlier ones on the shifted OOF rows
        stacked = [*stacked, *(c.experiment for c in configs)]
        _stack(recipe, task, manifest, stacked, stack_name, report, number)

    _submit(recipe, task, stack_name, report)
    report.seconds = time.perf_counter() - started
    atomic_write_json(recipe.task_runs_dir / "solution.json", asdict(report))
    return report


def _warm_start(solution: SolutionConfig, name: str, number: int) -> list[str]:
    """``solution.warm_start``: the override that starts round ``number`` of ``name`` from
    the round before (round 1 from the round-0 experiment itself)."""
    if not solution.warm_start:
        return []
    return [f"train.init_from={name if number == 1 else f'{name}-r{number - 1}'}"]


def _train_round(configs: list[Config], progress: bool) -> None:
    for config in configs:
        log.info("training %s on every fold", config.experiment)
        train_folds(config, progress=progress)


def _stack(
    recipe: Config,
    task: Task,
    manifest: pl.DataFrame,
    experiments: list[str],
    name: str,
    report: SolutionReport,
    number: int,
) -> None:
    """Stack ``experiments`` as ``name`` and add every source's scores to the report."""
    stack_config = recipe.stack.model_copy(update={"name": name, "experiments": experiments})
    metrics = run_stack(
        stack_config,
        recipe.task_runs_dir,
        recipe.folds_file,
        task.labels,
        manifest=manifest,
        report_columns=task.report_columns(),
    )
    runs = recipe.task_runs_dir
    listed = {row.source for row in report.rows}
    for source in [name for name in experiments if name not in listed]:
        scores = metrics["sources"][source]
        test = collect_test(runs, [source], recipe.folds.k, task.labels)
        report.rows.append(
            SourceScore(
                source,
                number,
                "experiment",
                scores["cv"],
                scores["shifted"],
                _test_accuracy(task, test, member_columns(source, task.labels)),
            )
        )
    for combiner in ("mean", "lightgbm"):
        scores = metrics["sources"][combiner]
        report.rows.append(
            SourceScore(f"{name}: {combiner}", number, "stack", scores["cv"], scores["shifted"])
        )
    test_path = runs / name / "test.parquet"
    test = read_frame(test_path) if test_path.is_file() else None
    report.rows.append(
        SourceScore(
            f"{name} (kept: {metrics['selected']})",
            number,
            "stack",
            metrics["stack_accuracy"],
            metrics["stack_accuracy_shifted"],
            _test_accuracy(task, test, task.labels),
            metrics["reason"],
        )
    )


def _test_accuracy(task: Task, test: pl.DataFrame | None, columns: list[str]) -> float | None:
    """Accuracy on the task's answer key (demo data), or None without one."""
    answers = task.solution()
    if test is None or answers is None:
        return None
    chosen = predicted_labels(test, task.labels, columns)
    return score_submission(pl.DataFrame({"fname": test["fname"], "label": chosen}), answers)


def _submit(recipe: Config, task: Task, stack_name: str, report: SolutionReport) -> None:
    """The submission CSV from the last stack's kept source (when the data has a test set)."""
    stack_dir = recipe.task_runs_dir / stack_name
    test_path = stack_dir / "test.parquet"
    if not test_path.is_file():
        log.info("%s: no test predictions (the data has no test set); no submission", stack_dir)
        return
    metrics = json.loads((stack_dir / "metrics.json").read_text())
    probabilities = read_frame(test_path)
    submission = predictions_to_submission(probabilities, task.labels)
    from speechstack.folds import read_folds

    report.warnings = share_warnings(
        submission["label"], read_folds(recipe.folds_file)["label"], task.labels
    )
    if task.sample_submission() is None:
        report.warnings.append(skipped_validation(task))
    path = write_submission(
        submission,
        Path("submissions"),
        recipe.task.dataset_name,
        metrics["stack_accuracy"],
        task.labels,
        task.sample_submission(),
    )
    report.submission = str(path)
    report.submitted_source = f"{stack_name}: {metrics['selected']}"
    answers = task.solution()
    if answers is not None:
        report.test_accuracy = score_submission(submission, answers)
    conditions = task.conditions()
    if conditions is not None:
        report.conditions = accuracy_by_condition(submission, conditions)
