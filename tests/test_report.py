"""The report end to end: the embedded default with a shipped adapter and its controls, every suite's layout on
tiny checkpoints, whole-or-nothing output under SIGTERM, and readable file modes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pvm_probe.cli import main
from pvm_probe.records import RECORDS, read_records
from pvm_probe.report import SCHEMA_VERSION

FIGURES = ("claims_by_quarter", "mass_vs_position", "claim_mass_by_quarter", "accuracy_vs_mass", "logit_lens",
           "pvm_gates", "retrieval_overlay")


@pytest.fixture(scope="module")
def world_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("world") / "report"
    assert main(["report", "--pvm", "pvm-stage1", "--scenes", "4", "--out", str(out)]) == 0
    return out


@pytest.mark.slow  # the world report with controls and a tuned lens at the long setting
def test_world_report_has_every_section_and_the_controls(world_report):
    metrics = json.loads((world_report / "metrics.json").read_text())
    assert metrics["schema_version"] == SCHEMA_VERSION == 2 and metrics["suite"] == "world"
    assert list(metrics["variants"]) == ["baseline", "pvm-stage1", "pvm-stage1 | gates off",
                                         "pvm-stage1 | swapped image"]
    base, pvm = metrics["variants"]["baseline"], metrics["variants"]["pvm-stage1"]
    assert base["primary_by_quarter"][0] > 0.75  # far above chance (1/36) while the image is in the window
    assert metrics["variants"]["pvm-stage1 | gates off"]["claims_by_quarter"] == base["claims_by_quarter"]
    assert metrics["setting"]["attention_window"] == 128 and metrics["image_leaves_window_at"] > 100
    assert len(base["mass_by_layer"]) == 4 and len(base["claim_mass_by_quarter"]) == 4
    assert set(pvm["pvm"]) >= {"layers", "alpha", "on_claimed_region_by_quarter", "claimed_region_chance"}
    assert pvm["pvm"]["claimed_region_chance"] == pytest.approx(1 / 16)
    for name in FIGURES + ("training_curves",):
        assert (world_report / f"{name}.png").stat().st_size > 5_000 and (world_report / f"{name}.svg").is_file()


@pytest.mark.slow
def test_world_report_page_is_offline_and_says_what_the_figures_show(world_report):
    from plotly.offline import get_plotlyjs

    page = (world_report / "report.html").read_text()
    assert page.count(get_plotlyjs()) == 1  # inline, once (its license comments name web sites: not loads)
    ours = page.replace(get_plotlyjs(), "")
    assert "<script src=" not in ours and "<link" not in ours and "http://" not in ours.replace(
        "http://www.w3.org", "")  # nothing loaded from elsewhere (SVG namespaces are not loads)
    assert page.count('class="caption"') >= len(FIGURES) + 1  # every figure and the explorer
    assert "last 128 tokens" in page and "The paper's numbers" in page
    assert 'id="explorer-data"' in page and 'id="headline"' in page
    assert (world_report / "report.html").stat().st_size < 10_000_000


@pytest.mark.slow
def test_headline_cells_are_the_metrics_numbers(world_report):
    import re

    metrics = json.loads((world_report / "metrics.json").read_text())
    page = (world_report / "report.html").read_text()
    row = re.search(r'<tr data-variant="pvm-stage1">(.*?)</tr>', page).group(1)
    cells = dict(re.findall(r'data-key="(\w+)">([^<]*)<', row))
    head = metrics["headline"]["variants"]["pvm-stage1"]
    assert cells["q4"] == f"{100 * head['q4']:.1f}" and cells["gain_q4"] == f"{head['gain_q4']:+.1f}"


@pytest.mark.slow
def test_files_get_the_modes_any_file_the_user_writes_gets(tmp_path):
    """Under the umask set here (not the usual 022, so neither 0o644 nor a private 0o600 passes): folders
    0o777 and files 0o666 less the umask, as `mkdir` and `open` give."""
    umask = 0o027
    old = os.umask(umask)
    try:
        assert main(["report", "--pvm", "pvm-stage1", "--no-controls", "--no-tuned-lens", "--scenes", "2",
                     "--length", "0", "--out", str(tmp_path / "report")]) == 0
    finally:
        os.umask(old)
    for path in [tmp_path / "report", *(tmp_path / "report").rglob("*")]:
        assert path.stat().st_mode & 0o777 == (0o777 if path.is_dir() else 0o666) & ~umask, path


@pytest.mark.slow
def test_a_report_killed_by_sigterm_leaves_the_old_one_whole_and_resumes(tmp_path):
    out = tmp_path / "report"
    quick = ["--pvm", "pvm-stage1", "--no-controls", "--no-tuned-lens"]
    assert main(["report", "--scenes", "2", *quick, "--out", str(out)]) == 0
    old_page = (out / "report.html").read_text()
    command = [sys.executable, "-m", "pvm_probe.cli", "report", "--scenes", "6", "--batch-size", "1", *quick,
               "--out", str(out)]
    work = tmp_path / ".report.partial"
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 300
    while len(read_records(work / RECORDS)) < 3 and time.time() < deadline and child.poll() is None:
        time.sleep(0.2)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 143 and err.strip().endswith("stopped by SIGTERM")
    assert (out / "report.html").read_text() == old_page  # the old report, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == [".report.partial", "report"]  # no temp litter
    done = len(read_records(work / RECORDS))
    assert 3 <= done < 12
    assert main(command[3:]) == 0  # resumes: the done records are kept
    assert not work.exists() and json.loads((out / "metrics.json").read_text())["setting"]["scenes"] == 6
    assert len(read_records(out / RECORDS)) == 12
