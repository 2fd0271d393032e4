"""The default report in a real browser (Debian's chromium, headless, over the DevTools protocol): no
JavaScript errors, no request leaving the page, every figure, interactive figure and canvas drawn, the hover
label on the mass figure names the token written there, a click on a token redraws the explorer's heat map,
the headline on the page equals metrics.json, and a screenshot lands beside the report.

.ci/run installs chromium and sets PVM_PROBE_REQUIRE_BROWSER=1, so there the test cannot skip."""

import json
import os
import shutil

import pytest

from pvm_probe.cli import main
from pvm_probe.report.browser import check_report, headline_text

REQUIRED = os.environ.get("PVM_PROBE_REQUIRE_BROWSER") == "1"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_report(tmp_path_factory):
    if shutil.which("chromium") is None and not REQUIRED:
        pytest.skip("chromium is not installed (apt-get install chromium); .ci/run installs it")
    out = tmp_path_factory.mktemp("default") / "report"
    # the README's main job with its default variants and tuned lens, on 4 of its 64 scenes: the page has the
    # same sections, rows and figures
    assert main(["report", "--scenes", "4", "--out", str(out)]) == 0
    return out


def test_the_default_report_works_in_a_real_browser(default_report):
    problems = check_report(default_report / "report.html", default_report / "screenshot.png")
    assert problems == []
    assert (default_report / "screenshot.png").stat().st_size > 50_000
    metrics = json.loads((default_report / "metrics.json").read_text())
    assert set(headline_text(metrics)) == set(metrics["variants"])  # every variant has a headline row
    page = (default_report / "report.html").read_text()
    assert page.count('<div class="plot" data-figure=') == page.count('<section class="figure"') >= 8  # all interactive
    assert (default_report / "report.html").stat().st_size < 10_000_000


def test_the_check_catches_a_broken_page(default_report, tmp_path):
    """The same check on a page whose script throws, whose headline lies, which loads an image from elsewhere,
    one of whose figures cannot be drawn and whose hover labels lost the token must report all five."""
    broken = tmp_path / "report"
    shutil.copytree(default_report, broken)
    page = (broken / "report.html").read_text()
    first = next(iter(json.loads((broken / "metrics.json").read_text())["headline"]["variants"]))
    page = page.replace(f'<tr data-variant="{first}"><td>{first}</td><td class="num" data-key="q1">',
                        f'<tr data-variant="{first}"><td>{first}</td><td class="num" data-key="q1">9', 1)
    page = page.replace("</body>", '<img src="http://127.0.0.1:9/pixel.png"><script>undefinedFunction()</script></body>')
    page = page.replace('id="plot-logit_lens"', 'id="plot-elsewhere"').replace(": token %{text}", ": token ?")
    (broken / "report.html").write_text(page)
    problems = check_report(broken / "report.html")
    assert any("JavaScript exception" in p for p in problems)
    assert any("headline differs" in p for p in problems)
    assert "the page requested http://127.0.0.1:9/pixel.png" in problems
    assert "interactive figure logit_lens was not drawn" in problems
    assert any("hover label" in p and "does not show its token" in p for p in problems)
