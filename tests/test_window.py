"""The painter world's attention window against an independent reference: the plain model fed a
hand-built band mask, and the probes against the windowed model's own eager attention weights."""

import numpy as np
import pytest
import torch
from conftest import continuation_inputs
from test_probes_attention_mass import eager_reference, generate, segment_columns

from pvm_probe.backbones import attention_window
from pvm_probe.loading import load_base
from pvm_probe.probes import VisualAttentionMass
from pvm_probe.suites.world.window import set_attention_window, windowed_implementation
from pvm_probe.zoo import Image, fake_request, save_tiny_checkpoint, tiny_model

WINDOW = 7


def windowed(attn="eager"):
    model = tiny_model("qwen3_vl", attn=attn)
    set_attention_window(model, WINDOW)
    return model


def band_mask(padding: torch.Tensor, window: int) -> torch.Tensor:
    """[B, S] padding mask -> [B, 1, S, S] additive mask: causal, last `window` keys, no padding keys."""
    i = torch.arange(padding.shape[1])
    allowed = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - window)  # [S, S]
    allowed = allowed[None] & padding.bool()[:, None, :]  # [B, S, S]
    return torch.where(allowed, 0.0, torch.finfo(torch.float32).min)[:, None]


def test_forward_equals_the_plain_model_with_a_band_mask():
    plain, model = tiny_model("qwen3_vl"), windowed()
    batch = fake_request(plain, [Image(4, 4), Image(2, 4)], prompt_len=12)  # row 1 left-padded
    with torch.no_grad():
        positions, _ = plain.model.get_rope_index(batch["input_ids"], batch["mm_token_type_ids"],
                                                  batch["image_grid_thw"], attention_mask=batch["attention_mask"])
        expected = plain(**{**batch, "attention_mask": band_mask(batch["attention_mask"], WINDOW)},
                         position_ids=positions).logits
        full = plain(**batch).logits
        got = model(**batch).logits
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-5)
    assert (got[real] - full[real]).abs().max() > 1e-3  # the window really changes the model


def test_cached_generation_equals_a_full_forward():
    model = windowed()
    batch = fake_request(model, [Image(4, 4), Image(2, 4)], prompt_len=6)
    sequences = generate(model, batch, max_new_tokens=12, min_new_tokens=12)  # runs past the window
    with torch.no_grad():
        logits = model(**continuation_inputs(batch, sequences)).logits  # [B, T, V]
    P = batch["input_ids"].shape[1]
    assert torch.equal(logits[:, P - 1:-1].argmax(-1), sequences[:, P:])


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_attention_mass_probe_matches_windowed_eager_weights(attn):
    model = windowed(attn)
    batch = fake_request(model, [Image(4, 4), Image(2, 4)], prompt_len=4)
    with VisualAttentionMass(model) as mass:
        sequences = generate(model, batch, max_new_tokens=10, min_new_tokens=10)
    reference, full = eager_reference(windowed("eager"), batch, sequences)
    P = batch["input_ids"].shape[1]
    for j, cols in enumerate(segment_columns(full, P)):
        for layer, weights in enumerate(reference):  # [B, H, T, S]
            expected = (weights * cols[:, None, None, :]).sum(-1).numpy()
            np.testing.assert_allclose(mass.result.shares[:, :, :, :10][:, layer, :, :, j], expected, atol=1e-5)
    assert mass.result.segment("image")[:, :, :, -1].max() == 0  # the image has left every layer's window


def test_window_survives_save_and_load(tmp_path):
    directory = tmp_path / "base"
    save_tiny_checkpoint("qwen3_vl", directory)
    model, _ = load_base(directory, attn_implementation="eager")
    set_attention_window(model, WINDOW)
    model.save_pretrained(directory)
    reloaded, _ = load_base(directory, attn_implementation="sdpa")
    assert attention_window(reloaded) == WINDOW
    assert reloaded.config.text_config._attn_implementation == "windowed_sdpa"
    assert reloaded.config.vision_config._attn_implementation == "sdpa"


def test_bad_window_and_implementation_are_one_line_errors():
    with pytest.raises(ValueError, match="attention window must be >= 1"):
        set_attention_window(tiny_model("qwen3_vl"), 0)
    with pytest.raises(ValueError, match="eager or sdpa"):
        windowed_implementation("flash_attention_2")


def test_train_base_saves_a_windowed_baseline(tmp_path):
    from pvm_probe.suites.world.train_base import train_base
    info = train_base(tmp_path / "base", steps=2, batch_size=2, vision_steps=2, warm_steps=1, threads=1,
                      gaps=(0,), short_gaps=(0,), window=16)
    model, _ = load_base(tmp_path / "base")
    assert info["attention_window"] == attention_window(model) == 16
    assert model.config.text_config._attn_implementation == "windowed_sdpa"  # load_base defaults to sdpa
    again = train_base(tmp_path / "continued", steps=1, batch_size=2, warm_steps=0, threads=1, gaps=(0,),
                       short_gaps=(0,), init_from=tmp_path / "base")  # a later stage keeps the window
    assert again["attention_window"] == 16
