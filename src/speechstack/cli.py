"""The ``speechstack`` command. One verb per stage; the Makefile wraps each.

    speechstack synth       --task ravdess --out data/ravdess  demo dataset (espeak-ng)
    speechstack folds       --config configs/speech_commands/cnn.yaml
    speechstack train-fold  --config ... --fold 0
    speechstack train       --config ...                       all folds (finished ones skipped)
    speechstack stack       --config ... [--experiments cnn,other]
    speechstack leaderboard --config ...                       every experiment: CV, size, speed
    speechstack submission  --config ... [--source stack]
    speechstack submit      [--file F] [--message M] [--dry-run]
    speechstack report      --config ... [--experiments a,b]     report.md + confusion.png
    speechstack predict     --config ... --audio DIR [--source S]  CSV: label + probabilities
                            [--runtime onnx|onnx-int8]         through the exported models
    speechstack export      --config ... [--quantize static]     fold models -> one ONNX graph
    speechstack spot        --config ... FILE_OR_DIR [--plot]    keywords in long recordings
    speechstack pseudo      --config ... [--set pseudo.threshold=0.95]  confident test clips
    speechstack pretrain    --config configs/pretrain/wav2vec2.yaml [--audio DIR] [--size S]
    speechstack solution    --config configs/speech_commands/solution-cpu.yaml [--data DIR]
    speechstack tune        --config ... [--trials N] [--workers W] [--storage URL]
    speechstack tune        --config ... --export                best trial -> <exp>-best.yaml
    speechstack dashboard   --config ... [--port 8080]           optuna-dashboard on loopback
    speechstack dashboard-screenshot --config ...                studies/<study>/dashboard.png

Every verb that takes ``--config`` also takes ``--set key.sub=value`` (repeatable) and
``--data DIR`` (shorthand for ``--set task.data_dir=DIR``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from speechstack.config import RUNTIMES, Config, ConfigError, load_config

if TYPE_CHECKING:  # the verbs import what they use when they run (fast --help)
    from speechstack.tasks import Task


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain fixed-width table (floats to 4 places)."""
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True))
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])


def _config(args: argparse.Namespace) -> Config:
    overrides = list(args.set or [])
    if args.data:
        overrides.append(f"task.data_dir={args.data}")
    if getattr(args, "experiment", None):
        overrides.append(f"experiment={args.experiment}")
    return load_config(args.config, overrides)


# ---------------------------------------------------------------------------------------
# Verbs


def cmd_synth(args: argparse.Namespace) -> None:
    from speechstack.synth import generate_demo

    started = time.perf_counter()
    out = generate_demo(
        args.task,
        Path(args.out or f"data/{args.task}"),
        seed=args.seed,
        force=args.force,
        speakers=args.speakers,
        test_speakers=args.test_speakers,
        test_clips=args.test_clips,
        noise_seconds=args.noise_seconds,
    )
    files = sum(
        1
        for path in out.rglob("*")
        if path.suffix in (".wav", ".mp3") and "demo_holdout" not in path.parts
    )
    print(f"wrote {out} ({files} audio files) in {time.perf_counter() - started:.1f} s")


def cmd_folds(args: argparse.Namespace) -> None:
    import polars as pl

    from speechstack.folds import write_folds
    from speechstack.tasks import create_task

    config = _config(args)
    manifest = create_task(config.task).train_manifest()
    folds = write_folds(manifest, config.folds_file, config.folds.k, config.folds.seed, args.force)
    counts = (
        folds.group_by("fold")
        .agg(pl.len().alias("clips"), pl.col("group").n_unique().alias("speakers"))
        .sort("fold")
    )
    print(f"wrote {config.folds_file}: {folds.height} clips, {config.folds.k} folds")
    print(format_table(["fold", "clips", "speakers"], counts.rows()))


def _print_fold_table(metrics: list[dict]) -> None:
    rows = [
        (
            m["experiment"],
            m["fold"],
            m["best_epoch"],
            m["val_accuracy"],
            m["train_seconds"],
            "skipped (finished)" if m.get("skipped") else "trained",
        )
        for m in metrics
    ]
    print(format_table(["experiment", "fold", "best epoch", "val acc", "seconds", "status"], rows))


def cmd_train_fold(args: argparse.Namespace) -> None:
    from speechstack.train import train_fold

    config = _config(args)
    _print_fold_table([train_fold(config, args.fold)])


