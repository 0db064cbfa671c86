"""speechstack.bench on tiny inputs: result structure, pass/fail computed from the numbers
(never asserted timings), and the fast paths the benchmark motivated (LogMel, background
noise in memory, store reads) keeping their semantics."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from speechstack.augment import BackgroundNoise
from speechstack.bench import Sizes, main, run_benchmarks
from speechstack.bench.processes import (
    bench_demo,
    bench_scaling,
    run_scaling_child,
    scaling_epoch,
)
from speechstack.bench.report import Check, Stage, format_report, interleaved
from speechstack.bench.stages import (
    Setup,
    bench_featurisation,
    bench_inference,
    bench_loader,
    bench_train_overhead,
    plain_log_mel,
)
from speechstack.config import FeatureConfig
from speechstack.data import WaveformStore
from speechstack.features import LogMel

SMALL = ["train.batch_size=8", "predict.batch_size=8"]


def assert_checks_follow_the_numbers(checks: list[dict]) -> None:
    for check in checks:
        value, target = check["value"], check["target"]
        expected = value >= target if check["comparison"] == ">=" else value <= target
        assert check["passed"] is expected, check


def assert_stage(stage: Stage, check_names: list[str]) -> None:
    assert stage.skipped is None
    assert [check.name for check in stage.checks] == check_names
    data = stage.as_dict()
    json.dumps(data)  # JSON-ready
    assert_checks_follow_the_numbers(data["checks"])
    assert all(isinstance(label, str) and isinstance(value, str) for label, value in stage.lines)


@pytest.fixture(scope="module")
def setup(
    tiny_speech_commands: Path, repo_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Setup:
    return Setup.load(
        repo_root / "configs/speech_commands/cnn.yaml",
        tiny_speech_commands,
        tmp_path_factory.mktemp("bench"),
        SMALL,
    )


# ---------------------------------------------------------------- report


@pytest.mark.parametrize(
    ("value", "target", "at_least", "passed"),
    [(3.0, 2.0, True, True), (2.0, 2.0, True, True), (1.9, 2.0, True, False),
     (9.0, 10.0, False, True), (10.0, 10.0, False, True), (10.5, 10.0, False, False)],
)  # fmt: skip
def test_check_passes_by_comparing_value_and_target(
    value: float, target: float, at_least: bool, passed: bool
) -> None:
    check = Check("x", value, target, "x", at_least=at_least)
    assert check.passed is passed
    assert check.as_dict()["passed"] is passed
    assert check.as_dict()["comparison"] == (">=" if at_least else "<=")


def test_interleaved_runs_every_function_once_per_round_in_rotating_order() -> None:
    calls: list[str] = []
    functions = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    seconds = interleaved(functions, rounds=3)
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert {name: len(values) for name, values in seconds.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(value >= 0 for values in seconds.values() for value in values)


def test_report_marks_each_check_and_skipped_stages() -> None:
    good = Stage("a", "first", lines=[("info", "1 clips/s")])
    good.checks = [Check("fast enough", 600.0, 500.0, "clips/s")]
    bad = Stage("b", "second", checks=[Check("overhead", 12.0, 10.0, "%", at_least=False)])
    skipped = Stage("c", "third", skipped="--skip-demo")
    text = format_report([good, bad, skipped], "header")
    lines = text.splitlines()
    assert lines[0] == "header"
    assert any("fast enough" in line and line.rstrip().endswith("PASS") for line in lines)
    assert any("overhead" in line and line.rstrip().endswith("FAIL") for line in lines)
    assert any("skipped: --skip-demo" in line for line in lines)
    assert lines[-1] == "1/2 checks passed"


# ---------------------------------------------------------------- stages


def test_featurisation_reports_rates_ratios_and_checks() -> None:
    stage = bench_featurisation(clips=3, rounds=1, threads=1)
    assert_stage(stage, ["LogMel / librosa", "LogMel / bare torch.stft"])
    rates = stage.measured["clips_per_second"]
    assert set(rates) == {"logmel", "librosa", "stft", "stft_chunked", "plain_torch"}
    ratios = stage.measured["ratios"]
    assert ratios["logmel_vs_librosa"] == pytest.approx(rates["logmel"] / rates["librosa"])
    assert stage.checks[0].value == ratios["logmel_vs_librosa"]
    assert stage.checks[1].value == ratios["logmel_vs_stft"]
    assert stage.measured["max_abs_db_difference_vs_librosa"] < 1e-3


def test_loader_overhead_and_inference_stages(setup: Setup) -> None:
    loader = bench_loader(setup, epochs=1, transform_clips=4)
    assert_stage(loader, ["loader, 0 workers, augmented"])
    assert loader.checks[0].value == loader.measured["clips_per_second"]
    assert set(loader.measured["augment_microseconds_per_clip"]) == {
        "placement", "speed", "mix", "reverb", "noise", "colored_noise", "band"
    }  # fmt: skip

    overhead = bench_train_overhead(setup, rounds=1, max_batches=2)
    assert_stage(overhead, ["loop overhead beyond the step and the loader"])
    per_batch = overhead.measured["seconds_per_batch"]
    assert overhead.measured["batches"] == 2
    assert overhead.measured["overhead"] == pytest.approx(per_batch["full"] / per_batch["bare"] - 1)
    assert overhead.checks[0].value == pytest.approx(
        (per_batch["full"] / (per_batch["bare"] + per_batch["loader"]) - 1) * 100
    )

    inference = bench_inference(setup, rounds=1, max_clips=8, devices=[torch.device("cpu")])
    assert_stage(inference, ["CPU prediction"])
    cpu = inference.measured["devices"]["cpu"]
    assert inference.measured["clips"] == 8
    assert cpu["projected_kaggle_test_seconds"] == pytest.approx(
        158_538 / cpu["clips_per_second"]["predict"]
    )


def test_deploy_stage_times_each_runtime_and_the_shipped_student(
    quick_run: tuple[list[Stage], dict[str, Any], Path],
) -> None:
    # bench_deploy(setup, work_dir, rounds=1, clips=6, folds=2), as run_benchmarks calls it
    (stage,) = [stage for stage in quick_run[0] if stage.key == "deploy"]
    assert stage.measured["folds"] == 2 and stage.measured["windows"] == 6
    assert_stage(stage, [
        "default CNN: ONNX fp32 vs PyTorch", "shipped student size",
        "shipped student, one clip, one thread",
        "shipped student vs the CNN's folds in PyTorch, whole test",
    ])  # fmt: skip
    families = stage.measured["families"]
    assert set(families) == {"default CNN", "student"}
    for family in families.values():
        assert set(family["clips_per_second"]) == {"pytorch", "onnx", "onnx_int8"}
        assert family["bytes"]["onnx_int8"] < family["bytes"]["onnx"]
    cnn = families["default CNN"]["clips_per_second"]
    assert stage.checks[0].value == pytest.approx(cnn["onnx"] / cnn["pytorch"])
    shipped = stage.measured["shipped_student"]
    assert stage.checks[1].value == pytest.approx(shipped["bytes"] / 1e6)
    projected = stage.measured["projected_kaggle_test_seconds"]
    assert projected["default CNN's folds, PyTorch"] == pytest.approx(158_538 / cnn["pytorch"])
    assert stage.checks[3].value == pytest.approx(
        projected["default CNN's folds, PyTorch"] / projected["shipped student, ONNX int8"]
    )


def test_scaling_runs_one_epoch_per_size(setup: Setup) -> None:
    # scaling_epoch in this process instead of a child: the same code, without the startup
    stage = bench_scaling(setup, factors=(1, 2), base_clips=16, run_child=scaling_epoch)
    assert_stage(stage, ["time per clip, 2x data / 1x", "peak RSS, 2x data / 1x"])
    runs = stage.measured["runs"]
    assert [run["clips"] for run in runs] == [16, 32]
    assert [run["batches"] for run in runs] == [2, 4]
    assert runs[1]["store_megabytes"] == pytest.approx(2 * runs[0]["store_megabytes"])
    assert stage.checks[0].value == pytest.approx(
        (runs[1]["epoch_seconds"] / 32) / (runs[0]["epoch_seconds"] / 16)
    )


def test_scaling_child_runs_in_its_own_process(setup: Setup) -> None:
    Setup.from_config(setup.config_path, setup.overrides, 1, 16)  # the parent decodes
    spec = {
        "config_path": str(setup.config_path),
        "overrides": setup.overrides,
        "factor": 1,
        "base_clips": 16,
        "threads": 1,
    }
    result = run_scaling_child(spec)
    assert (result["clips"], result["batches"]) == (16, 2)
    assert result["epoch_seconds"] > 0 and result["peak_mb"]["rss"] > 0
    bad_key = r"(?s)factor 1 failed:.*unknown key 'train\.no_such_key'"
    with pytest.raises(RuntimeError, match=bad_key):
        run_scaling_child(spec | {"overrides": [*setup.overrides, "train.no_such_key=1"]})


def fake_checkout(root: Path, demo_recipe: str) -> Path:
    """A folder with the files bench_demo links, and a Makefile whose demo is a stub."""
    root.mkdir()
    (root / "Makefile").write_text(
        ".venv/.installed: requirements.lock pyproject.toml\n\ttouch $@\n\n"
        f"demo: .venv/.installed\n\t{demo_recipe}\n"
    )
    for name in ("pyproject.toml", "requirements.lock"):
        (root / name).write_text("")
    (root / "configs").mkdir()
    (root / ".venv/bin").mkdir(parents=True)
    (root / ".venv/.installed").write_text("")
    return root


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_demo_runs_make_demo_in_a_scratch_folder(tmp_path: Path) -> None:
    steps = "echo 'demo step data: 12 s' && echo 'demo step train: 7 s'"
    recipe = f"mkdir -p runs && {steps} && echo demo finished"
    checkout = fake_checkout(tmp_path / "repo", recipe)
    stage = bench_demo(checkout, tmp_path / "work")
    assert_stage(stage, ["make demo exit status", "make demo wall time"])
    assert stage.measured["returncode"] == 0
    assert stage.measured["log_tail"][-1] == "demo finished"
    assert stage.measured["steps"] == {"data": 12.0, "train": 7.0}
    assert ("  its steps", "data 12 s, train 7 s") in stage.lines
    assert (tmp_path / "work/demo/runs").is_dir() and not (checkout / "runs").exists()
    assert (tmp_path / "work/demo/.venv/bin").resolve() == (checkout / ".venv/bin").resolve()
    assert stage.notes == []

    failing = bench_demo(fake_checkout(tmp_path / "bad", "exit 3"), tmp_path / "work2")
    assert [check.passed for check in failing.checks] == [False, True]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_demo_never_rebuilds_a_stale_venv(tmp_path: Path) -> None:
    checkout = fake_checkout(tmp_path / "repo", "echo demo finished")
    stamp = checkout / ".venv/.installed"
    os.utime(stamp, (1, 1))  # older than requirements.lock: make would rebuild it
    stage = bench_demo(checkout, tmp_path / "work")
    assert stage.measured["returncode"] == 0
    assert os.stat(stamp).st_mtime == 1
    assert any("older than requirements.lock" in note for note in stage.notes)


def test_demo_is_skipped_outside_a_checkout(tmp_path: Path) -> None:
    stage = bench_demo(tmp_path, tmp_path / "work")
    assert stage.skipped is not None and "Makefile" in stage.skipped


QUICK = Sizes(
    feature_clips=2, feature_rounds=1, loader_epochs=1, overhead_rounds=1,
    overhead_batches=1, inference_rounds=1, inference_clips=4, deploy_rounds=1,
    deploy_clips=6, deploy_folds=2, scaling_factors=(1, 2), scaling_base_clips=8,
)  # fmt: skip


@pytest.fixture(scope="module")
def quick_run(
    tiny_speech_commands: Path, repo_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[Stage], dict[str, Any], Path]:
    """``run_benchmarks`` on the tiny data with QUICK sizes, once for the module (per xdist
    worker): its deploy stage (ONNX exports and int8 of the default CNN's folds, the student
    and the shipped student: ~30 s) is the one the deploy test checks, so the stage is run
    once, not once per test. The scaling child runs in this process (the child's own test
    starts a real one). Returns the stages, the results and the (emptied) work folder."""
    work_dir = tmp_path_factory.mktemp("bench-run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("speechstack.bench.processes.run_scaling_child", scaling_epoch)
        stages, info = run_benchmarks(
            tiny_speech_commands,
            config_path=repo_root / "configs/speech_commands/cnn.yaml",
            sizes=QUICK,
            skip_demo=True,
            work_dir=work_dir,
            progress=False,
        )
    return stages, info, work_dir


def test_run_benchmarks_quick_structure(
    quick_run: tuple[list[Stage], dict[str, Any], Path],
) -> None:
    stages, info, work_dir = quick_run
    keys = [
        "featurisation", "data_pipeline", "training_overhead", "inference", "deploy", "scaling",
        "demo", "total",
    ]  # fmt: skip
    assert [stage.key for stage in stages] == keys
    assert list(info["stages"]) == keys
    assert info["stages"]["demo"]["skipped"] == "--skip-demo"
    checks = [check for stage in info["stages"].values() for check in stage["checks"]]
    assert_checks_follow_the_numbers(checks)
    assert info["checks_total"] == len(checks)
    assert info["checks_passed"] == sum(check["passed"] for check in checks)
    assert info["passed"] is all(check["passed"] for check in checks)
    json.dumps(info)
    assert list(work_dir.iterdir()) == []  # the temporary folder is gone


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_run_benchmarks_runs_make_demo_first_and_uses_its_data(
    tiny_speech_commands: Path, repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = f"mkdir -p data && cp -r {tiny_speech_commands} data/speech_commands"
    checkout = fake_checkout(tmp_path / "repo", recipe)
    monkeypatch.setattr("speechstack.bench.repo_root", lambda: checkout)
    monkeypatch.setattr("speechstack.bench.processes.run_scaling_child", scaling_epoch)
    monkeypatch.setattr("speechstack.bench.generate_data", None)  # must not be needed

    def deploy_seen(setup: Setup, work_dir: Path, *sizes: object) -> Stage:
        """The deploy stage, not run: the deploy and quick-structure tests run it (its ONNX
        exports are most of a quick run's time); here only the data it is handed counts."""
        deploy_setups.append(setup)
        return Stage("deploy", "deployment (ONNX, student)", skipped="not run in this test")

    deploy_setups: list[Setup] = []
    monkeypatch.setattr("speechstack.bench.deploy.bench_deploy", deploy_seen)
    (tmp_path / "work").mkdir()
    stages, info = run_benchmarks(
        config_path=repo_root / "configs/speech_commands/cnn.yaml",
        sizes=QUICK,
        work_dir=tmp_path / "work",
        progress=False,
    )
    assert info["data"]["source"] == "generated by make demo"
    from speechstack.config import TaskConfig
    from speechstack.tasks import create_task

    task = create_task(TaskConfig(name="speech_commands", data_dir=tiny_speech_commands))
    assert info["data"]["train_clips"] == task.train_manifest().height  # every clip
    assert info["stages"]["demo"]["measured"]["returncode"] == 0
    assert [stage.key for stage in stages][-2:] == ["demo", "total"]
    (deployed,) = deploy_setups  # the stages after the demo ran on the demo's data
    assert deployed.manifest.height == task.train_manifest().height


@pytest.mark.slow
def test_cli_quick_run_writes_results(tiny_speech_commands: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "results.json"
    code = main(["--quick", "--data", str(tiny_speech_commands), "--out", str(out)])
    results = json.loads(out.read_text())
    assert code == (0 if results["passed"] else 1)
    assert results["quick"] is True
    assert_checks_follow_the_numbers(
        [check for stage in results["stages"].values() for check in stage["checks"]]
    )


def test_cli_refuses_a_folder_that_is_not_a_dataset(tmp_path: Path) -> None:
    assert main(["--data", str(tmp_path), "--out", str(tmp_path / "r.json")]) == 2
    assert not (tmp_path / "r.json").exists()


# ---------------------------------------------------------------- fast paths keep semantics


@pytest.mark.parametrize("clips", [1, 17, 40])
@pytest.mark.parametrize("samples", [16_000, 12_345])
def test_log_mel_equals_the_plain_stft_formulation(clips: int, samples: int) -> None:
    """Chunks, band-wise filterbank and the real-view power change nothing but rounding."""
    log_mel = LogMel(FeatureConfig(), 16_000)
    generator = torch.Generator().manual_seed(0)
    waveform = torch.randn(clips, samples, generator=generator) * 0.1
    with torch.no_grad():
        expected = plain_log_mel(log_mel, waveform)
        actual = log_mel(waveform)
    assert actual.shape == expected.shape and actual.is_contiguous()
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)


def test_log_mel_passes_gradients_to_the_waveform() -> None:
    waveform = torch.randn(20, 4000, requires_grad=True)
    LogMel(FeatureConfig(), 16_000)(waveform).sum().backward()
    assert waveform.grad is not None and torch.isfinite(waveform.grad).all()


def test_background_noise_matches_audiomentations(tiny_speech_commands: Path) -> None:
    """Same draws from ``random`` in the same order and the same mix as
    ``audiomentations.AddBackgroundNoise``, which reads every segment from disk."""
    import audiomentations

    files = sorted((tiny_speech_commands / "train/audio/_background_noise_").glob("*.wav"))
    reference = audiomentations.AddBackgroundNoise(
        sounds_path=[str(path) for path in files], min_snr_db=3.0, max_snr_db=30.0, p=0.5
    )
    ours = BackgroundNoise(files, 3.0, 30.0, p=0.5)
    rng = np.random.default_rng(0)
    clips = [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in [16_000] * 20 + [8_000]]
    outputs = []
    for transform in (reference, ours):
        random.seed(7)
        outputs.append([transform(clip, 16_000) for clip in clips])
        outputs.append(random.random())  # the random state afterwards
    expected, state, actual, our_state = outputs
    assert our_state == state
    changed = 0
    for clip, a, b in zip(clips, expected, actual, strict=True):
        assert b.dtype == np.float32 and b.shape == clip.shape
        np.testing.assert_allclose(b, a, atol=1e-6, rtol=0)
        changed += not np.array_equal(b, clip)
    assert 0 < changed < len(clips)  # p=0.5


def test_store_reads_cached_rows_without_the_map(tmp_path: Path) -> None:
    waveforms = np.random.default_rng(0).standard_normal((6, 1000)).astype(np.float32)
    np.save(tmp_path / "w.npy", waveforms)
    store = WaveformStore(np.load(tmp_path / "w.npy", mmap_mode="r"))
    for row in [5, 0, 3]:
        clip = store.read(row)
        assert clip.dtype == np.float32 and clip.flags.writeable
        np.testing.assert_array_equal(clip, waveforms[row])
    in_memory = WaveformStore(waveforms)
    np.testing.assert_array_equal(in_memory.read(2), waveforms[2])
    assert not np.shares_memory(in_memory.read(2), waveforms)


def test_warm_up_compiles_the_librosa_reference_and_runs_nothing_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"
    assert main(["--warm-up", "--out", str(out)]) == 0
    assert "librosa reference compiled in" in capsys.readouterr().out
    assert not out.exists()  # no benchmark ran
