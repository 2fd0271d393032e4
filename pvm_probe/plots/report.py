"""The report's figures: a `metrics.json`-shaped dict in, a `Chart` out (`.static()`: matplotlib, for PNG/SVG;
`.interactive()`: plotly, with hover). Nothing here runs a model.

Layers are decoder-layer indices ("layer 12"); a PVM block is named by the layer it sits in. Variants keep
one colour in every figure; a control is drawn in its adapter's colour with a dashed line or hatching.
"""

from __future__ import annotations

import html
import json

import numpy as np

from .chart import Bars, Box, Chart, Heatmap, Line, Note, Panel, Picture, Rule

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


def _percent(values) -> list:
    return [None if v is None else 100 * v for v in values]


def _name(name: str) -> str:
    """A name as hover text shows it (plotly hover labels read a few HTML tags and entities: &lt; &gt; &amp;)."""
    return html.escape(name, quote=False)


def _empty_note(text: str) -> Note:
    """Say in the panel itself why it is empty."""
    return Note(text.replace(" (n = 0)", "\n(n = 0)"))


def claims_by_quarter(metrics: dict) -> Chart:
    """Primary metric by quarter of the answer, one bar group per quarter; scenes/images: one panel per
    claim kind. Hover: the variant, the quarter, the rate and how many claims it counts."""
    variants, styles = metrics["variants"], variant_styles(list(metrics["variants"]))
    better = metrics["metric"]["higher_is_better"]
    word = "correct" if better else "wrong"
    kinds = ["all"] if better else ["all", *[k for k in metrics["metric"]["kinds"] if k != "all"]]
    width = 0.8 / max(1, len(variants))
    panels = []
    for kind in kinds:
        claimed = any(sum(v["claims_by_quarter"][kind]["n"]) for v in variants.values())
        panel = Panel(title="all claims" if kind == "all" else f"{kind} claims", categories=QUARTERS)
        for i, (name, m) in enumerate(variants.items()):
            table, style = m["claims_by_quarter"][kind], styles[name]
            counted = [c if better else n - c for c, n in zip(table["correct"], table["n"], strict=True)]
            panel.items.append(Bars(
                range(4), _percent(table["correct_rate"] if better else table["error_rate"]), label=name,
                color=style["color"], hatch=style["hatch"], alpha=0.85 if style["ls"] == "-" else 0.45,
                hover=f"<b>{_name(name)}</b><br>{panel.title}, %{{x}}: %{{y:.1f}} % {word}<br>"
                      f"%{{customdata[0]}} of %{{customdata[1]}} claims<extra></extra>",
                customdata=[[c, n] for c, n in zip(counted, table["n"], strict=True)]))
            x = np.arange(4) + (i - (len(variants) - 1) / 2) * width
            panel.items += [Note("n = 0", float(xq), 1, size=6, color="0.35", rotation=90)
                            for xq, n in zip(x, table["n"], strict=True) if not n and claimed]
        if not claimed:
            panel.items.append(_empty_note(f"no {'' if kind == 'all' else kind + ' '}claims in any variant (n = 0)"))
        panels.append(panel)
    panels[0].ylabel = f"{metrics['metric']['name']} (%)"
    return Chart(panels, cols=min(len(panels), 3), panel_size=(3.6, 2.8), xlabel="quarter of the answer")


def mass_vs_position(metrics: dict, records: list[dict] | None = None) -> Chart:
    """Image share of attention per decoder layer against generated position (small multiples, one zoom for
    all); grey dashes: a/(t+b)+c fitted to the baseline up to its break, then its plateau; red dots: where a
    windowed base's image leaves the window.

    Hover: the variant, layer, position and mean share, and with `records` how many answers the mean is over
    and, for one answer per variant (its first request, the one the token explorer opens on), the token it
    wrote at that position, that token's own share, and the claim it completes with its verdict. A mean over
    answers has no token of its own; one named answer lets a reader go from a dip in the curve to a word."""
    variants = {n: m for n, m in metrics["variants"].items() if "mass_by_layer" in m}
    styles = variant_styles(list(variants))
    layers = next(iter(variants.values()))["layers"]
    exit_at = metrics.get("image_leaves_window_at")
    panels = [Panel(title=f"layer {layer}") for layer in layers]
    for name, m in sorted(variants.items(), key=lambda item: item[0] == "baseline"):  # the baseline on top
        mine = [r for r in records or [] if r["variant"] == name]
        for i, (panel, row) in enumerate(zip(panels, m["mass_by_layer"], strict=True)):
            panel.items.append(Line(range(len(row)), row, label=name, color=styles[name]["color"],
                                    ls=styles[name]["ls"], width=0.8, **_token_hover(name, layers[i], i, mine, len(row))))
            if name == "baseline" and "dilution" in m:
                panel.items += _fit_lines(m["dilution"], i, len(row))
    for panel in panels:
        if exit_at is not None:
            panel.items.append(Rule(exit_at, "x", color="#d62728", ls=":"))
    return Chart(panels, cols=min(len(layers), 6), panel_size=(2.6, 2.1), share=True,
                 xlabel="generated position t", ylabel="attention share on the image")