def cmd_train(args: argparse.Namespace) -> None:
    from speechstack.fold_pool import train_folds
    from speechstack.models import model_trainer

    config = _config(args)
    if model_trainer(config.model.name) == "transcriber":
        from speechstack.transcribe import train_transcriber

        result = train_transcriber(config)
        test = (
            f"test (unseen speakers) WER {result['test_wer']:.4f} CER {result['test_cer']:.4f}"
            if result["test_wer"] is not None
            else "test: no sentences to score (`make submission` writes its transcripts)"
        )
        print(
            f"{config.experiment}: best epoch {result['best_epoch']}, "
            f"dev WER {result['dev_wer']:.4f} CER {result['dev_cer']:.4f}; {test}; "
            f"report: {config.run_dir / 'report.md'}"
        )
        return
    folds = [int(f) for f in args.folds.split(",")] if args.folds else None
    metrics = train_folds(config, folds)
    _print_fold_table(metrics)
    mean = sum(m["val_accuracy"] for m in metrics) / len(metrics)
    print(f"{config.experiment}: mean fold accuracy {mean:.4f}")


def cmd_pretrain(args: argparse.Namespace) -> None:
    from speechstack.pretrain import pretrain

    if args.audio:
        args.set = [*(args.set or []), f"pretrain.audio_dir={args.audio}"]
    if args.size:
        args.set = [*(args.set or []), f"pretrain.size={args.size}"]
    result = pretrain(_config(args))
    if not result.get("skipped"):
        print(f"pre-trained {result['out']} ({result['parameters'] / 1e6:.1f}M parameters, "
              f"{result['files']} files, {result['seconds']:.0f} s): contrastive accuracy "
              f"{result['accuracy']:.3f}, perplexity {result['perplexity']:.1f}; fine-tune "
              f"with model.params.pretrained={result['out']} model.params.config=null")  # fmt: skip


def cmd_stack(args: argparse.Namespace) -> None:
    from speechstack.stack import run_stack
    from speechstack.tasks import create_task

    config = _config(args)
    if args.experiments:
        config.stack.experiments = [e for e in args.experiments.split(",") if e]
    task = create_task(config.task)
    run_root = config.task_runs_dir
    metrics = run_stack(
        config.stack,
        run_root,
        config.folds_file,
        task.labels,
        manifest=task.train_manifest(),
        report_columns=task.report_columns(),
    )
    rows = [(name, score) for name, score in metrics["experiments"].items()]
    rows.append(("mean of probabilities", metrics["mean_accuracy"]))
    rows.append((f"LightGBM stack ({config.stack.name})", metrics["stack_accuracy"]))
    print(format_table(["model", "CV accuracy"], rows))
    print(
        f"wrote {run_root / config.stack.name} (report: {run_root / config.stack.name}/report.md)"
    )


def cmd_leaderboard(args: argparse.Namespace) -> None:
    from speechstack.leaderboard import leaderboard
    from speechstack.tasks import create_task

    config = _config(args)
    labels = create_task(config.task).labels
    entries = leaderboard(config.task_runs_dir, config.folds_file, labels)
    rows = [
        (
            e.experiment,
            f"{e.folds_done}/{config.folds.k}",
            "-" if e.cv_accuracy is None else e.cv_accuracy,
            e.mean_fold_accuracy,
            f"{e.parameters / 1e6:.2f}M",
            f"{e.train_seconds:.0f}",
            "-" if e.inference_clips_per_second is None else f"{e.inference_clips_per_second:.0f}",
        )
        for e in entries
    ]
    headers = ["experiment", "folds", "CV acc", "mean fold acc", "params", "train s"]
    print(format_table([*headers, "infer clips/s"], rows))


