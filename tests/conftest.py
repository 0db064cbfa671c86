"""Shared fixtures: a tiny synthetic Speech Commands dataset, a WAV writer, the repo root."""

from __future__ import annotations

import os

# Tests never touch the network: make Hugging Face / timm hub calls fail at once instead of
# retrying (read by huggingface_hub when it is first imported, so set before any import).
os.environ["HF_HUB_OFFLINE"] = "1"

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
