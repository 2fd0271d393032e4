"""The benchmarks section: per-variant rows in percent, published rows labelled, the by-quarter figure."""

from pvm_probe.report.benchmarks import benchmarks_html, hallucination_by_quarter_figure
from pvm_probe.suites.amber import AmberSuite
from pvm_probe.suites.chair import ChairSuite
from pvm_probe.suites.pope import PopeSuite

CHAIR_ROW = {"CHAIR_s": 0.5, "CHAIR_i": 0.125, "recall": 0.75, "length": 98.5, "words": 80.0, "answer_tokens": 110.0,
             "CHAIR_i_by_quarter": [0.05, 0.1, None, 0.3]}
CHAIR = {"baseline": {"reference": CHAIR_ROW, "fixed": {**CHAIR_ROW, "CHAIR_i": 0.1}},
         "pai": {"reference": {**CHAIR_ROW, "CHAIR_s": 0.25}, "fixed": CHAIR_ROW}}


def test_chair_table_and_published_rows():
    page = benchmarks_html("chair", ChairSuite.benchmark_layout, CHAIR, ChairSuite.published)
    assert page.count("<tr>") == 1 + 4 and page.count('class="published"') == len(ChairSuite.published)
    assert "<td>baseline</td><td>reference</td><td class=\"num\">50.0</td><td class=\"num\">12.5</td>" in page
    assert "<td>baseline</td><td>fixed</td><td class=\"num\">50.0</td><td class=\"num\">10.0</td>" in page
    assert "as reported, not measured here" in page and ">50.0<" in page and ">15.4<" in page  # MemVR's baseline
    assert ">98.5<" in page and ">100.6<" in page  # lengths are not rates


def test_pope_table_by_split():
    row = {"accuracy": 0.8, "precision": 0.75, "recall": 0.9, "f1": 0.818, "yes_ratio": 0.6,
           "image_share_at_answer": 0.0123}
    page = benchmarks_html("pope", PopeSuite.benchmark_layout, {"baseline": {"random": row, "adversarial": row}}, PopeSuite.published)
    assert "<td>baseline</td><td>adversarial</td><td class=\"num\">80.0</td>" in page
    assert ">0.0123<" in page and ">79.1<" in page  # OPERA's adversarial accuracy


def test_by_quarter_figure():
    chart, caption = hallucination_by_quarter_figure(ChairSuite.benchmark_layout, CHAIR)
    lines = chart.static().axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["baseline", "baseline (fixed parser)", "pai", "pai (fixed parser)"]
    assert list(lines[0].get_ydata())[:2] == [5.0, 10.0] and str(lines[0].get_ydata()[2]) == "nan"
    assert "CHAIR_i by quarter" in caption
    chart, caption = hallucination_by_quarter_figure(AmberSuite.benchmark_layout, {"baseline": {"chair_by_quarter": [0.1, 0.2, 0.3, 0.4]}})
    assert [round(v, 6) for v in chart.static().axes[0].get_lines()[0].get_ydata()] == [10.0, 20.0, 30.0, 40.0]
    assert hallucination_by_quarter_figure(PopeSuite.benchmark_layout, {}) is None


def test_each_source_is_given_once_under_the_table():
    """Published rows carry a numbered mark; each source (paper, table, protocol) is written once, under the table,
    in the order the rows first cite it."""
    import html
    import re

    published = ChairSuite.published
    page = benchmarks_html("chair", ChairSuite.benchmark_layout, CHAIR, published)
    sources = list(dict.fromkeys(row["source"] for row in published))
    assert len(sources) == 2 < len(published)
    table, notes = page.split("</table>")
    assert re.findall(r'<li id="source-(\d)">([^<]*)</li>', notes) == [(str(k), html.escape(s))
                                                                       for k, s in enumerate(sources, 1)]
    assert all(html.escape(s) not in table for s in sources)
    marks = re.findall(r'<tr class="published">.*?<sup><a href="#source-(\d)">', table)
    assert marks == [str(sources.index(row["source"]) + 1) for row in published]
    assert "<ol" not in benchmarks_html("amber", AmberSuite.benchmark_layout, {}, [])


def test_published_rows_cite_the_paper_and_its_table():
    opera = next(row for row in ChairSuite.published if row["protocol"] == "opera-500")
    assert "arXiv:2311.17911" in opera["source"] and "Table 1" in opera["source"]
    memvr = next(row for row in ChairSuite.published if row["protocol"] == "memvr-500")
    assert "arXiv:2410.03577" in memvr["source"] and "assets/figexp.png" in memvr["source"]
    assert all("arXiv:2311.17911" in row["source"] for row in PopeSuite.published)