def cmd_submission(args: argparse.Namespace) -> None:
    from speechstack.stack import source_predictions
    from speechstack.submission import (
        accuracy_by_condition,
        predictions_to_submission,
        score_submission,
        skipped_validation,
        write_submission,
    )
    from speechstack.tasks import create_task

    config = _config(args)
    task = create_task(config.task)
    from speechstack.transcribe import is_transcriber_run

    if is_transcriber_run(config.task_runs_dir / (args.source or config.experiment)):
        _transcript_submission(args, config, task, args.source or config.experiment)
        return
    source = args.source or config.stack.name
    chosen = source_predictions(
        config.task_runs_dir, source, config.folds_file, task.labels,
        is_stack=source == config.stack.name,
    )  # fmt: skip
    if chosen.note:
        print(chosen.note)
    probabilities, score = chosen.test, chosen.cv_accuracy
    if args.runtime != "torch":  # the test set again, through the exported models
        from speechstack.inference import predicted_test_frame

        probabilities = predicted_test_frame(config, source, task.labels, args.runtime)
        print(f"test probabilities from the exported models ({args.runtime})")
    submission = predictions_to_submission(probabilities, task.labels)
    sample = task.sample_submission()
    path = write_submission(
        submission, Path(args.out), config.task.dataset_name, score, task.labels, sample
    )
    print(f"wrote {path} ({submission.height} rows, CV accuracy {score:.4f})")
    if sample is None:
        print(f"warning: {skipped_validation(task)}", file=sys.stderr)
    from speechstack.folds import read_folds
    from speechstack.submission import share_warnings

    for warning in share_warnings(
        submission["label"], read_folds(config.folds_file)["label"], task.labels
    ):
        print(f"warning: {warning}", file=sys.stderr)
    solution = task.solution()
    if solution is not None:
        print(
            f"demo test-set accuracy (unseen speakers, from {solution.name}): "
            f"{score_submission(submission, solution):.4f}"
        )
    conditions = task.conditions()
    if conditions is not None:
        _print_conditions(accuracy_by_condition(submission, conditions))


def _transcript_submission(args: argparse.Namespace, config: Config, task: Task, run: str) -> None:
    """A speech-recognition run's test transcripts as the task's submission (``id,sentence``)."""
    from speechstack.submission import write_transcript_submission
    from speechstack.transcribe import test_transcripts

    sample = task.sample_submission()
    if sample is None:
        raise ValueError(f"no submission for this task: {task.no_sample_submission_reason()}")
    if args.runtime != "torch":
        raise ValueError("--runtime onnx exports classifiers only; transcripts use torch")
    transcripts, dev_wer = test_transcripts(config.task_runs_dir / run)
    path = write_transcript_submission(
        transcripts, Path(args.out), config.task.dataset_name, dev_wer, sample
    )
    print(f"wrote {path} ({transcripts.height} transcripts by {run!r}, dev WER {dev_wer:.4f})")
    solution = task.solution()
    if solution is not None:
        from speechstack.transcribe import score_transcripts

        said = transcripts.rename({"fname": "id"})
        rates = score_transcripts(said, solution, config.task_runs_dir / run, key="id")
        print(f"demo test (unseen speakers, from {solution.name}): "
              f"WER {rates.wer:.4f}, CER {rates.cer:.4f}")  # fmt: skip


def _print_conditions(table: dict[str, list[tuple[str, float, int]]]) -> None:
    """The test accuracy by condition, one line per condition column."""
    print("demo test accuracy by condition (accuracy/clips):")
    for column, rows in table.items():
        cells = "  ".join(f"{value}: {accuracy:.3f}/{clips}" for value, accuracy, clips in rows)
        print(f"  {column:<9} {cells}")


def cmd_clean_tmp(args: argparse.Namespace) -> None:
    from speechstack.artifacts import remove_orphans

    removed = [path for folder in args.folders for path in remove_orphans(Path(folder))]
    for path in removed:
        print(f"removed {path}")
    print(f"{len(removed)} temp file(s) of killed runs removed from {', '.join(args.folders)}")


def cmd_submit(args: argparse.Namespace) -> None:
    from speechstack.submission import latest_submission, submit

    file = Path(args.file) if args.file else latest_submission(Path(args.dir))
    message = args.message or f"speechstack {file.name}"
    command = submit(file, message, dry_run=args.dry_run)
    prefix = "would run" if args.dry_run else "ran"
    print(f"{prefix}: {' '.join(command)}")


def cmd_report(args: argparse.Namespace) -> None:
    from speechstack.report import report_oof
    from speechstack.stack import stack_members
    from speechstack.tasks import create_task
    from speechstack.train import write_experiment_report

    config = _config(args)
    task = create_task(config.task)
    manifest = task.train_manifest()
    names = (
        [e for e in args.experiments.split(",") if e]
        if args.experiments
        else sorted(
            p.name for p in config.task_runs_dir.glob("*") if p.is_dir() and p.name != "pseudo"
        )
    )
    if not names:
        raise FileNotFoundError(f"{config.task_runs_dir}: no runs to report on")
    rows = []
    for name in names:
        run_dir = config.task_runs_dir / name
        if stack_members(run_dir) is not None:
            title = f"{config.task.dataset_name} / {name}"
            summary = report_oof(run_dir, title, manifest, task.labels, task.report_columns())
        else:
            experiment = config.model_copy(update={"experiment": name})
            summary = write_experiment_report(experiment, task, manifest)
        if summary is None:
            rows.append((name, "-", "-", "-", "unfinished folds: no report"))
            continue
        macro = summary["averages"]["macro"]["f1"]
        rows.append((name, summary["accuracy"], summary["uar"], macro, str(run_dir / "report.md")))
    print(format_table(["run", "accuracy", "UAR", "macro F1", "report"], rows))


