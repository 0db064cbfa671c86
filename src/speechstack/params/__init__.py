"""The schemas of the ``params`` blocks of a config: ``model.params`` of every model family
(``params/models.py``) and ``task.params`` of every task (``params/tasks.py``), each
registered under the family's or the task's name.

Why here, in the config layer, and not beside the networks and readers that use them:
``config.validate_config_data`` checks both blocks with these schemas, and the families
(``speechstack.models``) and readers (``speechstack.tasks``) sit in higher layers and import
torch and every model family; reached from here, a config loads and validates without them
(README, Layers). The schemas are pydantic models only: nothing here imports torch,
transformers, timm or librosa, or any higher layer of speechstack.

``speechstack.models.register_model`` and ``speechstack.tasks.TASKS`` check that a family or
task declares the schema registered here under its name; one defined outside this package
(a plugin, a test) has its schema added here when it registers, so a config naming it
validates too.
"""

from __future__ import annotations

from speechstack.config import Strict
from speechstack.registry import Registry, import_submodules

MODEL_PARAMS: Registry[type[Strict]] = Registry("model")  # family name -> model.params schema
TASK_PARAMS: Registry[type[Strict]] = Registry("task")  # task name -> task.params schema


def model_params_schema(name: str) -> type[Strict]:
    """The schema of ``model.params`` for family ``name`` (an unknown name is an
    ``UnknownNameError`` listing the known families)."""
    return MODEL_PARAMS.get(name)


def task_params_schema(name: str) -> type[Strict]:
    """The schema of ``task.params`` for task ``name`` (an unknown name is an
    ``UnknownNameError`` listing the known tasks)."""
    return TASK_PARAMS.get(name)


def bind_params(table: Registry[type[Strict]], name: str, schema: type[Strict]) -> None:
    """Tie a family or task being registered as ``name`` to its params ``schema``: the one
    ``table`` holds under that name (another is an error), or, where ``table`` has none (a
    family or task defined outside this package), ``schema`` is added to it."""
    if name not in table:
        table.register(name)(schema)
    elif table.get(name) is not schema:
        raise ValueError(
            f"{table.kind} '{name}' declares params {schema.__name__}, but speechstack.params "
            f"registers {table.get(name).__name__} for it"
        )


# Register every module of this package: the built-in schemas (@MODEL_PARAMS.register, ...).
import_submodules(__name__, __path__)
