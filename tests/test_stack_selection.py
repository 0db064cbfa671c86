"""The stack keeps the source that scores best on the shifted OOF rows: the plain mean, a
member, or LightGBM, and ``apply_stack`` reproduces whichever it kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from speechstack.config import StackConfig
from speechstack.stack import LIGHTGBM, MEAN, apply_stack, choose_source, run_stack

LABELS = ["a", "b", "c"]


def rows_right(right: int, rows: int = 1000, offset: int = 0) -> np.ndarray:
    """``right`` of ``rows`` rows predicted right, starting at row ``offset`` (wrapping)."""
    return np.roll(np.arange(rows) < right, offset)


def test_choose_source_prefers_the_simplest_of_equals() -> None:
    right = {MEAN: rows_right(700), "cnn": rows_right(700, offset=50), LIGHTGBM: rows_right(700)}
    assert choose_source(right, "shifted")[0] == MEAN
    right["cnn"] = rows_right(760)
    name, reason = choose_source(right, "shifted")
    assert name == "cnn" and "shifted OOF" in reason and "cnn 0.7600" in reason
    assert "standard error" not in reason  # the best itself was kept


def test_choose_source_keeps_the_simpler_within_the_margin() -> None:
    """1,000 rows: LightGBM right on 6 more rows than the mean (54 rows differ, standard
    error of the difference 0.73 pp) is no evidence; 40 more rows (4 pp) is."""
    mean = rows_right(700)
    close = mean.copy()
    flipped = list(range(700, 730)) + list(range(24))  # 30 rows gained, 24 lost
    close[flipped] = ~close[flipped]
    assert close.sum() == 706
    name, reason = choose_source({MEAN: mean, LIGHTGBM: close}, "shifted")
    assert name == MEAN
    assert "kept mean: 0.0060 behind lightgbm, within 2 standard errors (0.0073 each)" in reason
    assert choose_source({MEAN: mean, LIGHTGBM: close}, "shifted", margin_se=0.5)[0] == LIGHTGBM
    assert choose_source({MEAN: mean, LIGHTGBM: close}, "shifted", margin_se=0)[0] == LIGHTGBM
    far = rows_right(740)
    assert choose_source({MEAN: mean, LIGHTGBM: far}, "cv")[0] == LIGHTGBM
    # a member within reach of the best is kept over the stacker; one further below is not
    member = rows_right(738, offset=20)
    assert choose_source({MEAN: mean, "cnn": member, LIGHTGBM: far}, "cv")[0] == "cnn"


def write_runs(root: Path, rng: np.random.Generator, k: int = 3, clips: int = 90) -> pl.DataFrame:
    """Two fake experiments: `good` is right on 90 % of the shifted rows, `bad` on ~33 %;
    on the clean rows both are right on every clip."""
    fnames = [f"clip{i:03d}.wav" for i in range(clips)]
    labels = [LABELS[i % 3] for i in range(clips)]
    folds = pl.DataFrame(
        {"fname": fnames, "label": labels, "group": fnames, "fold": [i % k for i in range(clips)]}
    )
    truth = np.array([i % 3 for i in range(clips)])
    test_names = [f"test{i:02d}.wav" for i in range(12)]
    for name, shifted_right in (("good", 0.9), ("bad", 0.33)):
        clean = np.eye(3)[truth] * 0.8 + 0.2 / 3
        wrong = rng.random(clips) > shifted_right
        shifted_truth = np.where(wrong, (truth + 1) % 3, truth)
        shifted = np.eye(3)[shifted_truth] * 0.8 + 0.2 / 3
        for fold in range(k):
            folder = root / name / f"fold{fold}"
            folder.mkdir(parents=True)
            rows = np.flatnonzero(folds["fold"].to_numpy() == fold)
            for kind, matrix in (("oof", clean), ("oof_shifted", shifted)):
                pl.DataFrame(
                    {
                        "fname": [fnames[r] for r in rows],
                        **{c: matrix[rows, i] for i, c in enumerate(LABELS)},
                    }
                ).write_parquet(folder / f"{kind}.parquet")
            test = rng.dirichlet(np.ones(3), size=len(test_names))
            pl.DataFrame(
                {"fname": test_names, **{c: test[:, i] for i, c in enumerate(LABELS)}}
            ).write_parquet(folder / "test.parquet")
    return folds


def test_stack_keeps_the_member_that_survives_the_shift(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    folds = write_runs(runs, np.random.default_rng(0))
    folds.write_csv(tmp_path / "folds.csv")
    config = StackConfig(experiments=["good", "bad"])
    metrics = run_stack(config, runs, tmp_path / "folds.csv", LABELS)
    assert metrics["selected_by"] == "shifted"
    sources = metrics["sources"]
    assert sources["good"]["cv"] == sources["bad"]["cv"] == 1.0  # clean OOF cannot tell
    assert sources["good"]["shifted"] > 0.8 > 0.5 > sources["bad"]["shifted"]
    best = max(sources.values(), key=lambda s: s["shifted"])["shifted"]
    assert sources[metrics["selected"]]["shifted"] >= best - 0.05  # within one error of 90 rows
    assert metrics["selected"] in {"good", LIGHTGBM}
    saved = json.loads((runs / "stack" / "stacker.json").read_text())
    assert saved["selected"] == metrics["selected"]

    # apply_stack on the members' test probabilities reproduces the stack's test.parquet
    k = 3
    features = None
    for name in ("good", "bad"):
        mean = (
            pl.concat(
                [pl.read_parquet(runs / name / f"fold{f}" / "test.parquet") for f in range(k)]
            )
            .group_by("fname", maintain_order=True)
            .agg(*[pl.col(c).mean().alias(f"{name}:{c}") for c in LABELS])
        )
        features = mean if features is None else features.join(mean, on="fname")
    assert features is not None
    features = features.sort("fname")
    stack_test = pl.read_parquet(runs / "stack" / "test.parquet").sort("fname")
    np.testing.assert_allclose(
        apply_stack(runs / "stack", features), stack_test.select(LABELS).to_numpy(), atol=1e-6
    )


def test_without_shifted_rows_the_clean_oof_decides(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    folds = write_runs(runs, np.random.default_rng(1))
    for path in runs.rglob("oof_shifted.parquet"):
        path.unlink()
    folds.write_csv(tmp_path / "folds.csv")
    metrics = run_stack(
        StackConfig(experiments=["good", "bad"]), runs, tmp_path / "folds.csv", LABELS
    )
    assert metrics["selected_by"] == "cv"
    assert metrics["selected"] == MEAN  # every source is perfect on clean rows: the simplest wins
    assert metrics["stack_accuracy_shifted"] is None


@pytest.mark.parametrize("selected", [MEAN, "good"])
def test_apply_stack_follows_the_selected_source(tmp_path: Path, selected: str) -> None:
    folder = tmp_path / "stack"
    folder.mkdir()
    spec = {
        "experiments": ["good", "bad"],
        "labels": LABELS,
        "features": [],
        "selected": selected,
        "folds": [],
    }
    (folder / "stacker.json").write_text(json.dumps(spec))
    good, bad = np.array([[0.7, 0.2, 0.1]]), np.array([[0.1, 0.2, 0.7]])
    features = pl.DataFrame(
        {
            **{f"good:{c}": good[:, i] for i, c in enumerate(LABELS)},
            **{f"bad:{c}": bad[:, i] for i, c in enumerate(LABELS)},
        }
    )
    expected = (good + bad) / 2 if selected == MEAN else good
    np.testing.assert_allclose(apply_stack(folder, features), expected)
