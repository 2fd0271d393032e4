"""OPERA, DoLa, VISTA and SPARC on the real VLM classes, each against an independent hand computation."""

import math

import pytest
import torch
from conftest import continuation_inputs
from test_remedies import (
    SPECIAL,
    assert_same_logits,
    full_logits,
    generate,
    hook_counts,
    images_for,
    stepwise,
)

from pvm_probe.backbones import decoder_layers
from pvm_probe.remedies import OPERA, SPARC, VISTA, DoLa, replay
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


# ---- OPERA ------------------------------------------------------------------------------------------
@torch.no_grad()
def hand_penalty(model, batch, seq, candidate, scale, P):
    """The official penalty of one candidate after one beam, from HF's eager attention of one full forward."""
    full = torch.cat([seq, candidate.view(1)])[None]  # [1, P + n + 1]
    out = model(**continuation_inputs(batch, full), output_attentions=True)
    att = out.attentions[-1][0].amax(0)[P:]  # [n + 1, T] the answer rows, max over heads
    att = att / att.sum(-1, keepdim=True)
    local = scale * att[:, P:]  # [n + 1, n + 1]
    width = local.shape[0]
    columns = [1e-7 * torch.prod(local[j:, j]) for j in range(width)]
    column = torch.stack(columns).half().float()
    if width <= 10:
        image = batch["input_ids"][0] == IMAGE_TOKEN
        return -att[-1, :P][image].sum(), column.argmax()
    return column.max(), column.argmax()


