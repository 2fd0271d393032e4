"""One table of hook sites per architecture: everything the suite needs to know about a backbone.

A new backbone is one new row, never an `if` chain through the code. Paths are dotted attribute
paths from the top-level `...ForConditionalGeneration` model; `pre_ffn_norm`, `ffn` and `self_attn`
are relative to one decoder layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class HookSites:
    multimodal: str  # receives input_ids / pixel_values / cache and merges image features
    language_model: str  # receives the merged `inputs_embeds`
    layers: str  # the ModuleList of decoder layers
    final_norm: str  # norm before the LM head (for LogitLens)
    lm_head: str
    vision: tuple[str, ...]  # the vision tower and its projector (frozen in every training stage)
    pre_ffn_norm: str = "post_attention_layernorm"  # its input is x: residual after self-attention
    ffn: str = "mlp"  # its output gets the PVM injection
    self_attn: str = "self_attn"
    visual_token_attrs: tuple[str, ...] = ("image_token_id",)  # config attributes naming visual tokens
    rotary: str = "rope"  # how the attention applies position embeddings: "rope" | "mrope"
    qk_norm: bool = False  # per-head RMSNorm on q and k inside self-attention
    ffn_up: str = "up_proj"  # the FFN's un-gated input projection, relative to `ffn` (MemVR scales by it)
    visual_marker_attrs: tuple[str, ...] = ("vision_start_token_id", "vision_end_token_id")  # around images


_QWEN = dict(
    multimodal="model",
    language_model="model.language_model",
    layers="model.language_model.layers",
    final_norm="model.language_model.norm",
    lm_head="lm_head",
    vision=("model.visual",),
    visual_token_attrs=("image_token_id", "video_token_id"),
)

HOOK_SITES: dict[str, HookSites] = {
    # Qwen3-VL's text rotary embedding already interleaves the 3-D sections into cos/sin.
    "Qwen3VLForConditionalGeneration": HookSites(**_QWEN, rotary="rope", qk_norm=True),
    # Qwen2.5-VL applies its 3-D sections inside attention (apply_multimodal_rotary_pos_emb).
    "Qwen2_5_VLForConditionalGeneration": HookSites(**_QWEN, rotary="mrope"),
    "LlavaForConditionalGeneration": HookSites(
        multimodal="model",
        language_model="model.language_model",
        layers="model.language_model.layers",
        final_norm="model.language_model.norm",
        lm_head="lm_head",
        vision=("model.vision_tower", "model.multi_modal_projector"),
    ),
}


def hook_sites(model: nn.Module) -> HookSites:
    name = type(model).__name__
    if name not in HOOK_SITES:
        raise ValueError(f"unsupported architecture {name}; supported: {', '.join(sorted(HOOK_SITES))}")
    return HOOK_SITES[name]


def get_module(root: nn.Module, path: str) -> nn.Module:
    module = root
    for part in path.split("."):
        module = getattr(module, part)
    return module


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    return get_module(model, hook_sites(model).layers)


def text_config(model: nn.Module):
    return model.config.get_text_config()


def config_attention_window(config) -> int | None:
    """Keys a text query attends to (the latest ones), or None for full causal attention."""
    return getattr(config.get_text_config(), "attention_window", None)


def attention_window(model: nn.Module) -> int | None:
    return config_attention_window(model.config)


def visual_token_ids(model: nn.Module) -> list[int]:
    ids = (getattr(model.config, attr, None) for attr in hook_sites(model).visual_token_attrs)
    return [i for i in ids if i is not None]


def check_layers(model: nn.Module, layers) -> None:
    n = len(decoder_layers(model))
    bad = [i for i in layers if not 0 <= i < n]
    if bad:
        raise ValueError(f"layer index {bad[0]} out of range: the model has {n} decoder layers (0..{n - 1})")


def stop_token_ids(model: nn.Module) -> list[int]:
    """The ids that end an answer: the model's generation config (the same `generate` stops at)."""
    ids = getattr(model.generation_config, "eos_token_id", None)
    return [ids] if isinstance(ids, int) else [int(i) for i in ids or []]


@dataclass
class ForwardStart:
    """What a pre-hook on the multimodal model learns about the forward that is starting."""

    input_ids: torch.Tensor | None  # [B, n] new token ids (None when called with inputs_embeds)
    visual: torch.Tensor  # [B, n] bool: new tokens that are visual placeholders
    real: torch.Tensor  # [B, n] bool: new tokens that are not padding
    past: int  # tokens already in the KV cache
    new_request: bool  # empty cache or new pixel values: a request starts here


def forward_start(model: nn.Module, module: nn.Module, args, kwargs) -> ForwardStart:
    """Read a forward's inputs (from a pre-hook with kwargs on the `multimodal` site)."""
    input_ids = kwargs.get("input_ids", args[0] if args else None)
    embeds = kwargs.get("inputs_embeds")
    cache = kwargs.get("past_key_values", kwargs.get("cache"))
    past = cache.get_seq_length() if cache is not None else 0
    ids = torch.tensor(visual_token_ids(model))
    if input_ids is not None:
        visual = torch.isin(input_ids, ids.to(input_ids.device))  # [B, n]
    else:
        table = module.get_input_embeddings()(ids.to(embeds.device))  # [K, d]
        visual = (embeds[:, :, None, :] == table).all(-1).any(-1)  # [B, n]
    mask = kwargs.get("attention_mask")
    n = visual.shape[1]
    real = mask[:, -n:].bool() if isinstance(mask, torch.Tensor) and mask.dim() == 2 else torch.ones_like(visual)
    pixels = kwargs.get("pixel_values")
    if pixels is not None and pixels.is_floating_point() and not torch.isfinite(pixels).all():
        from .errors import InputError

        raise InputError("pixel_values hold NaN or infinite values: the image would come out as noise")
    return ForwardStart(input_ids, visual, real, past, past == 0 or pixels is not None)


def visual_marker_ids(model: nn.Module) -> list[int]:
    """Token ids that frame an image without being one (Qwen's vision start / end); none for LLaVA."""
    ids = (getattr(model.config, attr, None) for attr in hook_sites(model).visual_marker_attrs)
    return [i for i in ids if i is not None]
