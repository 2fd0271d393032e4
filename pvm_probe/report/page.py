"""report.html: one self-contained page: interactive figures (plotly.js inline, once), each with its static PNG as
the fallback when scripting is off, and the explorer's data and code inline.

Order: the headline (what each variant scores early and late, its gain, what the controls say), the
figures with their captions, the token explorer, the paper's numbers beside ours.
"""

from __future__ import annotations

import base64
import html

import plotly.io
from plotly.offline import get_plotlyjs

from ..plots.chart import png
from .benchmarks import benchmarks_html
from .explorer import explorer_html
from .metrics import signed

WORLD_NOTE = (
    "The embedded default's text decoder attends only to its last {window} tokens (a sliding attention window, "
    "saved as text_config.attention_window). At the default long setting the image leaves that window around the "
    "middle of the answer: from then on the backbone's visual attention mass is exactly zero, nothing in its "
    "residual stream can carry the image, and its late claims fall to chance. This is visual dilution taken to its "
    "limit, not the gradual softmax dilution of a full-attention LVLM: inside the window the baseline's visual mass "
    "falls as the answer grows while its accuracy stays near 100 %. PVM's memory lies outside the window; the MLP "
    "control (no image) and the swapped-image control tell an image-borne gain from a text-side one."
)

STYLE = """body{font-family:system-ui,sans-serif;max-width:1150px;margin:auto;padding:0 12px;color:#222}
img{max-width:100%} table{border-collapse:collapse;margin:6px 0} td,th{border:1px solid #ccc;padding:2px 8px}
td.num{text-align:right;font-variant-numeric:tabular-nums} .caption{color:#444;font-size:0.93em;max-width:900px}
.note{background:#fff4e5;padding:8px;border-left:4px solid #f90} .headline{background:#eef5ff;padding:8px 12px}
.ex-body{display:flex;gap:16px;align-items:flex-start} .ex-tokens{flex:1;line-height:1.9;font-family:monospace;
white-space:pre-wrap;max-height:420px;overflow:auto;border:1px solid #ddd;padding:6px}
.ex-tokens span{cursor:pointer} .ex-tokens .ok{border-bottom:3px solid #2ca02c} .ex-tokens .bad{border-bottom:3px
solid #d62728} .ex-tokens .sel{outline:2px solid #ff7f0e} .ex-maps{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:4px} figcaption{font-size:0.85em;color:#444} div.plot{max-width:100%}"""


def _pct(value, points: bool = False) -> str:
    if value is None:
        return "-"
    return signed(value) if points else f"{100 * value + 0.0:.1f}"


def headline_cells(row: dict) -> list[tuple[str, str]]:
    """(metrics key, text) of one headline row, as the page shows it."""
    share = row["q4_image_share"]
    return [("q1", _pct(row["q1"])), ("q4", _pct(row["q4"])), ("overall", _pct(row["overall"])),
            ("q4_image_share", "-" if share is None else f"{share:.4f}"),
            ("gain_q4", _pct(row.get("gain_q4"), True)), ("gain_overall", _pct(row.get("gain_overall"), True))]


def headline_html(metrics: dict) -> str:
    head = metrics["headline"]
    name = metrics["metric"]["name"]
    rows = []
    for variant, row in head["variants"].items():
        tds = "".join(f'<td class="num" data-key="{k}">{v}</td>' for k, v in headline_cells(row))
        rows.append(f'<tr data-variant="{html.escape(variant)}"><td>{html.escape(variant)}</td>{tds}</tr>')
    lines = "".join(f"<li>{html.escape(line)}</li>" for line in head["controls"])
    missing = ("<p>Controls not run: " + html.escape("; ".join(head["missing_controls"])) + ".</p>"
               if head["missing_controls"] else "")
    return f"""<div class="headline" id="headline"><h2>Headline</h2>
<table><tr><th>variant</th><th>{html.escape(name)}, Q1 (%)</th><th>Q4 (%)</th><th>overall (%)</th>
<th>image share, last quarter</th><th>gain, Q4 (points)</th><th>gain, overall (points)</th></tr>{''.join(rows)}</table>
<ul>{lines}</ul>{missing}</div>"""