def check_penalties(model, batch, opera, steps):
    P = batch["input_ids"].shape[1]
    for s in steps:
        entry = opera.trace[s]
        for k in range(entry["seqs"].shape[0]):
            for c in range(entry["candidates"].shape[1]):
                value, _ = hand_penalty(model, batch, entry["seqs"][k], entry["candidates"][k, c], opera.scale, P)
                torch.testing.assert_close(entry["penalties"][k, c], value, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_opera_penalty_equals_the_official_formula_on_eager_attention(arch):
    model = tiny_model(arch, attn="eager")
    batch = fake_request(model, [images_for(arch)[0]], prompt_len=5)  # one request: its prompt has no padding
    opera = OPERA(model, num_beams=2, num_attn_candidates=3, scale_factor=80.0, rollback=False)
    opera.decode(batch, 13)
    assert len(opera.trace) >= 12
    late = torch.stack([e["penalties"] for e in opera.trace[11:]])
    assert (late > 0).any() and torch.isfinite(late).all()  # the column products are in float16's range here
    check_penalties(model, batch, opera, [0, 3, 9, 11])  # widths 1, 4, 10 (last image bonus), 12


@pytest.mark.parametrize("arch", ARCHS)
def test_opera_answers_replay_through_generate(arch):
    model = tiny_model(arch)
    batch = fake_request(model, images_for(arch) + [None], prompt_len=5)
    decoded = OPERA(model, num_beams=2, num_attn_candidates=3).decode(batch, 8)
    greedy = generate(model, batch, new=8).sequences
    assert decoded.shape[1] <= batch["input_ids"].shape[1] + 8 and not torch.equal(decoded, greedy)
    replayed = replay(model, batch, decoded, return_dict_in_generate=True, output_logits=True)
    assert torch.equal(replayed.sequences, decoded)


class RollBackAt(OPERA):
    """OPERA whose trigger fires once, when the window is `width` wide, back to `target`."""

    def __init__(self, model, width, target, **kw):
        super().__init__(model, **kw)
        self.at = (width, target)

    def _rollback_target(self, gathered, used, width, kept):
        if width == self.at[0] and not self.rollbacks:
            return self.at[1]
        return None


@pytest.mark.parametrize("arch", ARCHS)
def test_opera_rollback_restores_the_beams_and_forbids_their_tokens(arch):
    model = tiny_model(arch, attn="eager")
    batch = fake_request(model, [images_for(arch)[0]], prompt_len=5)
    P = batch["input_ids"].shape[1]
    opera = RollBackAt(model, 12, 10, num_beams=2, num_attn_candidates=3, scale_factor=80.0)
    opera.decode(batch, 14)
    (event,) = opera.rollbacks
    assert not set(event["forbidden"]) & set(event["chosen"])  # the (beam, token) pairs chosen before
    before, after = opera.trace[10]["seqs"], opera.trace[12]["seqs"]  # step 10 as first decoded, and redone
    assert after.shape[1] == P + 11
    assert all(any(torch.equal(row[:P + 10], old) for old in before) for row in after)
    check_penalties(model, batch, opera, [12, 13])  # the rebuilt cache and restored rows give the official values


def test_opera_rollback_rule_is_the_official_one():
    opera = OPERA(tiny_model("qwen3_vl"), threshold=2, num_attn_candidates=1, window_size=64)
    used = torch.zeros(64, dtype=torch.long)
    fire = torch.tensor([[12, 12, 12, 12], [12, 3, 12, 12]])  # loc 12: 4 and 3 times > 2
    assert opera._rollback_target(fire, used, 20, 20) == 13
    assert opera._rollback_target(fire, used, 20, 20) == 12  # position 13 used up (1 candidate): one earlier
    assert opera._rollback_target(fire, used, 20, 20) is None  # both used up
    assert opera._rollback_target(torch.tensor([[12, 5, 12], [12, 12, 12]]), used, 20, 20) is None  # 2 is not > 2
    assert opera._rollback_target(torch.tensor([[9, 9, 9, 9], [9, 9, 9, 9]]), used, 20, 20) is None  # loc < 10
    assert OPERA(opera.model, rollback=False)._rollback_target(fire, used, 20, 20) is None


# ---- off switches, clean removal, bad settings -----------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_opera_off_switch_is_greedy(arch):
    model = tiny_model(arch)
    batch = fake_request(model, images_for(arch) + [None], prompt_len=5)
    with torch.no_grad():
        greedy = model.generate(**batch, max_new_tokens=8, do_sample=False)
    decoded = OPERA(model, num_beams=1, penalty_weights=0.0, rollback=False).decode(batch, 8)
    assert torch.equal(decoded, greedy)


ACTIVE = {
    "dola": lambda m: DoLa(m, layers=[0, 1, 2]),
    "vista": lambda m: VISTA(m),
    "sparc": lambda m: SPARC(m, alpha=3.0, tau=-1.0),
}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", list(ACTIVE))
@pytest.mark.parametrize("fail", [False, True])
def test_every_hook_comes_off(arch, name, fail):
    model = tiny_model(arch)
    batch = fake_request(model, images_for(arch), prompt_len=5)
    plain = stepwise(generate(model, batch, new=3))
    hooks = hook_counts(model)
    try:
        with ACTIVE[name](model):
            changed = stepwise(generate(model, batch, new=3))
            if fail:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        assert fail
    assert not torch.allclose(changed.nan_to_num(neginf=0), plain, atol=1e-4)
    assert hook_counts(model) == hooks
    assert_same_logits(stepwise(generate(model, batch, new=3)), plain, atol=0)


def test_opera_decode_removes_its_hook_on_error():
    model = tiny_model("qwen3_vl")
    batch = fake_request(model, [images_for("qwen3_vl")[0]])
    hooks = hook_counts(model)
    opera = OPERA(model, num_beams=2, num_attn_candidates=2)

    def fail(*_a, **_k):
        raise KeyboardInterrupt

    opera._candidates = fail
    with pytest.raises(KeyboardInterrupt):
        opera.decode(batch, 4)
    assert hook_counts(model) == hooks


@pytest.mark.parametrize("make", [lambda m: VISTA(m), lambda m: SPARC(m)])
def test_image_remedies_refuse_a_request_without_an_image(make):
    model = tiny_model("qwen3_vl")
    with pytest.raises(ValueError, match="needs an image"), make(model):
        generate(model, fake_request(model, [None, None]))



@pytest.mark.parametrize("threshold,reads", [(-1.0, 1), (1.0, 2)])
def test_memvr_stops_reading_the_vocabulary_once_every_image_row_has_fired(monkeypatch, threshold, reads):
    """Checks after layers 1 and 2: rows that all fire at layer 1 need one read-out per forward, none firing two."""
    import pvm_probe.remedies.memvr as memvr

    calls, entropy = [], memvr.top_k_entropy
    monkeypatch.setattr(memvr, "top_k_entropy", lambda logits: calls.append(len(logits)) or entropy(logits))
    model = tiny_model("qwen3_vl")
    batch = fake_request(model, [images_for("qwen3_vl")[0], None], prompt_len=5)  # row 1 has no image: never waits
    with memvr.MemVR(model, ratio=0.5, threshold=threshold, start_layer=0, end_layer=3) as remedy:
        generate(model, batch, new=3)
    assert len(calls) == reads * len(remedy.triggers)


# ---- through the runner --------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_new_remedies_run_as_variants_with_the_probes(arch, tiny_checkpoints, tmp_path):
    """VISTA's two extra prompt forwards, DoLa's contrast and SPARC's cache edits leave the probes reading the
    answer's own rows; everything comes off afterwards."""
    import numpy as np
    from test_runner import scenes_run

    from pvm_probe.runner import RunConfig, run
    from pvm_probe.variants import BASELINE, Variant

    model, processor, suite, records = scenes_run(tiny_checkpoints[arch], tmp_path / "plain", tokens=5)
    remedies = [Variant(name, remedy=name) for name in ("dola", "vista", "sparc")]
    armed = run(model, processor, suite, remedies, tmp_path / "armed", RunConfig(batch_size=2, progress=False))
    assert [r["variant"] for r in armed] == ["dola", "dola", "vista", "vista", "sparc", "sparc"]
    for r in armed:
        assert np.shape(r["mass"]["image"]) == (4, r["n_tokens"]) and len(r["lens"]["convergence"]) == r["n_tokens"]
    again = run(model, processor, suite, [BASELINE], tmp_path / "again", RunConfig(batch_size=2, progress=False))
    assert [r["answer"] for r in again] == [r["answer"] for r in records]


@pytest.mark.parametrize("arch", ARCHS)
def test_probes_read_opera_answers_through_replay(arch):
    """The attention-mass probe riding on the replay reports the image share of the decoded answer's own rows."""
    from pvm_probe.probes import VisualAttentionMass

    model = tiny_model(arch, attn="eager")
    batch = fake_request(model, images_for(arch), prompt_len=5)
    decoded = OPERA(model, num_beams=2, num_attn_candidates=3).decode(batch, 6)
    with VisualAttentionMass(model) as mass:
        replayed = replay(model, batch, decoded)
    assert torch.equal(replayed, decoded)
    P = batch["input_ids"].shape[1]
    with torch.no_grad():
        full = model(**continuation_inputs(batch, decoded), output_attentions=True).attentions
    image = (decoded == IMAGE_TOKEN)[:, None]  # [B, 1, S]
    for t in range(decoded.shape[1] - P - 1):  # steps while both rows still run
        for layer in range(len(full)):
            rows = full[layer][:, :, P - 1 + t, : P + t]  # [B, H, S_t] the query that predicted answer token t
            share = (rows * image[..., : P + t]).sum(-1)
            probe = torch.tensor(mass.result.shares[:, layer, :, t, 0])
            torch.testing.assert_close(probe, share, atol=1e-5, rtol=0)
