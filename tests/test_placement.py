"""The paper's insertion strategies on profiles whose answer is known by construction, and on a real
measured profile (the streaming probe, itself checked against eager attention in the probe tests)."""

import numpy as np
import pytest
import torch

from pvm_probe.backbones import decoder_layers
from pvm_probe.config import strided_layers
from pvm_probe.loading import load_base
from pvm_probe.placement import all_placements, max_decay, measure_mass, peak_attention, place
from pvm_probe.suites import ScenesSuite
from pvm_probe.suites.inputs import chat_inputs


def _profile(levels, decays, t=64):
    """[L, T] hyperbolic dilution a / (1 + k t) per layer: `levels` set the mass, `decays` its fall."""
    steps = np.arange(t)
    return np.stack([a / (1 + k * steps) for a, k in zip(levels, decays, strict=True)])


def test_strategies_pick_the_constructed_layers():
    mass = _profile(levels=[.1, .5, .4, .1, .2, .1], decays=[.0, .01, .02, .5, .3, .0])
    assert peak_attention(mass, 2) == (1, 2)
    assert max_decay(mass, 2) == (3, 4)
    assert strided_layers(36, 3) == (8, 16, 24)  # the paper's layers for Qwen3-VL-8B
    assert all_placements(mass, 2) == {"strided": strided_layers(6, 2), "peak": (1, 2), "decay": (3, 4)}


def test_max_decay_is_scale_free_and_ignores_ended_rows():
    mass = _profile(levels=[1.0, .01], decays=[.05, .05])
    assert np.isclose(*(1 - mass[:, -16:].mean(1) / mass[:, :16].mean(1)))  # same rate at any level
    ragged = _profile(levels=[.1, .5], decays=[.3, .01])
    ragged[0, 60:] = np.nan  # positions no request reached in this layer's mean
    assert max_decay(ragged, 1) == (0,) and peak_attention(ragged, 1) == (1,)


@pytest.mark.parametrize("bad, message", [("middle", "unknown placement"), (None, "cannot place")])
def test_bad_requests_name_the_problem(bad, message):
    mass = _profile([.1, .2], [.1, .1])
    with pytest.raises(ValueError, match=message):
        place(bad or "peak", mass, 1 if bad else 3)
    with pytest.raises(ValueError, match="at least 4 positions"):
        place("peak", mass[:, :2], 1)


def test_measured_profile_equals_eager_attention_weights(tiny_checkpoints):
    """Reference: eager `output_attentions` of one full forward per request over prompt + its answer, averaged
    over the requests whose answer reaches each position."""
    model, processor = load_base(tiny_checkpoints["qwen3_vl"], attn_implementation="eager")
    suite = ScenesSuite(scenes=2, image_size=64, max_new_tokens=6)
    mass = measure_mass(model, processor, suite, batch_size=2)  # [L, T]
    rows = []
    for i in range(2):
        inputs = chat_inputs(processor, [suite.request(i)], model.device)
        with torch.no_grad():
            sequences = model.generate(**inputs, max_new_tokens=6, do_sample=False)
            full = {**inputs, "input_ids": sequences, "attention_mask": torch.ones_like(sequences),
                    "mm_token_type_ids": torch.nn.functional.pad(inputs["mm_token_type_ids"],
                                                                 (0, sequences.shape[1] - inputs["input_ids"].shape[1]))}
            attentions = model(**full, output_attentions=True).attentions  # L x [1, H, S, S]
        P, image = inputs["input_ids"].shape[1], sequences[0] == model.config.image_token_id
        rows.append(np.stack([a[0, :, P - 1:-1][..., image].sum(-1).mean(0).numpy() for a in attentions]))
    width = max(r.shape[1] for r in rows)
    expected = np.nanmean(np.stack([np.pad(r, ((0, 0), (0, width - r.shape[1])), constant_values=np.nan)
                                    for r in rows]), axis=0)  # [L, T]
    np.testing.assert_allclose(mass, expected[:, : mass.shape[1]], atol=1e-5)
    assert all_placements(mass, 2)["peak"] == tuple(sorted(np.argsort(-np.nanmean(mass, 1))[:2].tolist()))


def test_placement_command_on_a_local_checkpoint(tmp_path, capsys):
    import json

    from pvm_probe.cli import main
    from pvm_probe.zoo import save_tiny_checkpoint

    save_tiny_checkpoint("llava", tmp_path / "llava")
    assert main(["placement", "--base", str(tmp_path / "llava"), "--blocks", "1", "--scenes", "2",
                 "--max-new-tokens", "8", "--image-size", "64", "--json", str(tmp_path / "p.json")]) == 0
    result = json.loads((tmp_path / "p.json").read_text())
    assert result["suite"]["suite"] == "scenes" and set(result["layers"]) == {"strided", "peak", "decay"}
    mass = np.array(result["mean_mass"])
    assert result["layers"]["peak"] == [int(mass.argmax())]
    assert main(["placement", "--base", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


def constructed_profile(layers: int, peak: int, decay: int) -> np.ndarray:
    """[layers, 64]: every layer at mass .1 with a slow fall (k = .01), except `peak` at .5 (same fall) and
    `decay` at .2 falling fast (k = .5): by hand the highest mean mass is `peak`'s, the largest relative drop
    `decay`'s."""
    levels, decays = [.1] * layers, [.01] * layers
    levels[peak], levels[decay], decays[decay] = .5, .2, .5
    return _profile(levels, decays)


def measured_by_hand(monkeypatch, peak: int, decay: int) -> list:
    """Replace train-pvm's measured profile with a constructed one; returns the (model, suite) each measurement
    got."""
    from pvm_probe.train import run

    asked = []

    def measure(model, processor, suite, *args, **kwargs):
        asked.append((model, suite))
        return constructed_profile(len(decoder_layers(model)), peak, decay)

    monkeypatch.setattr(run, "measure_mass", measure)  # where train-pvm measures
    return asked


def test_train_pvm_places_blocks_by_the_measured_profile(tmp_path, monkeypatch):
    """train-pvm puts the blocks where the strategy says on the profile it measured on the base (here a
    constructed profile: layer 2 peaks, layer 0 decays fastest; the measurement itself is checked above)."""
    from pvm_probe.checkpoints import read_adapter_meta
    from pvm_probe.cli import main
    from pvm_probe.suites import WorldSuite

    asked = measured_by_hand(monkeypatch, peak=2, decay=0)
    common = ["--steps", "1", "--examples", "2", "--batch-size", "2", "--blocks", "1", "--warmup", "0"]
    for strategy, layer in (("peak", 2), ("decay", 0)):
        assert main(["train-pvm", "--out", str(tmp_path / strategy), "--placement", strategy, "--alpha-init", "0.5",
                     *common]) == 0
        meta = read_adapter_meta(tmp_path / strategy)["pvm"]
        assert meta["layers"] == [layer] and meta["alpha_init"] == 0.5
    (model, suite), _ = asked
    assert len(decoder_layers(model)) == 4 and isinstance(suite, WorldSuite) and len(suite) == 8
    assert main(["train-pvm", "--out", str(tmp_path / "both"), "--placement", "peak", "--layers", "1", *common]) == 2