def _token_hover(name: str, layer: int, i: int, records: list[dict], width: int) -> dict:
    """Hover of one variant's mass curve in one layer (layer index i): `hover`, and with records `customdata`
    (answers still answering at each t) and `text` (the example answer's token there, its share, its claim)."""
    head = f"<b>{_name(name)}</b>, layer {layer}<br>t = %{{x}}: image share %{{y:.4f}}"
    if not records:
        return {"hover": head + "<extra></extra>"}
    example = min(records, key=lambda r: r["request"])
    pieces, shares = example["pieces"], example["mass"]["image"][i]
    claims = {c["token"]: c for c in example["claims"] if c["token"] is not None}
    text = []
    for t in range(width):
        if t >= example["n_tokens"]:
            text.append("none (the answer has ended)")
            continue
        line = f"{_name(json.dumps(pieces[t], ensure_ascii=False))}, share {'-' if shares[t] is None else f'{shares[t]:.4f}'}"
        claim = claims.get(t)
        if claim:
            line += f"<br>claim \"{_name(claim['text'])}\": {'correct' if claim['correct'] else 'wrong'}"
        text.append(line)
    lengths = np.array([r["n_tokens"] for r in records])
    answering = (lengths[None, :] > np.arange(width)[:, None]).sum(1)  # [T]
    return {"hover": f"{head} (mean of %{{customdata}} answers)<br>{_name(str(example['id']))}: token %{{text}}"
                     "<extra></extra>", "customdata": answering, "text": text}


def _fit_lines(fit: dict, i: int, width: int) -> list[Line]:
    a, b, c, brk = fit["a"][i], fit["b"][i], fit["c"][i], fit["break_t"][i]
    if None in (a, b, c) or brk is None or brk < 0:
        return []
    style = dict(label="baseline: a/(t+b)+c fit, then plateau", color="0.45", ls="--", width=0.9,
                 hover=f"fit: a={a:.3g}, b={b:.3g}, c={c:.3g}<br>t = %{{x}}: %{{y:.4f}}<extra></extra>")
    before = np.arange(max(brk, 1))
    lines = [Line(before, a / (before + b) + c, **style)]
    if brk < width and fit["plateau"][i] is not None:
        lines.append(Line([brk, width - 1], [fit["plateau"][i]] * 2, **style))
    return lines


def claim_mass_by_quarter(metrics: dict) -> Chart:
    """Heat maps (one per variant): image share at the claim-predicting queries, decoder layer x quarter."""
    variants = {n: m for n, m in metrics["variants"].items() if "claim_mass_by_quarter" in m}
    table = {n: np.array([_values(r) for r in m["claim_mass_by_quarter"]]) for n, m in variants.items()}
    top = max(np.nanmax(t) if np.isfinite(t).any() else 0 for t in table.values()) or 1.0
    panels = []
    for name, values in table.items():
        n = variants[name]["claims_by_quarter"]["all"]["n"]
        panel = Panel(title=name, categories=QUARTERS, rows=[str(v) for v in variants[name]["layers"]], items=[
            Heatmap(values, zmax=top, scale="image share", shared_scale=True, customdata=[n] * len(values),
                    hover=f"<b>{_name(name)}</b><br>layer %{{y}}, %{{x}}: image share %{{z:.4f}}<br>"
                          "over %{customdata} claims<extra></extra>")])
        if not sum(n):
            panel.items.append(_empty_note("no claims in this variant (n = 0)"))
        else:
            panel.items += [Note("n = 0", q, (len(values) - 1) / 2, size=7, rotation=90, va="center")
                            for q in range(4) if not n[q]]
        panels.append(panel)
    panels[0].ylabel = "decoder layer"
    n_layers = len(next(iter(variants.values()))["layers"])
    return Chart(panels, cols=min(len(panels), 4), panel_size=(2.4, max(2.0, 0.12 * n_layers + 1.0)), share=True)


