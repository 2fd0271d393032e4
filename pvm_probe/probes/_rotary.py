"""Rebuild a self-attention module's rotated queries and keys the way the module itself does.

Keyed by the hook-site table's `rotary` field; `qk_norm` says whether a per-head RMSNorm comes
between the projection and the rotation (Qwen3-VL). Sub-modules are called through `.forward`, so
no hooks fire. All three supported backbones in transformers 5.24 hand attention cos/sin that are
already laid out per head dim ([B, T, hd]); the "mrope" entry also accepts the older layout
([3, B, T, hd] + `mrope_section`) and recomposes it first.
"""

from __future__ import annotations

import torch
from torch import nn


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn: nn.Module) -> torch.Tensor:
    """x [B, H, T, hd], cos/sin [B, T, hd] -> rotated x."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [B, 1, T, hd]
    return x * cos + rotate_half(x) * sin


def _mrope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn: nn.Module) -> torch.Tensor:
    if cos.dim() == 4:  # [3, B, T, hd]: sections not yet interleaved (transformers < 5)
        section = list(attn.rope_parameters["mrope_section"]) * 2
        cos = torch.cat([c[i % 3] for i, c in enumerate(cos.split(section, dim=-1))], dim=-1)  # [B, T, hd]
        sin = torch.cat([s[i % 3] for i, s in enumerate(sin.split(section, dim=-1))], dim=-1)
    return _rope(x, cos, sin, attn)


ROTARY = {"rope": _rope, "mrope": _mrope}


def _project(attn: nn.Module, hidden: torch.Tensor, which: str, qk_norm: bool) -> torch.Tensor:
    """hidden [B, T, d] -> [B, heads, T, hd] for which in ("q", "k")."""
    B, T, _ = hidden.shape
    x = getattr(attn, f"{which}_proj").forward(hidden).view(B, T, -1, attn.head_dim)  # [B, T, heads, hd]
    if qk_norm:
        x = getattr(attn, f"{which}_norm").forward(x)
    return x.transpose(1, 2)


def rotated(attn: nn.Module, hidden: torch.Tensor, position_embeddings, which: str, sites) -> torch.Tensor:
    """The module's rotated q (or k) for hidden [B, T, d]: [B, heads, T, hd]."""
    cos, sin = position_embeddings
    x = _project(attn, hidden, which, sites.qk_norm)
    return ROTARY[sites.rotary](x, cos, sin, attn)
