"""Figures of probe results (plain lists/arrays in, matplotlib or plotly figure out)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
from plotly.subplots import make_subplots  # noqa: E402

from ..probes import hyperbola  # noqa: E402


def plot_mass_vs_position(curves: dict[str, list], fits: dict[str, dict] | None = None):
    """curves: model -> [L, T] image share per layer and generated position (one panel per layer)."""
    first = np.asarray(next(iter(curves.values())))
    n_layers = first.shape[0]
    fig, axes = plt.subplots(1, n_layers, figsize=(3.2 * n_layers, 3), sharey=True, squeeze=False)
    t = np.arange(first.shape[1])
    for name, curve in curves.items():
        curve = np.asarray(curve)
        for layer, ax in enumerate(axes[0]):
            line, = ax.plot(t, curve[layer], lw=0.8, label=name)
            if fits and name in fits:
                a, b, c = fits[name]["params"][layer]
                ax.plot(t, hyperbola(t, a, b, c), "--", lw=0.8, color=line.get_color())
    for layer, ax in enumerate(axes[0]):
        ax.set_title(f"layer {layer}")
        ax.set_xlabel("generated position t")
    axes[0][0].set_ylabel("attention share on image")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_claim_mass(table: dict[str, list], ylabel: str = "image share (claim queries)"):
    """table: model -> [L, 4] a share per layer of claim-predicting queries by quarter of the answer
    (default: the backbone's image share)."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, rows in table.items():
        for layer, row in enumerate(np.asarray(rows, dtype=float)):  # None (no claim there) -> gap
            ax.plot(range(1, 5), row, marker="o", lw=1, label=f"{name} L{layer}")
    ax.set_xticks(range(1, 5), ["Q1", "Q2", "Q3", "Q4"])
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=6, ncols=2)
    fig.tight_layout()
    return fig


def plot_lens_kl(kl_by_model: dict[str, list]):
    """kl_by_model: model -> [L, T] KL(final || layer) per layer and position (heatmaps)."""
    fig, axes = plt.subplots(len(kl_by_model), 1, figsize=(8, 1.4 + 1.2 * len(kl_by_model)), squeeze=False)
    for ax, (name, kl) in zip(axes[:, 0], kl_by_model.items(), strict=True):
        im = ax.imshow(np.log10(np.asarray(kl) + 1e-6), aspect="auto", cmap="magma_r", interpolation="nearest")
        ax.set_title(f"{name}: log10 KL(final || layer)", fontsize=9)
        ax.set_ylabel("layer")
        fig.colorbar(im, ax=ax, pad=0.01)
    axes[-1, 0].set_xlabel("generated position t")
    fig.tight_layout()
    return fig


def plot_gates(pvm: dict[str, dict]):
    """pvm: model -> {"layers", "alpha", "injection_ratio" [L, T], "entropy" [L, T]}."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3))
    for name, d in pvm.items():
        for i, layer in enumerate(d["layers"]):
            a1.plot(d["injection_ratio"][i], lw=0.8, label=f"{name} L{layer} (alpha {d['alpha'][i]:+.3f})")
            a2.plot(d["entropy"][i], lw=0.8, label=f"{name} L{layer}")
    a1.set_title("|alpha h_pvm| / |x| per position", fontsize=9)
    a2.set_title("PVM attention entropy (nats)", fontsize=9)
    for ax in (a1, a2):
        ax.set_xlabel("generated position t")
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def plot_retrieval_overlay(image, weights: list, grid: int = 4, title: str = "PVM retrieval"):
    """image: PIL image; weights: [L, T, N] attention of one scene; N = grid*grid cells (row-major)."""
    w = np.asarray(weights).mean(axis=(0, 1)).reshape(grid, grid)  # mean over layers and positions
    fig, ax = plt.subplots(figsize=(3.2, 3.2))
    ax.imshow(image)
    size = image.size[0]
    ax.imshow(w, cmap="viridis", alpha=0.55, extent=(0, size, size, 0), interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    return fig


def plotly_mass_vs_position(curves: dict[str, list]) -> go.Figure:
    n_layers = np.asarray(next(iter(curves.values()))).shape[0]
    fig = make_subplots(rows=1, cols=n_layers, shared_yaxes=True, subplot_titles=[f"layer {i}" for i in range(n_layers)])
    for k, (name, curve) in enumerate(curves.items()):
        for layer, row in enumerate(np.asarray(curve)):
            fig.add_trace(go.Scatter(y=row, mode="lines", name=name, legendgroup=name, showlegend=layer == 0,
                                     line={"width": 1, "color": _COLOURS[k % len(_COLOURS)]}), row=1, col=layer + 1)
    fig.update_layout(height=320, margin={"t": 40, "b": 30}, yaxis_title="attention share on image")
    return fig


def plotly_accuracy(results: dict[str, list]) -> go.Figure:
    """results: name -> accuracy_by_quartile (4 numbers)."""
    fig = go.Figure([go.Bar(name=name, x=["Q1", "Q2", "Q3", "Q4"], y=[100 * (v or 0) for v in values])
                     for name, values in results.items()])
    fig.update_layout(barmode="group", height=320, yaxis_title="claims correct (%)", margin={"t": 20, "b": 30})
    return fig


_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