def accuracy_vs_mass(metrics: dict) -> Chart:
    """Claims binned by the image share at their token (mean over layers): share correct per bin."""
    shown = {n: m for n, m in metrics["variants"].items() if "accuracy_vs_mass" in m}
    styles = variant_styles(list(metrics["variants"]))
    bins = next(m["accuracy_vs_mass"]["bins"] for m in shown.values())
    empty = [n for n, m in shown.items() if not sum(m["accuracy_vs_mass"]["n"])]
    panel = Panel(categories=[f"{a:g}-{b:g}" for a, b in zip(bins[:-1], bins[1:], strict=True)], ylim=(-3, 103),
                  xlabel="image share of attention at the claim's token (mean over layers)",
                  ylabel="claims correct (%)")
    for name, m in shown.items():
        table, style = m["accuracy_vs_mass"], styles[name]
        rate = _percent(table["correct_rate"])
        panel.items.append(Line(range(len(rate)), rate, label=f"{name} (n = 0)" if name in empty else name,
                                color=style["color"], ls=style["ls"], marker="o", customdata=table["n"],
                                hover=f"<b>{_name(name)}</b><br>image share %{{x}}: %{{y:.1f}} % correct<br>"
                                      "%{customdata} claims<extra></extra>"))
        panel.items += [Note(str(n), x, y, size=6, color=style["color"], offset=(2, 3))
                        for x, (y, n) in enumerate(zip(rate, table["n"], strict=True)) if y is not None]
    if empty:
        panel.items.append(_empty_note(
            "no claims in " + ("any variant" if len(empty) == len(shown) else ", ".join(empty)) + " (n = 0)"))
    return Chart([panel], panel_size=(6.4, 3.4))


def logit_lens(metrics: dict) -> Chart:
    """Left: KL(final || layer) by decoder layer (the last layer, 0 by construction, left out). Right: the
    mean convergence layer by quarter of the answer, under the LogitLens and (if trained) the tuned lens."""
    variants = {n: m for n, m in metrics["variants"].items() if "lens" in m}
    styles = variant_styles(list(variants))
    left = Panel(xlabel="decoder layer", ylabel="KL(final || layer) (nats)", ylog=True)
    right = Panel(categories=QUARTERS, xlabel="quarter of the answer", ylabel="convergence layer (mean)")
    for name, m in variants.items():
        for lens, marker, what in (("lens", "o", "LogitLens"), ("tuned_lens", "s", "tuned lens")):
            if lens not in m:
                continue
            style = dict(label=name if lens == "lens" else f"{name} (tuned lens)", color=styles[name]["color"],
                         ls=styles[name]["ls"] if lens == "lens" else "-.", marker=marker)
            who = f"<b>{_name(name)}</b>, {what}<br>"
            left.items.append(Line(m[lens]["layers"][:-1], m[lens]["kl_by_layer"][:-1], **style,
                                   hover=who + "layer %{x}: KL %{y:.4g} nats<extra></extra>"))
            right.items.append(Line(range(4), m[lens]["convergence_by_quarter"], **style,
                                    hover=who + "%{x}: convergence layer %{y:.2f}<extra></extra>"))
    return Chart([left, right], cols=2, panel_size=(4.75, 3.2))


def pvm_gates(metrics: dict) -> Chart:
    """Per PVM block (named by its decoder layer): the injection's norm relative to the residual stream,
    PVM's attention entropy, and its weight on the claimed region of the image against chance, by quarter."""
    variants = {n: m["pvm"] for n, m in metrics["variants"].items() if "pvm" in m}
    styles = variant_styles(list(variants))
    keys = [("injection_ratio_by_quarter", "|alpha h_pvm| / |x|"), ("entropy_by_quarter", "attention entropy (nats)")]
    if has_regions(metrics):  # claims with an image region (scenes, world); an images line has none
        keys.append(("on_claimed_region_by_quarter", "weight on the claimed region"))
    panels = [Panel(title=title, categories=QUARTERS) for _, title in keys]
    for name, pvm in variants.items():
        for panel, (key, title) in zip(panels, keys, strict=True):
            for i, layer in enumerate(pvm["layers"]):
                label = f"{name}, block at layer {layer}"
                panel.items.append(Line(range(4), pvm[key][i], label=label, color=styles[name]["color"],
                                        ls=styles[name]["ls"], marker="os^v<>"[i % 6],
                                        hover=f"<b>{_name(label)}</b><br>%{{x}}: {title} %{{y:.4g}}<extra></extra>"))
    chance = [p["claimed_region_chance"] for p in variants.values() if p.get("claimed_region_chance")]
    if chance and len(panels) == 3:
        panels[2].items.append(Rule(float(np.mean(chance)), "y", label="chance"))
    return Chart(panels, cols=len(panels), panel_size=(4.0, 3.2))


