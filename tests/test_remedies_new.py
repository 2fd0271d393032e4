"""OPERA, DoLa, VISTA and SPARC on the real VLM classes, each against an independent hand computation."""

import math

import pytest
import torch
from conftest import continuation_inputs
from test_remedies import SPECIAL, assert_same_logits, full_logits, generate, hook_counts, images_for, stepwise

from pvm_probe.backbones import decoder_layers
from pvm_probe.remedies import SPARC, VISTA, DoLa
from pvm_probe.zoo import ARCHS, IMAGE_TOKEN, fake_request, tiny_model


# ---- DoLa -------------------------------------------------------------------------------------------
@torch.no_grad()
def hand_dola(model, batch, candidates, relative_top, penalty):
    """The official contrast at the prompt's last position, from HF's own hidden states: [B, V], [B]."""
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    final = out.logits[:, -1].double()  # [B, V]
    p_f = final.softmax(-1)
    rows = []
    for row in range(final.shape[0]):
        scores = []
        for j in candidates:
            p_j = model.lm_head(out.hidden_states[j][row, -1]).double().softmax(-1)  # [V]
            m = (p_f[row] + p_j) / 2
            kl_f = (p_f[row] * (p_f[row] / m).log()).mean()  # F.kl_div(..., 'none').mean(-1): a mean over V
            kl_j = (p_j * (p_j / m).log()).mean()
            scores.append(float(kl_f + kl_j) / 2)
        rows.append(candidates[max(range(len(scores)), key=scores.__getitem__)])
    expected = []
    for row, j in enumerate(rows):
        lp_f = p_f[row].log()
        lp_j = model.lm_head(out.hidden_states[j][row, -1]).double().log_softmax(-1)
        logits = lp_f - lp_j
        logits[lp_f < lp_f.max() + math.log(relative_top)] = float("-inf")
        for token in set(batch["input_ids"][row].tolist()):  # HF's repetition penalty, written out
            logits[token] = logits[token] * penalty if logits[token] < 0 else logits[token] / penalty
        expected.append(logits)
    return torch.stack(expected).float(), rows


@pytest.mark.parametrize("arch", ARCHS)
def test_dola_equals_the_official_contrast_from_hf_hidden_states(arch):
    model = tiny_model(arch)
    batch = fake_request(model, images_for(arch) + [None], prompt_len=5)
    candidates, relative_top, penalty = [0, 1, 2, 3], 0.9, 1.2  # a high cut-off: flat tiny models keep many
    expected, chosen = hand_dola(model, batch, candidates, relative_top, penalty)
    with DoLa(model, layers=candidates, relative_top=relative_top, repetition_penalty=penalty) as dola:
        with torch.no_grad():
            got = model(**batch).logits[:, -1]
    assert dola.chosen[0].tolist() == chosen
    assert torch.isinf(expected).any() and torch.isfinite(expected).any()
    assert_same_logits(got, expected, atol=1e-5)


def test_dola_candidate_layers_follow_the_official_buckets():
    from pvm_probe.remedies.dola import candidate_layers

    model = tiny_model("qwen3_vl")
    assert candidate_layers(model, "low") == [0] and candidate_layers(model, "high") == [2]
    model.config.get_text_config().num_hidden_layers = 32  # the rule only reads the depth
    decoder_layers(model).extend([decoder_layers(model)[0]] * 28)
    assert candidate_layers(model, "low") == [0, 2, 4, 6, 8, 10, 12, 14]  # voidism/DoLa README, LLaMA-7B
    assert candidate_layers(model, "high") == list(range(16, 32, 2))


@pytest.mark.parametrize("arch", ARCHS)
def test_dola_repetition_penalty_alone_equals_generate_with_it(arch):
    """The penalty is applied by the remedy itself: it must match transformers' own processor in generate."""
    model = tiny_model(arch)
    batch = fake_request(model, images_for(arch), prompt_len=5)
    plain = generate(model, batch, new=6, repetition_penalty=1.2)
    with DoLa(model, layers=[], repetition_penalty=1.2):
        ours = generate(model, batch, new=6)
    assert torch.equal(ours.sequences, plain.sequences)


# ---- VISTA ------------------------------------------------------------------------------------------
def layer_outputs(model, **inputs):
    """Every decoder layer's output in one uncached forward, and the logits."""
    seen, handles = {}, []
    for i, layer in enumerate(decoder_layers(model)):
        handles.append(layer.register_forward_hook(
            lambda _m, _a, o, i=i: seen.__setitem__(i, o[0] if isinstance(o, tuple) else o)))
    try:
        with torch.no_grad():
            logits = model(**inputs).logits
    finally:
        for h in handles:
            h.remove()
    return [seen[i] for i in range(len(seen))], logits


def official_vsv_layer(x, v, lam):
    """llm_layers.py::VSVLayer.forward for one vector, as written there (x [1, T, d], v [d])."""
    x = x.float()
    original_norm = torch.norm(x, p=2, dim=-1, keepdim=True)
    lambda_sim = 1.0 + torch.max(torch.tensor([0.0]), torch.nn.functional.cosine_similarity(
        x, -v[None, None, :], dim=-1)).unsqueeze(-1)
    y = lam * lambda_sim * torch.nn.functional.normalize(v, dim=-1).repeat(1, x.shape[1], 1)
    return torch.nn.functional.normalize(torch.nn.functional.normalize(x, p=2, dim=-1) + y, p=2, dim=-1) * original_norm


