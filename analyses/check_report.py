"""Open report.html in headless Chromium: fail on JavaScript errors or plots that did not render.

    python analyses/check_report.py out/report/report.html [--screenshot out/report/screenshot.png]

Needs Debian's `chromium` (apt-get install chromium). Runs as `make report-check`, not in CI.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=10000"]


def chromium(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args],
                              capture_output=True, text=True, timeout=120)


def check(page: Path, screenshot: Path | None) -> list[str]:
    url = page.resolve().as_uri()
    dom = chromium("--dump-dom", url)
    problems = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and re.search(r"Uncaught|Error", line)]
    expected = page.read_text().count("Plotly.newPlot")
    rendered = dom.stdout.count('class="main-svg"') // 2  # plotly draws two main-svg layers per plot
    if rendered < expected:
        problems.append(f"{expected} plotly figures in the page, {rendered} rendered")
    if "<img" in dom.stdout and 'src="data:image/png;base64,' not in dom.stdout:
        problems.append("figures missing")
    if screenshot:
        chromium(f"--screenshot={screenshot.resolve()}", "--window-size=1200,2400", url)
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args(argv)
    problems = check(args.page, args.screenshot)
    for problem in problems:
        print(f"report check: {problem}", file=sys.stderr)
    print("report check: ok" if not problems else f"report check: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
