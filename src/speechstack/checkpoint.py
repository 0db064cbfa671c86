"""The per-epoch training checkpoint of one fold: what a killed or interrupted fold resumes
from.

After every epoch the whole state of the loop is written atomically to
``runs/<task>/<experiment>/checkpoints/fold<k>.pt``: weights, optimiser, scheduler and
loss-scaler states, the history, the best epoch so far (its weights and validation
probabilities), the elapsed training time, and every random generator the loop draws from
(torch, CUDA, NumPy's global and ``random``'s, which the waveform augmentation uses; the
loop's own and the dataset's generators; the loader's shuffling generator). Restoring them
makes the resumed epochs draw exactly what an uninterrupted run would, so on the CPU with
``train.num_workers: 0`` a resumed fold ends with the same weights and predictions. (Loader
worker processes keep their own generators, which are not saved: with workers a resumed
fold is a valid but not a bit-identical continuation.)

A checkpoint belongs to one run identity (``Config.identity``): one made with another
config, or one that cannot be read, is set aside with a warning naming it, and the fold
starts from epoch one. The file is removed once the fold's folder is written.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechstack.artifacts import atomic_path

log = logging.getLogger(__name__)


def capture_random_state(
    generators: dict[str, np.random.Generator], torch_generators: dict[str, torch.Generator]
) -> dict[str, Any]:
    """Every random state a training epoch draws from: the global ones plus the named
    NumPy and torch generators."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "random": random.getstate(),
        "generators": {name: g.bit_generator.state for name, g in generators.items()},
        "torch_generators": {name: g.get_state() for name, g in torch_generators.items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(
    state: dict[str, Any],
    generators: dict[str, np.random.Generator],
    torch_generators: dict[str, torch.Generator],
) -> None:
    """Put back what :func:`capture_random_state` saved (the same names)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["random"])
    for name, generator in generators.items():
        generator.bit_generator.state = state["generators"][name]
    for name, torch_generator in torch_generators.items():
        torch_generator.set_state(state["torch_generators"][name])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class FoldCheckpoint:
    """The checkpoint file of one fold of one run identity."""

    def __init__(self, path: Path, identity: str, enabled: bool = True) -> None:
        self.path, self.identity, self.enabled = Path(path), identity, enabled

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (tensors, NumPy arrays, plain data) atomically."""
        if not self.enabled:
            return
        with atomic_path(self.path, suffix=".pt") as temp:
            torch.save({"identity": self.identity, "state": state}, temp)

    def load(self) -> dict[str, Any] | None:
        """The saved state of this run, or None (no file, another run's, or unreadable: the
        last two are set aside as ``<name>.stale`` with a warning, never silently used)."""
        if not self.enabled or not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=False)
            if not isinstance(saved, dict) or "state" not in saved:
                raise ValueError("not a speechstack checkpoint")
        except Exception as error:
            self._set_aside(f"cannot be read ({type(error).__name__}: {error})")
            return None
        if saved.get("identity") != self.identity:
            self._set_aside("was made with another config")
            return None
        return saved["state"]

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def _set_aside(self, why: str) -> None:
        stale = self.path.with_name(self.path.name + ".stale")
        log.warning("checkpoint %s %s; set aside as %s, the fold starts over", self.path, why,
                    stale.name)  # fmt: skip
        self.path.replace(stale)
