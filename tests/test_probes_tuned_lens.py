"""TunedLens: the identity lens is the LogitLens bit for bit, a translated reading matches a hand
computation on Hugging Face's hidden states, training lowers the KL on generations it never saw, and
saved lenses only load onto their own base."""

import json

import numpy as np
import pytest
import torch
from conftest import continuation_inputs
from test_probes_logit_lens import NEW, check, generate, reference_metrics, window

from pvm_probe.checkpoints import AdapterMismatchError, base_fingerprint
from pvm_probe.probes import LensData, LensTraining, LogitLens, TunedLens, record_generations
from pvm_probe.probes.tuned_lens import CONFIG_FILE, WEIGHTS_FILE, _batches, _before_end
from pvm_probe.zoo import ARCHS, Image, fake_request, tiny_model


def random_lens(model, seed=0, scale=0.3):
    """A lens with non-zero translators of moderate size."""
    lens = TunedLens.for_model(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for w, b in zip(lens.weights, lens.biases, strict=True):
            w.copy_(torch.randn(w.shape, generator=g) * scale / w.shape[1] ** 0.5)
            b.copy_(torch.randn(b.shape, generator=g) * scale)
    return lens


def one_line(err) -> bool:
    return "\n" not in str(err.value) and len(str(err.value)) > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_identity_lens_is_the_logit_lens_exactly(arch):
    model = tiny_model(arch)
    batch = fake_request(model, [Image(4, 4), None])
    with LogitLens(model) as plain, LogitLens(model, lens=TunedLens.for_model(model)) as tuned:
        generate(model, batch)
    a, b = plain.result, tuned.result
    for name in ("kl", "rank", "prob", "top1", "final_token"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a.convergence_layer(), b.convergence_layer())
    np.testing.assert_array_equal(a.mean_kl(), b.mean_kl())
    assert (a.lens, b.lens) == ("logit", "tuned")


def test_translated_reading_matches_hand_computation():
    """A random lens on chosen layers (the last included) against h + A h + b on HF's hidden states."""
    model = tiny_model("qwen3_vl")
    lens, layers = random_lens(model), [0, 2, 3]
    batch = fake_request(model, [Image(4, 4), Image(2, 2)])
    with LogitLens(model, layers=layers, lens=lens) as probe:
        sequences = generate(model, batch)
    P = batch["input_ids"].shape[1]
    last = {}
    hook = model.model.language_model.layers[3].register_forward_hook(lambda _m, _a, out: last.update(h=out))
    with torch.no_grad():
        out = model(**continuation_inputs(batch, sequences), output_hidden_states=True)
    hook.remove()
    states = {0: out.hidden_states[1], 2: out.hidden_states[3], 3: last["h"]}  # layer outputs [B, S, d]
    lm = model.model.language_model
    with torch.no_grad():
        A, b = [w.double() for w in lens.weights], [b.double() for b in lens.biases]
        translated = [states[i].double() + states[i].double() @ A[i].T + b[i] for i in layers]
        layer_logits = torch.stack([model.lm_head(lm.norm(h.float())) for h in translated])  # [L, B, S, V]
    check(probe.result, reference_metrics(window(layer_logits, P, 2), window(out.logits, P)))
    assert probe.result.kl[:, -1].max() > 1e-3  # the random lens really moves the last layer


def test_recorded_states_are_the_models_and_stop_at_the_end():
    model = tiny_model("qwen3_vl")
    batch = fake_request(model, [Image(4, 4), None])
    data = record_generations(model, batch, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)
    assert data.hidden.shape == (4, 2 * NEW, 64) and data.final.shape == (2 * NEW, 64)
    with torch.no_grad():
        sequences = generate(model, batch)
        P = batch["input_ids"].shape[1]
        hs = model(**continuation_inputs(batch, sequences), output_hidden_states=True).hidden_states
    row0 = [window(h, P)[0] for h in hs[1:4]]  # layers 0..2 of row 0, [NEW, d] each
    for layer, ref in enumerate(row0):
        torch.testing.assert_close(data.hidden[layer, :NEW], ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(data.final[:NEW], window(hs[-1], P)[0], atol=1e-5, rtol=1e-4)  # normed final
    keep = _before_end(torch.tensor([[5, 2, 0, 0], [5, 6, 7, 2], [2, 2, 9, 9]]), [2])
    assert keep.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_minibatches_cover_the_data_without_repeats_within_an_epoch():
    chunks = _batches(10, LensTraining(steps=5, batch_tokens=4), torch.Generator().manual_seed(0))
    assert [len(c) for c in chunks] == [4] * 5
    for epoch in (chunks[0:2], chunks[2:4]):  # 2 chunks of 4 per epoch, no position twice
        assert len(set(torch.cat(epoch).tolist())) == 8
    assert all(c.equal(torch.arange(3)) for c in _batches(3, LensTraining(steps=4), torch.Generator()))


def probe_kl(model, batch, lens, **generate_kwargs):
    with torch.no_grad(), LogitLens(model, lens=lens) as probe:
        model.generate(**batch, do_sample=False, **generate_kwargs)
    return probe.result


@pytest.mark.slow
def test_training_lowers_held_out_kl_tiny_qwen3():
    model = tiny_model("qwen3_vl")

    def sampled(seed):
        torch.manual_seed(seed)
        batch = fake_request(model, [Image(4, 4)] * 8, seed=seed, prompt_len=8)
        return record_generations(model, batch, max_new_tokens=64, min_new_tokens=64, do_sample=True)

    train = LensData.cat([sampled(1), sampled(2)])  # 1,024 positions
    lens = TunedLens.for_model(model)
    history = lens.fit(model, train)
    assert history[-1] < 0.85 * history[0]
    held_out = fake_request(model, [Image(4, 4)] * 4, seed=10, prompt_len=8)  # other prompts and images
    before = probe_kl(model, held_out, None, max_new_tokens=32, min_new_tokens=32)
    after = probe_kl(model, held_out, lens, max_new_tokens=32, min_new_tokens=32)
    assert after.mean_kl()[:3].mean() < 0.9 * before.mean_kl()[:3].mean()
    assert after.kl[:, -1].max() < 1e-5  # the last layer's translator stays (near) the identity


@pytest.fixture(scope="module")
def baseline():
    from pvm_probe.loading import load_base
    from pvm_probe.suites import WorldSuite
    from pvm_probe.suites.inputs import chat_inputs

    model, processor = load_base()
    settings = dict(max_new_tokens=72)

    def inputs(seed):
        suite = WorldSuite(scenes=4, seed=seed, length=0)
        return chat_inputs(processor, list(suite.requests()), model.device)

    return model, inputs, settings


@pytest.mark.slow
def test_training_lowers_held_out_kl_on_the_baseline(baseline):
    model, inputs, settings = baseline
    train = record_generations(model, inputs(1), do_sample=False, **settings)
    assert len(train) == 4 * 65  # four short answers, each up to and including its end token
    lens = TunedLens.for_model(model)
    lens.fit(model, train)
    held_out = inputs(2)  # other held-out scenes
    before, after = probe_kl(model, held_out, None, **settings), probe_kl(model, held_out, lens, **settings)
    np.testing.assert_array_equal(before.final_token, after.final_token)
    recorded = record_generations(model, held_out, do_sample=False, **settings)  # the same 4 x 65 positions
    np.testing.assert_allclose(lens.kl(model, recorded).numpy(), after.mean_kl(), atol=1e-4)
    assert (after.mean_kl()[:3] < 0.7 * before.mean_kl()[:3]).all()  # every layer below the last
    assert after.mean_kl()[:3].mean() < 0.5 * before.mean_kl()[:3].mean()
    assert after.kl[:, -1].max() < 1e-4  # the last layer read through its translator: still ~0


def test_save_load_round_trip(tmp_path):
    model = tiny_model("qwen3_vl")
    lens = random_lens(model)
    lens.config.training = {**LensTraining(steps=7).to_dict(), "tokens": 3}
    lens.save(tmp_path / "lens")
    assert sorted(p.name for p in (tmp_path / "lens").iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])
    meta = json.loads((tmp_path / "lens" / CONFIG_FILE).read_text())
    assert (meta["num_layers"], meta["hidden_size"]) == (4, 64)
    assert meta["base"] == json.loads(json.dumps(base_fingerprint(model)))
    assert meta["training"]["steps"] == 7
    loaded = TunedLens.load(tmp_path / "lens", model)
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), lens.parameters(), strict=True))
    assert loaded.config == lens.config
    batch = fake_request(model, [Image(4, 4)])
    with LogitLens(model, lens=lens) as a, LogitLens(model, lens=loaded) as b:
        generate(model, batch)
    np.testing.assert_array_equal(a.result.kl, b.result.kl)


