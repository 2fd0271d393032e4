"""The report's figures: a `metrics.json`-shaped dict in, a matplotlib figure out. Nothing here runs a model.

Layers are decoder-layer indices ("layer 12"); a PVM block is named by the layer it sits in. Variants keep
one colour in every figure; a control is drawn in its adapter's colour with a dashed line or hatching.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

QUARTERS = ["Q1", "Q2", "Q3", "Q4"]
_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
            "#7f7f7f", "#aec7e8", "#ff9896", "#98df8a", "#c5b0d5", "#ffbb78", "#c49c94", "#f7b6d2", "#9edae5"]


def variant_styles(names: list[str]) -> dict[str, dict]:
    """name -> {"color", "ls", "hatch"}: the baseline black, each adapter a colour, its controls dashed."""
    styles, colours = {}, iter(_PALETTE * 2)
    for name in names:
        root, _, control = name.partition(" | ")
        if control and root in styles:
            styles[name] = {"color": styles[root]["color"], "ls": "--" if "swapped" in control else ":",
                            "hatch": "//" if "swapped" in control else ".."}
        else:
            styles[name] = {"color": "black" if name == "baseline" else next(colours), "ls": "-", "hatch": None}
    return styles


def _values(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _grid(count: int, width: float = 2.6, height: float = 2.1, max_cols: int = 6):
    cols = min(count, max_cols)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols + 1.6, height * rows + 0.6), squeeze=False,
                             sharex=True, sharey=True)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, axes.flat[:count]


def _legend(fig, styles: dict) -> None:
    handles = [plt.Line2D([], [], color=s["color"], ls=s["ls"], lw=1.6) for s in styles.values()]
    fig.legend(handles, list(styles), loc="upper left", bbox_to_anchor=(1.0, 0.98), fontsize=8, frameon=False)


def claims_by_quarter(metrics: dict):
    """Primary metric by quarter of the answer, one bar group per quarter; scenes/images: one panel per
    claim kind."""
    variants, styles = metrics["variants"], variant_styles(list(metrics["variants"]))
    better = metrics["metric"]["higher_is_better"]
    kinds = ["all"] if better else ["all", *[k for k in metrics["metric"]["kinds"] if k != "all"]]
    fig, axes = _grid(len(kinds), width=3.6, height=2.8, max_cols=3)
    width = 0.8 / max(1, len(variants))
    for ax, kind in zip(axes, kinds, strict=True):
        claimed = any(sum(v["claims_by_quarter"][kind]["n"]) for v in variants.values())
        for i, (name, m) in enumerate(variants.items()):
            table = m["claims_by_quarter"][kind]
            values = 100 * _values(table["correct_rate"] if better else table["error_rate"])
            x = np.arange(4) + (i - (len(variants) - 1) / 2) * width
            ax.bar(x, values, width, color=styles[name]["color"],
                   hatch=styles[name]["hatch"], alpha=0.85 if styles[name]["ls"] == "-" else 0.45)
            for xq, n in zip(x, table["n"], strict=True):
                if not n and claimed:
                    ax.text(xq, 1, "n = 0", rotation=90, ha="center", va="bottom", fontsize=6, color="0.35")
        if not claimed:
            _empty_note(ax, f"no {'' if kind == 'all' else kind + ' '}claims in any variant (n = 0)")
        ax.set_xticks(range(4), QUARTERS)
        ax.set_title("all claims" if kind == "all" else f"{kind} claims", fontsize=9)
    axes[0].set_ylabel(f"{metrics['metric']['name']} (%)")
    fig.supxlabel("quarter of the answer", fontsize=9)
    _legend(fig, styles)
    fig.tight_layout()
    return fig


def _empty_note(ax, text: str) -> None:
    """Say in the panel itself why it is empty."""
    ax.text(0.5, 0.5, text.replace(" (n = 0)", "\n(n = 0)"), transform=ax.transAxes, ha="center", va="center",
            fontsize=8, color="0.3")


def mass_vs_position(metrics: dict):
    """Image share of attention per decoder layer against generated position (small multiples); grey dashes:
    a/(t+b)+c fitted to the baseline up to its break, then its plateau; red dots: where a windowed base's
    image leaves the window."""
    variants = {n: m for n, m in metrics["variants"].items() if "mass_by_layer" in m}
    styles = variant_styles(list(variants))
    layers = next(iter(variants.values()))["layers"]
    fig, axes = _grid(len(layers))
    for name, m in sorted(variants.items(), key=lambda item: item[0] == "baseline"):  # the baseline on top
        curve = np.array([_values(row) for row in m["mass_by_layer"]])  # [L, T]
        t = np.arange(curve.shape[1])
        for i, ax in enumerate(axes):
            ax.plot(t, curve[i], color=styles[name]["color"], ls=styles[name]["ls"], lw=0.8)
            if name == "baseline" and "dilution" in m:
                _draw_fit(ax, t, m["dilution"], i)
    exit_at = metrics.get("image_leaves_window_at")
    for ax, layer in zip(axes, layers, strict=True):
        ax.set_title(f"layer {layer}", fontsize=8)
        if exit_at is not None:
            ax.axvline(exit_at, color="#d62728", lw=0.8, ls=":")
    fig.supxlabel("generated position t", fontsize=9)
    fig.supylabel("attention share on the image", fontsize=9)
    _legend(fig, styles)
    fig.tight_layout()
    return fig


def _draw_fit(ax, t: np.ndarray, fit: dict, i: int) -> None:
    a, b, c, brk = fit["a"][i], fit["b"][i], fit["c"][i], fit["break_t"][i]
    if None in (a, b, c) or brk is None or brk < 0:
        return
    before = t[: max(brk, 1)]
    ax.plot(before, a / (before + b) + c, color="0.45", lw=0.9, ls="--")
    if brk < len(t) and fit["plateau"][i] is not None:
        ax.hlines(fit["plateau"][i], brk, t[-1], color="0.45", lw=0.9, ls="--")


def claim_mass_by_quarter(metrics: dict):
    """Heat maps (one per variant): image share at the claim-predicting queries, decoder layer x quarter."""
    variants = {n: m for n, m in metrics["variants"].items() if "claim_mass_by_quarter" in m}
    n_layers = len(next(iter(variants.values()))["layers"])
    fig, axes = _grid(len(variants), width=2.4, height=max(2.0, 0.12 * n_layers + 1.0), max_cols=4)
    table = {n: np.array([_values(r) for r in m["claim_mass_by_quarter"]]) for n, m in variants.items()}
    top = max(np.nanmax(t) if np.isfinite(t).any() else 0 for t in table.values()) or 1.0
    for ax, (name, values) in zip(axes, table.items(), strict=True):
        image = ax.imshow(values, aspect="auto", cmap="viridis", vmin=0, vmax=top, interpolation="nearest")
        ax.set_title(name, fontsize=8)
        n = variants[name]["claims_by_quarter"]["all"]["n"]
        if not sum(n):
            _empty_note(ax, "no claims in this variant (n = 0)")
        else:
            for q in (q for q in range(4) if not n[q]):
                ax.text(q, (len(values) - 1) / 2, "n = 0", rotation=90, ha="center", va="center", fontsize=7,
                        color="0.3")
        ax.set_xticks(range(4), QUARTERS)
        layers = variants[name]["layers"]
        step = max(1, len(layers) // 8)
        ax.set_yticks(range(0, len(layers), step), [str(v) for v in layers[::step]])
    axes[0].set_ylabel("decoder layer")
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="image share")
    return fig


def accuracy_vs_mass(metrics: dict):
    """Claims binned by the image share at their token (mean over layers): share correct per bin."""
    styles = variant_styles(list(metrics["variants"]))
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for name, m in metrics["variants"].items():
        if "accuracy_vs_mass" not in m:
            continue
        table = m["accuracy_vs_mass"]
        x = np.arange(len(table["n"]))
        rate = 100 * _values(table["correct_rate"])
        ax.plot(x, rate, color=styles[name]["color"], ls=styles[name]["ls"], marker="o", lw=1)
        for xi, yi, n in zip(x, rate, table["n"], strict=True):
            if np.isfinite(yi):
                ax.annotate(str(n), (xi, yi), fontsize=6, color=styles[name]["color"], xytext=(2, 3),
                            textcoords="offset points")
    bins = next(m["accuracy_vs_mass"]["bins"] for m in metrics["variants"].values() if "accuracy_vs_mass" in m)
    ax.set_xticks(range(len(bins) - 1), [f"{a:g}-{b:g}" for a, b in zip(bins[:-1], bins[1:], strict=True)],
                  fontsize=7)
    ax.set_xlabel("image share of attention at the claim's token (mean over layers)")
    ax.set_ylabel("claims correct (%)")
    ax.set_ylim(-3, 103)
    shown = {n: m for n, m in metrics["variants"].items() if "accuracy_vs_mass" in m}
    empty = [n for n, m in shown.items() if not sum(m["accuracy_vs_mass"]["n"])]
    if empty:
        _empty_note(ax, "no claims in " + ("any variant" if len(empty) == len(shown) else ", ".join(empty)) + " (n = 0)")
    _legend(fig, {f"{n} (n = 0)" if n in empty else n: styles[n] for n in shown})
    fig.tight_layout()
    return fig


def logit_lens(metrics: dict):
    """Left: KL(final || layer) by decoder layer (the last layer, 0 by construction, left out). Right: the
    mean convergence layer by quarter of the answer, under the LogitLens and (if trained) the tuned lens."""
    variants = {n: m for n, m in metrics["variants"].items() if "lens" in m}
    styles = variant_styles(list(variants))
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.2))
    for name, m in variants.items():
        for lens, marker in (("lens", "o"), ("tuned_lens", "s")):
            if lens not in m:
                continue
            layers, kl = m[lens]["layers"][:-1], _values(m[lens]["kl_by_layer"])[:-1]
            ls = styles[name]["ls"] if lens == "lens" else "-."
            left.plot(layers, kl, color=styles[name]["color"], ls=ls, marker=marker, ms=3, lw=1)
            right.plot(range(4), _values(m[lens]["convergence_by_quarter"]), color=styles[name]["color"], ls=ls,
                       marker=marker, ms=4, lw=1)
    left.set_yscale("log")
    left.xaxis.get_major_locator().set_params(integer=True)
    left.set_xlabel("decoder layer")
    left.set_ylabel("KL(final || layer) (nats)")
    right.set_xticks(range(4), QUARTERS)
    right.set_ylabel("convergence layer (mean)")
    right.set_xlabel("quarter of the answer")
    _legend(fig, styles)
    fig.tight_layout()
    return fig


def pvm_gates(metrics: dict):
    """Per PVM block (named by its decoder layer): the injection's norm relative to the residual stream,
    PVM's attention entropy, and its weight on the claimed region of the image against chance, by quarter."""
    variants = {n: m["pvm"] for n, m in metrics["variants"].items() if "pvm" in m}
    styles = variant_styles(list(variants))
    panels = [("injection_ratio_by_quarter", "|alpha h_pvm| / |x|"), ("entropy_by_quarter", "attention entropy (nats)")]
    if has_regions(metrics):  # claims with an image region (scenes, world); an images line has none
        panels.append(("on_claimed_region_by_quarter", "weight on the claimed region"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for name, pvm in variants.items():
        for ax, (key, _) in zip(axes, panels, strict=True):
            for i, layer in enumerate(pvm["layers"]):
                ax.plot(range(4), _values(pvm[key][i]), color=styles[name]["color"], ls=styles[name]["ls"],
                        marker="os^v<>"[i % 6], lw=1, label=f"{name}, block at layer {layer}")
    chance = [p["claimed_region_chance"] for p in variants.values() if p.get("claimed_region_chance")]
    if chance:
        axes[2].axhline(np.mean(chance), color="0.5", lw=0.8, ls=":", label="chance")
    for ax, (_, label) in zip(axes, panels, strict=True):
        ax.set_xticks(range(4), QUARTERS)
        ax.set_title(label, fontsize=9)
    axes[-1].legend(fontsize=6)
    fig.tight_layout()
    return fig


def has_regions(metrics: dict) -> bool:
    """Whether any claim named an image region PVM's weight on it was measured for (an images line has none)."""
    return any(v is not None for m in metrics["variants"].values() if "pvm" in m
               for row in m["pvm"]["on_claimed_region_by_quarter"] for v in row)


def retrieval_overlay(image, cells: list, maps: dict[str, list], boxes: list, title: str):
    """The image (the claimed region outlined) and, per map, its weights over the image tokens as a heat map on
    the same grid: cells [N][4] boxes (fractions), maps name -> [N] weights."""
    fig, axes = plt.subplots(1, 1 + len(maps), figsize=(2.9 * (1 + len(maps)), 3.1), squeeze=False)
    axes = axes[0]
    w, h = image.size
    axes[0].imshow(image)
    for x0, y0, x1, y1 in boxes:
        axes[0].add_patch(plt.Rectangle((x0 * w, y0 * h), (x1 - x0) * w, (y1 - y0) * h, fill=False, ec="white",
                                        lw=2))
    axes[0].set_title("image (claimed region outlined)" if boxes else "image (the claim names no region)", fontsize=8)
    for ax, (name, weights) in zip(axes[1:], maps.items(), strict=True):
        grid = _raster(cells, _values(weights))
        top = max(float(np.nanmax(grid)) if np.isfinite(grid).any() else 0.0, 1e-9)  # all zero stays black
        shown = ax.imshow(grid, cmap="inferno", vmin=0, vmax=top, extent=(0, w, h, 0), interpolation="nearest")
        for x0, y0, x1, y1 in boxes:
            ax.add_patch(plt.Rectangle((x0 * w, y0 * h), (x1 - x0) * w, (y1 - y0) * h, fill=False, ec="cyan", lw=1.5))
        ax.set_title(name if np.nanmax(grid) > 0 else f"{name}: no attention on the image", fontsize=8)
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _raster(cells: list, weights: np.ndarray, side: int = 64) -> np.ndarray:
    """Per-token weights painted onto a side x side grid over the image (NaN where no token lies)."""
    grid = np.full((side, side), np.nan)
    for (x0, y0, x1, y1), value in zip(cells, weights, strict=True):
        grid[int(round(y0 * side)):int(round(y1 * side)), int(round(x0 * side)):int(round(x1 * side))] = value
    return grid


def remedies(metrics: dict, names: list[str]):
    """PVM against the training-free remedies (`names`: their kinds): the primary metric by quarter (left) and
    the backbone's image share of attention by quarter, mean over layers (right), for the baseline, each
    adapter and each remedy."""
    chosen = {n: m for n, m in metrics["variants"].items() if m["kind"] in ("baseline", "adapter", *names)}
    styles = variant_styles(list(chosen))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.6))
    for name, m in chosen.items():
        style = {"color": styles[name]["color"], "ls": "--" if m["kind"] in names else "-", "marker": "o", "lw": 1.2}
        left.plot(range(4), 100 * _values(m["primary_by_quarter"]), label=name, **style)
        if "mass_by_quarter" in m:
            right.plot(range(4), np.nanmean(np.array([_values(r) for r in m["mass_by_quarter"]]), 0), **style)
    for ax in (left, right):
        ax.set_xticks(range(4), QUARTERS)
        ax.set_xlabel("quarter of the answer")
    left.set_ylabel(f"{metrics['metric']['name']} (%)")
    right.set_ylabel("image share of attention\n(mean over layers)")
    fig.tight_layout(w_pad=3)
    fig.legend(*left.get_legend_handles_labels(), loc="upper left", bbox_to_anchor=(1.0, 0.97), fontsize=7,
               frameon=False)  # beside the panels: with many remedies it would hide the lines
    return fig


