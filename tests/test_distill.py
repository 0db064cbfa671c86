"""Distillation (``train.distill``, ``make distill``): a teacher's out-of-fold and test
probabilities become the student's soft targets; the test clips train every fold and are
never validated; clips the teacher did not predict keep their label; the loss is the
temperature-scaled soft cross-entropy; a student trains through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F

from speechstack.cli import main
from speechstack.config import load_config
from speechstack.data import ClipDataset
from speechstack.folds import write_folds
from speechstack.tasks import create_task
from speechstack.train import FoldData, _loss

TEACHER = "teacher"


@pytest.fixture
def taught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_speech_commands: Path, repo_root: Path
):
    """Work in ``tmp_path`` with folds and a teacher stack (``runs/speech_commands/teacher``:
    made-up OOF and test probabilities, peaked on each clip's true label for the OOF rows)."""
    monkeypatch.chdir(tmp_path)
    settings = [f"task.data_dir={tiny_speech_commands}", "folds.k=3",
                "task.params.silence_clips=12", f"train.distill.teacher={TEACHER}",
                "train.distill.temperature=2.0", "train.distill.weight=0.8"]  # fmt: skip
    config = load_config(repo_root / "configs" / "speech_commands" / "cnn.yaml", settings)
    task = create_task(config.task)
    write_folds(task.train_manifest(), config.folds_file, 3, 0)
    labels = task.labels
    folds = pl.read_csv(config.folds_file)
    rng = np.random.default_rng(0)
    oof = rng.dirichlet(np.ones(len(labels)), folds.height)
    truth = [labels.index(label) for label in folds["label"]]
    oof[np.arange(folds.height), truth] += 2.0
    oof /= oof.sum(axis=1, keepdims=True)
    test = task.test_manifest()
    test_probabilities = rng.dirichlet(np.ones(len(labels)) * 0.3, test.height)
    run_dir = config.task_runs_dir / TEACHER
    run_dir.mkdir(parents=True)
    (run_dir / "stacker.json").write_text(json.dumps({"experiments": ["cnn"]}))
    for name, fnames, matrix in (
        ("oof", folds["fname"], oof),
        ("test", test["fname"], test_probabilities),
    ):
        frame = pl.DataFrame(
            {"fname": fnames, **{label: matrix[:, i] for i, label in enumerate(labels)}}
        )
        frame.write_parquet(run_dir / f"{name}.parquet")
    (run_dir / "metrics.json").write_text(json.dumps({"stack_accuracy": 0.9}))
    return (
        config,
        settings,
        dict(zip(folds["fname"], oof, strict=True)),
        dict(zip(test["fname"], test_probabilities, strict=True)),
    )


def _sharpened(p: np.ndarray, temperature: float) -> np.ndarray:
    q = p ** (1 / temperature)
    return q / q.sum()


def test_soft_targets_come_from_the_teacher_and_test_clips_only_train(taught) -> None:
    config, _, oof, test = taught
    task = create_task(config.task)
    labels = task.labels
    for fold in range(3):
        data = FoldData(config, task, fold, progress=False)
        names = data.train["fname"].to_list()
        assert data.train_soft is not None and data.train_soft.shape == (len(names), len(labels))
        assert np.allclose(data.train_soft.sum(axis=1), 1.0, atol=1e-5)
        taught_rows = [i for i, n in enumerate(names) if n.startswith("teacher:")]
        assert len(taught_rows) == len(test)  # every test clip trains every fold
        assert not data.valid["fname"].str.starts_with("teacher:").any()
        for row in taught_rows[:5]:
            probabilities = test[names[row].removeprefix("teacher:")]
            label = int(np.argmax(probabilities))
            assert data.train["label"][row] == labels[label]  # the teacher's label
            expected = 0.8 * _sharpened(probabilities, 2.0) + 0.2 * np.eye(len(labels))[label]
            assert np.allclose(data.train_soft[row], expected, atol=1e-5)
        folded = [i for i, n in enumerate(names) if n in oof]
        assert folded and not set(data.valid["fname"]) & {names[i] for i in folded}
        for row in folded[:5]:
            onehot = np.eye(len(labels))[data.train_targets[row]]
            expected = 0.8 * _sharpened(oof[names[row]], 2.0) + 0.2 * onehot
            assert np.allclose(data.train_soft[row], expected, atol=1e-5)
        others = [i for i, n in enumerate(names) if n not in oof and not n.startswith("teacher:")]
        for row in others:  # training-only clips the teacher never predicted: their label
            assert data.train_soft[row].max() == 1.0
    dataset = ClipDataset(
        data.train, config.audio, data.train_targets, store=data.store,
        store_rows=data.train_rows, train=True, soft_targets=data.train_soft,
    )  # fmt: skip
    waveform, target = dataset[taught_rows[0]]
    assert waveform.shape == (16000,) and np.allclose(target, data.train_soft[taught_rows[0]])


def test_distillation_needs_a_student_of_the_labels(taught) -> None:
    config, *_ = taught
    words = config.model_copy(deep=True)
    words.task.params["label_mode"] = "words"
    task = create_task(words.task)
    with pytest.raises(ValueError, match="label_mode=labels"):
        FoldData(words, task, 0, progress=False)


def test_soft_loss_is_the_temperature_scaled_cross_entropy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 4)
    hard = torch.tensor([0, 1, 2, 3, 0, 1])
    onehot = F.one_hot(hard, 4).float()
    assert torch.allclose(_loss(logits, onehot, 0.0, 1.0), F.cross_entropy(logits, hard))
    soft = torch.softmax(torch.randn(6, 4), dim=1)
    expected = -(soft * torch.log_softmax(logits / 3.0, dim=1)).sum(dim=1).mean() * 9.0
    assert torch.allclose(_loss(logits, soft, 0.1, 3.0), expected)
    assert torch.allclose(
        _loss(logits, hard, 0.1, 3.0), F.cross_entropy(logits, hard, label_smoothing=0.1)
    )


def test_a_student_trains_through_the_cli(taught, repo_root: Path) -> None:
    _, settings, _, test = taught
    config = repo_root / "configs" / "speech_commands" / "student.yaml"
    tiny = ["model.params.backbone=test_resnet", "model.params.backbone_args={}",
            "train.epochs=1", "train.batch_size=32"]  # fmt: skip
    args = ["--config", str(config), *(a for s in [*settings, *tiny] for a in ("--set", s))]
    assert main(["train-fold", *args, "--fold", "0"]) == 0
    metrics = json.loads(Path("runs/speech_commands/student/fold0/metrics.json").read_text())
    assert metrics["pseudo_clips"] == len(test)
