"""`lens` and `tuned_lens`: every layer's read-out of the next token against the model's own, per token.

Record section (both): `layers`, `kl` [L] (KL(final || layer), mean over the answer), `kl_by_quarter` `[L][4]`,
`convergence` [n] (per token, the first layer from which the read-out's top token stays the model's; -1:
never). `tuned_lens` reads through the base's tuned lens (`probes.tuned_lens`) and runs when the run has one.
Metrics: the mean convergence layer, overall and by quarter, and KL by layer and by quarter.
"""

from __future__ import annotations

import html

import numpy as np

from ...plots import report as plots
from ...records import mean_of, rounded_kl
from .._base import nanmean
from ..logit_lens import LogitLens
from ..protocol import Batch, Figure, Probe, Row


class LogitLensProbe(Probe):
    name = "lens"
    title = "LogitLens"

    def attach(self):
        self.probe = LogitLens(self.batch.model)
        return self.probe

    def record(self, row: Row) -> dict:
        lens, b, n = self.probe.result, row.b, row.n
        kl = lens.kl[b, :, :n]  # [L, n]
        quarters = np.array_split(np.arange(n), 4)
        return {"layers": lens.layers,
                "kl": rounded_kl(kl.mean(1) if n else np.full(len(lens.layers), np.nan), 4),
                "kl_by_quarter": rounded_kl(np.stack([kl[:, q].mean(1) if len(q) else np.full(len(kl), np.nan)
                                                   for q in quarters], 1), 4),
                "convergence": [int(v) for v in lens.convergence_layer()[b, :n]]}

    @classmethod
    def metrics(cls, records: list[dict]) -> dict:
        """Convergence layer (-1, never, left out) overall and by quarter of each answer; KL by layer and quarter."""
        key = cls.name
        convergence = [v for r in records for v in r[key]["convergence"] if v >= 0]
        by_quarter = [mean_of(v for r in records for v in np.array_split(np.asarray(r[key]["convergence"]), 4)[q]
                              if v >= 0) for q in range(4)]
        return {key: {"layers": records[0][key]["layers"],
                      "convergence_layer_mean": mean_of(convergence), "convergence_by_quarter": by_quarter,
                      "kl_by_layer": rounded_kl(nanmean(np.array([r[key]["kl"] for r in records], dtype=float), 0), 4),
                      "kl_by_quarter": rounded_kl(nanmean(np.array([r[key]["kl_by_quarter"] for r in records],
                                                                dtype=float), 0), 4)}}

    @classmethod
    def figures(cls, metrics: dict, records: list[dict]) -> list[Figure]:
        return [Figure.of_chart("logit_lens", "LogitLens and tuned lens", plots.logit_lens(metrics), CAPTION,
                                lens_table(metrics))]


class TunedLensProbe(LogitLensProbe):
    """The same read-out through the base's tuned lens (drawn in the LogitLens figure)."""

    name = "tuned_lens"
    title = "Tuned lens"

    @classmethod
    def applies(cls, batch: Batch) -> bool:
        return batch.lens is not None

    def attach(self):
        self.probe = LogitLens(self.batch.model, lens=self.batch.lens)
        return self.probe

    @classmethod
    def figures(cls, metrics: dict, records: list[dict]) -> list[Figure]:
        return []


def lens_table(metrics: dict) -> str:
    """The mean convergence layer of every variant under the LogitLens and the tuned lens."""
    def cell(m, lens):
        value = m.get(lens, {}).get("convergence_layer_mean")
        return "-" if value is None else f"{value:.2f}"

    rows = "".join(f"<tr><td>{html.escape(n)}</td><td class='num'>{cell(m, 'lens')}</td>"
                   f"<td class='num'>{cell(m, 'tuned_lens')}</td></tr>"
                   for n, m in metrics["variants"].items() if "lens" in m)
    return ("<table><tr><th>variant</th><th>convergence layer, LogitLens</th><th>tuned lens</th></tr>"
            f"{rows}</table>") if rows else ""


CAPTION = (
    "Left: KL between the final next-token distribution and each layer's read-out (the last layer, 0 by "
    "construction, is left out); solid: LogitLens, dash-dot: tuned lens. Right: the first layer from which the "
    "read-out's top token stays the model's, by quarter of the answer. The paper reports earlier convergence "
    "with PVM; a later or equal convergence layer would contradict it here.")
