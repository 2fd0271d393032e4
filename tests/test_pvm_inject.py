"""Attaching PVM to real Hugging Face VLM classes: identity at init, decode = full forward, batching."""

import pytest
import torch
from conftest import continuation_inputs, open_gates, small_config

from pvm_probe import attach_pvm
from pvm_probe.zoo import ARCHS, Image, fake_request, tiny_model


def logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def images_for(arch):
    # LLaVA's tower takes one fixed image size; Qwen towers take any grid.
    return [Image(4, 4), Image(4, 4)] if arch == "llava" else [Image(4, 4), Image(4, 8)]


@pytest.mark.parametrize("arch", ARCHS)
def test_alpha_zero_is_bit_identical_and_remove_restores(arch):
    model = tiny_model(arch)
    batch = fake_request(model, images_for(arch))
    before = logits(model, batch)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks_before = hook_counts(model)
    handle = attach_pvm(model, small_config())
    assert torch.equal(logits(model, batch), before)
    open_gates(handle)
    assert not torch.allclose(logits(model, batch), before, atol=1e-3)
    handle.remove()
    assert torch.equal(logits(model, batch), before)
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert hook_counts(model) == hooks_before


def hook_counts(model):
    return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]


@pytest.mark.parametrize("arch", ARCHS)
def test_cached_generate_matches_full_forward(arch):
    model = tiny_model(arch)
    handle = attach_pvm(model, small_config())
    open_gates(handle)
    batch = fake_request(model, images_for(arch)[:1])
    out = model.generate(**batch, max_new_tokens=12, min_new_tokens=12, do_sample=False,
                         output_logits=True, return_dict_in_generate=True)
    stepwise = torch.stack(out.logits, dim=1)  # [B, new, V]
    full = logits(model, continuation_inputs(batch, out.sequences))  # [B, P + new, V]
    prompt = batch["input_ids"].shape[1]
    torch.testing.assert_close(stepwise, full[:, prompt - 1:-1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["qwen3_vl", "qwen2_5_vl"])
def test_left_padded_batch_of_different_image_sizes_matches_one_by_one(arch):
    model = tiny_model(arch)
    handle = attach_pvm(model, small_config())
    open_gates(handle)
    images = [Image(4, 4), Image(8, 4)]
    batch = fake_request(model, images, seed=3)
    together = model.generate(**batch, max_new_tokens=6, min_new_tokens=6, do_sample=False,
                              output_logits=True, return_dict_in_generate=True)
    for row in range(len(images)):
        single = _row(batch, row)
        alone = model.generate(**single, max_new_tokens=6, min_new_tokens=6, do_sample=False,
                               output_logits=True, return_dict_in_generate=True)
        torch.testing.assert_close(torch.stack(together.logits, 1)[row], torch.stack(alone.logits, 1)[0],
                                   atol=1e-5, rtol=0)


def _row(batch, row):
    """Cut one request out of a left-padded batch (unpadded, its own pixels and grid)."""
    keep = batch["attention_mask"][row].bool()
    grid = batch["image_grid_thw"]
    sizes = grid.prod(-1).tolist()
    start = sum(sizes[:row])
    return {
        "input_ids": batch["input_ids"][row, keep][None],
        "attention_mask": batch["attention_mask"][row, keep][None],
        "mm_token_type_ids": batch["mm_token_type_ids"][row, keep][None],
        "pixel_values": batch["pixel_values"][start:start + sizes[row]],
        "image_grid_thw": grid[row:row + 1],
    }


def test_text_only_request_is_a_no_op(qwen3_pvm):
    model, _ = qwen3_pvm
    batch = fake_request(model, [None, None])
    with_pvm = logits(model, batch)
    out = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == batch["input_ids"].shape[1] + 4
    reference = tiny_model("qwen3_vl")
    torch.testing.assert_close(with_pvm, logits(reference, batch), atol=0, rtol=0)


def test_mixed_batch_with_and_without_image_gives_finite_logits(qwen3_pvm):
    model, _ = qwen3_pvm
    batch = fake_request(model, [Image(4, 4), None])
    out = logits(model, batch)
    assert torch.isfinite(out).all()
    reference = logits(tiny_model("qwen3_vl"), batch)
    torch.testing.assert_close(out[1], reference[1], atol=1e-5, rtol=0)  # the text-only row is untouched


def test_new_request_replaces_the_visual_memory(qwen3_pvm):
    model, handle = qwen3_pvm
    first = fake_request(model, [Image(4, 4)], seed=1)
    second = fake_request(model, [Image(4, 8)], seed=2)
    logits(model, first)
    assert handle.memory.tokens.shape[1] == 4
    logits(model, second)
    assert handle.memory.tokens.shape[1] == 8


@pytest.mark.parametrize("attn", ["sdpa"])
def test_sdpa_matches_eager(attn):
    batch = fake_request(tiny_model("qwen3_vl"), [Image(4, 4), Image(4, 8)])
    outputs = []
    for implementation in ("eager", attn):
        model = tiny_model("qwen3_vl", attn=implementation)
        torch.manual_seed(7)  # same PVM init in both models
        open_gates(attach_pvm(model, small_config()))
        outputs.append(logits(model, batch))
    real = batch["attention_mask"].bool()  # padded positions attend to nothing: their logits are arbitrary
    torch.testing.assert_close(outputs[1][real], outputs[0][real], atol=1e-5, rtol=0)


def test_bf16_forward_runs():
    model = tiny_model("qwen3_vl", dtype=torch.bfloat16)
    handle = attach_pvm(model, small_config())
    open_gates(handle)
    assert all(p.dtype == torch.bfloat16 for p in handle.parameters())
    out = logits(model, fake_request(model, [Image(4, 4)]))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_gates_off_restores_alpha(qwen3_pvm):
    model, handle = qwen3_pvm
    batch = fake_request(model, [Image(4, 4)])
    before = handle.alphas()
    with handle.gates_off():
        torch.testing.assert_close(logits(model, batch), logits(tiny_model("qwen3_vl"), batch), atol=0, rtol=0)
    assert handle.alphas() == before


def test_swapped_visual_changes_only_what_pvm_reads(qwen3_pvm):
    model, handle = qwen3_pvm
    real = fake_request(model, [Image(4, 4)], seed=1)
    other = fake_request(model, [Image(4, 4)], seed=2)
    own_tokens = handle.encode_visual(**real)
    other_tokens = handle.encode_visual(**other)
    assert not torch.equal(own_tokens[0], other_tokens[0])
    plain = logits(model, real)
    with handle.swapped_visual(*own_tokens):
        torch.testing.assert_close(logits(model, real), plain, atol=0, rtol=0)
    with handle.swapped_visual(*other_tokens):
        swapped = logits(model, real)
    assert not torch.allclose(swapped, plain, atol=1e-4)
    with handle.gates_off(), handle.swapped_visual(*other_tokens):  # without PVM the swap is invisible
        torch.testing.assert_close(logits(model, real), logits(tiny_model("qwen3_vl"), real), atol=0, rtol=0)
    torch.testing.assert_close(logits(model, real), plain, atol=0, rtol=0)  # override removed


def test_non_finite_pixels_or_gates_are_refused_before_the_request_runs(qwen3_pvm):
    from pvm_probe.errors import InputError

    model, handle = qwen3_pvm
    batch = fake_request(model, [Image(4, 4)])
    broken = {**batch, "pixel_values": batch["pixel_values"].clone()}
    broken["pixel_values"][0, 0] = float("nan")
    with pytest.raises(InputError, match="pixel_values hold NaN"):
        logits(model, broken)
    with torch.no_grad():
        handle.blocks[3].alpha.fill_(float("inf"))
    with pytest.raises(InputError, match=r"alpha is not finite in layer\(s\) \[3\]"):
        logits(model, batch)

