"""The ``params`` schemas live in ``speechstack.params`` (config's layer): each name has one
schema, the one its model family or task registers, and a config loads and validates
without importing torch or the families (README, Layers)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from speechstack.config import Strict
from speechstack.params import bind_params
from speechstack.registry import Registry

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str) -> str:
    """The last line ``code`` prints, run in a fresh interpreter (no registration or import
    left behind by other tests)."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    return result.stdout.strip().splitlines()[-1]


def test_every_family_and_task_has_the_schema_of_the_params_registry() -> None:
    code = textwrap.dedent("""\
        import json
        from speechstack.models import MODELS
        from speechstack.params import MODEL_PARAMS, TASK_PARAMS
        from speechstack.tasks import TASKS
        other = [n for n in MODELS if MODELS.get(n).params_schema is not MODEL_PARAMS.get(n)]
        other += [n for n in TASKS if TASKS.get(n).params_schema is not TASK_PARAMS.get(n)]
        print(json.dumps({
            "models": [MODELS.names(), MODEL_PARAMS.names()],
            "tasks": [TASKS.names(), TASK_PARAMS.names()],
            "other": other,
        }))
        """)
    found = json.loads(run_python(code))
    families, model_schemas = found["models"]
    tasks, task_schemas = found["tasks"]
    assert families == model_schemas and "cnn" in families
    assert tasks == task_schemas and "speech_commands" in tasks
    assert found["other"] == []


def test_a_config_loads_without_torch_or_the_families() -> None:
    config = ROOT / "configs" / "speech_commands" / "cnn.yaml"
    code = (
        "import sys\n"
        "from speechstack.config import load_config\n"
        f"config = load_config({str(config)!r})\n"
        "assert config.model.params['backbone'] and 'seed' in config.task.params\n"
        "heavy = ['torch', 'transformers', 'timm', 'librosa', 'speechstack.models',\n"
        "         'speechstack.tasks', 'speechstack.features']\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    )
    assert run_python(code) == "[]"


class One(Strict):
    pass


class Other(Strict):
    pass


def test_a_registration_names_the_registered_schema_or_adds_its_own() -> None:
    table: Registry[type[Strict]] = Registry("model")
    table.register("known")(One)
    bind_params(table, "known", One)  # a built-in family: its schema is the registered one
    with pytest.raises(ValueError, match="model 'known' declares params Other"):
        bind_params(table, "known", Other)
    bind_params(table, "plugin", Other)  # defined outside speechstack.params: added
    assert table.get("plugin") is Other and table.names() == ["known", "plugin"]