ONE_WORD_NOTE = (
    "Each answer of the {suite} suite is one word: position within the answer does not apply, so this "
    "page has no headline by quarter of the answer and no claims-by-quarter panel. The suite's own metrics "
    "lead; the probes' figures read the answer's tokens as usual.")


def positional(metrics: dict) -> bool:
    """Whether a claim's place in the answer means anything (False for one-word answers: POPE's yes / no)."""
    return metrics["metric"].get("positional", True)


def lead_html(metrics: dict) -> str:
    """The headline by quarter, then the suite's benchmark table; for one-word answers, a note saying why
    there is no headline, then the benchmark table."""
    if positional(metrics):
        return headline_html(metrics) + _benchmarks(metrics)
    note = ONE_WORD_NOTE.format(suite=metrics["suite"])
    return f'<p class="note" id="one-word">{html.escape(note)}</p>' + _benchmarks(metrics)


def warnings_html(metrics: dict) -> str:
    """The report's warnings (metrics.json `warnings`), above the headline."""
    if not metrics.get("warnings"):
        return ""
    items = "".join(f"<li>{html.escape(w)}</li>" for w in metrics["warnings"])
    return f'<div class="note" id="warnings"><b>Warning</b><ul>{items}</ul></div>'


def _figure_sections(figures: list, pngs: dict) -> str:
    return "".join(
        f'<section class="figure" id="fig-{f.name}"><h2>{html.escape(f.title)}</h2>'
        f'{_figure_html(f, pngs.get(f.name) or png(f.figure))}<p class="caption">{html.escape(f.caption)}</p>'
        f'{f.extra_html}</section>' for f in figures)


def _figure_html(figure, image: bytes) -> str:
    """The static PNG; with an interactive version, the PNG inside the div plotly draws into (it stays when
    scripting is off, and is removed once the plot is drawn) and the figure's JSON beside it."""
    static = f'<img alt="{figure.name}" src="data:image/png;base64,{base64.b64encode(image).decode()}">'
    if figure.interactive is None:
        return static
    data = plotly.io.to_json(figure.interactive, validate=False).replace("</", "<\\/")
    return (f'<div class="plot" data-figure="{figure.name}">{static}</div>'
            f'<script type="application/json" id="plot-{figure.name}">{data}</script>')


def _plotly_script(figures: list) -> str:
    """plotly.js (from the installed plotly package, inline: the page needs no network) and the few lines that
    draw every interactive figure; nothing when there is none."""
    if all(f.interactive is None for f in figures):
        return ""
    return (f"<script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script><script>{get_plotlyjs()}</script>"
            f"<script>{_DRAW}</script>")


_DRAW = """document.querySelectorAll('div.plot[data-figure]').forEach(div => {  // one failure leaves its PNG, not the rest
  try {
    const figure = JSON.parse(document.getElementById('plot-' + div.dataset.figure).textContent);
    Plotly.newPlot(div, figure.data, figure.layout, {responsive: true, displaylogo: false})
      .then(() => div.querySelectorAll(':scope > img').forEach(img => img.remove()))
      .catch(error => console.error('figure ' + div.dataset.figure + ': ' + error));
  } catch (error) {
    console.error('figure ' + div.dataset.figure + ': ' + error);
  }
});"""


def _paper_table(metrics: dict) -> str:
    ours = _ours(metrics)
    rows = "".join(f"<tr><td>{html.escape(p['what'])}</td><td>{html.escape(p['paper'])}</td>"
                   f"<td>{html.escape(ours.get(p['what'], ''))}</td></tr>" for p in metrics["paper"])
    return ("<h2>The paper's numbers (Qwen3-VL, as reported by the paper; not measured here)</h2>"
            f"<table><tr><th>what</th><th>the paper</th><th>ours, this run (where comparable)</th></tr>{rows}</table>")


