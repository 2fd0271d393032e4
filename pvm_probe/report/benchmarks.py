"""The report's benchmarks section, as pure functions of `benchmark()` outputs (no model, no files).

    benchmarks = variant_benchmarks(suite, records)   # {variant: suite.benchmark(its records)}
    html = benchmarks_html("chair", benchmarks, ChairSuite.published)
    fig, caption = hallucination_by_quarter_figure("chair", benchmarks)   # None for POPE

Rates are shown in percent. Published rows sit under ours, labelled "as reported, not measured here", with
their source; they are comparable only under the same protocol (images, prompt, max_new_tokens, decoding).
"""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ..io import atomic_write_json
from ..plots.report import QUARTERS, variant_styles

# suite -> (row groups of one variant's benchmark, columns: (key, heading, is a rate))
_CHAIR = [("CHAIR_s", "CHAIR_s (%)", True), ("CHAIR_i", "CHAIR_i (%)", True), ("recall", "recall (%)", True),
          ("length", "length (nltk tokens)", False), ("words", "words", False),
          ("answer_tokens", "generated tokens", False)]
_POPE = [("accuracy", "accuracy (%)", True), ("precision", "precision (%)", True), ("recall", "recall (%)", True),
         ("f1", "F1 (%)", True), ("yes_ratio", "yes (%)", True), ("image_share_at_answer", "image share at answer", False)]
_AMBER = [("chair", "CHAIR (%)", True), ("cover", "Cover (%)", True), ("hal", "Hal (%)", True), ("cog", "Cog (%)", True)]
COLUMNS = {"chair": _CHAIR, "pope": _POPE, "amber": _AMBER}
# where a suite's by-quarter hallucination rate lies in benchmark(): {group: key}
BY_QUARTER = {"chair": {"reference": "CHAIR_i_by_quarter", "fixed": "CHAIR_i_by_quarter"},
              "amber": {None: "chair_by_quarter"}}


BENCHMARK_FILE = "benchmark.json"


def write_benchmarks(suite, records: list[dict], directory) -> None:
    """The suite's benchmark metrics of every variant and its published rows, into the run folder beside the
    records (the suite may need its data to score, e.g. AMBER's lexicons; the report then needs only the
    folder). Nothing for a suite without benchmark metrics."""
    if hasattr(suite, "benchmark"):
        atomic_write_json(Path(directory) / BENCHMARK_FILE, {"benchmark": variant_benchmarks(suite, records),
                                                            "published": list(type(suite).published)})


def variant_benchmarks(suite, records: list[dict]) -> dict[str, dict]:
    """{variant: suite.benchmark(that variant's records)}, variants in record order; {} for a suite without
    benchmark metrics."""
    if not hasattr(suite, "benchmark"):
        return {}
    names = dict.fromkeys(r["variant"] for r in records)
    return {name: suite.benchmark([r for r in records if r["variant"] == name]) for name in names}


def groups(suite: str, benchmark: dict) -> list[tuple[str | None, dict]]:
    """One variant's benchmark as (group, row) pairs: CHAIR per parser, POPE per split, AMBER one row."""
    if suite not in ("chair", "pope"):
        return [(None, benchmark)]
    return list(benchmark.items())


def _cell(value, rate: bool) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if rate else f"{value:.4g}" if isinstance(value, float) else str(value)


def benchmarks_html(suite: str, benchmarks: dict[str, dict], published: list[dict]) -> str:
    """The section: one table row per variant (and parser or split), then the published rows."""
    first_row = next(iter(benchmarks.values()), {})
    columns = COLUMNS.get(suite) or [(k, k, False) for k, v in first_row.items() if isinstance(v, int | float)]
    group_name = {"chair": "parser", "pope": "split"}.get(suite)
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in columns)
    first = f"<th>{group_name}</th>" if group_name else ""
    rows = []
    for variant, benchmark in benchmarks.items():
        for group, row in groups(suite, benchmark):
            cells = "".join(f'<td class="num">{_cell(row.get(k), rate)}</td>' for k, _, rate in columns)
            label = f"<td>{html.escape(str(group))}</td>" if group_name else ""
            rows.append(f"<tr><td>{html.escape(variant)}</td>{label}{cells}</tr>")
    for row in published:
        group = row.get("split", row.get("protocol"))
        cells = "".join(f'<td class="num">{_cell(row.get(k), rate)}</td>' for k, _, rate in columns)
        label = f"<td>{html.escape(str(group))}</td>" if group_name else ""
        what = f"{row['model']}, {row['method']}" + (f", {row['decoding']}" if row.get("decoding") else "")
        rows.append(f'<tr class="published"><td>{html.escape(what)} <i>(as reported, not measured here: '
                    f"{html.escape(row['source'])})</i></td>{label}{cells}</tr>")
    return (f'<section id="benchmarks"><h2>Benchmark: {html.escape(suite)}</h2>'
            f"<table><tr><th>variant</th>{first}{head}</tr>{''.join(rows)}</table></section>")


def hallucination_by_quarter_figure(suite: str, benchmarks: dict[str, dict]):
    """(figure, caption) of the hallucination rate by quarter of the answer per variant, or None (POPE)."""
    if suite not in BY_QUARTER:
        return None
    styles = variant_styles(list(benchmarks))
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for variant, benchmark in benchmarks.items():
        for group, row in groups(suite, benchmark):
            if group not in BY_QUARTER[suite]:
                continue
            values = np.array([np.nan if v is None else 100 * v for v in row[BY_QUARTER[suite][group]]], dtype=float)
            label = variant if group in (None, "reference") else f"{variant} ({group} parser)"
            ax.plot(QUARTERS, values, marker="o", color=styles[variant]["color"],
                    ls=":" if group == "fixed" else styles[variant]["ls"], label=label)
    ax.set_ylabel({"chair": "CHAIR_i (%)", "amber": "AMBER CHAIR (%)"}[suite])
    ax.set_xlabel("quarter of the answer (by generated token)")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig, _CAPTIONS[suite]


_CAPTIONS = {
    "chair": ("CHAIR_i by quarter of the answer: of the object mentions whose first token falls in that quarter "
              "of the generated tokens, the share naming an object not in the image (its COCO instances and "
              "human captions). Solid: CHAIR's reference parser, whose pooled value is the published CHAIR_i; "
              "dotted: the parser with CHAIR's faults fixed (negation, non-nouns). Dilution predicts a rise from "
              "Q1 to Q4; a remedy that helps against it lowers Q4 most. A quarter without mentions is left out."),
    "amber": ("AMBER's CHAIR by quarter of the answer: of the AMBER object nouns whose token falls in that "
              "quarter of the generated tokens, the share AMBER reads as hallucinated. Dilution predicts a rise "
              "from Q1 to Q4. Matching is exact after lemmatisation (AMBER's word-vector step is not "
              "reproduced), so levels can sit above AMBER's own script; the shape across quarters is the point."),
}