def has_regions(metrics: dict) -> bool:
    """Whether any claim named an image region PVM's weight on it was measured for (an images line has none)."""
    return any(v is not None for m in metrics["variants"].values() if "pvm" in m
               for row in m["pvm"]["on_claimed_region_by_quarter"] for v in row)


def retrieval_overlay(image, cells: list, maps: dict[str, list], boxes: list, title: str) -> Chart:
    """The image (the claimed region outlined) and, per map, its weights over the image tokens as a heat map on
    the same grid: cells [N][4] boxes (fractions), maps name -> [N] weights."""
    w, h = image.size
    outlines = [(x0 * w, y0 * h, x1 * w, y1 * h) for x0, y0, x1, y1 in boxes]
    panels = [Panel([Picture(image), *(Box(*b) for b in outlines)], image=True,
                    title="image (claimed region outlined)" if boxes else "image (the claim names no region)")]
    for name, weights in maps.items():
        grid = _raster(cells, _values(weights))
        top = float(np.nanmax(grid)) if np.isfinite(grid).any() else 0.0
        panels.append(Panel(
            [Heatmap(grid, zmax=max(top, 1e-9), cmap="inferno", scale="", extent=(0, w, h, 0),  # all zero stays black
                     hover=f"<b>{_name(name)}</b><br>weight %{{z:.4f}}<extra></extra>"),
             *(Box(*b, color="cyan", width=1.5) for b in outlines)],
            title=name if top > 0 else f"{name}\n(no attention on the image)", image=True))
    return Chart(panels, cols=len(panels), panel_size=(2.9, 3.1), title=title)


def _raster(cells: list, weights: np.ndarray, side: int = 64) -> np.ndarray:
    """Per-token weights painted onto a side x side grid over the image (NaN where no token lies)."""
    grid = np.full((side, side), np.nan)
    for (x0, y0, x1, y1), value in zip(cells, weights, strict=True):
        grid[int(round(y0 * side)):int(round(y1 * side)), int(round(x0 * side)):int(round(x1 * side))] = value
    return grid


def remedies(metrics: dict, names: list[str]) -> Chart:
    """PVM against the training-free remedies (`names`: their kinds): the primary metric by quarter (left) and
    the backbone's image share of attention by quarter, mean over layers (right), for the baseline, each
    adapter and each remedy."""
    chosen = {n: m for n, m in metrics["variants"].items() if m["kind"] in ("baseline", "adapter", *names)}
    styles = variant_styles(list(chosen))
    metric = metrics["metric"]["name"]
    left = Panel(categories=QUARTERS, xlabel="quarter of the answer", ylabel=f"{metric} (%)")
    right = Panel(categories=QUARTERS, xlabel="quarter of the answer", ylabel="image share of attention\n(mean over layers)")
    for name, m in chosen.items():
        style = dict(label=name, color=styles[name]["color"], ls="--" if m["kind"] in names else "-", marker="o",
                     width=1.2)
        left.items.append(Line(range(4), _percent(m["primary_by_quarter"]), **style,
                               hover=f"<b>{_name(name)}</b><br>%{{x}}: {metric} %{{y:.1f}} %<extra></extra>"))
        if "mass_by_quarter" in m:
            share = np.nanmean(np.array([_values(r) for r in m["mass_by_quarter"]]), 0)
            right.items.append(Line(range(4), share, **style,
                                    hover=f"<b>{_name(name)}</b><br>%{{x}}: image share %{{y:.4f}}<extra></extra>"))
    return Chart([left, right], cols=2, panel_size=(6.0, 3.6))


