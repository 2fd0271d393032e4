"""Every figure script runs end to end at smoke size and writes its PNG and SVG."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).parent.parent / "analyses").glob("fig_*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_figure_script_smoke(script, tmp_path):
    subprocess.run([sys.executable, str(script), "--smoke", "--out", str(tmp_path)], check=True,
                   capture_output=True, timeout=600)
    pngs = list(tmp_path.glob("*.png"))
    assert pngs and all(p.stat().st_size > 5_000 for p in pngs)
    assert {p.stem for p in pngs} == {p.stem for p in tmp_path.glob("*.svg")}
