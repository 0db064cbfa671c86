"""`train.init_from`: a fold starts from another experiment's fold weights (warm-started
pseudo rounds), refused when that fold validated other clips or learnt other classes."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest
import torch

from speechstack.artifacts import file_digest
from speechstack.cli import main
from speechstack.config import load_config
from speechstack.folds import read_folds
from speechstack.solution import _warm_start
from speechstack.train import FoldRun, RunMismatchError


def _source_fold(untrained_run: list[str], fold: int) -> tuple[dict, list[str]]:
    """Give the fixture's untrained fold the OOF table a finished fold has (its validation
    clips: those of ``fold`` in the folds file) and the ``metrics.json`` digests; its saved
    weights and the config args."""
    assert main(["folds", *untrained_run]) == 0
    config = load_config(untrained_run[1], untrained_run[3::2])
    folds = read_folds(config.folds_file)
    valid = folds.filter(pl.col("fold") == fold).select("fname")
    folder = config.run_dir / f"fold{fold}"
    valid.write_parquet(folder / "oof.parquet")
    saved = torch.load(folder / "model.pt", weights_only=True)
    # weights no fresh model of any seed has: what a fold loads is recognisable
    saved["state_dict"] = {
        name: tensor + 0.5 if tensor.is_floating_point() else tensor
        for name, tensor in saved["state_dict"].items()
    }
    torch.save(saved, folder / "model.pt")
    files = {name: file_digest(folder / name) for name in ("model.pt", "oof.parquet")}
    (folder / "metrics.json").write_text(json.dumps({"files": files}))  # as a finished fold
    return saved, untrained_run[3::2]


def test_fold_starts_from_the_source_weights(untrained_run: list[str]) -> None:
    saved, settings = _source_fold(untrained_run, 0)
    config = load_config(untrained_run[1], [*settings, "experiment=cnn-r1", "train.init_from=cnn"])
    run = FoldRun.build(config, 0, progress=False)
    state = run.network.state_dict()
    assert state.keys() == saved["state_dict"].keys()
    for name, tensor in saved["state_dict"].items():
        assert torch.equal(state[name].cpu(), tensor), name

    # without init_from the same seed gives other (fresh) weights: the check above can fail
    fresh = FoldRun.build(load_config(untrained_run[1], settings), 0, progress=False)
    assert any(
        not torch.equal(fresh.network.state_dict()[name].cpu(), tensor)
        for name, tensor in saved["state_dict"].items()
        if tensor.is_floating_point()
    )


def test_warm_start_refuses_a_fold_that_saw_other_clips(untrained_run: list[str]) -> None:
    """A source ``fold1`` that validated fold 0's clips trained on fold 1's: refused."""
    _, settings = _source_fold(untrained_run, 0)
    source = load_config(untrained_run[1], settings).run_dir
    shutil.copytree(source / "fold0", source / "fold1")
    config = load_config(untrained_run[1], [*settings, "experiment=cnn-r1", "train.init_from=cnn"])
    with pytest.raises(RunMismatchError, match="validated other clips than fold 1"):
        FoldRun.build(config, 1, progress=False)


def test_warm_start_refuses_unfinished_and_other_classes(untrained_run: list[str]) -> None:
    _, settings = _source_fold(untrained_run, 0)
    missing = load_config(untrained_run[1], [*settings, "experiment=b", "train.init_from=nope"])
    with pytest.raises(RunMismatchError, match="not a finished fold"):
        FoldRun.build(missing, 0, progress=False)
    words = load_config(
        untrained_run[1],
        [*settings, "experiment=w", "train.init_from=cnn", "task.params.label_mode=words"],
    )
    with pytest.raises(RunMismatchError, match="learnt the classes"):
        FoldRun.build(words, 0, progress=False)
    source = load_config(untrained_run[1], settings).run_dir / "fold0"
    warm = load_config(untrained_run[1], [*settings, "experiment=c", "train.init_from=cnn"])
    weights = source / "model.pt"
    weights.write_bytes(weights.read_bytes()[:100])  # a damaged source: its digest says so
    with pytest.raises(RunMismatchError, match=r"is damaged \(.*model.pt has 100 bytes"):
        FoldRun.build(warm, 0, progress=False)
    (source / "metrics.json").unlink()  # killed before its metrics: not finished
    with pytest.raises(RunMismatchError, match="not a finished fold"):
        FoldRun.build(warm, 0, progress=False)


def test_recipe_rounds_start_from_the_round_before(repo_root) -> None:
    config = load_config(repo_root / "configs" / "speech_commands" / "solution-cpu.yaml")
    solution = config.solution.model_copy(update={"warm_start": True})
    assert _warm_start(solution, "cnn-words", 1) == ["train.init_from=cnn-words"]
    assert _warm_start(solution, "cnn-words", 2) == ["train.init_from=cnn-words-r1"]
    cold = config.solution.model_copy(update={"warm_start": False})
    assert _warm_start(cold, "cnn-words", 1) == []


def test_a_features_family_refuses_a_warm_start(repo_root) -> None:
    from speechstack.train import FeatureFoldRun

    config = load_config(
        repo_root / "configs" / "ravdess" / "acoustic.yaml", ["train.init_from=acoustic"]
    )
    with pytest.raises(RunMismatchError, match="fitted once"):
        FeatureFoldRun.build(config, 0, progress=False)
