"""The report's benchmarks section, as pure functions of `benchmark()` outputs (no model, no files).

    benchmarks = variant_benchmarks(suite, records)   # {variant: suite.benchmark(its records)}
    html = benchmarks_html("chair", ChairSuite.benchmark_layout, benchmarks, ChairSuite.published)
    chart, caption = hallucination_by_quarter_figure(ChairSuite.benchmark_layout, benchmarks)   # None for POPE

Rates are shown in percent. Published rows sit under ours, labelled "as reported, not measured here", each
with a numbered mark; under the table every source (paper, table, protocol) is given once. They are comparable
only under the same protocol (images, prompt, max_new_tokens, decoding).
"""

from __future__ import annotations

import html
from pathlib import Path

from ..io import atomic_write_json
from ..plots.chart import Chart, Line, Panel
from ..plots.report import QUARTERS, variant_styles

BENCHMARK_FILE = "benchmark.json"


def write_benchmarks(suite, records: list[dict], directory) -> None:
    """The suite's benchmark metrics of every variant, its published rows and how to show them
    (`Suite.benchmark_layout`), into the run folder beside the records (the suite may need its data to score,
    e.g. AMBER's lexicons; the report then needs only the folder). Nothing for a suite without them."""
    if hasattr(suite, "benchmark"):
        atomic_write_json(Path(directory) / BENCHMARK_FILE, {
            "benchmark": variant_benchmarks(suite, records), "published": list(type(suite).published),
            "benchmark_layout": type(suite).benchmark_layout})


def variant_benchmarks(suite, records: list[dict]) -> dict[str, dict]:
    """{variant: suite.benchmark(that variant's records)}, variants in record order; {} for a suite without
    benchmark metrics."""
    if not hasattr(suite, "benchmark"):
        return {}
    names = dict.fromkeys(r["variant"] for r in records)
    return {name: suite.benchmark([r for r in records if r["variant"] == name]) for name in names}


def groups(layout: dict, benchmark: dict) -> list[tuple[str | None, dict]]:
    """One variant's benchmark as (group, row) pairs: one row per group (CHAIR's parsers, POPE's splits) when
    the layout names a group, else the benchmark is one row."""
    return list(benchmark.items()) if layout.get("group") else [(None, benchmark)]


def _cell(value, rate: bool) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if rate else f"{value:.4g}" if isinstance(value, float) else str(value)


def benchmarks_html(suite: str, layout: dict, benchmarks: dict[str, dict], published: list[dict]) -> str:
    """The section: one table row per variant (and group), then the published rows. `layout["columns"]`:
    (key, heading, is a rate); without them, every number of the benchmark is a column."""
    first_row = next(iter(benchmarks.values()), {})
    columns = layout.get("columns") or [(k, k, False) for k, v in first_row.items() if isinstance(v, int | float)]
    group_name = layout.get("group")
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in columns)
    first = f"<th>{group_name}</th>" if group_name else ""
    rows, sources = [], list(dict.fromkeys(row["source"] for row in published))
    for variant, benchmark in benchmarks.items():
        for group, row in groups(layout, benchmark):
            cells = "".join(f'<td class="num">{_cell(row.get(k), rate)}</td>' for k, _, rate in columns)
            label = f"<td>{html.escape(str(group))}</td>" if group_name else ""
            rows.append(f"<tr><td>{html.escape(variant)}</td>{label}{cells}</tr>")
    for row in published:
        group = row.get("split", row.get("protocol"))
        cells = "".join(f'<td class="num">{_cell(row.get(k), rate)}</td>' for k, _, rate in columns)
        label = f"<td>{html.escape(str(group))}</td>" if group_name else ""
        what = f"{row['model']}, {row['method']}" + (f", {row['decoding']}" if row.get("decoding") else "")
        mark = sources.index(row["source"]) + 1
        rows.append(f'<tr class="published"><td>{html.escape(what)} <i>(as reported, not measured here)</i>'
                    f'<sup><a href="#source-{mark}">{mark}</a></sup></td>{label}{cells}</tr>')
    notes = "".join(f'<li id="source-{k}">{html.escape(source)}</li>' for k, source in enumerate(sources, 1))
    return (f'<section id="benchmarks"><h2>Benchmark: {html.escape(suite)}</h2>'
            f"<table><tr><th>variant</th>{first}{head}</tr>{''.join(rows)}</table>"
            + (f'<ol class="sources">{notes}</ol>' if notes else "") + "</section>")


def hallucination_by_quarter_figure(layout: dict, benchmarks: dict[str, dict]):
    """(chart, caption) of the hallucination rate by quarter of the answer per variant (`layout["by_quarter"]`:
    its key in each row; the first group solid, the others dotted), or None when the suite has none (POPE)."""
    key = layout.get("by_quarter")
    if key is None:
        return None
    styles = variant_styles(list(benchmarks))
    panel = Panel(categories=QUARTERS, xlabel="quarter of the answer (by generated token)", ylabel=layout["ylabel"])
    for variant, benchmark in benchmarks.items():
        for k, (group, row) in enumerate(groups(layout, benchmark)):
            label = variant if k == 0 else f"{variant} ({group} {layout['group']})"
            panel.items.append(Line(range(4), [None if v is None else 100 * v for v in row[key]], label=label,
                                    marker="o", color=styles[variant]["color"], ls=":" if k else styles[variant]["ls"],
                                    hover=f"<b>{html.escape(label, quote=False)}</b><br>%{{x}}: %{{y:.1f}}<extra></extra>"))
    return Chart([panel], panel_size=(6.4, 3.4)), layout["caption"]
