"""Every figure script runs end to end at smoke size and writes its PNG and SVG (its `main(argv)`, called in
this process as `python analyses/fig_X.py --smoke` would call it)."""

import importlib.util
from pathlib import Path

import pytest

ANALYSES = Path(__file__).parent.parent / "analyses"
SCRIPTS = sorted(ANALYSES.glob("fig_*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_figure_script_smoke(script, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ANALYSES))  # figure_common, as when the script runs from its folder
    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--smoke", "--out", str(tmp_path)])
    pngs = list(tmp_path.glob("*.png"))
    assert pngs and all(p.stat().st_size > 5_000 for p in pngs)
    assert {p.stem for p in pngs} == {p.stem for p in tmp_path.glob("*.svg")}
