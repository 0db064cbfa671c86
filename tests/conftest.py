"""Shared fixtures: a tiny synthetic Speech Commands dataset, a WAV writer, the repo root."""

from __future__ import annotations

import os

# Tests never touch the network: make Hugging Face / timm hub calls fail at once instead of
# retrying (read by huggingface_hub when it is first imported, so set before any import).
os.environ["HF_HUB_OFFLINE"] = "1"
# OpenMP threads that wait for work sleep instead of spinning. LightGBM (the stacker and
# the acoustic family, n_jobs=2) runs OpenMP; with every core busy (`make test` runs one
# test per core) its spinning threads hold the core the thread they wait for needs: a
# stacker's fit took 34 s instead of 0.3 s. Read when an OpenMP runtime loads, so set
# before anything imports one (torch below included); results do not depend on it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Under pytest-xdist (`make test` runs two workers on a 2-core machine) each worker keeps one
# torch thread, so the two together use the cores instead of fighting over them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    # numba compiles librosa's guvectorize kernels (`yin`) on first use and caches them;
    # two processes filling one cache at once can pair a kernel with another's dispatcher
    # and segfault every later load (numba#10128, open): in a fresh venv both workers ran
    # the emotion tests' `yin` at once and crashed. Each worker keeps a cache of its own.
    import tempfile

    os.environ["NUMBA_CACHE_DIR"] = os.path.join(
        tempfile.gettempdir(),
        f"speechstack-numba-{os.getuid()}-{os.environ['PYTEST_XDIST_WORKER']}",
    )
    import torch

    torch.set_num_threads(1)

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechstack.synth import generate_speech_commands

WavWriter = Callable[[Path, np.ndarray, int, str], Path]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (the folder holding src/, configs/, tests/)."""
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_speech_commands(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~200-clip demo dataset in the Kaggle layout (6 train speakers, 24 test clips,
    3 s noise files). Session-scoped and shared: copy it before changing anything."""
    return generate_speech_commands(
        tmp_path_factory.mktemp("speech_commands") / "demo",
        speakers=6,
        test_speakers=2,
        test_clips=24,
        noise_seconds=3.0,
        seed=0,
        progress=False,
    )


@pytest.fixture
def write_wav() -> WavWriter:
    """``write_wav(path, data, rate, subtype)`` writes a WAV with soundfile and returns the
    path. ``data`` is float in [-1, 1], shape ``(samples,)`` or ``(samples, channels)``."""

    def write(path: Path, data: np.ndarray, rate: int, subtype: str = "PCM_16") -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, data, rate, subtype=subtype, format="WAV")
        return path

    return write


# The tiny CNN (and the tiny data's settings) for CLI tests that need a model, not a good one.
TINY_SETTINGS = [
    "model.params.backbone=test_resnet",
    "model.params.backbone_args={}",
    "folds.k=3",
    "task.params.silence_clips=12",
]


@pytest.fixture
def untrained_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_speech_commands: Path,
    repo_root: Path,
) -> list[str]:
    """Work in ``tmp_path`` with one untrained fold of the tiny CNN in
    ``runs/speech_commands/cnn/fold0`` (random weights, saved as training saves a fold:
    what ``predict`` loads), without training anything. Returns the CLI's common
    arguments (``--config ... --data ... --set ...``) for that run."""
    import torch

    from speechstack.config import load_config, save_config
    from speechstack.models import ModelContext, create_model
    from speechstack.tasks import create_task

    monkeypatch.chdir(tmp_path)
    config_file = repo_root / "configs" / "speech_commands" / "cnn.yaml"
    settings = [f"task.data_dir={tiny_speech_commands}", *TINY_SETTINGS]
    config = load_config(config_file, settings)
    task = create_task(config.task)
    classes = task.classes()
    context = ModelContext.of(config, classes)
    torch.manual_seed(0)
    model = create_model(config.model.name, context, **config.model.params)
    folder = config.run_dir / "fold0"
    folder.mkdir(parents=True)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "classes": classes,
            "labels": task.labels,
            "class_to_label": task.class_to_label().tolist(),
        },
        folder / "model.pt",
    )
    save_config(config, folder / "config.yaml")
    return ["--config", str(config_file), *(a for s in settings for a in ("--set", s))]