def cmd_predict(args: argparse.Namespace) -> None:
    from speechstack.artifacts import atomic_write_frame
    from speechstack.inference import predict_folder, score_predictions
    from speechstack.tasks import create_task

    config = _config(args)
    source = args.source or config.stack.name
    audio = Path(args.audio)
    from speechstack.transcribe import is_transcriber_run

    if is_transcriber_run(config.task_runs_dir / (args.source or config.experiment)):
        _predict_transcripts(args, config, args.source or config.experiment)
        return
    labels = create_task(config.task).labels
    predictions, unreadable = predict_folder(
        config, audio, source, labels, tta=not args.no_tta, strict=args.strict,
        runtime=args.runtime,
    )  # fmt: skip
    out = (
        Path(args.out)
        if args.out
        else config.task_runs_dir / source / "predictions" / f"{audio.resolve().name}.csv"
    )
    bad_list = out.with_name(f"{out.stem}.bad.csv")
    atomic_write_frame(out, predictions)
    if unreadable.height:
        atomic_write_frame(bad_list, unreadable)
    else:
        bad_list.unlink(missing_ok=True)  # a previous run's list would no longer be true
    counts = predictions.group_by("label").len().sort("label")
    print(f"wrote {out}: {predictions.height} files predicted by {source!r}")
    print(format_table(["label", "files"], counts.rows()))
    if unreadable.height:
        plural = "s" if unreadable.height != 1 else ""
        print(f"{unreadable.height} file{plural} could not be read: see {bad_list}")
    if args.answers:
        accuracy, scored = score_predictions(predictions, Path(args.answers))
        print(f"accuracy against {args.answers}: {accuracy:.4f} ({scored} files)")


def cmd_export(args: argparse.Namespace) -> None:
    from speechstack.export import export_experiment

    config = _config(args)
    folds = [int(fold) for fold in args.folds.split(",")] if args.folds else None
    result = export_experiment(config, quantize=args.quantize, tta=not args.no_tta, folds=folds)
    print(
        f"exported {result.folds} fold{'s' if result.folds != 1 else ''} of {config.experiment!r} "
        f"(largest difference from PyTorch: {result.parity:.1e})"
    )
    print(format_table(["file", "bytes"], [(str(p), result.bytes[p.name]) for p in result.paths]))


def cmd_spot(args: argparse.Namespace) -> None:
    import polars as pl

    from speechstack.inference import spot_files
    from speechstack.spot import detections_frame, plot_scores, score_detections, write_detections
    from speechstack.tasks import create_task

    config = _config(args)
    labels = create_task(config.task).labels
    source = args.source or config.experiment
    results = spot_files(config, source, Path(args.path), labels, runtime=args.runtime)
    detections = {name: result.detections for name, result in results.items()}
    out = Path(args.out) if args.out else config.task_runs_dir / source / "spot" / "detections.csv"
    write_detections(out, detections)
    table = detections_frame(detections)
    print(f"wrote {out}: {table.height} detections in {len(results)} files by {source!r}")
    truth = pl.read_csv(args.answers) if args.answers else None
    for name, result in results.items() if args.plot else ():
        picture = out.with_name(f"{out.stem}-{Path(name).stem}.png")
        mine = truth.filter(pl.col("file") == Path(name).name) if truth is not None else None
        plot_scores(result, None, picture, mine)
        print(f"plot: {picture}")
    if truth is not None:
        score = score_detections(table, truth, ignore=config.spot.ignore)
        print(
            f"against {args.answers}: precision {score.precision:.3f}, "
            f"recall {score.recall:.3f} ({score.matched} words found)"
        )


