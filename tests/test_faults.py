"""Fault injection: interrupts, kills, concurrent runs, damaged artefacts, unwritable
folders. Each case checks what a user is left with: nothing half-written, finished work
kept, a re-run that ends where an uninterrupted run would, and a one-line error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from speechstack.config import Config, load_config
from speechstack.folds import write_folds
from speechstack.tasks import create_task
from speechstack.train import fold_dir, train_fold

EPOCHS = 3


@pytest.fixture(scope="module")
def tiny_config(
    tiny_speech_commands: Path, repo_root: Path, tmp_path_factory: pytest.TempPathFactory
):
    """A 3-fold, 3-epoch tiny CNN on the tiny dataset with the task's augmentation (and
    mixup) on, one thread, so every run of one config gives the same numbers. One runs
    folder for the module: the reference runs are trained once; every test names its own
    experiment."""
    tmp_path = tmp_path_factory.mktemp("faults")

    def make(experiment: str, *extra: str) -> Config:
        return load_config(
            repo_root / "configs/speech_commands/cnn.yaml",
            [
                f"task.data_dir={tiny_speech_commands}",
                f"runs_dir={tmp_path / 'runs'}",
                f"cache_dir={tmp_path / 'cache'}",
                f"folds.file={tmp_path / 'folds.csv'}",
                "model.params.backbone=test_resnet",
                "model.params.backbone_args={}",
                f"train.epochs={EPOCHS}",
                "train.batch_size=16",
                "train.threads=1",
                "augment.mixup.p=0.5",
                "folds.k=3",
                f"experiment={experiment}",
                *extra,
            ],
        )

    first = make("reference")
    write_folds(create_task(first.task).train_manifest(), first.folds_file, 3, 0)
    return make


def probabilities(config: Config, fold: int, name: str = "oof.parquet") -> np.ndarray:
    frame = pl.read_parquet(fold_dir(config, fold) / name)
    return frame.select([c for c in frame.columns if c != "fname"]).to_numpy()


def leftovers(folder: Path) -> list[str]:
    """Temp files and folders an interrupted write could have left."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp" in p.name)


@pytest.mark.parametrize("stop_after", [1, 2])
def test_an_interrupted_fold_resumes_to_the_same_result(tiny_config, stop_after: int) -> None:
    reference = tiny_config("reference")
    expected = train_fold(reference, 0, progress=False)

    config = tiny_config(f"resumed{stop_after}")

    def interrupt(epoch: int, accuracy: float) -> None:
        if epoch + 1 == stop_after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_fold(config, 0, progress=False, epoch_callback=interrupt)
    assert not fold_dir(config, 0).exists()  # nothing half-written
    assert (config.run_dir / "checkpoints" / "fold0.pt").is_file()
    assert leftovers(config.run_dir) == []

    epochs_seen: list[int] = []
    resumed = train_fold(
        config, 0, progress=False, epoch_callback=lambda e, a: epochs_seen.append(e)
    )
    assert epochs_seen == list(range(stop_after, EPOCHS))  # only the remaining epochs
    assert resumed["best_epoch"] == expected["best_epoch"]
    assert resumed["val_loss"] == pytest.approx(expected["val_loss"], abs=1e-6)
    np.testing.assert_allclose(probabilities(config, 0), probabilities(reference, 0), atol=1e-6)
    np.testing.assert_allclose(
        probabilities(config, 0, "test.parquet"),
        probabilities(reference, 0, "test.parquet"),
        atol=1e-6,
    )
    history = pl.read_csv(fold_dir(config, 0) / "history.csv")
    assert history["epoch"].to_list() == list(range(1, EPOCHS + 1))
    assert not (config.run_dir / "checkpoints" / "fold0.pt").exists()  # removed when done


def test_a_checkpoint_of_another_config_or_damaged_is_set_aside(tiny_config, caplog) -> None:
    config = tiny_config("aside")
    checkpoint = config.run_dir / "checkpoints" / "fold0.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"PK\x03\x04 truncated")
    seen: list[int] = []
    train_fold(config, 0, progress=False, epoch_callback=lambda e, a: seen.append(e))
    assert seen == list(range(EPOCHS))  # started over
    assert "cannot be read" in caplog.text and str(checkpoint) in caplog.text
    assert checkpoint.with_name("fold0.pt.stale").is_file()


# ---------------------------------------------------------------------------------------
# The CLI in a child process: signals, kills, a second copy


def cli_arguments(config: Config, verb: str, *extra: str) -> list[str]:
    """``speechstack <verb>`` with the config's overrides (what the fixture set)."""
    settings = {
        "task.data_dir": config.task.data_dir,
        "runs_dir": config.runs_dir,
        "cache_dir": config.cache_dir,
        "folds.file": config.folds.file,
        "model.params.backbone": "test_resnet",
        "model.params.backbone_args": "{}",
        "train.epochs": config.train.epochs,
        "train.batch_size": 16,
        "train.threads": 1,
        "augment.mixup.p": 0.5,
        "folds.k": 3,
        "experiment": config.experiment,
    }
    sets = [f"--set={key}={value}" for key, value in settings.items()]
    return [sys.executable, "-m", "speechstack.cli", verb, "--config",
            "configs/speech_commands/cnn.yaml", *sets, *extra]  # fmt: skip


