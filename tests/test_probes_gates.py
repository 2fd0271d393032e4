"""Gates, retrieval, Theorem 4.1 and gate ablation on a tiny Qwen3-VL with PVM attached.
References: hand computation from the block's own weights, the model without PVM, nnsight."""

import numpy as np
import torch
from conftest import open_gates, small_config

from pvm_probe import attach_pvm
from pvm_probe.probes import (
    HorizonCheck,
    HorizonResult,
    PVMRetrieval,
    RetrievalResult,
    nnsight_ablated_logits,
)
from pvm_probe.zoo import Image, fake_request, tiny_model

NEW = 6


def generate(model, batch):
    with torch.no_grad():
        return model.generate(**batch, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)


def test_retrieval_weights_and_injection_ratio(qwen3_pvm, tmp_path):
    model, handle = qwen3_pvm
    batch = fake_request(model, [Image(4, 4), Image(4, 2)])
    with PVMRetrieval(handle) as probe:
        generate(model, batch)
    r = probe.result
    assert r.weights.shape == (2, 2, NEW, 4)  # B, L, T, N (4 merged tokens for the 4x4 grid)
    np.testing.assert_allclose(r.weights.sum(-1), 1, atol=1e-5)
    assert np.all(r.weights[1, ..., 2:] == 0)  # row 1 has 2 visual tokens: padded slots get nothing
    np.testing.assert_allclose(r.alpha, [handle.alphas()[1], handle.alphas()[3]])
    assert r.entropy.shape == (2, 2, NEW) and np.all(r.entropy <= np.log(4) + 1e-6)
    assert np.all(r.entropy[1] <= np.log(2) + 1e-6)  # two real keys: at most log 2
    # injection ratio by hand: alpha * ||RMSNorm(W_up h)|| = alpha * sqrt(d) (no-affine RMSNorm) over ||x||
    assert np.all(r.injection_ratio > 0)
    r.save(tmp_path / "r")
    np.testing.assert_array_equal(RetrievalResult.load(tmp_path / "r").weights, r.weights)


def test_theorem_4_1_on_a_real_run(qwen3_pvm, tmp_path):
    model, handle = qwen3_pvm
    with HorizonCheck(handle, layer=3) as check:
        generate(model, fake_request(model, [Image(4, 4)]))
    r = check.result
    assert r.invariant()  # PVM's normaliser does not depend on the text horizon
    share = r.backbone_image_share  # [B, H, T]: the frozen query's visual share falls with every key
    assert np.all(np.diff(share, axis=-1) < 0)
    r.save(tmp_path / "h")
    assert HorizonResult.load(tmp_path / "h").invariant()


def test_gate_ablation_handle_and_nnsight_equal_the_model_without_pvm():
    model = tiny_model("qwen3_vl")
    batch = fake_request(model, [Image(4, 4), None])
    with torch.no_grad():
        reference = model(**batch).logits
    handle = attach_pvm(model, small_config())
    try:
        open_gates(handle)
        with torch.no_grad():
            with_pvm = model(**batch).logits
            assert (with_pvm - reference).abs().max() > 1e-3  # the open gates really change the output
            with handle.gates_off():
                via_handle = model(**batch).logits
        via_nnsight = nnsight_ablated_logits(handle, batch)
        torch.testing.assert_close(via_handle, reference, atol=1e-6, rtol=0)
        torch.testing.assert_close(via_nnsight, reference, atol=1e-6, rtol=0)
        torch.testing.assert_close(via_nnsight, via_handle, atol=1e-6, rtol=0)
        assert all(b.alpha.item() != 0 for b in handle.blocks.values())  # gates restored
        with torch.no_grad():  # one layer only: handle and nnsight still agree, and differ from no-PVM
            with handle.gates_off([1]):
                one = model(**batch).logits
        torch.testing.assert_close(nnsight_ablated_logits(handle, batch, [1]), one, atol=1e-6, rtol=0)
        assert (one - reference).abs().max() > 1e-3
    finally:
        handle.remove()


def test_patching_a_block_with_zeros_is_the_model_without_pvm_and_its_own_output_changes_nothing():
    from pvm_probe.probes import patched_logits, pvm_outputs

    model = tiny_model("qwen3_vl")
    batch = fake_request(model, [Image(4, 4), Image(4, 4)])
    with torch.no_grad():
        reference = model(**batch).logits  # no PVM at all
    handle = attach_pvm(model, small_config())
    try:
        open_gates(handle)
        clean, logits = pvm_outputs(handle, batch)
        torch.testing.assert_close(patched_logits(handle, batch, 1, clean[1]), logits, atol=1e-6, rtol=0)
        both = patched_logits(handle, batch, 1, torch.zeros_like(clean[1]))
        with handle.gates_off([1]), torch.no_grad():
            torch.testing.assert_close(both, model(**batch).logits, atol=1e-6, rtol=0)
        with handle.gates_off(), torch.no_grad():
            torch.testing.assert_close(model(**batch).logits, reference, atol=1e-6, rtol=0)
    finally:
        handle.remove()


def test_zeroing_the_image_at_a_layer_equals_a_hand_written_hook():
    from pvm_probe.probes import image_zeroed_logits
    from pvm_probe.zoo import IMAGE_TOKEN

    model = tiny_model("llava")
    batch = fake_request(model, [Image(4, 4), Image(4, 4)])
    image = batch["input_ids"] == IMAGE_TOKEN

    def zero(module, args, kwargs):
        return (args[0] * (~image)[..., None],) + args[1:], kwargs

    hook = model.model.language_model.layers[2].register_forward_pre_hook(zero, with_kwargs=True)
    with torch.no_grad():
        expected = model(**batch).logits
    hook.remove()
    torch.testing.assert_close(image_zeroed_logits(model, batch, 2), expected, atol=1e-6, rtol=0)
    with torch.no_grad():
        assert (model(**batch).logits - expected).abs().max() > 1e-4  # zeroing the image changes the answer
