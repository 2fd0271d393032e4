"""The Persistent Visual Memory block and the iso-parameter MLP control.

    x_lat  = W_x x                                  [B, T, d']
    v_lat  = W_v V_img                              [B, N, d']   cached for decoding
    a      = x_lat + XAttn(norm(x_lat), v_lat)      own softmax over the N visual keys only
    h_lat  = a + SwiGLU(norm(a))
    h_pvm  = RMSNorm_no_affine(W_up h_lat)          [B, T, d]
    inject = alpha * h_pvm * M_txt                  alpha init 0, M_txt = 1 at text tokens

The block returns `inject`; the hooks in `inject.py` add it to the FFN output of its layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import PVMConfig
from .errors import InputError

BLOCK_ATTR = "pvm"  # a block hangs on its decoder layer as `layer.pvm`


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32; `affine=False` gives the parameter-free norm after W_up."""

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.weight is not None:
            x = x * self.weight.float()
        return x.to(dtype)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


@dataclass
class VisualKV:
    """Keys and values of one block over one request's visual set, computed once and reused."""

    key: torch.Tensor  # [B, Hkv, N, hd]
    value: torch.Tensor  # [B, Hkv, N, hd]
    key_mask: torch.Tensor  # [B, N] bool, False at padded visual slots


class LatentCrossAttention(nn.Module):
    """GQA cross-attention from text queries to the visual set: q/k RMSNorm per head, no RoPE,
    fp32 softmax over the visual keys only, padded keys masked with -inf."""

    def __init__(self, cfg: PVMConfig):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        d = cfg.latent_dim
        self.q_proj = nn.Linear(d, cfg.num_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(d, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(d, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * cfg.head_dim, d, bias=False)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)

    def visual_kv(self, v_lat: torch.Tensor, key_mask: torch.Tensor) -> VisualKV:
        B, N, _ = v_lat.shape  # [B, N, d']
        key = self.k_norm(self.k_proj(v_lat).view(B, N, self.num_kv_heads, self.head_dim))  # [B, N, Hkv, hd]
        value = self.v_proj(v_lat).view(B, N, self.num_kv_heads, self.head_dim)  # [B, N, Hkv, hd]
        return VisualKV(key.transpose(1, 2), value.transpose(1, 2), key_mask)  # [B, Hkv, N, hd]

    def forward(self, x: torch.Tensor, kv: VisualKV, return_weights: bool = False):
        B, T, _ = x.shape  # [B, T, d']
        H, Hkv, hd = self.num_heads, self.num_kv_heads, self.head_dim
        q = self.q_norm(self.q_proj(x).view(B, T, H, hd)).transpose(1, 2)  # [B, H, T, hd]
        q = q.reshape(B, Hkv, (H // Hkv) * T, hd)  # [B, Hkv, g*T, hd]: a kv head's query group shares its keys
        scores = (q.float() @ kv.key.float().transpose(-1, -2)) * hd**-0.5  # [B, Hkv, g*T, N]
        usable = kv.key_mask | ~kv.key_mask.any(-1, keepdim=True)  # [B, N]; image-less rows stay finite, gated off
        scores = scores.masked_fill(~usable[:, None, None, :], float("-inf"))  # [B, Hkv, g*T, N]
        weights = scores.softmax(dim=-1)  # fp32, normalised over the visual set only
        out = (weights @ kv.value.float()).to(x.dtype).view(B, H, T, hd)  # [B, H, T, hd]
        out = self.o_proj(out.transpose(1, 2).reshape(B, T, H * hd))  # [B, T, d']
        return out, (weights.view(B, H, T, -1) if return_weights else None)  # weights [B, H, T, N]


class PVMBlock(nn.Module):
    """One Persistent Visual Memory block, attached beside the FFN of one decoder layer."""

    def __init__(self, cfg: PVMConfig, hidden_size: int):
        super().__init__()
        d, dl = hidden_size, cfg.latent_dim
        self.w_x = nn.Linear(d, dl, bias=False)
        self.w_v = nn.Linear(d, dl, bias=False)
        self.attn_norm = RMSNorm(dl, cfg.rms_norm_eps)
        self.cross_attn = LatentCrossAttention(cfg)
        self.ffn_norm = RMSNorm(dl, cfg.rms_norm_eps)
        self.ffn = SwiGLU(dl, cfg.ffn_dim)
        self.w_up = nn.Linear(dl, d, bias=False)
        self.out_norm = RMSNorm(d, cfg.rms_norm_eps, affine=False)
        self.alpha = nn.Parameter(torch.full((), float(cfg.alpha_init)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal random init everywhere except alpha (the init trap: with alpha = 0 and W_up = 0 nothing ever moves)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=module.in_features**-0.5)

    def visual_kv(self, visual: torch.Tensor, key_mask: torch.Tensor) -> VisualKV:
        v_lat = self.w_v(visual)  # [B, N, d']
        return self.cross_attn.visual_kv(v_lat, key_mask)

    def retrieve(self, x: torch.Tensor, kv: VisualKV, return_weights: bool = False):
        """Un-gated restored signal h_pvm [B, T, d] (and attention weights [B, H, T, N] if asked)."""
        x_lat = self.w_x(x)  # [B, T, d']
        attended, weights = self.cross_attn(self.attn_norm(x_lat), kv, return_weights)  # [B, T, d']
        a = x_lat + attended  # [B, T, d']
        h_lat = a + self.ffn(self.ffn_norm(a))  # [B, T, d']
        return self.out_norm(self.w_up(h_lat)), weights  # [B, T, d]

    def forward(self, x: torch.Tensor, kv: VisualKV, text_mask: torch.Tensor) -> torch.Tensor:
        """x [B, T, d] residual after self-attention; text_mask [B, T] -> injection [B, T, d]."""
        h_pvm, _ = self.retrieve(x, kv)  # [B, T, d]
        rows_with_image = kv.key_mask.any(-1)[:, None]  # [B, 1]: a request without an image gets nothing
        gate = (text_mask & rows_with_image).to(x.dtype)[..., None]  # [B, T, 1]
        return self.alpha.to(x.dtype) * h_pvm * gate  # [B, T, d]


class MLPControlBlock(nn.Module):
    """The paper's iso-parameter control: the same bottleneck, gate and mask, no access to the image.

    x_lat = W_x x; h_lat = x_lat + SwiGLU(norm(x_lat)); inject = alpha * RMSNorm(W_up h_lat) * M_txt.
    Its SwiGLU is widened so that its parameter count matches the PVM block's (within 1 %).
    """

    def __init__(self, cfg: PVMConfig, hidden_size: int):
        super().__init__()
        d, dl = hidden_size, cfg.latent_dim
        pvm_only = d * dl + 2 * dl * cfg.num_heads * cfg.head_dim + 2 * dl * cfg.num_kv_heads * cfg.head_dim
        ffn_dim = cfg.ffn_dim + round(pvm_only / (3 * dl))  # absorb W_v and the attention weights
        self.w_x = nn.Linear(d, dl, bias=False)
        self.ffn_norm = RMSNorm(dl, cfg.rms_norm_eps)
        self.ffn = SwiGLU(dl, ffn_dim)
        self.w_up = nn.Linear(dl, d, bias=False)
        self.out_norm = RMSNorm(d, cfg.rms_norm_eps, affine=False)
        self.alpha = nn.Parameter(torch.full((), float(cfg.alpha_init)))
        PVMBlock.reset_parameters(self)

    def forward(self, x: torch.Tensor, kv: VisualKV, text_mask: torch.Tensor) -> torch.Tensor:
        x_lat = self.w_x(x)  # [B, T, d']
        h_lat = x_lat + self.ffn(self.ffn_norm(x_lat))  # [B, T, d']
        rows_with_image = kv.key_mask.any(-1)[:, None]  # [B, 1]: same gating as PVM, so only access differs
        gate = (text_mask & rows_with_image).to(x.dtype)[..., None]  # [B, T, 1]
        return self.alpha.to(x.dtype) * self.out_norm(self.w_up(h_lat)) * gate  # [B, T, d]

    def visual_kv(self, visual: torch.Tensor, key_mask: torch.Tensor) -> VisualKV:
        empty = visual.new_zeros(visual.shape[0], 1, 0, 1)  # [B, 1, 0, 1]: no visual content kept
        return VisualKV(empty, empty, key_mask)


BLOCKS: dict[str, type[nn.Module]] = {"pvm": PVMBlock, "mlp": MLPControlBlock}


def build_block(cfg: PVMConfig, hidden_size: int) -> nn.Module:
    return BLOCKS[cfg.block](cfg, hidden_size)


def count_pvm_params(config: PVMConfig, model_config) -> int:
    """PVM parameters for a backbone config, counted on the meta device (no memory, any size)."""
    text = model_config.get_text_config()
    bad = [i for i in config.layers if i >= text.num_hidden_layers]
    if bad:
        raise InputError(f"layer index {bad[0]} out of range: the model has {text.num_hidden_layers} decoder layers")
    with torch.device("meta"):
        block = build_block(config, text.hidden_size)
    return len(config.layers) * sum(p.numel() for p in block.parameters())
