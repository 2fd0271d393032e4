"""The CLI, called in-process."""

import json

import pytest
from conftest import small_config

from pvm_probe import attach_pvm
from pvm_probe.cli import main
from pvm_probe.zoo import tiny_model


def test_info_describes_an_adapter(tmp_path, capsys):
    model = tiny_model("qwen3_vl")
    handle = attach_pvm(model, small_config())
    handle.save(tmp_path / "a", provenance={"stage": "I"})
    assert main(["info", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "layers       [1, 3]" in out and f"{handle.num_parameters():,}" in out and '"stage": "I"' in out


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pvm-probe info: error: no adapter directory") and "\n" not in err




def test_probe_prints_headline_numbers_and_saves_results(capsys, tmp_path):
    assert main(["probe", "--scenes", "2", "--json", str(tmp_path / "p.json")]) == 0
    headline = json.loads(capsys.readouterr().out)
    assert set(headline) == {"claim_mass_by_quarter", "dilution_plateau", "dilution_break_t", "convergence_layer_mean"}
    saved = json.loads((tmp_path / "p.json").read_text())
    assert len(saved["mass_by_layer"]) == 4 and len(saved["dilution"]["plateau"]) == 4


def test_bench_rejects_unknown_names():
    with pytest.raises(SystemExit):
        main(["bench", "nope"])
