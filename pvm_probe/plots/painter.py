"""Blind Painter accuracy by quarter of the answer, and training curves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

QUARTERS = ["Q1", "Q2", "Q3", "Q4"]


def plot_accuracy_by_quartile(results: dict[str, dict], title: str = "Blind Painter accuracy by quarter"):
    """results: model name -> a `paint` result (needs `accuracy_by_quartile`)."""
    fig, ax = plt.subplots(figsize=(9, 3.6))
    width = 0.8 / max(1, len(results))
    for i, (name, result) in enumerate(results.items()):
        values = [np.nan if v is None else 100 * v for v in result["accuracy_by_quartile"]]
        ax.bar(np.arange(4) + (i - (len(results) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(range(4), QUARTERS)
    ax.set_xlabel("quarter of the answer")
    ax.set_ylabel("claims correct (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def plot_training_curves(logs: dict[str, list[dict]], key: str = "loss"):
    """logs: run name -> Trainer `log_history`."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, history in logs.items():
        points = [(e["step"], e[key]) for e in history if key in e and "step" in e]
        if points:
            ax.plot(*zip(*points, strict=True), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
