"""`report --suite chair | pope | amber` end to end on tiny checkpoints (one family each), with the baseline, a
PVM adapter and its controls, and every registered remedy: the benchmark metrics land in metrics.json, the page
shows them beside the published rows, and a report rebuilt from the folder alone is the same."""

import json
import shutil

import pytest
import torch
from conftest import open_gates, small_config

from pvm_probe import attach_pvm
from pvm_probe.benchmarks.mini_amber import write_mini_amber
from pvm_probe.benchmarks.mini_coco import write_mini_coco
from pvm_probe.cli import main
from pvm_probe.loading import load_base
from pvm_probe.registry import REMEDIES
from pvm_probe.report import build_report

CASES = {  # suite -> (family, its data flags)
    "chair": ("qwen3_vl", lambda tmp: ["--coco", str(write_mini_coco(tmp / "coco")), "--sample", "3"]),
    "pope": ("qwen2_5_vl", lambda tmp: ["--coco", str(write_mini_coco(tmp / "coco")), "--splits", "popular",
                                        "--image-count", "2", "--per-image", "1"]),
    "amber": ("llava", lambda tmp: ["--amber", str(write_mini_amber(tmp / "amber"))]),
}


def _adapter(checkpoint, directory):
    model, _ = load_base(checkpoint)
    torch.manual_seed(0)
    handle = attach_pvm(model, small_config())
    open_gates(handle)
    handle.save(directory)
    handle.remove()
    return directory


@pytest.mark.slow
@pytest.mark.parametrize("suite", list(CASES))
def test_benchmark_suite_report(suite, tiny_checkpoints, tmp_path):
    arch, data = CASES[suite]
    adapter = _adapter(tiny_checkpoints[arch], tmp_path / "adapters" / "pvm")
    remedies = [flag for name in REMEDIES.names() for flag in ("--remedy", name)]
    out = tmp_path / "report"
    assert main(["report", "--base", str(tiny_checkpoints[arch]), "--suite", suite, *data(tmp_path),
                 "--max-new-tokens", "8", "--pvm", str(adapter), *remedies, "--no-tuned-lens", "--explore", "0",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    variants = ["baseline", "pvm", "pvm | gates off", "pvm | swapped image", *REMEDIES.names()]
    assert list(metrics["benchmark"]) == variants == list(metrics["variants"])
    assert bool(metrics["published"]) == (suite != "amber")  # AMBER's papers give no row we could check
    page = (out / "report.html").read_text()
    assert f"Benchmark: {suite}" in page
    assert ("as reported, not measured here" in page) == bool(metrics["published"])
    if suite != "pope":  # POPE's claims are yes/no answers: no hallucination by quarter to draw
        assert (out / "benchmark_by_quarter.png").is_file()
    assert metrics["metric"]["positional"] is (suite != "pope")  # one-word answers: no quarters, the table leads
    assert (out / "claims_by_quarter.png").is_file() is (suite != "pope")
    assert ("position within the answer does not apply" in page) is (suite == "pope")
    gates_off = metrics["benchmark"]["pvm | gates off"]
    assert gates_off == metrics["benchmark"]["baseline"]  # alpha = 0 is the backbone, answer for answer
    shutil.rmtree(tmp_path / "adapters")
    shutil.rmtree(tmp_path / ("amber" if suite == "amber" else "coco"))
    build_report(out)
    assert json.loads((out / "metrics.json").read_text()) == metrics
