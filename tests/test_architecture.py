"""The extension points the README's Architecture section promises: a new model family is
its module (registered) plus one config file; a new task is its reader module plus its
``base.yaml``; a new module in a registry package is found without editing anything else."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from pydantic import Field
from torch import nn

from speechstack.cli import main
from speechstack.config import ConfigError, Strict, load_config
from speechstack.models import MODELS, ModelContext, register_model
from speechstack.params import MODEL_PARAMS, TASK_PARAMS
from speechstack.tasks import MANIFEST_COLUMNS, TASKS, Task, manifest_frame


def test_a_new_module_of_a_registry_package_registers_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "toyplugins"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from speechstack.registry import Registry, import_submodules\n"
        "KINDS = Registry('kind')\n"
        "import_submodules(__name__, __path__)\n"
    )
    for name in ("alpha", "beta"):
        (package / f"{name}.py").write_text(
            f"from toyplugins import KINDS\nKINDS.register({name!r})(object())\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    import toyplugins  # type: ignore[import-not-found]

    assert toyplugins.KINDS.names() == ["alpha", "beta"]
    monkeypatch.delitem(sys.modules, "toyplugins")


# ---------------------------------------------------------------------------------------
# A model family: its module (what the class and the decorator below would be) + one config


class ToyParams(Strict):
    width: int = Field(8, ge=1)


class ToyNet(nn.Module):
    """Frame energies of the waveform into a linear layer: a family in ten lines."""

    def __init__(self, params: ToyParams, context: ModelContext) -> None:
        super().__init__()
        self.frames = params.width
        self.head = nn.Linear(params.width, context.num_classes)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        usable = waveform.shape[1] // self.frames * self.frames
        frames = waveform[:, :usable].reshape(waveform.shape[0], self.frames, -1)
        return self.head(torch.log1p(frames.pow(2).mean(dim=2) * 1e3))


@pytest.fixture
def toy_family() -> Iterator[str]:
    register_model("toy", ToyParams, tiny={"width": 4})(ToyNet)
    yield "toy"
    MODELS._entries.pop("toy")
    MODEL_PARAMS._entries.pop("toy")  # added by register_model, like a plugin's


def test_a_new_model_family_is_its_module_and_one_config(
    toy_family: str,
    tiny_speech_commands: Path,
    repo_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    task_base = repo_root / "configs" / "speech_commands" / "base.yaml"
    config = tmp_path / "toy.yaml"
    config.write_text(
        textwrap.dedent(f"""\
            base: {task_base}
            experiment: toy
            model: {{name: toy, params: {{width: 16}}}}
            train: {{epochs: 1, threads: 1}}
            folds: {{k: 3}}
            """)
    )
    monkeypatch.chdir(tmp_path)
    common = ["--config", str(config), "--data", str(tiny_speech_commands)]
    assert main(["folds", *common]) == 0
    assert main(["train", *common]) == 0
    assert main(["stack", *common, "--set", "stack.experiments=[toy]"]) == 0
    assert main(["submission", *common, "--out", str(tmp_path / "toy.csv")]) == 0
    submission = pl.read_csv(tmp_path / "toy.csv")
    assert submission.height == 24 and submission.columns == ["fname", "label"]
    assert (tmp_path / "runs" / "speech_commands" / "toy" / "fold2" / "model.pt").is_file()
    capsys.readouterr()
    with pytest.raises(ConfigError, match=r"model\.params"):  # its params are validated
        load_config(config, ["model.params.depth=3"])


# ---------------------------------------------------------------------------------------
# A task: its reader module (the class below) + its base.yaml


class ToyTaskParams(Strict):
    pass


class ToyTones(Task):
    """``<data>/<label>/<speaker>_<n>.wav``: two labels, speakers as groups."""

    params_schema = ToyTaskParams

    @property
    def labels(self) -> list[str]:
        return ["low", "high"]

    def train_manifest(self) -> pl.DataFrame:
        paths = sorted(self.data_dir.glob("*/*.wav"))
        rows = {
            "fname": [f"{p.parent.name}/{p.name}" for p in paths],
            "path": [str(p) for p in paths],
            "start": [0.0] * len(paths),
            "duration": [None] * len(paths),
            "gain_db": [0.0] * len(paths),
            "label": [p.parent.name for p in paths],
            "target": [p.parent.name for p in paths],
            "group": [p.name.split("_")[0] for p in paths],
        }
        return manifest_frame(rows, MANIFEST_COLUMNS)


@pytest.fixture
def toy_task() -> Iterator[str]:
    TASKS.register("toy_tones")(ToyTones)
    yield "toy_tones"
    TASKS._entries.pop("toy_tones")
    TASK_PARAMS._entries.pop("toy_tones")


def test_a_new_task_is_its_reader_and_its_base_yaml(
    toy_task: str,
    write_wav,
    repo_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    data = tmp_path / "tones"
    rng = np.random.default_rng(0)
    time = np.arange(16000) / 16000
    for speaker in range(6):
        for n in range(4):
            for label, hz in (("low", 300.0), ("high", 2400.0)):
                tone = 0.3 * np.sin(2 * np.pi * hz * (1 + 0.05 * rng.standard_normal()) * time)
                write_wav(data / label / f"s{speaker}_{n}.wav", tone, 16000)
    configs = tmp_path / "configs" / "toy_tones"
    configs.mkdir(parents=True)
    (configs / "base.yaml").write_text(
        textwrap.dedent(f"""\
            base: [{repo_root / "configs" / "defaults.yaml"}, {repo_root / "configs" / "models" / "cnn.yaml"}]
            task: {{name: toy_tones, data_dir: {data}}}
            model: {{params: {{backbone: test_resnet, backbone_args: {{}}}}}}
            train: {{epochs: 2, threads: 1}}
            folds: {{k: 3}}
            """)  # noqa: E501
    )
    monkeypatch.chdir(tmp_path)
    common = ["--config", str(configs / "base.yaml")]
    assert main(["folds", *common]) == 0
    assert main(["train-fold", *common, "--fold", "0"]) == 0
    fold = tmp_path / "runs" / "toy_tones" / "cnn" / "fold0"
    oof = pl.read_parquet(fold / "oof.parquet")
    assert oof.columns == ["fname", "low", "high"] and oof.height == 16  # 2 of 6 speakers
    capsys.readouterr()