def _ours(metrics: dict) -> dict:
    """This run's numbers for the paper rows that measure the same kind of thing."""
    variants = metrics["variants"]
    memory = [n for n, m in variants.items() if m["kind"] == "adapter" and m.get("block") == "pvm"]
    mlp = [n for n, m in variants.items() if m["kind"] == "adapter" and m.get("block") == "mlp"]
    out = {}
    if memory and "baseline" in variants:
        name, base = memory[0], variants["baseline"]["primary_by_quarter"]
        sign = 1 if metrics["metric"]["higher_is_better"] else -1
        gains = [_pct(None if a is None or b is None else 100 * sign * (a - b), True)
                 for a, b in zip(variants[name]["primary_by_quarter"], base, strict=True)]
        out["MathVerse gain by answer-length quarter, 8B"] = f"{name}: {' / '.join(gains)} points"
        out["PVM parameters, 8B (layers 8, 16, 24)"] = f"{name}: {variants[name].get('num_parameters', 0):,}"
        row = [_accuracy(variants["baseline"]), _accuracy(variants[mlp[0]]) if mlp else None,
               _accuracy(variants[name])]
        out["controls, 8B average accuracy: baseline / iso-parameter MLP / PVM"] = (
            "claims correct (%): " + " / ".join(_pct(v) for v in row))
    return out


def _setting(value) -> str:
    """One setting for the page header: a nested one (the tuned lens's training) as `(key value, ...)`,
    numbers to 4 significant digits."""
    if isinstance(value, dict):
        return "(" + ", ".join(f"{k.replace('_', ' ')} {_setting(v)}" for k, v in value.items()) + ")"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def header_html(metrics: dict) -> str:
    """What a reader needs first (base, suite, requests, answer budget, decoding), then every setting, the tuned
    lens's training among them, folded into a details block."""
    setting = metrics["setting"]
    requests = setting.get("requests", setting.get("scenes"))
    budget = (f"max_new_tokens {setting['max_new_tokens']}" if setting.get("max_new_tokens") is not None
              else f"answer_tokens {setting.get('answer_tokens')}")
    decoding = "greedy" if setting.get("greedy", True) else "sampled"
    every = "".join(f"<li>{html.escape(k)} {html.escape(_setting(v))}</li>" for k, v in setting.items()
                    if k != "suite" and v is not None)
    return (f"<p>Base: {html.escape(metrics['base'])} ({html.escape(metrics['architecture'])}); suite "
            f"<b>{html.escape(metrics['suite'])}</b>: requests {requests}, {budget}, decoding {decoding}.</p>"
            f'<details id="settings"><summary>All settings</summary><ul>{every}</ul></details>')


def _accuracy(variant: dict) -> float | None:
    """A variant's share of claims correct, an accuracy whatever the suite's primary metric (the paper's rows
    are accuracies; an error rate beside them would read as the opposite)."""
    return variant["claims_by_quarter"]["all"]["correct_overall"]


def _benchmarks(metrics: dict) -> str:
    """The suite's own benchmark metrics per variant, with the published rows of the same protocol."""
    if not metrics.get("benchmark"):
        return ""
    return benchmarks_html(metrics["suite"], metrics.get("benchmark_layout", {}), metrics["benchmark"],
                           metrics.get("published", []))


def page(metrics: dict, figures: list, records: list[dict], pngs: dict | None = None) -> str:
    """The page; `pngs`: each figure's PNG by name, as written beside it (drawn here where missing)."""
    setting = metrics["setting"]
    note = (f'<p class="note">{html.escape(WORLD_NOTE.format(window=setting.get("attention_window")))}</p>'
            if metrics["suite"] == "world" and setting.get("attention_window") else "")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>pvm_probe dilution report</title>
<style>{STYLE}</style></head><body>
<h1>Visual signal dilution report</h1>
{header_html(metrics)}
{note}{warnings_html(metrics)}{lead_html(metrics)}{_figure_sections(figures, pngs or {})}
{explorer_html(records)}{_paper_table(metrics)}
{_plotly_script(figures)}</body></html>"""
