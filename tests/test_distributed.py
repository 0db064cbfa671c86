"""Data-parallel training under torchrun, on CPU with the gloo backend (2 processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl

from speechstack.distributed import Distributed


def test_single_process_environment_is_a_no_op(monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    setup = Distributed.from_environment()
    assert not setup.enabled and setup.is_main
    import torch

    model = torch.nn.Linear(2, 2)
    assert setup.wrap(model, torch.device("cpu")) is model


def test_torchrun_two_processes_train_one_fold(
    tmp_path: Path, tiny_speech_commands: Path, repo_root: Path
) -> None:
    config = repo_root / "configs" / "speech_commands" / "cnn.yaml"
    common = [
        "--config", str(config), "--data", str(tiny_speech_commands),
        "--set", "model.params.backbone=test_resnet", "--set", "model.params.backbone_args={}",
        "--set", "train.epochs=1", "--set", "train.batch_size=16", "--set", "folds.k=3",
        "--set", "task.params.silence_clips=12",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-m", "speechstack.cli", "folds", *common],
        cwd=tmp_path, check=True, env=env,
    )
    result = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
            "--standalone", "-m", "speechstack.cli", "train-fold", *common, "--fold", "1",
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    folder = tmp_path / "runs" / "speech_commands" / "cnn" / "fold1"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    folds = pl.read_csv(tmp_path / "folds" / "speech_commands.csv")
    oof = pl.read_parquet(folder / "oof.parquet")
    assert set(oof["fname"]) == set(folds.filter(pl.col("fold") == 1)["fname"])
    # Exactly one writer: no leftover temp folders from the other rank.
    assert sorted(p.name for p in folder.parent.iterdir()) == ["fold1"]
