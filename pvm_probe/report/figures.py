"""The report's figures and their captions: what to read in each, and what would falsify the story.

`report_figures(metrics, records, curves)` returns a `Figure` (name, title, static and interactive figure, caption)
for every section
the records support: the report's own, and each probe's (`Probe.figures`); the wording follows the suite
(no painter-world words on a page about another suite).
"""

from __future__ import annotations

from ..plots import report as plots
from ..probes.protocol import Figure
from ..registry import PROBES, REMEDIES
from .benchmarks import hallucination_by_quarter_figure


def _caption_claims(metrics: dict) -> str:
    if metrics["metric"]["higher_is_better"]:
        return ("Claims correct in each quarter of the answer, per variant (hatched: the same adapter reading "
                "another request's image; dotted: its gates off). Dilution predicts the baseline falls late while "
                "PVM holds. If the swapped image keeps the gain, or the MLP control matches it, the gain does not "
                "come from the image.")
    return (f"{metrics['metric']['name'].capitalize()} of the claims in each quarter of the answer (lower is "
            "better), all claims and by kind. "
            "Dilution predicts more errors late in the answer; a flat baseline means this model does not lose "
            "the image within this answer length. Hatched: the adapter reading another request's image.")


def _caption_remedies(metrics: dict) -> str:
    """Names and says what each remedy drawn does, from its registered `title` and `summary`."""
    kinds = dict.fromkeys(m["kind"] for m in metrics["variants"].values() if m["kind"] in REMEDIES.names())
    drawn = "; ".join(f"{REMEDIES.get(k).title}: {REMEDIES.get(k).summary}" for k in kinds)
    return (f"PVM against the training-free remedies (dashed; {drawn}), each at its paper's defaults unless its "
            "name says otherwise. Right: the backbone's own share of attention on the image. A remedy that only "
            "re-weights attention or logits cannot help where that share is 0 (the image is out of reach); one "
            "that re-injects the image might.")


CAPTIONS = {
    "claims_by_quarter": _caption_claims,
    "remedies": _caption_remedies,
    "training_curves": lambda m: (
        "Training logs of each adapter: the Stage I (SFT) loss on a log axis; for a Stage II (GRPO) adapter its "
        "loss on a linear axis (GRPO's loss is near 0, and may be negative, whatever it learns) and the mean "
        "reward per log step, which is what Stage II optimises. A Stage I loss that never left its plateau, or a "
        "reward that never rose, means the adapter learned nothing, whatever the other figures show."),
}


def report_figures(metrics: dict, records: list[dict], curves: dict) -> list[Figure]:
    """The report's figures in page order: claims by quarter, each probe's (registry order), the remedies,
    the training curves. `curves`: adapter variant -> its training log entries (run.json)."""
    variants = metrics["variants"].values()
    figures = []
    if metrics["metric"].get("positional", True):  # a one-word answer has no quarters to compare
        figures.append(Figure.of_chart("claims_by_quarter", "Claims by quarter of the answer",
                                       plots.claims_by_quarter(metrics), CAPTIONS["claims_by_quarter"](metrics)))
    for name, probe in PROBES.items():
        if any(r.get(name) is not None for r in records):
            figures += probe.figures(metrics, records)
    if metrics.get("benchmark"):
        drawn = hallucination_by_quarter_figure(metrics.get("benchmark_layout", {}), metrics["benchmark"])
        if drawn is not None:
            figures.append(Figure.of_chart("benchmark_by_quarter", "Hallucination by quarter of the answer", *drawn))
    remedies = REMEDIES.names()
    if any(m["kind"] in remedies for m in variants):
        figures.append(Figure.of_chart("remedies", "PVM vs training-free remedies", plots.remedies(metrics, remedies),
                                       CAPTIONS["remedies"](metrics)))
    if curves:
        figures.append(Figure.of_chart("training_curves", "Training curves", plots.training_curves(curves),
                                       CAPTIONS["training_curves"](metrics)))
    return [f for f in figures if f.figure is not None]
