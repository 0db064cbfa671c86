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
        cwd=tmp_path,
        check=True,
        env=env,
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
    assert sorted(p.name for p in folder.parent.iterdir()) == [
        ".fold1.lock",
        "checkpoints",
        "fold1",
    ]
    assert list((folder.parent / "checkpoints").iterdir()) == []  # removed once written


def test_models_that_skip_layers_get_ddp_looking_for_unused_parameters() -> None:
    """Layerdrop leaves some layers out of a step; DDP must be told, or its next step fails.
    One gloo process (world size 1) is enough to run DDP's bookkeeping."""
    import torch
    import torch.distributed as dist

    from speechstack.models import MODELS, ModelContext, create_model

    family = MODELS.get("wav2vec2")
    dropping = create_model(
        "wav2vec2", ModelContext(num_classes=3),
        **{**family.tiny, "config_overrides": {"layerdrop": 0.5}},
    )  # fmt: skip
    assert dropping.skips_layers
    assert not create_model("wav2vec2", ModelContext(num_classes=3), **family.tiny).skips_layers

    class Alternating(torch.nn.Module):
        skips_layers = True

        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
            self.step = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.step += 1
            return (self.a if self.step % 2 else self.b)(x)

    import socket

    with socket.socket() as probe:  # a free loopback port for the one-process group
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    setup = Distributed(rank=0, world_size=2)  # "distributed", over the one-process group
    try:
        wrapped = setup.wrap(Alternating(), torch.device("cpu"))
        assert wrapped.find_unused_parameters
        for _ in range(3):  # without find_unused_parameters the second step raises
            wrapped(torch.ones(1, 2)).sum().backward()
    finally:
        dist.destroy_process_group()
