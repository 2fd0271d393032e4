"""Open report.html in a real browser (Debian's `chromium`, headless) and check it as a reader would.

A few lines of the Chrome DevTools protocol over a websocket (`websocket-client`): load the page, collect
JavaScript exceptions, console errors and every network request that leaves the page, check that every
figure decoded, every interactive figure was drawn by plotly and every explorer canvas was drawn, move the
mouse onto a point of the mass-vs-position figure and read the hover label (it must name the token written
there, as records.jsonl has it), click a token of the explorer and check the heat map changed, read the
headline table back from the page and compare it with metrics.json, report the page's warnings (e.g. no
claim parsed) as problems, and save a screenshot beside the report.

    python -m pvm_probe.report.browser out/report/report.html      (make report-check)
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..records import RECORDS, read_records
from .page import headline_cells

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--remote-debugging-port=0", "--window-size=1200,900"]


class Browser:
    """A headless chromium and one page, driven over the DevTools protocol."""

    def __init__(self, timeout: float = 60):
        import websocket

        binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
        if binary is None:
            raise FileNotFoundError("chromium not found: apt-get install chromium")
        self.profile = tempfile.TemporaryDirectory(prefix="pvm_probe_chromium_")
        self.process = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={self.profile.name}", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port = self._port(Path(self.profile.name) / "DevToolsActivePort", timeout)
        # no Origin header: chromium >= 111 refuses a DevTools websocket from an origin it was not told to allow
        self.socket = websocket.create_connection(self._page_socket(port), timeout=timeout, suppress_origin=True)
        self.next_id, self.events = 0, []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    @staticmethod
    def _port(path: Path, timeout: float) -> int:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if path.is_file() and path.read_text().strip():
                return int(path.read_text().split()[0])
            time.sleep(0.1)
        raise TimeoutError("chromium did not open its DevTools port")

    @staticmethod
    def _page_socket(port: int) -> str:
        from urllib.request import urlopen

        targets = json.loads(urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        return next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def load(self, url: str, settle: float = 1.0) -> None:
        self.call("Page.navigate", url=url)
        deadline = time.time() + 60
        while self.evaluate("document.readyState") != "complete" and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(settle)
        self.evaluate("1")  # drain events that arrived meanwhile

    def errors(self) -> list[str]:
        out = []
        for event in self.events:
            if event.get("method") == "Runtime.exceptionThrown":
                details = event["params"]["exceptionDetails"]
                out.append(f"JavaScript exception: {details.get('exception', {}).get('description', details['text'])}")
            if event.get("method") == "Log.entryAdded" and event["params"]["entry"]["level"] == "error":
                out.append(f"console error: {event['params']['entry']['text']}")
            if event.get("method") == "Runtime.consoleAPICalled" and event["params"]["type"] == "error":
                out.append("console.error: " + " ".join(str(a.get("value")) for a in event["params"]["args"]))
        return out

    def requests(self) -> list[str]:
        """The URL of every request the page made (the page itself included)."""
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def hover(self, x: float, y: float, settle: float = 0.5) -> None:
        """Move the mouse to (x, y), in CSS pixels of the viewport, as a reader's mouse would."""
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        time.sleep(settle)

    def element_screenshot(self, selector: str, path: Path) -> None:
        """A screenshot of one element of the page (e.g. the token explorer)."""
        box = self.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                            " return [r.x + scrollX, r.y + scrollY, r.width, r.height]; })()")
        clip = dict(zip(("x", "y", "width", "height"), box, strict=True)) | {"scale": 1}
        data = self.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))

    def screenshot(self, path: Path) -> None:
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        self.call("Emulation.setDeviceMetricsOverride", width=1200, height=min(height, 16000), deviceScaleFactor=1,
                  mobile=False)
        time.sleep(1.0)  # the interactive figures redraw for the new viewport
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.socket.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.profile.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_FIGURES = "Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])"
_CANVASES = """Array.from(document.querySelectorAll('canvas')).map(c => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let lit = 0; for (let k = 0; k < d.length; k += 4) if (d[k] + d[k + 1] + d[k + 2] > 0) lit++;
  return [c.id, lit];
})"""
_HEADLINE = """Object.fromEntries(Array.from(document.querySelectorAll('#headline tr[data-variant]')).map(r =>
  [r.dataset.variant, Object.fromEntries(Array.from(r.querySelectorAll('td[data-key]')).map(
    c => [c.dataset.key, c.textContent]))]))"""
_WARNINGS = "Array.from(document.querySelectorAll('#warnings li')).map(li => li.textContent)"
_CLICK = """(() => {
  const before = document.getElementById('ex-backbone').toDataURL();
  const spans = Array.from(document.querySelectorAll('#ex-tokens span'));
  const current = document.getElementById('ex-backbone').dataset.token;
  const other = spans.find(s => s.dataset.t !== current && s.dataset.t !== undefined && Number(s.dataset.t) < 40);
  other.dispatchEvent(new MouseEvent('click', {bubbles: true}));
  return [before !== document.getElementById('ex-backbone').toDataURL(), other.dataset.t,
          document.getElementById('ex-backbone').dataset.token];
})()"""


_PLOTS = """Array.from(document.querySelectorAll('div.plot[data-figure]')).map(d => [d.dataset.figure,
  !!d.querySelector('.main-svg') && (d._fullData || []).length > 0 && !d.querySelector(':scope > img')])"""
