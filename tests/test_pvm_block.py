"""The PVM block: parameter count (by hand from the config) at 8B shape and others, the init trap, Theorem 4.1, config round trip."""

import pytest
import torch
from conftest import SMALL_PVM, small_config
from transformers import Qwen3VLForConditionalGeneration

from pvm_probe import InputError, PVMConfig, attach_pvm, count_pvm_params, strided_layers
from pvm_probe.memory import MLPControlBlock, PVMBlock
from pvm_probe.zoo import Image, fake_request, qwen3_vl_config, tiny_model


def by_hand(pvm: PVMConfig, hidden: int) -> int:
    """DESIGN section 2, from the config's fields: W_x, W_v (d -> d') and W_up (d' -> d); q and o over num_heads
    heads, k and v over num_kv_heads, of head_dim each; SwiGLU's gate, up and down (d' x ffn_dim); RMSNorms with
    weights on norm(x_lat) and the FFN input (d') and on q and k (head_dim); the gate alpha. The norm after W_up
    has no weights. No biases anywhere."""
    d, latent, head = hidden, pvm.latent_dim, pvm.head_dim
    projections = 3 * d * latent
    attention = 2 * latent * pvm.num_heads * head + 2 * latent * pvm.num_kv_heads * head
    ffn = 3 * latent * pvm.ffn_dim
    norms_and_gate = 2 * latent + 2 * head + 1
    return len(pvm.layers) * (projections + attention + ffn + norms_and_gate)


def test_8b_parameter_count_on_meta_device():
    config = qwen3_vl_config("qwen3-vl-8b")
    with torch.device("meta"):
        model = Qwen3VLForConditionalGeneration(config)
    preset = PVMConfig.preset("qwen3-vl-8b")
    handle = attach_pvm(model, preset)
    assert handle.num_parameters() == by_hand(preset, config.text_config.hidden_size)
    assert abs(handle.num_parameters() / 1e6 - 27.92) <= 0.01  # the paper: 27.92 M
    assert count_pvm_params(preset, config) == handle.num_parameters()
    backbone = sum(p.numel() for n, p in model.named_parameters() if ".pvm." not in n)
    share = handle.num_parameters() / backbone
    assert 0.0030 < share < 0.0034  # the paper: 0.32 % of 8B
    handle.remove()


@pytest.mark.parametrize("preset, pvm", [("qwen3-vl-4b", None), ("qwen3-vl-8b", small_config(num_kv_heads=2)),
                                         ("qwen3-vl-8b", small_config(layers=(0, 1, 2), ffn_dim=40))])
def test_parameter_count_follows_the_config(preset, pvm):
    """Other widths, heads and layer counts than the 8B preset's: each field enters the count as by hand."""
    config = qwen3_vl_config(preset)
    pvm = pvm or PVMConfig.preset(preset)
    n = count_pvm_params(pvm, config)
    print(f"{preset}, layers {pvm.layers}: {n / 1e6:.2f} M PVM parameters")
    assert n == by_hand(pvm, config.text_config.hidden_size)


def test_mlp_control_is_iso_parameter():
    for hidden, cfg in [(4096, PVMConfig.preset("qwen3-vl-8b")), (64, small_config())]:
        pvm = sum(p.numel() for p in PVMBlock(cfg, hidden).parameters())
        mlp = sum(p.numel() for p in MLPControlBlock(cfg, hidden).parameters())
        assert abs(mlp - pvm) / pvm < 0.01


def _pvm_params(handle):
    return {name: p.detach().clone() for name, p in handle.named_parameters()}


def _train_steps(model, handle, steps):
    batch = fake_request(model, [Image(4, 4)])
    optimizer = torch.optim.AdamW(handle.parameters(), lr=1e-2, weight_decay=0.0)
    snapshots = [_pvm_params(handle)]
    for _ in range(steps):
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        snapshots.append(_pvm_params(handle))
    return snapshots


def test_init_trap_alpha_moves_first_then_everything():
    model = tiny_model("qwen3_vl")
    model.requires_grad_(False)
    handle = attach_pvm(model, small_config())
    start, one, two = _train_steps(model, handle, 2)
    moved_once = {n for n in start if not torch.equal(start[n], one[n])}
    assert moved_once == {n for n in start if n.endswith("alpha")}
    assert all(not torch.equal(start[n], two[n]) for n in start), "some PVM parameter never moved"


def test_zero_w_up_with_zero_alpha_is_the_trap():
    """The init trap (alpha = 0 and W_up = 0) really is stuck: nothing moves, ever."""
    model = tiny_model("qwen3_vl")
    model.requires_grad_(False)
    handle = attach_pvm(model, small_config())
    with torch.no_grad():
        for block in handle.blocks.values():
            block.w_up.weight.zero_()
    start, _, two = _train_steps(model, handle, 2)
    assert all(torch.equal(start[n], two[n]) for n in start)


def _visual_kv(model, handle, prompt_len):
    batch = fake_request(model, [Image(4, 4)], prompt_len=prompt_len, seed=5, image_at=prompt_len - 2)
    with torch.no_grad():
        model(**batch)
    return handle.memory.kv


