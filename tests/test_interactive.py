"""The interactive figures: every report figure in plotly beside its matplotlib version, both with the numbers of
metrics.json and the records; hover that names each token; report.html with plotly.js inline once and a PNG
fallback per figure; the Jupyter token explorer driven headlessly (a click simulated as the browser sends it);
the committed notebooks carrying figure JSON and a static image in the same output."""

import json
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest

from pvm_probe.cli import main
from pvm_probe.plots import report as plots
from pvm_probe.records import RECORDS, read_records
from pvm_probe.report.figures import report_figures

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
PLOTLY = "application/vnd.plotly.v1+json"
WIDGET = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small report of the embedded default and the shipped PVM adapter (short answers, one explored request):
    (folder, metrics, records)."""
    out = tmp_path_factory.mktemp("interactive") / "report"
    assert main(["report", "--pvm", "pvm-stage1", "--scenes", "2", "--length", "0", "--no-controls",
                 "--no-tuned-lens", "--explore", "1", "--out", str(out)]) == 0
    return out, json.loads((out / "metrics.json").read_text()), read_records(out / RECORDS)


def _first_answers(records: list[dict]) -> dict:
    return {r["variant"]: r for r in sorted(records, key=lambda r: -r["request"])}


def test_mass_hover_names_the_token_each_position_holds(world):
    _, metrics, records = world
    figure = plots.mass_vs_position(metrics, records).interactive()
    first = _first_answers(records)
    for variant, record in first.items():
        (trace,) = [t for t in figure.data if t.name == variant and t.xaxis == "x"]  # layer 0's panel
        np.testing.assert_allclose(trace.y, np.array(metrics["variants"][variant]["mass_by_layer"][0], dtype=float),
                                   rtol=1e-6)
        assert record["id"] in trace.hovertemplate and "%{text}" in trace.hovertemplate
        claims = {c["token"]: c for c in record["claims"] if c["token"] is not None}
        assert claims  # the default's answers carry claims, so the verdicts below are checked
        mine = [r for r in records if r["variant"] == variant]
        for t, text in enumerate(trace.text):
            assert text.startswith(json.dumps(record["pieces"][t]) + ", share ")
            assert trace.customdata[t] == sum(r["n_tokens"] > t for r in mine)
            if t in claims:
                verdict = "correct" if claims[t]["correct"] else "wrong"
                assert text.endswith(f"claim \"{claims[t]['text']}\": {verdict}")
            else:
                assert "claim" not in text


def test_claim_bars_are_the_records_tally_in_both_versions(world):
    _, metrics, records = world
    chart = plots.claims_by_quarter(metrics)
    static, interactive = chart.static(), chart.interactive()
    variants = list(metrics["variants"])
    for i, variant in enumerate(variants):
        claims = [c for r in records if r["variant"] == variant for c in r["claims"]]
        expected = [100 * np.mean([c["correct"] for c in claims if c["quarter"] == q]) for q in range(4)]
        bar = next(t for t in interactive.data if t.name == variant)
        np.testing.assert_allclose(bar.y, expected, rtol=1e-6)
        assert list(bar.x) == plots.QUARTERS
        heights = [p.get_height() for p in static.axes[0].patches[4 * i: 4 * i + 4]]
        np.testing.assert_allclose(heights, expected, rtol=1e-6)


def _static_lines(figure) -> list[list]:
    """Per panel, (label, y) of every labelled line of the matplotlib figure (reference rules have none)."""
    return [[(line.get_label(), np.asarray(line.get_ydata(), dtype=float)) for line in ax.get_lines()
             if line.get_label() and not line.get_label().startswith("_")] for ax in figure.axes if ax.get_visible()]


def test_every_report_figure_has_an_interactive_version_with_the_same_lines(world):
    _, metrics, records = world
    figures = report_figures(metrics, records, {})
    assert {f.name for f in figures} >= {"claims_by_quarter", "mass_vs_position", "claim_mass_by_quarter",
                                         "accuracy_vs_mass", "logit_lens", "pvm_gates", "retrieval_overlay"}
    for figure in figures:
        assert figure.interactive is not None and len(figure.interactive.data), figure.name
        static = _static_lines(figure.figure)
        drawn = [(name, i, y) for i, panel in enumerate(static) for name, y in panel]
        for trace in figure.interactive.data:
            if trace.type != "scatter" or not trace.name or trace.name == "chance":
                continue
            panel = 0 if trace.xaxis in (None, "x") else int(trace.xaxis[1:]) - 1
            matches = [y for name, i, y in drawn if name == trace.name and i == panel]
            assert matches, (figure.name, trace.name, panel)
            assert any(len(y) == len(trace.y) and np.allclose(y, np.asarray(trace.y, dtype=float), rtol=1e-6,
                                                               equal_nan=True) for y in matches), (figure.name, trace.name)


def test_the_page_inlines_plotly_once_and_keeps_each_png(world):
    from plotly.offline import get_plotlyjs

    folder, _, _ = world
    page = (folder / "report.html").read_text()
    assert page.count(get_plotlyjs()[:2000]) == 1 and "<script src=" not in page and "<link" not in page
    plots_on_page = re.findall(r'<div class="plot" data-figure="(\w+)"><img alt="\1" src="data:image/png;base64,', page)
    assert set(plots_on_page) >= {"claims_by_quarter", "mass_vs_position", "retrieval_overlay"}
    for name in plots_on_page:
        spec = re.search(rf'<script type="application/json" id="plot-{name}">(.*?)</script>', page, re.S).group(1)
        assert json.loads(spec.replace("<\\/", "</"))["data"]


def test_a_chart_in_jupyter_carries_the_plotly_figure_and_a_png(world):
    _, metrics, _ = world
    bundle = plots.accuracy_vs_mass(metrics)._repr_mimebundle_()
    assert bundle[PLOTLY]["data"] and bundle["image/png"].startswith("iVBORw0KGgo")  # base64 of a PNG header


# ---- the token explorer widget ----------------------------------------------------------------------------
def _at_cells(z, cells: list) -> list[float]:
    """The heat map's value at each cell's centre (z: the map's raster over the image, cells in fractions)."""
    z = np.asarray(z, dtype=float)
    rows, cols = z.shape
    return [z[int((y0 + y1) / 2 * rows), int((x0 + x1) / 2 * cols)] for x0, y0, x1, y1 in cells]


def _check_maps(explorer, records: list[dict], t: int, layer: int) -> None:
    """The maps at token t show the records' per-patch weights: the baseline's and the variant's backbone
    attention in explorer layer `layer`, then each PVM block's."""
    first = _first_answers(records)
    base, pvm = first["baseline"]["explore"], first["pvm-stage1"]["explore"]
    expected = [base["attention"][layer][t], pvm["attention"][layer][t], *(block[t] for block in pvm["pvm"])]
    maps = [trace for trace in explorer.maps.data if trace.type == "heatmap"]
    assert len(maps) == len(expected)
    for trace, weights in zip(maps, expected, strict=True):
        shown = _at_cells(trace.z, pvm["cells"])
        np.testing.assert_allclose(shown, np.array(weights, dtype=float), rtol=1e-5, atol=1e-7)


def test_the_explorer_widget_follows_a_click_and_the_dropdowns(world):
    from pvm_probe.report.widget import TokenExplorer

    _, _, records = world
    explorer = TokenExplorer(records)
    first = _first_answers(records)
    assert explorer.variant.value == "pvm-stage1" and explorer.request.value == first["pvm-stage1"]["id"]
    last_claim = max(c["token"] for c in first["pvm-stage1"]["claims"] if c["token"] is not None)
    assert explorer.token == last_claim  # it opens on the last claim
    layer = len(first["pvm-stage1"]["explore"]["layers"]) - 1
    _check_maps(explorer, records, last_claim, layer)

    strip = explorer.strip.data[0]  # the answers token by token, shaded by the backbone's image share
    explored = first["pvm-stage1"]["mass"]["layers"].index(first["pvm-stage1"]["explore"]["layers"][layer])
    np.testing.assert_allclose(np.asarray(strip.z, dtype=float)[1], first["pvm-stage1"]["mass"]["image"][explored],
                               rtol=1e-5)

    # a click on token 5 of the strip, as the browser sends it to the kernel
    explorer.strip._js2py_pointsCallback = {"event_type": "plotly_click", "device_state": {}, "points": {
        "trace_indexes": [0], "point_indexes": [[1, 5]], "xs": [5], "ys": ["pvm-stage1"]}}
    assert explorer.token == 5
    _check_maps(explorer, records, 5, layer)
    assert json.dumps(first["pvm-stage1"]["pieces"][5]) in explorer.maps.layout.title.text

    explorer.layer.value = 0
    _check_maps(explorer, records, 5, 0)
    bundle = explorer._repr_mimebundle_()
    assert WIDGET in bundle and bundle["image/png"].startswith("iVBORw0KGgo")


def test_the_explorer_says_when_no_record_was_explored(world):
    from pvm_probe.errors import InputError
    from pvm_probe.report.widget import TokenExplorer

    _, _, records = world
    with pytest.raises(InputError, match="--explore"):
        TokenExplorer([{k: v for k, v in r.items() if k != "explore"} for r in records])


# ---- the committed notebooks -----------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_each_notebook_shows_two_interactive_figures_with_static_images(path):
    notebook = nbformat.read(path, as_version=4)
    outputs = [o.get("data", {}) for cell in notebook.cells for o in cell.get("outputs", [])]
    interactive = [o for o in outputs if (PLOTLY in o or WIDGET in o) and "image/png" in o]
    assert len(interactive) >= 2
    if path.stem.startswith("01"):
        assert any(WIDGET in o for o in interactive)  # the token explorer
        assert any(PLOTLY in o and any(t.get("name") == "baseline" and "%{text}" in t.get("hovertemplate", "")
                                       for t in o[PLOTLY]["data"]) for o in interactive)  # the mass figure, with tokens
