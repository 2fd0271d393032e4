"""The report end to end on the shipped baseline and a fresh adapter (small sizes)."""

import json

import pytest
import torch

from pvm_probe import PVMConfig, attach_pvm
from pvm_probe.cli import main
from pvm_probe.loading import load_base
from pvm_probe.report import SCHEMA_VERSION


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    model, _ = load_base()
    torch.manual_seed(0)
    handle = attach_pvm(model, PVMConfig.for_model(128, 4, n_blocks=2))
    with torch.no_grad():
        for block in handle.blocks.values():
            block.alpha.fill_(0.05)
    path = tmp_path_factory.mktemp("adapter")
    handle.save(path, provenance={"stage": "untrained, for the test"})
    return path


def test_report_writes_html_metrics_and_figures(tmp_path, adapter):
    assert main(["report", "--pvm", str(adapter), "--out", str(tmp_path), "--scenes", "4", "--probe-scenes", "2"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["schema_version"] == SCHEMA_VERSION
    base, pvm = metrics["models"]["baseline"], metrics["models"][str(adapter)]
    assert len(base["accuracy_by_quartile"]) == 4 and len(base["claim_mass_by_quarter"]) == 4  # 4 layers
    assert base["accuracy_by_quartile"][0] > 0.75  # far above chance (1/36) while the image is in the window
    assert metrics["setting"]["attention_window"] == 128
    assert len(pvm["pvm_queried_cell_by_quarter"]) == 2 and len(pvm["pvm_queried_cell_by_quarter"][0]) == 4
    assert set(pvm["alpha"]) == {"1", "2"} and pvm["alpha"]["1"] == pytest.approx(0.05)
    assert "accuracy_by_quartile_swapped" in pvm and "accuracy_by_quartile_gates_off" in pvm
    assert pvm["accuracy_by_quartile_gates_off"] == base["accuracy_by_quartile"]  # alpha = 0 is the baseline
    for name in ("accuracy_by_quartile", "mass_vs_position", "logit_lens_kl", "gates", "retrieval_overlay",
                 "pvm_queried_cell"):
        assert (tmp_path / f"{name}.png").stat().st_size > 5_000
        assert (tmp_path / f"{name}.svg").is_file()
    page = (tmp_path / "report.html").read_text()
    assert "<script src=" not in page and "<link" not in page  # offline: nothing loaded from elsewhere
    assert page.count("Plotly.newPlot") == 2 and "data:image/png;base64," in page
    assert "last 128 tokens" in page and "the paper's numbers" in page.lower()


def test_claim_mass_skips_a_claim_cut_off_at_the_budget():
    import numpy as np

    from pvm_probe.report.collect import claim_mass_by_quarter

    tokens = ["p0", "r0c0", "red", "circle", "p1", "r0c1", "blue", "star", "p2", "r0c2"]  # p2's colour never came
    image = np.arange(2 * len(tokens), dtype=float).reshape(1, 2, len(tokens))  # [B=1, L=2, T]
    mass = claim_mass_by_quarter(image, [tokens])  # [1, 4, 2]
    np.testing.assert_allclose(mass[0, 0], image[0, :, 2])  # rows 2 and 6 predict the two colours
    np.testing.assert_allclose(mass[0, 1], image[0, :, 6])
    assert np.isnan(mass[0, 2:]).all()


def test_queried_cell_share_reads_the_weight_on_the_named_cell():
    import numpy as np

    from pvm_probe.report.collect import queried_cell_share

    tokens = ["p0", "r0c0", "red", "circle", "p1", "r1c2", "blue", "star"]  # cells 0 and 6 (row-major)
    weights = np.zeros((1, 1, 2, len(tokens), 16))  # [B, L, H, T, N]
    weights[0, 0, :, 2, 0] = [0.5, 0.7]  # row 2 predicts r0c0's colour
    weights[0, 0, :, 6, 6] = [0.9, 0.9]  # row 6 predicts r1c2's colour
    weights[0, 0, :, 6, 0] = 0.1  # a cell nobody asked for does not count
    share = queried_cell_share(weights, [tokens])  # [1, 4, 1]
    np.testing.assert_allclose(share[0, :2, 0], [0.6, 0.9])
    assert np.isnan(share[0, 2:]).all()
