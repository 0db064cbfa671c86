"""Model families: one module each, one registry, ``create_model(name, **params)``.

Every model maps a waveform batch ``(batch, samples)`` (float32, at the task's sample rate)
to logits ``(batch, num_classes)``; each family computes its own features on the device.
A family registers the pydantic schema of its ``params`` (unknown keys are rejected) and a
``tiny`` preset that the tests use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from speechstack.config import AudioConfig, Config, FeatureConfig, SpecAugmentConfig, Strict
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


@dataclass(frozen=True)
class ModelFamily:
    build: Callable[[Any, ModelContext], nn.Module]  # (validated params, context) -> module
    params_schema: type[Strict]
    tiny: dict[str, Any]  # params of a tiny variant (tests, smoke runs)


MODELS: Registry[ModelFamily] = Registry("model")


def register_model(
    name: str, params_schema: type[Strict], tiny: dict[str, Any]
) -> Callable[[Callable[[Any, ModelContext], nn.Module]], Callable[[Any, ModelContext], nn.Module]]:
    def decorator(
        build: Callable[[Any, ModelContext], nn.Module],
    ) -> Callable[[Any, ModelContext], nn.Module]:
        MODELS.register(name)(ModelFamily(build, params_schema, tiny))
        return build

    return decorator


def model_params_schema(name: str) -> type[Strict]:
    return MODELS.get(name).params_schema


def create_model(name: str, context: ModelContext, **params: Any) -> nn.Module:
    """Build a registered family; ``params`` are validated against its schema."""
    from speechstack.config import validate_params

    family = MODELS.get(name)
    validated = validate_params(family.params_schema, params, f"model '{name}'", "model")
    return family.build(validated, context)


# Register every module of this package: the built-in families (@register_model).
import_submodules(__name__, __path__)
