"""Classification reports: per-class precision/recall/F1, a confusion matrix, per-group
accuracy — for a fold, an experiment's out-of-fold predictions, or the stack.

``write_report(folder, title, predictions, labels, group_columns)`` writes, atomically,

* ``report.md``       accuracy, per-class table with macro and weighted averages, the
                      confusion matrix as counts, accuracy per value of every group column
* ``confusion.png``   the confusion matrix, rows normalised to recall, counts in the cells
* ``report.json``     the same numbers for scripts

``predictions`` holds one row per clip: ``label`` (the truth), one probability column per
label, and the group columns (gender, speaker, intensity, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from speechstack.artifacts import atomic_path, atomic_write_json, atomic_write_text, read_frame
from speechstack.submission import predicted_labels

REPORT_FILES = ("report.md", "confusion.png", "report.json")


def summarise(
    predictions: pl.DataFrame, labels: list[str], group_columns: list[str]
) -> dict[str, Any]:
    """The report's numbers: accuracy, UAR, per-class and averaged precision/recall/F1/support,
    the confusion matrix (rows = truth, columns = prediction) and per-group accuracy."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    truth = predictions["label"].to_numpy().astype(str)
    unknown = sorted(set(truth) - set(labels))
    if unknown:
        raise ValueError(f"true labels {unknown} are not among the task's labels {labels}")
    predicted = predicted_labels(predictions, labels)
    correct = predicted == truth
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=labels, zero_division=0
    )
    classes = {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }
    averages = {}
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            truth, predicted, labels=labels, average=average, zero_division=0
        )
        averages[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    groups: dict[str, list[dict[str, Any]]] = {}
    for column in group_columns:
        table = (
            pl.DataFrame({"value": predictions[column].cast(pl.String), "correct": correct})
            .group_by("value")
            .agg(pl.len().alias("clips"), pl.col("correct").mean().alias("accuracy"))
            .sort(["accuracy", "value"])
        )
        groups[column] = table.to_dicts()
    present = support > 0
    return {
        "clips": len(truth),
        "accuracy": float(correct.mean()) if len(truth) else 0.0,
        # unweighted average recall (balanced accuracy): the mean of the per-class recalls
        # over the classes that occur, what emotion papers quote beside accuracy
        "uar": float(recall[present].mean()) if present.any() else 0.0,
        "labels": labels,
        "classes": classes,
        "averages": averages,
        "confusion": confusion_matrix(truth, predicted, labels=labels).tolist(),
        "groups": groups,
    }


def _markdown(title: str, summary: dict[str, Any]) -> str:
    labels = summary["labels"]
    lines = [
        f"# {title}",
        "",
        f"{summary['clips']} clips, accuracy **{summary['accuracy']:.4f}**, "
        f"UAR {summary['uar']:.4f}, macro F1 {summary['averages']['macro']['f1']:.4f}",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for label, row in summary["classes"].items():
        lines.append(
            f"| {label} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} "
            f"| {row['support']} |"
        )
    for average, row in summary["averages"].items():
        lines.append(
            f"| *{average} avg* | {row['precision']:.4f} | {row['recall']:.4f} "
            f"| {row['f1']:.4f} | {summary['clips']} |"
        )
    lines += [
        "",
        "## Confusion matrix (rows: truth, columns: prediction)",
        "",
        "| | " + " | ".join(labels) + " |",
        "|---" * (len(labels) + 1) + "|",
    ]
    for label, counts in zip(labels, summary["confusion"], strict=True):
        lines.append(f"| **{label}** | " + " | ".join(str(c) for c in counts) + " |")
    lines += ["", "![confusion matrix](confusion.png)"]
    for column, rows in summary["groups"].items():
        lines += [
            "",
            f"## Accuracy by {column} (worst first)",
            "",
            f"| {column} | clips | accuracy |",
            "|---|---|---|",
        ]
        lines += [f"| {r['value']} | {r['clips']} | {r['accuracy']:.4f} |" for r in rows]
    return "\n".join(lines) + "\n"


def plot_confusion(summary: dict[str, Any], title: str, path: Path) -> None:
    """The confusion matrix as a PNG: colour = share of the true class, text = count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = summary["labels"]
    counts = np.asarray(summary["confusion"], dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 2.5 + 0.55 * len(labels)
    figure, axes = plt.subplots(figsize=(size + 1.2, size), dpi=110)
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"{title}\naccuracy {summary['accuracy']:.4f}", fontsize=10)
    for row in range(len(labels)):
        for column in range(len(labels)):
            if counts[row, column]:
                colour = "white" if shares[row, column] > 0.5 else "black"
                axes.text(column, row, f"{counts[row, column]:.0f}", ha="center",
                          va="center", color=colour, fontsize=8)  # fmt: skip
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of true class")
    figure.tight_layout()
    with atomic_path(path, ".png") as temp:
        figure.savefig(temp, format="png")
    plt.close(figure)


def write_report(
    folder: Path,
    title: str,
    predictions: pl.DataFrame,
    labels: list[str],
    group_columns: list[str],
) -> dict[str, Any]:
    """Write report.md, confusion.png and report.json into ``folder``; returns the numbers."""
    columns = [c for c in group_columns if c in predictions.columns]
    summary = summarise(predictions, labels, columns)
    folder.mkdir(parents=True, exist_ok=True)
    plot_confusion(summary, title, folder / "confusion.png")
    atomic_write_json(folder / "report.json", {"title": title, **summary})
    atomic_write_text(folder / "report.md", _markdown(title, summary))
    return summary


def with_manifest(
    predictions: pl.DataFrame, manifest: pl.DataFrame, columns: list[str]
) -> pl.DataFrame:
    """``predictions`` (fname + probability columns) joined with the truth and the group
    columns of the task's manifest; every predicted clip must be in the manifest."""
    wanted = ["fname", "label", *[c for c in columns if c in manifest.columns and c != "label"]]
    joined = predictions.join(manifest.select(wanted), on="fname", how="left")
    if joined["label"].is_null().any():
        missing = joined.filter(pl.col("label").is_null())["fname"].head(3).to_list()
        raise ValueError(f"predicted clips not in the task's manifest, e.g. {missing}")
    return joined


def report_oof(
    run_dir: Path, title: str, manifest: pl.DataFrame, labels: list[str], group_columns: list[str]
) -> dict[str, Any]:
    """``write_report`` of a run folder's out-of-fold predictions (``read_oof``), with the
    truth and group columns from the task's ``manifest``."""
    predictions = with_manifest(read_oof(run_dir), manifest, group_columns)
    return write_report(run_dir, title, predictions, labels, group_columns)


def read_oof(run_dir: Path) -> pl.DataFrame:
    """Out-of-fold predictions of a run folder: a stack's ``oof.parquet``, or the
    ``fold*/oof.parquet`` files of an experiment, concatenated."""
    single = run_dir / "oof.parquet"
    if single.is_file():
        return read_frame(single)
    paths = sorted(run_dir.glob("fold*/oof.parquet"))
    if not paths:
        raise FileNotFoundError(f"{run_dir}: no out-of-fold predictions (train it first)")
    return pl.concat(read_frame(path) for path in paths)
