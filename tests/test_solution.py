"""`speechstack solution`: families on every fold, a pseudo-label round, stacks and the
submission, through the CLI on tiny data; the CV must be clearly above chance."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from speechstack.cli import main
from speechstack.config import ConfigError, load_config
from speechstack.fold_pool import train_folds
from speechstack.tasks.speech_commands import LABELS
from speechstack.train import RunMismatchError

# A tiny GRU that learns the tiny data within seconds: the room, noise and channel
# augmentation (meant for thousands of clips) is off, the word placement stays on.
FAMILY = {
    "model.params.hidden_size": 32,
    "model.params.front_channels": 32,
    "model.params.layers": 1,
    "train.epochs": 12,
    "train.batch_size": 16,
    "train.lr": 0.005,
    "train.parallel_folds": 1,
    **{
        f"augment.{name}.p": 0.0
        for name in ("speed", "mix", "reverb", "noise", "colored_noise", "band", "spec_augment")
    },
}


RETRAIN_EPOCHS = 3  # the pseudo-label round's epochs (retrain_set)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_recipe(folder: Path, repo_root: Path, rounds: int) -> Path:
    configs = repo_root / "configs" / "speech_commands"
    recipe = {
        "base": str(configs / "base.yaml"),
        "experiment": "tiny-solution",
        "folds": {"k": 3},
        "task": {"params": {"silence_clips": 12}},
        "solution": {
            "experiments": [{"config": str(configs / "gru.yaml"), "set": FAMILY}],
            "pseudo_rounds": rounds,
            # round 1 fine-tunes round 0's folds (warm_start) and nothing scores it: a few
            # epochs show retrain_set applied (not round 0's 12) as well as ten did
            "retrain_set": {"train.epochs": RETRAIN_EPOCHS},
            "warm_start": True,
        },
        "pseudo": {"threshold": 0.5, "agreement": False, "max_share": 0.5},
    }
    path = folder / "solution-tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_solution_trains_pseudo_labels_stacks_and_submits(
    workdir: Path, tiny_speech_commands: Path, repo_root: Path, capsys: pytest.CaptureFixture
) -> None:
    recipe = write_recipe(workdir, repo_root, rounds=1)
    argv = ["solution", "--config", str(recipe), "--data", str(tiny_speech_commands)]
    assert main([*argv, "--set", "folds.k=3", "--set", "task.params.silence_clips=12"]) == 0
    out = capsys.readouterr().out
    runs = workdir / "runs" / "demo"  # named after the data folder
    report = json.loads((runs / "solution.json").read_text())
    folds = pl.read_csv(workdir / "folds" / "demo.csv")

    # round 0: the family learned something real on unseen speakers
    gru = next(row for row in report["rows"] if row["source"] == "gru")
    chance = folds["label"].value_counts()["count"].max() / folds.height
    assert gru["cv"] > 2 * chance, (gru, chance)  # ~0.28 vs 0.11: > 4 standard errors
    assert gru["shifted"] is not None and gru["test"] is not None

    # round 1: the pseudo-labelled test clips trained every fold, never validated
    (added,) = report["rounds"]
    assert added["clips"] > 0 and added["from"] == "stack"
    pseudo = pl.read_csv(added["file"])
    assert set(pseudo["label"]) <= set(LABELS)
    assert load_config(runs / "gru" / "fold0" / "config.yaml").train.epochs == 12
    retrained = load_config(runs / "gru-r1" / "fold0" / "config.yaml")
    assert retrained.train.epochs == RETRAIN_EPOCHS != 12  # retrain_set
    assert retrained.train.init_from == "gru"  # warm_start: round 1 fine-tunes round 0
    for fold in range(3):
        metrics = json.loads((runs / "gru-r1" / f"fold{fold}" / "metrics.json").read_text())
        expected = pseudo.filter(pl.col("label").is_in(LABELS)).height
        assert metrics["pseudo_clips"] == expected
        oof = pl.read_parquet(runs / "gru-r1" / f"fold{fold}" / "oof.parquet")
        assert set(oof["fname"]) == set(folds.filter(pl.col("fold") == fold)["fname"])
    assert (runs / "stack-r1" / "stacker.json").is_file()

    # the submission comes from the last stack's kept source
    assert report["submitted_source"].startswith("stack-r1: ")
    (submission,) = (workdir / "submissions").glob("demo-*.csv")
    frame = pl.read_csv(submission)
    sample = pl.read_csv(tiny_speech_commands / "sample_submission.csv")
    assert frame["fname"].to_list() == sample["fname"].to_list()
    assert report["test_accuracy"] is not None
    assert "shifted OOF" in out and "submission" in out

    # a later recipe run whose round picks other clips must not reuse the round's folds
    round_file = Path(added["file"])
    saved = runs / "gru-r1" / "fold0" / "pseudo_labels.csv"
    assert saved.read_bytes() == round_file.read_bytes()
    round_file.write_text("\n".join(round_file.read_text().splitlines()[:-1]) + "\n")
    config = load_config(runs / "gru-r1" / "fold0" / "config.yaml")
    with pytest.raises(RunMismatchError, match="other pseudo labels"):
        train_folds(config, progress=False)


def test_recipe_errors_name_the_file(workdir: Path, repo_root: Path, tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, repo_root, rounds=0)
    data = yaml.safe_load(recipe.read_text())
    data["solution"]["retrain"] = ["cnn"]
    recipe.write_text(yaml.safe_dump(data))
    from speechstack.solution import SolutionError, run_solution

    config = load_config(recipe)
    with pytest.raises(SolutionError, match="retrain names \\['cnn'\\]"):
        run_solution(config, recipe, [])

    # the pseudo rounds' settings are checked before round 0 trains
    data["solution"].update(retrain=None, pseudo_rounds=1, retrain_set={"train.epoch": 3})
    recipe.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"train\.epoch"):
        run_solution(load_config(recipe), recipe, [])
    assert not (workdir / "runs").exists() and not (workdir / "folds").exists()


def test_every_shipped_recipe_loads(repo_root: Path) -> None:
    """Every recipe's families resolve (a task's own file, or its base composed with
    ``configs/models/<family>.yaml``) and validate, with distinct experiment names."""
    from speechstack.solution import experiment_config

    recipes = sorted((repo_root / "configs").glob("*/solution-*.yaml"))
    assert {path.parent.name for path in recipes} >= {"speech_commands", "ravdess", "crema_d"}
    for path in recipes:
        config = load_config(path)
        assert config.solution.experiments, path
        families = [
            experiment_config(config, path, i, [], [])
            for i in range(len(config.solution.experiments))
        ]
        names = [family.experiment for family in families]
        assert len(set(names)) == len(names), (path, names)
        if path.parent.name != "speech_commands":
            assert "acoustic" in {family.model.name for family in families}, path
