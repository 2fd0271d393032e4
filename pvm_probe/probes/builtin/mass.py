"""`mass`: the image share of attention in every layer at every generated position, and at every claim.

Record section `mass`: `layers`, `image` `[L][n]` (mean over heads), `split` {segment: [L]} (image / prompt /
generated / first token, mean over the answer). Each claim gets `mass` [L] (the share at its token) and
`box_share` (the share of visual tokens inside its region: chance for a look at the region). The first
`explore` requests also keep each token's attention on every image patch (a few layers) for the explorer.
Metrics: the mass curve per layer, by quarter, the two-phase dilution fit, the share at the claim-writing
queries by quarter, and accuracy against the share, claim by claim.
"""

from __future__ import annotations

import base64
import io

import numpy as np

from ...plots import report as plots
from ...records import mean_of, rounded
from .._base import SEGMENTS, nanmean
from ..attention_mass import VisualAttentionMass
from ..dilution import dilution_report
from ..protocol import Figure, Probe, Row

# Accuracy against visual mass: bins of the claim token's image share (mean over layers).
MASS_BINS = [0.0, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0 + 1e-9]


class AttentionMassProbe(Probe):
    name = "mass"
    title = "Visual attention mass"

    def attach(self):
        batch = self.batch
        self.probe = VisualAttentionMass(batch.model, patch_rows=batch.explore,
                                         patch_layers=batch.explore_layers if batch.explore else ())
        return self.probe

    def record(self, row: Row) -> dict:
        mass, b, n = self.probe.result, row.b, row.n
        image = mass.shares[b, :, :, :n, SEGMENTS.index("image")].mean(1)  # [L, n] mean over heads
        split = mass.shares[b, :, :, :n].mean(1)  # [L, n, 4]
        for claim in row.record["claims"]:
            t = claim["token"]
            claim["mass"] = rounded(image[:, t]) if t is not None and t < n else None
            inside = row.inside(claim["boxes"])
            claim["box_share"] = round(float(inside.mean()), 5) if inside is not None and len(inside) else None
        if b in self.batch.explore:
            row.record["explore"] = _explore(mass, self.batch.explore.index(b), n, row)
        return {"layers": mass.layers, "image": rounded(image),
                "split": {s: rounded(split[..., j].mean(1) if n else np.full(len(mass.layers), np.nan))
                          for j, s in enumerate(SEGMENTS)}}

    @classmethod
    def metrics(cls, records: list[dict]) -> dict:
        curve = mass_curve(records)  # [L, T]
        layers = records[0]["mass"]["layers"]
        claims = [c for r in records for c in r["claims"] if c.get("mass") is not None]
        by_quarter = [[mean_of([c["mass"][i] for c in claims if c["quarter"] == q]) for q in range(4)]
                      for i in range(len(layers))]
        split = {s: rounded(nanmean(np.array([r["mass"]["split"][s] for r in records], dtype=float), 0))
                 for s in records[0]["mass"]["split"]}
        quarters = np.stack([nanmean(part, 1) for part in np.array_split(curve, 4, axis=1)], 1)  # [L, 4]
        out = {"layers": layers, "mass_by_layer": rounded(curve), "mass_profile": rounded(nanmean(curve, 1)),
               "mass_by_quarter": rounded(quarters), "mass_split": split, "claim_mass_by_quarter": by_quarter,
               "accuracy_vs_mass": accuracy_vs_mass(claims)}
        fit = dilution_report(curve, layers) if curve.shape[1] >= 4 else None
        if fit is not None:
            out["dilution"] = {"a": rounded(fit.params[:, 0], 6), "b": rounded(fit.params[:, 1], 4),
                               "c": rounded(fit.params[:, 2], 6), "rmse": rounded(fit.rmse, 6),
                               "break_t": [int(t) for t in fit.break_t], "plateau": rounded(fit.plateau, 6)}
        return out

    @classmethod
    def figures(cls, metrics: dict, records: list[dict]) -> list[Figure]:
        return [Figure.of_chart("mass_vs_position", "Visual attention mass vs position",
                                plots.mass_vs_position(metrics, records), _caption_mass(metrics)),
                Figure.of_chart("claim_mass_by_quarter", "Image share at the claim-writing queries",
                                plots.claim_mass_by_quarter(metrics), CLAIM_MASS_CAPTION),
                Figure.of_chart("accuracy_vs_mass", "Accuracy against visual mass, claim by claim",
                                plots.accuracy_vs_mass(metrics), ACCURACY_CAPTION)]


def mass_curve(records: list[dict]) -> np.ndarray:
    """[L, T] image share per layer and generated position, mean over the requests whose answer reaches t."""
    width = max((r["n_tokens"] for r in records), default=0)
    return nanmean(_stack([r["mass"]["image"] for r in records], width), 0)


def _stack(rows: list[list], width: int) -> np.ndarray:
    """Ragged [R][L][n_r] lists -> [R, L, width] with NaN past each row's end."""
    out = np.full((len(rows), len(rows[0]) if rows else 0, width), np.nan)
    for i, row in enumerate(rows):
        array = np.asarray(row, dtype=float)  # [L, n]
        out[i, :, : array.shape[1] if array.ndim == 2 else 0] = array if array.ndim == 2 else np.nan
    return out


def accuracy_vs_mass(claims: list[dict]) -> dict:
    """Claims binned by their token's image share (mean over layers): count and share correct per bin."""
    mass = np.array([np.nanmean(np.asarray(c["mass"], dtype=float)) for c in claims])
    which = np.digitize(mass, MASS_BINS[1:-1]) if len(mass) else np.array([], dtype=int)
    correct = np.array([c["correct"] for c in claims], dtype=float)
    n = [int((which == k).sum()) for k in range(len(MASS_BINS) - 1)]
    rate = [float(correct[which == k].mean()) if m else None for k, m in enumerate(n)]
    return {"bins": MASS_BINS[:-1] + [1.0], "n": n, "correct_rate": rate}


def _explore(mass, r: int, n: int, row: Row) -> dict:
    """Per-patch attention of one request for the token explorer (image 0's tokens only)."""
    own = row.cells[:, 0] == 0  # [N]
    return {"image": _thumbnail(row.request.images[0]), "cells": rounded(row.cells[own, 1:], 4),
            "layers": mass.patch_layers,
            "attention": [rounded(layer[:n, : len(own)][:, own], 4) for layer in mass.patches[r]]}


def _thumbnail(image, side: int = 256) -> str:
    image = image.copy()
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _caption_mass(metrics: dict) -> str:
    text = ("Share of attention on the image tokens at each generated position, one panel per decoder layer, "
            "averaged over the requests still answering (grey dashes: a/(t+b)+c fitted to the baseline). Dilution "
            "predicts a fall with t, then a plateau; flat curves in every layer would falsify it for this model.")
    if metrics.get("image_leaves_window_at") is not None:
        text += (f" This base attends only to a window of recent tokens: from position "
                 f"{metrics['image_leaves_window_at']} the image has left it and the share is exactly 0.")
    return text


CLAIM_MASS_CAPTION = (
    "Image share of attention at the queries that write a claim, by decoder layer (rows) and quarter of the "
    "answer (columns), one map per variant. These are the lookups the claims depend on: a share that falls "
    "in late quarters is the dilution the late claims must survive.")
ACCURACY_CAPTION = (
    "Every claim, binned by the image share of attention at its token (mean over layers): the share of claims "
    "correct per bin, and (numbers) how many claims fall in it. If dilution causes errors, accuracy rises with "
    "the share; a flat line means visual mass does not predict errors on this model.")