def _predict_transcripts(args: argparse.Namespace, config: Config, source: str) -> None:
    """``predict`` with a speech-recognition run: ``path,sentence`` for every audio file of
    the folder; ``--answers`` (``path,sentence``) prints WER and CER."""
    from speechstack.artifacts import atomic_write_frame
    from speechstack.inference import audio_manifest
    from speechstack.transcribe import score_transcripts, transcribe_manifest

    audio, run_dir = Path(args.audio), config.task_runs_dir / source
    predictions = transcribe_manifest(config, run_dir, audio_manifest(audio))
    out = Path(args.out) if args.out else run_dir / "predictions" / f"{audio.resolve().name}.csv"
    atomic_write_frame(out, predictions)
    print(f"wrote {out}: {predictions.height} files transcribed by {source!r}")
    if args.answers:
        rates = score_transcripts(predictions, Path(args.answers), run_dir)
        print(f"against {args.answers}: WER {rates.wer:.4f}, CER {rates.cer:.4f}")


def cmd_pseudo(args: argparse.Namespace) -> None:
    import re

    import polars as pl

    from speechstack.pseudo import (
        choose_confident,
        class_counts,
        pseudo_labels_path,
        pseudo_source,
        source_predictions,
        write_pseudo_labels,
    )
    from speechstack.stack import stack_members
    from speechstack.tasks import create_task

    config = _config(args)
    task = create_task(config.task)
    pseudo = config.pseudo
    predictions = source_predictions(config, task)
    chosen = choose_confident(predictions, pseudo)
    confident = predictions.filter(pl.col("confidence") >= pseudo.threshold)
    agreeing = confident.filter(pl.col("agree")) if pseudo.agreement else confident
    print(
        f"source {pseudo_source(config)!r}: {predictions.height} test clips; "
        f"{confident.height} with top probability >= {pseudo.threshold:g}"
        + (f", {agreeing.height} of them agreed" if pseudo.agreement else "")
        + f"; kept {chosen.height} (max_share {pseudo.max_share:g})"
    )
    shares = class_counts(predictions, task.labels)
    added = class_counts(chosen, task.labels)
    rows = [
        (label, test, share, clips, "-" if confidence is None else confidence)
        for (label, test, share), (_, clips, _, confidence) in zip(
            shares.select("label", "clips", "share").rows(), added.rows(), strict=True
        )
    ]
    overall = chosen["confidence"].mean() if chosen.height else None
    rows.append(("all", predictions.height, 1.0, chosen.height, overall or "-"))
    headers = ["label", "test predicted", "test share", "clips added", "mean confidence"]
    print(format_table(headers, rows))
    if chosen.is_empty():
        raise ValueError(
            "no test clip qualifies: lower pseudo.threshold"
            + (" or set pseudo.agreement=false" if pseudo.agreement else "")
            + " (nothing written)"
        )
    path = write_pseudo_labels(chosen, pseudo_labels_path(config))
    print(f"wrote {path} ({chosen.height} clips, round {pseudo.round})")
    data = f" DATA={args.data}" if args.data else ""

    def next_round(name: str) -> str:  # cnn -> cnn-r1; cnn-r1 -> cnn-r2
        return f"{re.sub(r'-r[0-9]+$', '', name)}-r{pseudo.round}"

    experiment = next_round(config.experiment)
    print(
        "next: train on the training folds plus these clips (never validated on), e.g.\n"
        f'  make train CONFIG={args.config}{data} SET="train.pseudo_labels={path}" '
        f"EXP={experiment}"
    )
    run = config.task_runs_dir / pseudo_source(config)
    members = stack_members(run)
    if members is not None:
        renamed = ",".join(next_round(m) for m in members)
        print(
            f"  likewise for each stack member ({', '.join(members)}), then\n"
            f'  make stack{data} EXPERIMENTS={renamed} SET="stack.name={next_round(run.name)}"'
        )


def cmd_solution(args: argparse.Namespace) -> None:
    from speechstack.solution import run_solution

    overrides = list(args.set or [])
    if args.data:
        overrides.append(f"task.data_dir={args.data}")
    recipe = load_config(args.config, overrides)
    name = Path(args.data).resolve().name if args.data else None
    if recipe.task.dataset is None and name and name != recipe.task.name:
        # runs and folds are named after a data folder of another name, so the demo and
        # another corpus never share (and refuse) each other's folds and runs
        overrides.append(f"task.dataset={name}")
        recipe = load_config(args.config, overrides)
    report = run_solution(recipe, Path(args.config), overrides)
    rows = [
        (
            row.source,
            row.round,
            "-" if row.cv is None else row.cv,
            "-" if row.shifted is None else row.shifted,
            "-" if row.test is None else row.test,
        )
        for row in report.rows
    ]
    print(format_table(["source", "round", "CV", "shifted OOF", "test"], rows))
    for added in report.rounds:
        per_label = " ".join(f"{k}={v}" for k, v in added["per_label"].items() if v)
        source = added["from"]
        print(f"pseudo round {added['round']}: {added['clips']} test clips from {source}")
        print(f"  per label: {per_label}")
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if report.submission:
        line = f"submission {report.submission} from {report.submitted_source}"
        if report.test_accuracy is not None:
            line += f"; demo test accuracy {report.test_accuracy:.4f}"
        print(line)
    if report.conditions:
        _print_conditions(report.conditions)
    print(f"solution finished in {report.seconds:.0f} s (runs/{report.dataset}/solution.json)")


