"""A finite attention window for the painter-world baseline: the limiting case of visual dilution.

The world's text decoder attends only to its last `attention_window` tokens (a sliding window, as
in Mistral or Gemma's local layers). Once the answer has run past it the image tokens have left
every layer's context: the backbone's visual attention mass is exactly zero, so nothing in the
residual stream can carry the image to a late claim, while PVM's memory keeps it.

The window is part of the checkpoint: `text_config.attention_window` in config.json. `load_base`
picks the windowed attention below for such a checkpoint; the mask is the ordinary causal (and
padding) mask intersected with the window, so training, cached generation and `output_attentions`
all see the same model. Implemented with transformers' attention and mask interfaces, so the
decoder classes stay the real Qwen3-VL ones.
"""

from __future__ import annotations

from transformers import AttentionInterface
from transformers.masking_utils import (
    ALL_MASK_ATTENTION_FUNCTIONS,
    AttentionMaskInterface,
    and_masks,
    sliding_window_overlay,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.qwen3_vl.modeling_qwen3_vl import eager_attention_forward

from ...backbones import config_attention_window

PREFIX = "windowed_"


def _windowed_mask(inner):
    def mask(*args, mask_function, config, **kwargs):
        window = config_attention_window(config)
        if window is not None:
            mask_function = and_masks(mask_function, sliding_window_overlay(window))
            kwargs["allow_is_causal_skip"] = False
        return inner(*args, mask_function=mask_function, config=config, **kwargs)
    return mask


def windowed_implementation(implementation: str) -> str:
    """Register (once) and return the windowed variant of `eager` or `sdpa`."""
    if implementation not in ("eager", "sdpa"):
        raise ValueError(f"a windowed base runs with eager or sdpa attention, not {implementation!r}")
    name = PREFIX + implementation
    if name not in ALL_MASK_ATTENTION_FUNCTIONS:
        attention = eager_attention_forward if implementation == "eager" else ALL_ATTENTION_FUNCTIONS["sdpa"]
        AttentionInterface.register(name, attention)
        AttentionMaskInterface.register(name, _windowed_mask(ALL_MASK_ATTENTION_FUNCTIONS[implementation]))
    return name


def attn_implementation_for(config, implementation: str):
    """What `from_pretrained(attn_implementation=...)` needs: the windowed variant for the text decoder
    of a windowed checkpoint (the vision tower keeps the plain one), else `implementation` unchanged."""
    if config_attention_window(config) is None:
        return implementation
    return {"text_config": windowed_implementation(implementation), "vision_config": implementation, "": implementation}


def set_attention_window(model, window: int) -> None:
    """Give `model`'s text decoder a window of `window` tokens (saved with the model's config)."""
    if window < 1:
        raise ValueError(f"attention window must be >= 1 token, got {window}")
    text = model.config.text_config
    plain = text._attn_implementation.removeprefix(PREFIX)
    text.attention_window = window
    model.set_attn_implementation({"text_config": windowed_implementation(plain)})
