"""Data-parallel training under ``torchrun``: one process per device, gradients averaged.

``torchrun --nproc_per_node=N -m speechstack.cli train-fold ...`` (``make train-fold
NPROC=N``) sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; without them everything runs in one
process and these helpers do nothing. Each rank trains on its shard of the training clips
(``train.batch_size`` is per rank); every rank scores the whole validation fold, so all of
them pick the same best epoch; only rank 0 writes artefacts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> Distributed:
        return cls(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )

    def device(self, device: torch.device) -> torch.device:
        """The device of this rank: ``cuda:<local_rank>`` on GPUs, unchanged on CPU."""
        if device.type == "cuda" and self.enabled:
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def initialise(self, device: torch.device) -> None:
        """Join the process group (NCCL on CUDA, gloo on CPU) once per process."""
        if self.enabled and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """DistributedDataParallel around ``model`` when distributed. A model that may leave
        parameters out of a step (``model.skips_layers``: transformer layerdrop) makes DDP
        look for unused parameters every step, which it otherwise would wait for forever."""
        if not self.enabled:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(
            model,
            device_ids=ids,
            find_unused_parameters=bool(getattr(model, "skips_layers", False)),
        )

    def barrier(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.barrier()


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DistributedDataParallel wrapper (or the module itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