def text_only_row(batch, row):
    ids = batch["input_ids"][row][batch["attention_mask"][row].bool()]
    return ids[~torch.isin(ids, torch.tensor(SPECIAL))][None]


@pytest.mark.parametrize("arch", ARCHS)
def test_vista_equals_the_official_vsv_and_sla_by_hand(arch):
    model = tiny_model(arch)
    batch = fake_request(model, images_for(arch) + [None], prompt_len=5)  # row 2: no image, not steered
    lam, alpha, sla = 0.5, 0.4, [1, 2]
    with VISTA(model, vsv_lambda=lam, logits_alpha=alpha, logits_layers=sla) as vista:
        out = generate(model, batch)
    B, L = 3, len(decoder_layers(model))
    positive, _ = layer_outputs(model, **batch)
    vectors = torch.zeros(B, L, model.config.get_text_config().hidden_size)
    for row in range(2):  # rows with an image: their own prompt with and without it, one by one
        negative, _ = layer_outputs(model, input_ids=text_only_row(batch, row))
        vectors[row] = torch.stack([positive[i][row, -1] - negative[i][0, -1] for i in range(L)])
    torch.testing.assert_close(vista.vectors[:2], vectors[:2], atol=1e-5, rtol=0)
    handles = []
    for i, layer in enumerate(decoder_layers(model)):
        def hook(_m, _a, o, i=i):
            return torch.cat([official_vsv_layer(o[r:r + 1], vectors[r, i], lam) if r < 2 else o[r:r + 1]
                              for r in range(B)])
        handles.append(layer.mlp.register_forward_hook(hook))
    try:
        outputs, logits = layer_outputs(model, **continuation_inputs(batch, out.sequences))
    finally:
        for h in handles:
            h.remove()
    early = torch.stack([model.lm_head(outputs[i]) for i in sla]).mean(0)
    expected = (alpha * early + (1 - alpha) * logits)[:, batch["input_ids"].shape[1] - 1:-1]
    assert_same_logits(stepwise(out), expected, atol=1e-5)
    assert not torch.allclose(stepwise(out), full_logits(model, batch, out.sequences), atol=1e-3)


def test_vista_sla_window_scales_with_depth():
    from pvm_probe.remedies.vista import sla_window

    assert sla_window(32) == [25, 26, 27, 28, 29, 30] and sla_window(36) == list(range(28, 34))
    assert sla_window(4) == [2] and sla_window(12) == [9, 10]


# ---- SPARC ------------------------------------------------------------------------------------------
def sparc_by_hand(model, batch, alpha, beta, tau, layer, new):
    """The official rule written as two hooks on an eager model's generate: before each decode forward, the
    image values selected at the previous step are scaled by alpha in every layer's cache; after it, the
    selection from HF's own attention weights of `layer` (head mean, last query) against their moving average."""
    P = batch["input_ids"].shape[1]
    image = batch["input_ids"] == IMAGE_TOKEN  # [B, P]
    state = {"average": None, "selected": None, "selections": []}

    def before(_m, _a, kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache.get_seq_length() > 0 and state["selected"] is not None:
            for cached in cache.layers:
                cached.values[:, :, :P] *= torch.where(state["selected"], alpha, 1.0)[:, None, :, None]

    def after(_m, _a, _kw, output):
        a = output.attentions[layer][:, :, -1, :P].mean(1)  # [B, P]
        if state["average"] is None:
            state["average"] = a
            return
        e = state["average"]
        state["selected"] = image & ((a - e) / e >= tau)
        state["selections"].append(state["selected"])
        state["average"] = (1 - beta) * a + beta * e

    handles = [model.register_forward_pre_hook(before, with_kwargs=True),
               model.register_forward_hook(after, with_kwargs=True)]
    try:
        out = generate(model, batch, new=new, output_attentions=True)
    finally:
        for h in handles:
            h.remove()
    return out, state["selections"]


# Thresholds at which the rule picks some, not all, image tokens on these random models (their decoded tokens look
# at the image less than the prompt's last token did, so the official 1.5 would never fire here).
TAU = {"qwen3_vl": 0.0, "qwen2_5_vl": -0.1, "llava": -0.05}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_sparc_equals_the_official_rule_on_hf_attention_weights(arch, attn):
    alpha, beta, tau, layer, new = 3.0, 0.3, TAU[arch], 2, 6
    reference = tiny_model(arch, attn="eager")
    batch = fake_request(reference, images_for(arch), prompt_len=5)
    expected, selections = sparc_by_hand(reference, batch, alpha, beta, tau, layer, new)
    model = tiny_model(arch, attn=attn)
    with SPARC(model, alpha=alpha, beta=beta, tau=tau, selected_layer=layer) as sparc:
        out = generate(model, batch, new=new)
    chosen = torch.stack(selections)  # [new - 1, B, P]
    image = batch["input_ids"] == IMAGE_TOKEN
    assert chosen[:-1].any() and (chosen[:-1] != image).any()  # the rule bites, selectively
    assert torch.equal(torch.stack(sparc.selections), chosen)
    assert torch.equal(out.sequences, expected.sequences)
    assert_same_logits(stepwise(out), stepwise(expected), atol=1e-5)
    assert not torch.allclose(stepwise(out), stepwise(generate(model, batch, new=new)), atol=1e-4)
