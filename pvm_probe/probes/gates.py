"""Gates and retrieval of an attached PVM (takes the `PVMHandle`).

`PVMRetrieval(handle)` records, per forward and PVM layer at the last position: the injection's norm
relative to the residual stream entering the block (x), PVM's attention over the visual set (mean over
heads, [N]) and the mean over heads of each head's attention entropy; memory O(B * L * T * N).
`HorizonCheck(handle, layer)` is the Theorem 4.1 check on a real run: a query frozen at the first forward
is re-scored at every later step against PVM's visual keys (its log normaliser cannot change: the keys are
the visual set only) and against the backbone's KV cache (its image share must fall as text keys
accumulate).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..backbones import attention_window, decoder_layers, get_module
from ._base import IMAGE, HookProbe, RequestTracker
from ._io import ResultIO
from ._rotary import rotated
from .attention_mass import segment_shares


@dataclass
class RetrievalResult(ResultIO):
    alpha: np.ndarray  # [L] gate per PVM layer
    injection_ratio: np.ndarray  # [B, L, T] ||alpha h_pvm|| / ||x|| at the recorded position
    weights: np.ndarray  # [B, L, T, N] PVM attention over the visual set, mean over heads
    entropy: np.ndarray  # [B, L, T] entropy (nats) of each head's attention, mean over heads; log N is uniform
    layers: list = field(default_factory=list)
    lengths: list = field(default_factory=list)  # [B] rows of each request's answer

    def top_k(self, k: int = 3) -> np.ndarray:
        """[B, L, T, k] visual-token indices with the most attention."""
        return np.argsort(-self.weights, axis=-1)[..., :k]


class PVMRetrieval(HookProbe):
    """Context manager: PVM's injection norm, attention over the visual set and its entropy, per PVM layer
    and generated position, during `generate`."""

    def __init__(self, handle):
        super().__init__(handle.model)
        self.handle = handle
        self.layers = sorted(handle.blocks)
        self._steps: dict[int, list] = {}

    def _install(self) -> None:
        self.tracker = RequestTracker(self, on_new_request=self._finish)
        for i in self.layers:
            block = self.handle.blocks[i]
            self._hook(block.register_forward_hook(lambda m, args, out, i=i: self._record(i, m, args, out)))

    @torch.no_grad()
    def _record(self, layer, block, args, out) -> None:
        x, kv = args[0][:, -1:], args[1]  # [B, 1, d]
        ratio = out[:, -1].float().norm(dim=-1) / x[:, 0].float().norm(dim=-1)  # [B]
        _, weights = block.retrieve(x, kv, return_weights=True)  # [B, H, 1, N]
        weights = weights[:, :, 0].float()  # [B, H, N]
        entropy = -(weights * weights.clamp_min(1e-30).log()).sum(-1).mean(1)  # [B]
        self._steps.setdefault(layer, []).append((ratio, weights.mean(1), entropy))

    def _finish(self) -> None:
        if not self._steps:
            return
        ratio, weights, entropy = (
            torch.stack([torch.stack([step[k] for step in self._steps[i]], 1) for i in self.layers], 1)
            for k in range(3))  # [B, L, T], [B, L, T, N], [B, L, T]
        self._steps = {}
        alphas = self.handle.alphas()
        self.results.append(RetrievalResult(
            alpha=np.array([alphas[i] for i in self.layers]), injection_ratio=ratio.cpu().numpy(),
            weights=weights.cpu().numpy(), entropy=entropy.cpu().numpy(), layers=list(self.layers),
            lengths=self.tracker.lengths()))


@dataclass
class HorizonResult(ResultIO):
    pvm_log_normaliser: np.ndarray  # [B, H_pvm, T] for the frozen query at every step
    backbone_image_share: np.ndarray  # [B, H, T] for the frozen query against the growing cache
    layer: int = 0

    def invariant(self, atol: float = 1e-5) -> bool:
        """Theorem 4.1: PVM's normaliser is the same at every horizon."""
        z = self.pvm_log_normaliser
        return bool(np.abs(z - z[..., :1]).max() <= atol)


def pvm_log_normaliser(block, x: torch.Tensor, kv) -> torch.Tensor:
    """x [B, 1, d] -> [B, H] log sum_n exp(q.k_n / sqrt(hd)) of PVM's cross-attention over the visual set."""
    attn = block.cross_attn
    B = x.shape[0]
    q = attn.q_norm(attn.q_proj(block.attn_norm(block.w_x(x))).view(B, 1, attn.num_heads, attn.head_dim))
    q = q.transpose(1, 2).float()  # [B, H, 1, hd]
    key = kv.key.repeat_interleave(attn.num_heads // attn.num_kv_heads, dim=1).float()  # [B, H, N, hd]
    scores = (q @ key.transpose(-1, -2))[:, :, 0] * attn.head_dim**-0.5  # [B, H, N]
    return scores.masked_fill(~kv.key_mask[:, None], float("-inf")).logsumexp(-1)


class HorizonCheck(HookProbe):
    """Freeze layer `layer`'s query at the request's first forward; re-score it at every step."""

    def __init__(self, handle, layer: int):
        super().__init__(handle.model)
        self.handle, self.layer = handle, layer
        self.block = handle.blocks[layer]
        self.attn = get_module(decoder_layers(self.model)[layer], self.sites.self_attn)
        self._frozen: dict = {}
        self._pvm, self._share = [], []

    def _install(self) -> None:
        self.tracker = RequestTracker(self, on_new_request=self._finish)
        self._hook(self.attn.register_forward_hook(self._backbone, with_kwargs=True))
        self._hook(self.block.register_forward_hook(self._memory))

    @torch.no_grad()
    def _backbone(self, attn, args, kwargs, out) -> None:
        if self.tracker.step == 0:
            hidden = kwargs.get("hidden_states", args[0] if args else None)[:, -1:]
            cos, sin = kwargs["position_embeddings"]
            self._frozen["q"] = rotated(attn, hidden, (cos[..., -1:, :], sin[..., -1:, :]), "q", self.sites)
        keys = kwargs["cache"].layers[attn.layer_idx].keys  # [B, Hkv, S, hd]
        S = keys.shape[2]
        shares, _ = segment_shares(self._frozen["q"], keys, self.tracker.onehot(S), torch.tensor([S]), attn.scaling,
                                   window=attention_window(self.model))
        self._share.append(shares[:, :, 0, IMAGE])  # [B, H]

    @torch.no_grad()
    def _memory(self, block, args, out) -> None:
        if self.tracker.step == 0:
            self._frozen["x"] = args[0][:, -1:]
        self._pvm.append(pvm_log_normaliser(block, self._frozen["x"], args[1]))  # [B, H_pvm]

    def _finish(self) -> None:
        if not self._share:
            return
        self.results.append(HorizonResult(
            pvm_log_normaliser=torch.stack(self._pvm, -1).cpu().numpy(),
            backbone_image_share=torch.stack(self._share, -1).cpu().numpy(), layer=self.layer))
        self._pvm, self._share, self._frozen = [], [], {}