@pytest.mark.parametrize("source, invariant", [("embeddings", True), ("hidden:0", False)])
def test_theorem_4_1_normaliser_ignores_the_text_horizon(source, invariant):
    """For a fixed query, PVM's output and softmax normaliser do not depend on the preceding text.

    The same image (same seed, same pixels) follows 2 or 198 text tokens and precedes 2 more. Raw visual embeddings give identical memories; the
    processed-states control (hidden states of layer 0) mixes in the text and must not be invariant.
    """
    model = tiny_model("qwen3_vl")
    handle = attach_pvm(model, small_config(visual_source=source))
    query = torch.randn(1, 1, model.config.text_config.hidden_size)  # [1, 1, d] a fixed local query
    outs = []
    for prompt_len in (4, 200):
        kv = _visual_kv(model, handle, prompt_len)[3]
        out, weights = handle.blocks[3].retrieve(query, kv, return_weights=True)
        outs.append((out, weights))
    same = torch.allclose(outs[0][0], outs[1][0], atol=1e-6) and torch.allclose(outs[0][1], outs[1][1], atol=1e-6)
    assert same is invariant


def test_config_json_round_trip(tmp_path):
    cfg = PVMConfig.preset("qwen3-vl-4b", visual_source="hidden:2", block="mlp")
    cfg.to_json(tmp_path / "c.json")
    assert PVMConfig.from_json(tmp_path / "c.json") == cfg


def test_presets_and_scaling_rule():
    assert PVMConfig.preset("qwen3-vl-8b").layers == (8, 16, 24)
    assert PVMConfig.preset("qwen3-vl-4b").layers == (5, 11, 17)
    scaled = PVMConfig.for_model(4096, 36)
    assert (scaled.layers, scaled.latent_dim, scaled.head_dim, scaled.ffn_dim) == ((8, 16, 24), 512, 128, 1536)
    tiny = PVMConfig.for_model(128, 4, n_blocks=2)
    assert tiny.latent_dim == 64 and all(0 < i < 4 for i in tiny.layers) and len(tiny.layers) == 2
    assert strided_layers(28, 3) == (6, 12, 19)


@pytest.mark.parametrize("bad, message", [
    (dict(latent_dim=30), r"latent_dim must equal num_heads x head_dim \(4 x 8 = 32\), got 30"),
    (dict(num_heads=3), r"latent_dim must equal num_heads x head_dim \(3 x 8 = 24\)"),
    (dict(block="lora"), "block must be one of 'pvm', 'mlp', got 'lora'"),
    (dict(visual_source="hidden:3"), "must precede"),
    (dict(visual_source="pixels"), "visual_source must be 'embeddings' or 'hidden:<layer>'"),
])
def test_bad_configs_are_refused(bad, message):
    with pytest.raises(InputError, match=message):
        PVMConfig(layers=(1, 3), **{**SMALL_PVM, **bad})


def _reference_block(block, x, visual, key_mask):
    """The block written out naively, one query head at a time (kv head = head // group)."""
    ca, eps = block.cross_attn, 1e-6

    def rms(t, w=None):
        t = t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + eps)
        return t if w is None else t * w

    x_lat, v_lat = x @ block.w_x.weight.T, visual @ block.w_v.weight.T  # [T, d'], [N, d']
    q_in = rms(x_lat, block.attn_norm.weight)
    heads = []
    for h in range(ca.num_heads):
        j = h // (ca.num_heads // ca.num_kv_heads)
        rows = slice(h * ca.head_dim, (h + 1) * ca.head_dim)
        kv_rows = slice(j * ca.head_dim, (j + 1) * ca.head_dim)
        q = rms(q_in @ ca.q_proj.weight[rows].T, ca.q_norm.weight)  # [T, hd]
        k = rms(v_lat @ ca.k_proj.weight[kv_rows].T, ca.k_norm.weight)  # [N, hd]
        v = v_lat @ ca.v_proj.weight[kv_rows].T  # [N, hd]
        scores = (q @ k.T) / ca.head_dim**0.5
        scores[:, ~key_mask] = float("-inf")
        heads.append(scores.softmax(-1) @ v)
    a = x_lat + torch.cat(heads, -1) @ ca.o_proj.weight.T
    f = block.ffn
    n = rms(a, block.ffn_norm.weight)
    h_lat = a + (torch.nn.functional.silu(n @ f.gate_proj.weight.T) * (n @ f.up_proj.weight.T)) @ f.down_proj.weight.T
    return block.alpha * rms(h_lat @ block.w_up.weight.T)


def test_block_matches_a_naive_per_head_reference():
    torch.manual_seed(0)
    cfg = small_config(num_heads=4, num_kv_heads=2, head_dim=8, latent_dim=32)
    block = PVMBlock(cfg, 64)
    with torch.no_grad():
        block.alpha.fill_(0.7)
        for norm in (block.attn_norm, block.ffn_norm, block.cross_attn.q_norm, block.cross_attn.k_norm):
            norm.weight.uniform_(0.5, 1.5)
    x, visual = torch.randn(5, 64), torch.randn(7, 64)
    key_mask = torch.tensor([True] * 5 + [False] * 2)  # two padded visual slots
    kv = block.visual_kv(visual[None], key_mask[None])
    got = block(x[None], kv, torch.ones(1, 5, dtype=torch.bool))[0]
    with torch.no_grad():
        torch.testing.assert_close(got, _reference_block(block, x, visual, key_mask), atol=1e-5, rtol=1e-5)