def _tune_source(args: argparse.Namespace) -> str:
    """How the study's config was given, for messages and the study's record."""
    parts = [str(args.config), *(f"--set {item}" for item in args.set or [])]
    if args.data:
        parts.append(f"--data {args.data}")
    if getattr(args, "experiment", None):
        parts.append(f"--experiment {args.experiment}")
    return " ".join(parts)


def cmd_tune(args: argparse.Namespace) -> None:
    from speechstack import tune

    config = _config(args)
    if args.export:
        out = Path(args.out) if args.out else None
        path, best = tune.export_best(config, args.config, args.storage, out)
        print(
            f"wrote {path}: trial {best.number} of study {tune.study_name(config)!r}, "
            f"{tune.study_goal(config).metric} {best.value:.4f}"
        )
        print(f"train it with: make train MODEL={path.stem}   (speechstack train --config {path})")
        return
    try:
        report = tune.run_study(config, _tune_source(args), args.trials, args.workers, args.storage)
    except KeyboardInterrupt:
        print(
            "tune: interrupted; finished trials stay in the study and the same command resumes it",
            file=sys.stderr,
        )
        raise
    headers = ["trial", "state", "value", "seconds", "parameters", "note"]
    print(format_table(headers, tune.trial_rows(report.trials)))
    states = {t.state.name for t in report.trials}
    counts = ", ".join(
        f"{sum(t.state.name == s for t in report.trials)} {s.lower()}" for s in sorted(states)
    )
    print(f"study {report.name!r} in {report.storage}: {counts}; {report.seconds:.0f} s")
    best = report.best
    if best is not None:
        params = " ".join(f"{k}={tune.short_value(v)}" for k, v in best.params.items())
        metric = tune.study_goal(config).metric
        print(f"best: trial {best.number}, {metric} {best.value:.4f}: {params}")
    for name, result in report.plots.items():
        print(f"{name}: {result}")
    print(f"trial runs: {report.folder / 'runs'}")
    print("next: make best-config (speechstack tune --export) writes the best trial's config")
    failed = [code for code in report.worker_exit_codes if code != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} worker process(es) exited with {failed}")


def cmd_dashboard(args: argparse.Namespace) -> None:
    from speechstack import tune
    from speechstack.dashboard import DashboardServer, study_id

    config = _config(args)
    url = tune.storage_url(config, args.storage)
    server = DashboardServer(url, args.host, args.port).start()
    print(f"optuna-dashboard for {tune.display_url(url)}: {server.url}/dashboard", flush=True)
    try:
        page = f"{server.url}/dashboard/studies/{study_id(server.url, tune.study_name(config))}"
        print(f"study {tune.study_name(config)!r}: {page}", flush=True)
    except FileNotFoundError as error:
        print(f"note: {error}", flush=True)
    print("Ctrl-C stops it", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("dashboard stopped")
    finally:
        server.stop()


def cmd_dashboard_screenshot(args: argparse.Namespace) -> None:
    from speechstack import tune
    from speechstack.dashboard import screenshot_study

    config = _config(args)
    url = tune.storage_url(config, args.storage)
    out = Path(args.out) if args.out else tune.study_dir(config) / "dashboard.png"
    path, page = screenshot_study(url, tune.study_name(config), out, args.width, args.height)
    print(f"wrote {path} ({args.width}x{args.height}, headless Chromium) of {page}")


# ---------------------------------------------------------------------------------------
# Parser


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, required=True, help="experiment YAML file")
    parser.add_argument(
        "--set", "-s", action="append", metavar="KEY=VALUE", help="override, e.g. train.lr=1e-3"
    )
    parser.add_argument("--data", help="dataset folder (task.data_dir)")
    parser.add_argument("--experiment", help="experiment name (run folder)")


