"""LogitLens during generate against independent references over the same tokens:
Hugging Face's own `output_hidden_states`, an nnsight trace, and a TransformerLens bridge."""

import tempfile

import numpy as np
import pytest
import torch
from conftest import continuation_inputs

from pvm_probe.probes import LogitLens, LogitLensResult, VisualAttentionMass
from pvm_probe.zoo import ARCHS, Image, fake_request, tiny_model

NEW = 4


def generate(model, batch):
    with torch.no_grad():
        return model.generate(**batch, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)


def reference_metrics(layer_logits, final_logits):
    """Hand-written lens metrics. layer_logits [L, B, T, V], final_logits [B, T, V] -> dict of [B, L, T]."""
    lp = torch.log_softmax(layer_logits.double(), -1)
    fp = torch.log_softmax(final_logits.double(), -1)
    token = fp.argmax(-1)  # [B, T]
    kl = (fp.exp() * (fp - lp)).sum(-1)
    chosen = torch.stack([lp[i].gather(-1, token[..., None])[..., 0] for i in range(len(lp))])  # [L, B, T]
    rank = (lp > chosen[..., None]).sum(-1)
    swap = lambda x: x.transpose(0, 1).numpy()  # noqa: E731  [L, B, T] -> [B, L, T]
    return {"kl": swap(kl), "prob": swap(chosen.exp()), "rank": swap(rank), "token": token.numpy()}


def check(result, ref):
    np.testing.assert_allclose(result.kl, ref["kl"], atol=1e-4)
    np.testing.assert_allclose(result.prob, ref["prob"], atol=1e-5)
    np.testing.assert_array_equal(result.rank, ref["rank"])
    np.testing.assert_array_equal(result.final_token, ref["token"])


def window(x, P, dim=1):
    return x.narrow(dim, P - 1, NEW)  # positions that produced generated tokens 0..NEW-1


@pytest.mark.parametrize("arch", ARCHS)
def test_matches_hf_hidden_states(arch):
    model = tiny_model(arch)
    batch = fake_request(model, [Image(4, 4), None])
    with LogitLens(model) as lens:
        sequences = generate(model, batch)
    P = batch["input_ids"].shape[1]
    with torch.no_grad():
        out = model(**continuation_inputs(batch, sequences), output_hidden_states=True)
        lm = model.model.language_model
        hs = out.hidden_states  # (embeddings, layer 0, ..., layer L-2, norm(layer L-1))
        layer_logits = torch.stack([model.lm_head(lm.norm(h)) for h in hs[1:-1]] + [model.lm_head(hs[-1])])
    check(lens.result, reference_metrics(window(layer_logits, P, 2),
                                         window(out.logits, P)))
    np.testing.assert_array_equal(lens.result.final_token, sequences[:, P:].numpy())  # greedy: generated tokens


def hook_counts(model):
    return {n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules()}


def nnsight_layer_logits(model, inputs, n_layers):
    from nnsight import NNsight

    traced, saved = NNsight(model), []
    with torch.no_grad():
        with traced.trace(**inputs):
            for i in range(n_layers):
                saved.append(traced.model.language_model.layers[i].output.save())
            logits = traced.output.logits.save()
    lm = model.model.language_model
    with torch.no_grad():
        return torch.stack([model.lm_head(lm.norm(h)) for h in saved]), logits


def test_matches_nnsight_trace_with_pvm_attached(qwen3_pvm):
    model, _handle = qwen3_pvm
    batch = fake_request(model, [Image(4, 4), Image(2, 2)])
    before = hook_counts(model)
    with LogitLens(model) as lens:
        sequences = generate(model, batch)
    assert hook_counts(model) == before  # the lens leaves PVM's hooks and nothing else
    P = batch["input_ids"].shape[1]
    layer_logits, logits = nnsight_layer_logits(model, continuation_inputs(batch, sequences), 4)
    check(lens.result, reference_metrics(window(layer_logits, P, 2), window(logits, P)))
    assert hook_counts(model) == before


def test_matches_transformer_lens_bridge(monkeypatch):
    """TransformerLens 4 boots LLaVA offline from a local config + tokenizer and the live HF model.
    (Its Qwen3-VL adapter needs torchvision, which this environment does not have.)"""
    pytest.importorskip("transformer_lens")
    from transformer_lens.model_bridge.sources.transformers import helpers
    # Without a processor in the directory TransformerLens pip-installs torchvision mid-run, which pulls a
    # CUDA torch over the pinned CPU build of the running venv; the bridge needs no processor here.
    monkeypatch.setattr(helpers, "_ensure_torchvision", lambda: False)
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    model, twin = tiny_model("llava"), tiny_model("llava")  # same seed, same weights; TL gets the twin
    batch = fake_request(model, [Image(4, 4)])
    with LogitLens(model) as lens:
        sequences = generate(model, batch)
    P = batch["input_ids"].shape[1]
    with tempfile.TemporaryDirectory() as d:
        twin.config.architectures = [type(twin).__name__]
        twin.config.save_pretrained(d)
        words = Tokenizer(models.WordLevel({f"t{i}": i for i in range(128)}, unk_token="t3"))
        words.pre_tokenizer = pre_tokenizers.Whitespace()
        PreTrainedTokenizerFast(tokenizer_object=words, unk_token="t3", pad_token="t0", bos_token="t1",
                                eos_token="t2", add_bos_token=True).save_pretrained(d)
        bridge = TransformerBridge.boot_transformers(d, hf_model=twin, device="cpu", tokenizer=AutoTokenizer.from_pretrained(d))
    full = continuation_inputs(batch, sequences)
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(full["input_ids"], pixel_values=full["pixel_values"])
        resid = torch.stack([cache[f"blocks.{i}.hook_resid_post"] for i in range(4)])  # [L, B, S, d]
        layer_logits = bridge.unembed(bridge.ln_final(resid))
    check(lens.result, reference_metrics(window(layer_logits, P, 2), window(logits, P)))


def test_convergence_layer_and_composition(tmp_path):
    model = tiny_model("qwen2_5_vl")
    batch = fake_request(model, [Image(4, 4)])
    with LogitLens(model) as lens, VisualAttentionMass(model) as mass:
        generate(model, batch)
    result = lens.result
    assert mass.result.shares.shape[3] == NEW
    agree = result.top1 == result.final_token[:, None]
    conv = result.convergence_layer()  # [B, T]
    for b, t in np.ndindex(conv.shape):  # by hand: first layer from which every later layer agrees
        expected = next(i for i in range(4) if agree[b, i:, t].all())
        assert conv[b, t] == expected
    assert (result.top1[:, -1] == result.final_token).all()  # the last layer is the model's output
    result.save(tmp_path / "lens")
    loaded = LogitLensResult.load(tmp_path / "lens")
    np.testing.assert_array_equal(loaded.kl, result.kl)
    np.testing.assert_array_equal(loaded.convergence_layer(), conv)
    assert result.lens == loaded.lens == "logit"