_POINT = """((figure, variant, t) => {  // a point of the variant's curve in the first panel, in viewport pixels
  const gd = document.querySelector('div.plot[data-figure="' + figure + '"]');
  gd.scrollIntoView({block: 'center'});
  const trace = gd._fullData.find(d => d.name === variant && d.xaxis === 'x');
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
  const inside = (p, a) => Math.min(Math.max(p, 1), a._length - 1);  // a point on the axis line hovers nothing
  return [box.left + xa._offset + inside(xa.l2p(trace.x[t]), xa), box.top + ya._offset + inside(ya.l2p(trace.y[t]), ya)];
})"""
_HOVER_LABEL = """Array.from(document.querySelectorAll('div.plot[data-figure="mass_vs_position"] .hoverlayer .hovertext'))
  .map(h => Array.from(h.querySelectorAll('tspan.line')).map(line => line.textContent).join('\\n'))"""


def hover_problems(browser: Browser, records: list[dict]) -> list[str]:
    """Hover the baseline's mass curve in the first layer at the first claim of its first answer: the label
    must name the variant it shows and the token that variant's first answer wrote there, with its claim."""
    if not browser.evaluate("!!document.querySelector('div.plot[data-figure=\"mass_vs_position\"]')"):
        return []
    first = {}
    for r in records:
        if r["variant"] not in first or r["request"] < first[r["variant"]]["request"]:
            first[r["variant"]] = r
    example = first.get("baseline") or next(iter(first.values()))
    t = next((c["token"] for c in example["claims"] if c["token"] is not None), 0)
    x, y = browser.evaluate(f"{_POINT}('mass_vs_position', {json.dumps(example['variant'])}, {t})")
    browser.hover(x, y)
    labels = browser.evaluate(_HOVER_LABEL)
    if not labels:
        return [f"hovering position {t} of {example['variant']}'s mass curve showed no label"]
    shown = labels[0].split("\n")
    variant = shown[0].split(", layer ")[0]
    if variant not in first:
        return [f"the hover label at position {t} names no variant of the records: {labels[0]!r}"]
    record = first[variant]
    piece = json.dumps(record["pieces"][t], ensure_ascii=False)
    claims = [c["text"] for c in record["claims"] if c["token"] == t]
    if not any(f"token {piece}" in line for line in shown) or not all(any(c in line for line in shown) for c in claims):
        return [f"the hover label at position {t} of {variant} does not show its token {piece}"
                f"{' and claim ' + repr(claims[0]) if claims else ''}: {labels[0]!r}"]
    return []


def network_problems(page: Path, urls: list[str]) -> list[str]:
    """Every request but the page itself and inline data: the page must work offline, in one file."""
    return [f"the page requested {url}" for url in urls if url != page.as_uri() and not url.startswith("data:")]


_SHOW_PVM = """(() => {  // the first answer with PVM maps, at its last correct claim
  const answers = JSON.parse(document.getElementById('explorer-data').textContent).answers;
  const select = document.getElementById('ex-answer');
  select.value = String(Math.max(0, answers.findIndex(a => a.pvm)));
  select.dispatchEvent(new Event('change'));
  Array.from(document.querySelectorAll('#ex-tokens span.ok')).pop().click();
})()"""


def headline_text(metrics: dict) -> dict:
    """What the headline table must show for metrics.json (the page's own formatting rules); nothing for a suite
    of one-word answers, which has no headline by quarter."""
    if not metrics["metric"].get("positional", True):
        return {}
    return {variant: dict(headline_cells(row)) for variant, row in metrics["headline"]["variants"].items()}


def warning_problems(expected: list[str], shown: list[str]) -> list[str]:
    """A warning on the page (e.g. no claim parsed) is a problem a reader meets; one that metrics.json holds
    and the page does not show is a problem too."""
    return ([f"the page warns: {w}" for w in shown]
            + [f"metrics.json warns, the page does not: {w}" for w in expected if w not in shown])


def check_report(page: Path, screenshot: Path | None = None, explorer: Path | None = None) -> list[str]:
    """Problems a reader would meet in `page` (empty when none), checked in headless chromium; `screenshot`:
    the whole page there, `explorer`: the token explorer there (after a click on a late claim)."""
    page = Path(page).resolve()
    metrics = json.loads((page.parent / "metrics.json").read_text())
    problems = []
    with Browser() as browser:
        browser.load(page.as_uri())
        problems += [f"figure {alt} did not render" for alt, ok in browser.evaluate(_FIGURES) if not ok]
        problems += [f"interactive figure {name} was not drawn" for name, ok in browser.evaluate(_PLOTS) if not ok]
        problems += hover_problems(browser, read_records(page.parent / RECORDS))
        problems += [f"canvas {name} was not drawn" for name, lit in browser.evaluate(_CANVASES) if not lit]
        if browser.evaluate("!!document.getElementById('ex-tokens')"):
            changed, asked, shown = browser.evaluate(_CLICK)
            if not changed or asked != shown:
                problems.append(f"clicking token {asked} did not redraw the explorer's heat map (shows {shown})")
        shown = browser.evaluate(_HEADLINE)
        if shown != headline_text(metrics):
            problems.append(f"headline differs from metrics.json: page {shown}, metrics {headline_text(metrics)}")
        problems += warning_problems(metrics.get("warnings", []), browser.evaluate(_WARNINGS))
        problems += browser.errors()
        problems += network_problems(page, browser.requests())
        if explorer and browser.evaluate("!!document.getElementById('ex-tokens')"):
            browser.evaluate(_SHOW_PVM)
            browser.element_screenshot("#explorer", Path(explorer))
        if screenshot:
            browser.screenshot(Path(screenshot))
    return problems


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("--screenshot", type=Path, help="default: screenshot.png beside the report")
    parser.add_argument("--explorer", type=Path, help="also a screenshot of the token explorer here")
    args = parser.parse_args(argv)
    problems = check_report(args.page, args.screenshot or args.page.parent / "screenshot.png", args.explorer)
    for problem in problems:
        print(f"report check: {problem}", file=sys.stderr)
    print("report check: ok" if not problems else f"report check: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