def _add_runtime_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=RUNTIMES[0],
        help="the experiments' PyTorch fold models, or their exported ONNX files "
        "(`speechstack export`; onnx-int8: the quantised one)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speechstack", description=__doc__.split("\n")[0])
    parser.add_argument("--verbose", "-v", action="store_true")
    verbs = parser.add_subparsers(dest="verb", required=True)
    handlers: dict[str, Callable[[argparse.Namespace], None]] = {}

    def verb(
        name: str, handler: Callable[[argparse.Namespace], None], help: str
    ) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        handlers[name] = handler
        return sub

    from speechstack.synth import DEMOS

    synth = verb("synth", cmd_synth, "generate a demo dataset in a task's real layout (espeak-ng)")
    synth.add_argument("--task", choices=sorted(DEMOS), default="speech_commands")
    synth.add_argument("--out", help="dataset folder (default data/<task>)")
    synth.add_argument(
        "--speakers", type=int, help="train speakers/actors (default: the task's demo size)"
    )
    synth.add_argument("--test-speakers", type=int, default=16, help="speech_commands only")
    synth.add_argument("--test-clips", type=int, default=1000, help="speech_commands only")
    synth.add_argument("--noise-seconds", type=float, default=40.0, help="speech_commands only")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--force", action="store_true", help="replace an existing folder")

    folds = verb("folds", cmd_folds, "write folds/<task>.csv (speaker-grouped, stratified)")
    _add_config_arguments(folds)
    folds.add_argument("--force", action="store_true", help="rewrite an existing folds file")

    train_fold = verb("train-fold", cmd_train_fold, "train one fold, write OOF/test predictions")
    _add_config_arguments(train_fold)
    train_fold.add_argument("--fold", type=int, required=True)

    train = verb("train", cmd_train, "train every fold (finished folds are skipped)")
    _add_config_arguments(train)
    train.add_argument("--folds", help="comma-separated subset, e.g. 0,1")

    pre = verb("pretrain", cmd_pretrain, "wav2vec2 pre-trained from scratch on unlabelled audio")
    _add_config_arguments(pre)
    pre.add_argument("--audio", help="folder of audio files (default: the task's data folder)")
    pre.add_argument("--size", choices=["tiny", "small", "medium", "base"], help="architecture")

    stack = verb("stack", cmd_stack, "LightGBM stack over experiments' OOF predictions")
    _add_config_arguments(stack)
    stack.add_argument("--experiments", help="comma-separated experiment names")

    board = verb("leaderboard", cmd_leaderboard, "table of every experiment of the task")
    _add_config_arguments(board)

    submission = verb("submission", cmd_submission, "write a validated submission CSV")
    _add_config_arguments(submission)
    submission.add_argument("--source", help="stack (default) or an experiment name")
    submission.add_argument(
        "--out",
        default="submissions",
        help="a folder (named <task>-<time>-cv<score>.csv inside) or a file ending in .csv; "
        "never overwrites (default submissions)",
    )
    _add_runtime_argument(submission)

    submit_parser = verb("submit", cmd_submit, "upload a submission with the kaggle CLI")
    submit_parser.add_argument("--file", help="CSV to upload (default: newest in submissions/)")
    submit_parser.add_argument("--dir", default="submissions")
    submit_parser.add_argument("--message", "-m")
    submit_parser.add_argument("--dry-run", action="store_true", help="print the command only")

    clean_tmp = verb(
        "clean-tmp", cmd_clean_tmp, "remove temp files that killed runs left (owner process gone)"
    )
    clean_tmp.add_argument(
        "folders", nargs="*", default=["runs", "cache", "submissions", "folds", "data"]
    )

    report = verb("report", cmd_report, "classification reports of experiments and stacks")
    _add_config_arguments(report)
    report.add_argument("--experiments", help="comma-separated runs (default: every run)")

    predict = verb("predict", cmd_predict, "predict every audio file of a folder (CSV)")
    _add_config_arguments(predict)
    predict.add_argument("--audio", required=True, help="folder of audio files (recursive)")
    predict.add_argument("--source", help="the stack (default stack.name) or an experiment")
    predict.add_argument("--out", help="CSV (default runs/<task>/<source>/predictions/<dir>.csv)")
    predict.add_argument("--answers", help="CSV of path,label to score the predictions")
    predict.add_argument(
        "--no-tta", action="store_true", help="no test-time views (predict.tta), to compare"
    )
    _add_runtime_argument(predict)
    predict.add_argument(
        "--strict",
        action="store_true",
        help="fail on any unreadable audio file (default: predict the rest, list the "
        "unreadable ones in <out stem>.bad.csv)",
    )

    export = verb("export", cmd_export, "an experiment's fold models as one ONNX graph (+ int8)")
    _add_config_arguments(export)
    export.add_argument(
        "--quantize",
        choices=("static", "dynamic"),
        help="also write model.int8.onnx (static: calibrated on training clips)",
    )
    export.add_argument(
        "--no-tta", action="store_true", help="without the test-time views (predict.tta)"
    )
    export.add_argument("--folds", help="comma-separated folds to export (default: all of them)")

    spot = verb("spot", cmd_spot, "keywords in recordings of any length (CSV of detections)")
    _add_config_arguments(spot)
    spot.add_argument("path", help="an audio file, or a folder of them (recursive)")
    spot.add_argument(
        "--source", help="an experiment, or a stack (its members combined; default: the config's)"
    )
    spot.add_argument("--out", help="CSV (default runs/<task>/<source>/spot/detections.csv)")
    spot.add_argument("--plot", action="store_true", help="a PNG of the scores per file")
    spot.add_argument("--answers", help="CSV of file,start,end,label to score the detections")
    _add_runtime_argument(spot)

    pseudo = verb("pseudo", cmd_pseudo, "pseudo-label confident test clips for the next round")
    _add_config_arguments(pseudo)

    solution = verb(
        "solution", cmd_solution, "the whole recipe: families, pseudo rounds, stack, submission"
    )
    _add_config_arguments(solution)

    tune = verb("tune", cmd_tune, "Optuna study <task>-<experiment> over the config's tune.space")
    _add_config_arguments(tune)
    tune.add_argument("--trials", type=int, help="total trials of the study (tune.trials)")
    tune.add_argument("--workers", type=int, default=1, help="worker processes on the storage")
    tune.add_argument("--storage", help="RDB URL, e.g. postgresql://... (tune.storage)")
    tune.add_argument(
        "--export", action="store_true", help="write the best trial as <experiment>-best.yaml"
    )
    tune.add_argument("--out", help="with --export: the file (default beside --config)")

    dashboard = verb("dashboard", cmd_dashboard, "serve optuna-dashboard on the study storage")
    _add_config_arguments(dashboard)
    dashboard.add_argument("--storage", help="RDB URL (default tune.storage or the SQLite file)")
    dashboard.add_argument("--host", default="127.0.0.1")
    dashboard.add_argument("--port", type=int, default=8080)

    shot = verb(
        "dashboard-screenshot",
        cmd_dashboard_screenshot,
        "PNG of the study's dashboard page (headless Chromium)",
    )
    _add_config_arguments(shot)
    shot.add_argument("--storage", help="RDB URL (default tune.storage or the SQLite file)")
    shot.add_argument("--out", help="PNG file (default studies/<study>/dashboard.png)")
    shot.add_argument("--width", type=int, default=1400)
    shot.add_argument("--height", type=int, default=900)
    return parser