def training_curves(logs: dict[str, list[dict]]):
    """logs: adapter name -> Trainer `log_history`. Stage I (SFT) loss on a log axis; Stage II (GRPO, a log
    with rewards) loss on a linear axis (it is near 0 and may be negative) and its mean reward per log step."""
    styles = variant_styles(list(logs))
    stage2 = {n for n, history in logs.items() if any("reward" in e for e in history)}
    panels = [p for p in (("Stage I loss", [n for n in logs if n not in stage2], "loss", "log"),
                          ("Stage II loss", [n for n in logs if n in stage2], "loss", "linear"),
                          ("Stage II reward", [n for n in logs if n in stage2], "reward", "linear")) if p[1]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.2), squeeze=False)
    for ax, (title, names, key, scale) in zip(axes[0], panels, strict=True):
        for name in names:
            points = [(e["step"], e[key]) for e in logs[name] if key in e and "step" in e]
            if points:
                ax.plot(*zip(*points, strict=True), color=styles[name]["color"], label=name, lw=1,
                        marker="." if len(points) <= 50 else None)  # a short log's points stay visible
        ax.set_yscale(scale)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def by_quarter(table: dict[str, list], ylabel: str, title: str = ""):
    """One line per row of `table` (name -> 4 values, fractions), by quarter of the answer, in percent."""
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    for i, (name, values) in enumerate(table.items()):
        ax.plot(range(4), 100 * _values(values), marker="os^vD<>p"[i % 8], lw=1.2, label=name,
                color=_PALETTE[i % len(_PALETTE)] if i else "black")
    ax.set_xticks(range(4), QUARTERS)
    ax.set_xlabel("quarter of the answer")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-3, 103)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig
