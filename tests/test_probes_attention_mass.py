"""VisualAttentionMass against eager `output_attentions` weights of a full forward over the same tokens."""

import numpy as np
import pytest
import torch
from conftest import continuation_inputs

from pvm_probe.probes import AttentionMassResult, VisualAttentionMass
from pvm_probe.zoo import ARCHS, IMAGE_TOKEN, Image, fake_request, tiny_model

NEW = 5


def generate(model, batch, **kw):
    kw = {"max_new_tokens": NEW, "min_new_tokens": NEW, "do_sample": False, **kw}
    with torch.no_grad():
        return model.generate(**batch, **kw)


def eager_reference(model, batch, sequences):
    """Per layer [B, H, T, S] attention rows of the queries that produced each generated token."""
    full = continuation_inputs(batch, sequences)
    with torch.no_grad():
        out = model(**full, output_attentions=True)
    P = batch["input_ids"].shape[1]
    return [a[:, :, P - 1:sequences.shape[1] - 1] for a in out.attentions], full


def segment_columns(full, P):
    """[B, S] masks of the image, prompt, generated and first-token keys, from the inputs alone."""
    ids, mask = full["input_ids"], full["attention_mask"].bool()
    image = ids == IMAGE_TOKEN
    first = torch.zeros_like(mask)
    first[torch.arange(len(ids)), mask.int().argmax(1)] = True
    first &= ~image
    pos = torch.arange(ids.shape[1])[None]
    generated = (pos >= P) & mask
    prompt = mask & ~image & ~first & ~generated
    return [image, prompt, generated, first]


@pytest.mark.parametrize("arch", ARCHS)
def test_matches_eager_attention_weights(arch):
    model = tiny_model(arch, attn="eager")
    batch = fake_request(model, [Image(4, 4), Image(2, 4), None], prompt_len=5)  # rows 1 (Qwen), 2 left-padded
    with VisualAttentionMass(model) as mass:
        sequences = generate(model, batch)
    reference, full = eager_reference(model, batch, sequences)
    P = batch["input_ids"].shape[1]
    result = mass.result
    assert result.shares.shape == (3, 4, 4, NEW, 4)
    for j, cols in enumerate(segment_columns(full, P)):
        for layer, weights in enumerate(reference):  # weights [B, H, T, S]
            expected = (weights * cols[:, None, None, :]).sum(-1).numpy()  # [B, H, T]
            np.testing.assert_allclose(result.shares[:, layer, :, :, j], expected, atol=1e-5)
    assert np.all(result.segment("image")[2] == 0)  # the text-only row has no image mass
    np.testing.assert_allclose(result.shares.sum(-1), 1, atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_sdpa_gives_the_eager_numbers(arch):
    batch = fake_request(tiny_model(arch), [Image(4, 4), Image(4, 4)], prompt_len=4)
    results = []
    for attn in ("eager", "sdpa"):
        model = tiny_model(arch, attn=attn)
        with VisualAttentionMass(model, layers=[0, 3]) as mass:
            generate(model, batch)
        results.append(mass.result)
    np.testing.assert_allclose(results[0].shares, results[1].shares, atol=1e-5)
    np.testing.assert_allclose(results[0].log_normaliser, results[1].log_normaliser, atol=1e-4)


def test_left_padded_row_equals_the_same_row_alone():
    model = tiny_model("qwen3_vl")
    batch = fake_request(model, [Image(4, 4), Image(2, 4)], prompt_len=5)  # row 1 is left-padded
    alone = fake_request(model, [Image(4, 4), Image(2, 4)], prompt_len=5)
    alone = {k: (v[1:] if k not in ("pixel_values", "image_grid_thw") else v) for k, v in alone.items()}
    alone["pixel_values"] = batch["pixel_values"][16:]
    alone["image_grid_thw"] = batch["image_grid_thw"][1:]
    pad = int((batch["attention_mask"][1] == 0).sum())
    alone["input_ids"], alone["attention_mask"] = alone["input_ids"][:, pad:], alone["attention_mask"][:, pad:]
    alone["mm_token_type_ids"] = alone["mm_token_type_ids"][:, pad:]
    assert pad > 0
    with VisualAttentionMass(model) as mass:
        generate(model, batch)
        generate(model, alone)
    batched, single = mass.results
    np.testing.assert_allclose(batched.shares[1], single.shares[0], atol=1e-5)


def test_hooks_removed_even_when_the_body_raises():
    model = tiny_model("llava")
    before = {name: (dict(m._forward_hooks), dict(m._forward_pre_hooks)) for name, m in model.named_modules()}
    with pytest.raises(ValueError):
        with VisualAttentionMass(model):
            raise ValueError("boom")
    after = {name: (dict(m._forward_hooks), dict(m._forward_pre_hooks)) for name, m in model.named_modules()}
    assert before == after


def test_save_load_round_trip(tmp_path):
    model = tiny_model("qwen3_vl")
    with VisualAttentionMass(model, layers=[1, 2]) as mass:
        generate(model, fake_request(model, [Image(4, 4)]))
    mass.result.save(tmp_path / "mass")
    loaded = AttentionMassResult.load(tmp_path / "mass.json")
    np.testing.assert_array_equal(loaded.shares, mass.result.shares)
    assert loaded.layers == [1, 2] and loaded.by_layer().shape == (2, NEW)
    assert not list(tmp_path.glob("*.tmp"))


def test_blocked_scoring_equals_per_step_scoring():
    """Queries scored in blocks of 2 (several flushes) give the numbers of scoring each step at once."""
    model = tiny_model("qwen2_5_vl")
    batch = fake_request(model, [Image(4, 4), None])
    with VisualAttentionMass(model, block=1) as one, VisualAttentionMass(model, block=2, chunk=3) as two:
        generate(model, batch)
    np.testing.assert_allclose(one.result.shares, two.result.shares, atol=1e-6)
