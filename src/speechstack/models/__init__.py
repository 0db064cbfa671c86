"""Model families: one module each, one registry, ``create_model(name, **params)``.

Every network maps a waveform batch ``(batch, samples)`` (float32, at the task's sample
rate) to logits ``(batch, num_classes)``; each family computes its own features on the
device. A family registers the pydantic schema of its ``params`` (unknown keys are rejected;
the schemas live in ``speechstack.params.models``, where a config is validated without
torch, and ``register_model`` checks that a family names the one registered there), a
``tiny`` preset that the tests use, and its ``trainer``: ``network`` (an ``nn.Module``
trained by epochs) or ``features`` (a classifier over clip features, fitted once per fold:
``acoustic``), or ``transcriber`` (a speech recogniser: waveform -> per-step token logits,
trained with CTC by ``transcribe.py``: ``ctc``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from speechstack.config import AudioConfig, Config, FeatureConfig, SpecAugmentConfig, Strict
from speechstack.params import MODEL_PARAMS, bind_params
from speechstack.registry import Registry, import_submodules


@dataclass(frozen=True)
class ModelContext:
    """What every family needs besides its own params."""

    num_classes: int
    class_names: tuple[str, ...] = ()  # names of the classes, in logit order (HF id2label)
    audio: AudioConfig = field(default_factory=AudioConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)

    @classmethod
    def of(cls, config: Config, classes: Sequence[str]) -> ModelContext:
        """The context of a run's config for a model over ``classes``."""
        return cls(
            num_classes=len(classes),
            class_names=tuple(classes),
            audio=config.audio,
            features=config.features,
            spec_augment=config.augment.spec_augment,
        )


Trainer = Literal["network", "features", "transcriber"]
Build = Callable[[Any, ModelContext], Any]  # (validated params, context) -> model


@dataclass(frozen=True)
class ModelFamily:
    build: Build  # an nn.Module (network) or a features classifier
    params_schema: type[Strict]
    tiny: dict[str, Any]  # params of a tiny variant (tests, smoke runs)
    trainer: Trainer = "network"


MODELS: Registry[ModelFamily] = Registry("model")


def register_model(
    name: str, params_schema: type[Strict], tiny: dict[str, Any], trainer: Trainer = "network"
) -> Callable[[Build], Build]:
    def decorator(build: Build) -> Build:
        MODELS.register(name)(ModelFamily(build, params_schema, tiny, trainer))
        bind_params(MODEL_PARAMS, name, params_schema)
        return build

    return decorator


def model_trainer(name: str) -> Trainer:
    """How a family is trained: ``network`` (epochs) or ``features`` (fitted once)."""
    return MODELS.get(name).trainer


def create_model(name: str, context: ModelContext, **params: Any) -> Any:
    """Build a registered family (an ``nn.Module``, or a features classifier: see
    ``ModelFamily.trainer``); ``params`` are validated against its schema."""
    from speechstack.config import validate_params

    family = MODELS.get(name)
    validated = validate_params(family.params_schema, params, f"model '{name}'", "model")
    return family.build(validated, context)


# Register every module of this package: the built-in families (@register_model).
import_submodules(__name__, __path__)