def test_load_refuses_another_base(tmp_path):
    model = tiny_model("qwen3_vl")
    TunedLens.for_model(model).save(tmp_path / "lens")
    for other in (tiny_model("qwen3_vl", seed=1), tiny_model("qwen2_5_vl")):
        with pytest.raises(AdapterMismatchError) as err:
            TunedLens.load(tmp_path / "lens", other)
        assert one_line(err) and "another base" in str(err.value)
    with pytest.raises(AdapterMismatchError):
        LogitLens(tiny_model("qwen3_vl", seed=1), lens=TunedLens.for_model(model))


def test_bad_directories_give_one_line_errors(tmp_path):
    from safetensors.torch import save_file

    model = tiny_model("qwen3_vl")
    (tmp_path / "empty").mkdir()
    for nowhere in (tmp_path / "nowhere", tmp_path / "empty"):
        with pytest.raises(FileNotFoundError) as err:
            TunedLens.load(nowhere, model)
        assert one_line(err)
    lens_dir = TunedLens.for_model(model).save(tmp_path / "lens")
    weights = lens_dir / WEIGHTS_FILE
    for bad, match in [({"weight": torch.zeros(4, 64, 32), "bias": torch.zeros(4, 64)}, "shape"),
                       ({"weight": torch.zeros(4, 64, 64)}, "expected")]:
        save_file(bad, weights)
        with pytest.raises(ValueError, match=match) as err:
            TunedLens.load(lens_dir, model)
        assert one_line(err)
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="corrupted") as err:
        TunedLens.load(lens_dir, model)
    assert one_line(err)
    weights.unlink()
    with pytest.raises(FileNotFoundError) as err:
        TunedLens.load(lens_dir, model)
    assert one_line(err)
    config = lens_dir / CONFIG_FILE
    meta = json.loads(config.read_text())
    for text in ("{not json", json.dumps({**meta, "format_version": 99}), json.dumps({"format_version": 1})):
        config.write_text(text)
        with pytest.raises(ValueError, match="corrupted") as err:
            TunedLens.load(lens_dir, model)
        assert one_line(err)