def error_line(error: BaseException) -> str:
    """The one line a user sees for ``error``: an operating-system error as
    ``<reason>: <file>``, any other as its message, with a message's later lines (a config
    error lists its problems below a heading) joined onto the first."""
    if isinstance(error, OSError) and error.strerror:
        files = [str(name) for name in (error.filename, error.filename2) if name is not None]
        message = f"{error.strerror}: {' -> '.join(files)}" if files else error.strerror
    else:
        message = str(error) or type(error).__name__
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(error).__name__
    head = lines[0].rstrip(":")
    return f"{head}: {'; '.join(lines[1:])}"


def _interrupt_on_sigterm() -> None:
    """SIGTERM (``kill``, a job scheduler, ``docker stop``) stops a verb like Ctrl-C does:
    finished work is kept, partial files are removed, the exit status is 130."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _interrupt_on_sigterm()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    try:
        args.handler(args)
    except KeyboardInterrupt as interrupted:
        from speechstack.interrupt import FoldsInterrupted

        message = (
            str(interrupted)
            if isinstance(interrupted, FoldsInterrupted)
            else "interrupted; finished folds and files are kept, partial ones removed"
        )
        print(message, file=sys.stderr)
        return 130
    except (
        ConfigError,
        ValueError,  # an unknown registry name too (registry.UnknownNameError)
        OSError,  # FileNotFoundError, FileExistsError, PermissionError, a full disk
        RuntimeError,
    ) as error:
        if args.verbose:
            raise
        print(f"error: {error_line(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
