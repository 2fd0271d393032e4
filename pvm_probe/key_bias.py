"""A per-layer key-logit bias: one place where a remedy says how it changes attention logits.

A remedy registers, for a self-attention module, a *provider*: called once per forward, it
returns a function `bias(scores, key_positions, rows=None)` for that forward, where `scores` are
pre-softmax attention logits (q.k * scaling) of the forward's **last query** (the one that predicts
the next token) with any shape `[b, ..., S']`, `key_positions` `[S']` are the KV-cache indices of the
score columns and `rows` `[b]` the batch rows of `scores` (default: all rows of the forward, in
order); it returns an additive bias broadcastable to `scores`.

Two readers apply the same bias, so they agree by construction:
- the attention implementation registered here (`keybias_<inner>` for eager, sdpa or a windowed
  variant): the forward's other query rows run through the inner implementation untouched; the last
  row runs with the inner implementation too, its mask plus the bias (eager returns its weights);
- `VisualAttentionMass`, which rebuilds the softmax from q and the cached keys: it
  asks `key_logit_bias(attn)` and adds the bias to its scores.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from weakref import WeakKeyDictionary

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .errors import InputError

PREFIX = "keybias_"
KeyBias = Callable[..., torch.Tensor]  # (scores [b, ..., S'], positions [S'], rows [b] | None) -> bias
_PROVIDERS: WeakKeyDictionary = WeakKeyDictionary()  # attention module -> () -> KeyBias | None


class _Registration:
    def __init__(self, attn: nn.Module, provider):
        self.attn, self.provider = attn, provider

    def remove(self) -> None:
        if _PROVIDERS.get(self.attn) is self.provider:
            del _PROVIDERS[self.attn]


def register_key_logit_bias(attn: nn.Module, provider: Callable[[], KeyBias | None]) -> _Registration:
    """Give `attn` a bias provider (one per module at a time); `.remove()` on the result undoes it."""
    if attn in _PROVIDERS:
        layer = getattr(attn, "layer_idx", "?")
        raise RuntimeError(f"{type(attn).__name__} (layer {layer}) already has a key-logit bias")
    _PROVIDERS[attn] = provider
    return _Registration(attn, provider)


def key_logit_bias(attn: nn.Module) -> KeyBias | None:
    """The bias `attn`'s current forward applies to its last query, or None."""
    provider = _PROVIDERS.get(attn)
    return None if provider is None else provider()


# ---- the attention implementation that applies it -------------------------------------------------
def supports(implementation: str) -> bool:
    """Eager and sdpa take an additive float mask (also their windowed variants); flash kernels do not."""
    return implementation.split("_")[-1] in ("eager", "sdpa")


def biased_implementation(implementation: str) -> str:
    """Register (once) and return `keybias_<implementation>`: same masks, same kernels, plus the bias."""
    if implementation.startswith(PREFIX):
        raise RuntimeError(f"attention is already {implementation!r}: one key-logit bias at a time")
    if not supports(implementation):
        raise InputError(f"a key-logit bias needs eager or sdpa attention, not {implementation!r}")
    name = PREFIX + implementation
    if name not in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, _biased_attention(implementation))
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[implementation])
    return name


def _inner(module: nn.Module, implementation: str):
    if implementation == "eager":  # each model file has its own eager function (same math)
        return sys.modules[type(module).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS[implementation]


def _biased_attention(implementation: str):
    def attention(module, query, key, value, attention_mask, **kwargs):
        inner = _inner(module, implementation)
        bias = key_logit_bias(module)
        if bias is None:
            return inner(module, query, key, value, attention_mask, **kwargs)
        T = query.shape[2]  # query [B, H, T, hd]; key, value [B, Hkv, S, hd]
        scores = last_query_scores(module, query, key, kwargs.get("scaling", module.scaling))  # [B, H, 1, S]
        positions = torch.arange(key.shape[2], device=key.device)  # [S] cache indices of the keys
        mask = last_row_mask(attention_mask, scores) + bias(scores, positions)  # [B, H, 1, S]
        tail = inner(module, query[:, :, -1:], key, value, mask, **kwargs)  # ([B, 1, H, hd], [B, H, 1, S])
        if T == 1:
            return tail
        rows = None if attention_mask is None else attention_mask[:, :, :-1]
        head = inner(module, query[:, :, :-1], key, value, rows, **kwargs)  # ([B, T-1, H, hd], ...)
        weights = None if head[1] is None else torch.cat([head[1], tail[1]], dim=2)  # [B, H, T, S]
        return torch.cat([head[0], tail[0]], dim=1), weights

    return attention


def last_query_scores(module: nn.Module, query: torch.Tensor, key: torch.Tensor, scaling: float):
    """query [B, H, T, hd], key [B, Hkv, S, hd] -> logits of the last query [B, H, 1, S] (GQA: head h
    reads key head h // group)."""
    keys = key.repeat_interleave(module.num_key_value_groups, dim=1)  # [B, H, S, hd]
    return (query[:, :, -1:] @ keys.transpose(-1, -2)) * scaling


def last_row_mask(mask: torch.Tensor | None, scores: torch.Tensor) -> torch.Tensor:
    """The mask row of the last query as an additive float mask ([B, 1|H, 1, S] or a zero scalar)."""
    if mask is None:  # sdpa skipped a causal-only mask: the last query sees every key
        return scores.new_zeros(())
    row = mask[:, :, -1:, : scores.shape[-1]]
    if row.dtype == torch.bool:  # sdpa masks: True = attend
        return torch.where(row, 0.0, torch.finfo(scores.dtype).min).to(scores.dtype)
    return row