def training_curves(logs: dict[str, list[dict]]) -> Chart:
    """logs: adapter name -> Trainer `log_history`. Stage I (SFT) loss on a log axis; Stage II (GRPO, a log
    with rewards) loss on a linear axis (it is near 0 and may be negative) and its mean reward per log step."""
    styles = variant_styles(list(logs))
    stage2 = {n for n, history in logs.items() if any("reward" in e for e in history)}
    panels = []
    for title, names, key, log in (("Stage I loss", [n for n in logs if n not in stage2], "loss", True),
                                   ("Stage II loss", [n for n in logs if n in stage2], "loss", False),
                                   ("Stage II reward", [n for n in logs if n in stage2], "reward", False)):
        if not names:
            continue
        panel = Panel(title=title, xlabel="step", ylabel=key, ylog=log)
        for name in names:
            points = [(e["step"], e[key]) for e in logs[name] if key in e and "step" in e]
            if points:
                panel.items.append(Line(*zip(*points, strict=True), label=name, color=styles[name]["color"],
                                        marker="." if len(points) <= 50 else None,  # a short log's points stay visible
                                        hover=f"<b>{_name(name)}</b><br>step %{{x}}: {key} %{{y:.4g}}<extra></extra>"))
        panels.append(panel)
    return Chart(panels, cols=len(panels), panel_size=(5.0, 3.2))


def by_quarter(table: dict[str, list], ylabel: str, title: str = "") -> Chart:
    """One line per row of `table` (name -> 4 values, fractions), by quarter of the answer, in percent."""
    panel = Panel(categories=QUARTERS, xlabel="quarter of the answer", ylabel=ylabel, ylim=(-3, 103))
    for i, (name, values) in enumerate(table.items()):
        panel.items.append(Line(range(4), _percent(values), label=name, marker="os^vD<>p"[i % 8], width=1.2,
                                color=_PALETTE[i % len(_PALETTE)] if i else "black",
                                hover=f"<b>{_name(name)}</b><br>%{{x}}: %{{y:.1f}} %<extra></extra>"))
    return Chart([panel], panel_size=(7.5, 3.4), title=title)


def answer_strip(answers: list[dict], layer: int, t: int) -> Chart:
    """Explored answers (`report.explorer.explorer_answers` entries), one row each, token by token: each token's
    image share of attention in explorer layer `layer` (colour), its claims marked (green: correct, red: wrong),
    token `t` ruled. Hover: the token's text, position and share, and its claim with the verdict."""
    width = max(len(a["pieces"]) for a in answers)
    share = np.full((len(answers), width), np.nan)  # [answers, T]
    data = [[["(answer ended)", ""]] * width for _ in answers]
    marks = {True: ([], []), False: ([], [])}
    for row, answer in enumerate(answers):
        share[row, : len(answer["pieces"])] = _values(answer["mass"][layer])
        claims = {c["token"]: c for c in answer["claims"] if c["token"] < len(answer["pieces"])}
        data[row] = [[_name(json.dumps(piece, ensure_ascii=False)),
                      f"<br>claim \"{_name(claims[k]['text'])}\": {'correct' if claims[k]['correct'] else 'wrong'}"
                      if k in claims else ""] for k, piece in enumerate(answer["pieces"])] + data[row][len(answer["pieces"]):]
        for k, claim in claims.items():
            marks[claim["correct"]][0].append(k)
            marks[claim["correct"]][1].append(row)
    top = float(np.nanmax(share)) if np.isfinite(share).any() else 0.0
    items = [Heatmap(share, zmax=max(top, 1e-9), cmap="Blues", scale="image share", customdata=data,
                     hover="<b>%{y}</b><br>token %{x}: %{customdata[0]}<br>image share %{z:.4f}%{customdata[1]}"
                           "<extra></extra>")]
    for correct, (xs, ys) in marks.items():
        if xs:
            items.append(Line(xs, ys, ls="", marker="o", color="#2ca02c" if correct else "#d62728",
                              label="claim, correct" if correct else "claim, wrong", hover="token %{x}<extra></extra>"))
    items.append(Rule(t, "x", color="#ff7f0e", ls="-", width=1.5))
    panel = Panel(items, rows=[a["variant"] for a in answers], xlabel="generated position (click a token)")
    return Chart([panel], panel_size=(10.0, 0.45 * len(answers) + 0.9),
                 title=f"{answers[-1]['id']}: image share of each token, layer {answers[-1]['layers'][layer]}")