def default_sigint() -> None:
    """In the child: Ctrl-C as in a terminal (a shell's background job, as some CI steps
    and test runners are, starts with SIGINT ignored, which Python then keeps)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(arguments: list[str], repo_root: Path, **options) -> subprocess.Popen[str]:
    return subprocess.Popen(
        arguments,
        cwd=repo_root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
        **options,
    )


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the run to get there")
        time.sleep(0.05)


def finished_folds(config: Config) -> list[int]:
    return [k for k in range(3) if (fold_dir(config, k) / "metrics.json").is_file()]


@pytest.mark.parametrize(
    "signal_number",
    # SIGTERM takes the same stop path after its handler: `slow` keeps `make test` short
    [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)],
)
def test_ctrl_c_stops_train_promptly_and_a_rerun_ends_as_an_uninterrupted_run(
    tiny_config, repo_root: Path, signal_number: int
) -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) or SIGTERM (to
    the parent only) in the middle of a fold stops every fold process at its next batch:
    exit 130 with one line naming the kept folds, nothing half-written; the re-run resumes
    the unfinished folds from their checkpoints and ends with the same OOF table."""
    reference = tiny_config("reference-longer", f"train.epochs={EPOCHS + 1}")
    from speechstack.fold_pool import train_folds

    train_folds(reference, progress=False)
    config = tiny_config(f"stopped{signal_number}", f"train.epochs={EPOCHS + 1}")
    child = start(
        cli_arguments(config, "train", "--set=train.parallel_folds=2"),
        repo_root,
        start_new_session=True,  # its own group: the "terminal" Ctrl-C goes to it alone
    )
    checkpoints = config.run_dir / "checkpoints"
    wait_for(lambda: checkpoints.is_dir() and any(checkpoints.glob("fold*.pt")))
    stopped_at = time.monotonic()
    if signal_number == signal.SIGINT:
        os.killpg(child.pid, signal.SIGINT)
    else:
        child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, stderr
    assert time.monotonic() - stopped_at < 20  # at the next batch, not after every fold
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"interrupted: stopped{signal_number} folds finished and kept:")
    assert "Traceback" not in stderr
    assert len(finished_folds(config)) < 3  # the remaining folds were not all trained
    assert leftovers(config.run_dir) == []

    rerun = subprocess.run(
        cli_arguments(config, "train", "--set=train.parallel_folds=2"),
        cwd=repo_root, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert "resumes after epoch" in rerun.stderr
    for fold in range(3):
        np.testing.assert_allclose(
            probabilities(config, fold), probabilities(reference, fold), atol=1e-6
        )


def test_kill_9_mid_fold_then_rerun_resumes_to_the_same_result(
    tiny_config, repo_root: Path
) -> None:
    reference = tiny_config("reference")
    train_fold(reference, 1, progress=False)
    config = tiny_config("killed")
    child = start(cli_arguments(config, "train-fold", "--fold=1"), repo_root)
    checkpoint = config.run_dir / "checkpoints" / "fold1.pt"
    wait_for(checkpoint.is_file)
    child.kill()
    child.wait(timeout=30)
    assert not fold_dir(config, 1).exists()
    # what a kill -9 in the middle of an atomic write leaves: a temp file of a dead process
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    from speechstack.artifacts import _owner_tag

    orphan = config.run_dir / f".fold1.{_owner_tag().split('-')[0]}-{dead}.abcd1234.tmp"
    orphan.mkdir()
    rerun = subprocess.run(cli_arguments(config, "train-fold", "--fold=1"), cwd=repo_root,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert "resumes after epoch" in rerun.stderr
    assert not orphan.exists()
    np.testing.assert_allclose(probabilities(config, 1), probabilities(reference, 1), atol=1e-6)


def test_a_second_train_of_one_experiment_is_refused_naming_the_first(tiny_config, capsys) -> None:
    from speechstack.cli import main
    from speechstack.lock import RunLock

    config = tiny_config("busy")
    with RunLock(config.run_dir, "train", "experiment 'busy'"):
        code = main(cli_arguments(config, "train")[3:])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert f"pid {os.getpid()}" in error and "experiment 'busy' is in use" in error
    assert not fold_dir(config, 0).exists()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    from speechstack.lock import RunLock

    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from speechstack.lock import RunLock; "
         f"RunLock(__import__('pathlib').Path({str(tmp_path)!r}), 'train').acquire(); "
         "print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    from speechstack.lock import RunLockedError

    with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
        RunLock(tmp_path, "train").acquire()
    holder.kill()
    holder.wait()
    with RunLock(tmp_path, "train"):  # the kernel released it with the process
        pass


def test_an_unwritable_runs_folder_is_refused_before_training(tiny_config, capsys) -> None:
    from speechstack.cli import main

    config = tiny_config("nowhere")
    if os.geteuid() == 0:  # root writes through permissions: a folder that cannot exist
        runs = Path("/proc/speechstack-runs")
    else:
        runs = config.runs_dir / "read-only"
        runs.mkdir(parents=True)
        runs.chmod(0o500)
    arguments = [*cli_arguments(config, "train")[3:], f"--set=runs_dir={runs}"]
    started = time.monotonic()
    code = main(arguments)
    error = capsys.readouterr().err.strip()
    assert code == 2, error
    assert len(error.splitlines()) == 1 and error.startswith("error:")
    assert str(runs) in error
    assert time.monotonic() - started < 30  # refused, not trained first


def test_a_truncated_model_is_named_and_the_fold_trained_again(tiny_config, caplog) -> None:
    config = tiny_config("truncated")
    train_fold(config, 0, progress=False)
    model = fold_dir(config, 0) / "model.pt"
    model.write_bytes(model.read_bytes()[:1000])
    seen: list[int] = []
    metrics = train_fold(config, 0, progress=False, epoch_callback=lambda e, a: seen.append(e))
    assert "skipped" not in metrics and seen == list(range(EPOCHS))
    assert f"{model} has 1000 bytes" in caplog.text
    assert model.stat().st_size > 1000


def test_a_corrupt_test_clip_is_found_before_training(
    tiny_config, tiny_speech_commands: Path, tmp_path: Path
) -> None:
    import shutil

    from speechstack.audio import AudioError

    data = tmp_path / "data"
    shutil.copytree(tiny_speech_commands, data)
    bad = sorted((data / "test" / "audio").glob("*.wav"))[3]
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    config = tiny_config("corrupt", f"task.data_dir={data}")
    seen: list[int] = []
    with pytest.raises(AudioError, match=f"{bad}.*1 of the 24 test clips"):
        train_fold(config, 0, progress=False, epoch_callback=lambda e, a: seen.append(e))
    assert seen == [] and not fold_dir(config, 0).exists()


def test_predict_names_a_damaged_model_file(tiny_config) -> None:
    """`make predict` after a damaged model.pt names the file instead of a zip error."""
    import torch

    from speechstack.inference import PredictError, load_fold_model

    config = tiny_config("truncated")  # trained (and repaired) by the test above, or now
    train_fold(config, 0, progress=False)
    model = fold_dir(config, 0) / "model.pt"
    model.write_bytes(model.read_bytes()[:-10])
    with pytest.raises(PredictError, match=f"{model} has .* bytes"):
        load_fold_model(fold_dir(config, 0), torch.device("cpu"))


def test_clean_tmp_removes_only_what_dead_processes_left(tmp_path: Path, capsys) -> None:
    from speechstack.artifacts import _owner_tag
    from speechstack.cli import main

    host = _owner_tag().split("-")[0]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    orphan_dir = tmp_path / "exp" / f".fold0.{host}-{dead}.k3j4.tmp"
    orphan_dir.mkdir(parents=True)
    orphan_file = tmp_path / f".oof.parquet.{host}-{dead}.ab_c.tmp.parquet"
    orphan_file.write_text("x")
    live = tmp_path / f".oof.parquet.{host}-{os.getpid()}.ab_c.tmp.parquet"
    live.write_text("x")
    other_host = tmp_path / f".oof.parquet.{'0000' if host != '0000' else '1111'}-{dead}.x.tmp"
    other_host.write_text("x")
    lock = tmp_path / ".train.lock"
    lock.write_text("")
    assert main(["clean-tmp", str(tmp_path)]) == 0
    assert "2 temp file(s)" in capsys.readouterr().out
    assert not orphan_dir.exists() and not orphan_file.exists()
    assert live.exists() and other_host.exists() and lock.exists()


def test_a_moved_dataset_is_accepted_and_a_changed_one_refused_with_a_count(
    tiny_config, tiny_speech_commands: Path, tmp_path: Path
) -> None:
    import shutil

    from speechstack.train import RunMismatchError, load_fold_metrics

    config = tiny_config("moved")
    train_fold(config, 0, progress=False)
    moved = tmp_path / "elsewhere" / "demo"
    shutil.copytree(tiny_speech_commands, moved)
    at_new_place = tiny_config("moved", f"task.data_dir={moved}")
    assert train_fold(at_new_place, 0, progress=False).get("skipped")  # same data: finished

    changed = sorted((moved / "train" / "audio" / "yes").glob("*.wav"))[:2]
    for path in changed:
        path.write_bytes(path.read_bytes() + b"\x00\x00")
    from speechstack import train as train_module

    train_module._listings.clear()  # the listing is remembered per process
    with pytest.raises(RunMismatchError, match="trained on other data: 2 training files"):
        load_fold_metrics(at_new_place, 0)
