"""Synthetic demo datasets spoken by espeak-ng, in the layouts of real competitions.

``DEMOS`` names the generator of each demo (``speechstack synth --task NAME``, ``make
data-demo TASK=NAME``); the generator modules are imported only when used, so the CLI can
list the demos without loading SciPy and espeak-ng.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Demo:
    """Where a demo's generator lives and what its options are called."""

    module: str  # under speechstack.synth
    function: str
    speakers_keyword: str  # the argument that `--speakers` sets
    has_test_set: bool = False  # takes test_speakers, test_clips, noise_seconds


DEMOS: dict[str, Demo] = {
    "speech_commands": Demo("speech_commands", "generate_speech_commands", "speakers", True),
    "ravdess": Demo("emotion", "generate_ravdess", "actors"),
    "crema_d": Demo("emotion", "generate_crema_d", "actors"),
    "sentiment": Demo("sentiment", "generate_sentiment", "speakers"),
    "asr": Demo("asr", "generate_asr", "speakers"),
    "bengali_ai": Demo("bengali", "generate_bengali_ai", "speakers"),
}


def generate_demo(
    name: str,
    out: Path,
    *,
    seed: int,
    force: bool,
    speakers: int | None = None,
    **test_options: Any,
) -> Path:
    """Write demo ``name`` to ``out``; ``test_options`` (test speakers, clips, noise
    length) apply to demos with a test set and are ignored by the others."""
    demo = DEMOS[name]
    generate = getattr(importlib.import_module(f"speechstack.synth.{demo.module}"), demo.function)
    options: dict[str, Any] = {"seed": seed, "force": force}
    if speakers is not None:
        options[demo.speakers_keyword] = speakers
    if demo.has_test_set:
        options |= {key: value for key, value in test_options.items() if value is not None}
    return generate(Path(out), **options)


_LAZY = {
    "Espeak": "espeak",
    "english_voices": "espeak",
    "variants_by_gender": "espeak",
    "generate_asr": "asr",
    "generate_bengali_ai": "bengali",
    "generate_crema_d": "emotion",
    "generate_ravdess": "emotion",
    "generate_sentiment": "sentiment",
    "generate_speech_commands": "speech_commands",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"speechstack.synth.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'speechstack.synth' has no attribute {name!r}")


__all__ = ["DEMOS", "Demo", "generate_demo", *_LAZY]
