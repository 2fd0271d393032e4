"""Visual attention mass vs generation length, streamed and exact, without `output_attentions`.

For every forward inside the context (prefill, then each decode step) and every chosen layer, the
query of the forward's last position is rebuilt from the self-attention input (q_proj, q_norm,
rotary, exactly as the module does) and scored against the keys already in the KV cache. A chunked
log-sum-exp over the keys, split by segment (image / prompt text / generated text / first token),
gives the exact softmax share of each segment and the log normaliser. Padding keys (left padding)
never count; GQA maps query head h to key head h // group; the module's own `scaling` is used.
Row t of the result is the query that produced generated token t (t = 0: last prompt position);
`lengths[b]` rows belong to request b's answer (the rest are the padding steps `generate` runs after a row
has stopped), and every average (`by_layer`, `profile`) leaves those out.
For the token explorer, `patch_rows` x `patch_layers` also keep each query's attention on every image key
(mean over heads): `patches[r][l]` [T, N_r]. Memory: O(S) per step for the scores, O(L * H * T) for the
record, O(T * N) per kept (row, layer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..backbones import attention_window, check_layers, decoder_layers, get_module
from ..key_bias import key_logit_bias
from ._base import IMAGE, SEGMENTS, HookProbe, RequestTracker, nanmean, valid_rows
from ._io import ResultIO
from ._rotary import rotated

NEG = -1e30  # finite "minus infinity" for the running max, so all-padding chunks give no NaN


@dataclass
class AttentionMassResult(ResultIO):
    """What `VisualAttentionMass` recorded: each key segment's softmax share per request, layer, head and
    generated position (row t made token t), and each request's answer length."""

    shares: np.ndarray  # [B, L, H, T, 4] softmax share of each key segment (SEGMENTS order), sums to 1
    log_normaliser: np.ndarray  # [B, L, H, T] log sum_k exp(q.k * scaling) over attended keys
    layers: list = field(default_factory=list)  # the L decoder-layer indices recorded
    prompt_length: int = 0  # padded prompt width P
    segments: list = field(default_factory=lambda: list(SEGMENTS))
    lengths: list = field(default_factory=list)  # [B] rows of each request's answer (default: all T)
    patch_rows: list = field(default_factory=list)  # batch rows whose per-image-key attention was kept
    patch_layers: list = field(default_factory=list)  # decoder layers kept for those rows
    patches: list = field(default_factory=list)  # [R][Lp] arrays [T, N_r]: attention on each image key

    @property
    def valid(self) -> np.ndarray:
        """[B, T] True where row t belongs to that request's answer."""
        T = self.shares.shape[3]
        return valid_rows(self.lengths or [T] * self.shares.shape[0], T)

    def segment(self, name: str = "image") -> np.ndarray:
        """[B, L, H, T] share of one segment (NaN after a request's answer ended)."""
        share = self.shares[..., self.segments.index(name)]
        return np.where(self.valid[:, None, None, :], share, np.nan)

    def by_layer(self, segment: str = "image", row: int | None = None) -> np.ndarray:
        """[L, T] share of the segment, averaged over heads (and over the rows still answering at each
        position unless `row` is given; NaN where none is)."""
        share = self.segment(segment).mean(2)  # [B, L, T]
        return nanmean(share, 0) if row is None else share[row]

    def by_head(self, layer: int, segment: str = "image", row: int | None = None) -> np.ndarray:
        """[H, T] share per head of decoder layer `layer`."""
        share = self.segment(segment)[:, self.layers.index(layer)]  # [B, H, T]
        return nanmean(share, 0) if row is None else share[row]

    def profile(self, segment: str = "image") -> np.ndarray:
        """[L] mean share per layer over rows, heads and answer positions."""
        return nanmean(self.segment(segment).transpose(1, 0, 2, 3).reshape(len(self.layers), -1), 1)


def segment_shares(q: torch.Tensor, keys: torch.Tensor, onehot: torch.Tensor, lengths: torch.Tensor,
                   scaling: float, chunk: int = 1024, window: int | None = None,
                   key_bias=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-segment softmax shares by a chunked, numerically stable log-sum-exp.

    q [B, H, k, hd] (k queries); keys [B, Hkv, S, hd]; onehot [B, S, G] (zero rows = masked keys);
    lengths [k]: query j sees keys [0, lengths[j]) (its cache length at that step), or only the last
    `window` of them for a base with an attention window. key_bias: a remedy's key-logit bias
    (`pvm_probe.key_bias`), added to the scores (e.g. PAI's boost of image keys).
    Returns shares [B, H, k, G] and log normaliser [B, H, k].
    """
    B, H, k, hd = q.shape
    Hkv, S = keys.shape[1], keys.shape[2]
    q = q.float().view(B, Hkv, H // Hkv, k, hd)  # [B, Hkv, g, k, hd]: GQA without repeating the keys
    run_max = q.new_full((B, Hkv, H // Hkv, k, 1), NEG)  # [B, Hkv, g, k, 1]
    acc = q.new_zeros(B, Hkv, H // Hkv, k, onehot.shape[-1])  # [B, Hkv, g, k, G]: sum exp(score - run_max)
    for s0 in range(0, S, chunk):
        key = keys[:, :, None, s0:s0 + chunk].float()  # [B, Hkv, 1, c, hd]
        seg = onehot[:, None, None, s0:s0 + chunk]  # [B, 1, 1, c, G]
        pos = torch.arange(s0, s0 + key.shape[3], device=q.device)  # [c]
        seen = (pos[None, :] < lengths[:, None]) & (pos[None, :] >= lengths[:, None] - (window or S))  # [k, c]
        visible = (seg.sum(-1) > 0)[..., None, :] & seen  # [B, 1, 1, k, c]
        scores = (q @ key.transpose(-1, -2)) * scaling  # [B, Hkv, g, k, c]
        if key_bias is not None:
            scores = scores + key_bias(scores, pos)
        scores = scores.masked_fill(~visible, float("-inf"))
        new_max = torch.maximum(run_max, scores.amax(-1, keepdim=True))  # [B, Hkv, g, k, 1]
        acc = acc * torch.exp(run_max - new_max) + torch.exp(scores - new_max) @ seg
        run_max = new_max
    total = acc.sum(-1, keepdim=True)  # [B, Hkv, g, k, 1]
    shares = (acc / total).reshape(B, H, k, -1)  # [B, H, k, G]
    return shares, (run_max + total.log()).reshape(B, H, k)


def image_key_weights(q: torch.Tensor, keys: torch.Tensor, segment: torch.Tensor, lengths: torch.Tensor,
                      lse: torch.Tensor, scaling: float, window: int | None, key_bias=None,
                      row: int = 0) -> torch.Tensor:
    """One row's attention on each of its image keys, mean over heads: [k, N].

    q [H, k, hd]; keys [Hkv, S, hd]; segment [P] of the prompt's keys (IMAGE marks the image's, so an image
    placeholder a model happens to generate is not a patch); lengths [k] keys visible to each
    query; lse [H, k] the query's full log normaliser (from `segment_shares`), so weights are the softmax's own."""
    H, Hkv = q.shape[0], keys.shape[0]
    where = (segment == IMAGE).nonzero()[:, 0]  # [N] image key positions
    image_keys = keys[:, where].float().repeat_interleave(H // Hkv, dim=0)  # [H, N, hd]
    scores = (q.float() @ image_keys.transpose(-1, -2)) * scaling  # [H, k, N]
    if key_bias is not None:  # batch row `row` of the forward
        scores = scores + key_bias(scores[None], where, torch.tensor([row]))[0]
    seen = (where[None, :] < lengths[:, None]) & (where[None, :] >= lengths[:, None] - (window or keys.shape[1]))
    weights = torch.exp(scores - lse[..., None]).masked_fill(~seen, 0.0)  # [H, k, N]
    return weights.mean(0)  # [k, N]


@dataclass
class _Pending:
    """Queries of one layer waiting to be scored: inputs kept by reference, nothing computed yet."""

    attn: nn.Module
    cache: object = None
    hidden: list = field(default_factory=list)  # per step [B, 1, d]
    cos: list = field(default_factory=list)  # per step [..., B, 1, hd]
    sin: list = field(default_factory=list)
    lengths: list = field(default_factory=list)  # per step: keys visible to the query
    key_bias: object = None  # a remedy's key-logit bias of the latest step (None: plain softmax)


class VisualAttentionMass(HookProbe):
    """Context manager recording the attention-mass split of every layer during `generate`.

    layers: decoder layers to record (all by default). During decoding a layer's queries are
    kept (by reference: the last position's attention input and rotary cos/sin) and scored together
    every `block` steps against the cached keys, which never change once written: same numbers as
    scoring each step on its own, with a fraction of the per-step overhead. chunk: keys per
    log-sum-exp chunk (bounds the scores at [B, H, block, chunk]). patch_rows / patch_layers: batch rows
    and recorded layers whose attention on each image key is kept (the token explorer).
    """

    def __init__(self, model: nn.Module, layers=None, block: int = 32, chunk: int = 1024,
                 patch_rows=(), patch_layers=()):
        super().__init__(model)
        n = len(decoder_layers(model))
        self.layers = list(range(n)) if layers is None else [int(i) for i in layers]
        check_layers(model, self.layers)
        self.patch_rows, self.patch_layers = [int(r) for r in patch_rows], [int(i) for i in patch_layers]
        if not set(self.patch_layers) <= set(self.layers):
            raise ValueError(f"patch_layers {self.patch_layers} must be among the recorded layers {self.layers}")
        self.block, self.chunk = block, chunk
        self._pending: dict[int, _Pending] = {}
        self._done: dict[int, list] = {}  # layer -> list of (shares [B, H, k, 4], lse [B, H, k])
        self._patches: dict[int, list] = {}  # layer -> list of per-row [k, N_r] for patch_rows

    def _install(self) -> None:
        self.tracker = RequestTracker(self, on_new_request=self._finish)
        layers = decoder_layers(self.model)
        for i in self.layers:
            attn = get_module(layers[i], self.sites.self_attn)
            self._hook(attn.register_forward_hook(lambda m, a, kw, out, i=i: self._record(i, m, a, kw), with_kwargs=True))

    @torch.no_grad()
    def _record(self, layer: int, attn: nn.Module, args, kwargs) -> None:
        hidden = kwargs.get("hidden_states", args[0] if args else None)  # [B, T, d]
        cos, sin = kwargs["position_embeddings"]  # [..., B, T, hd]
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        pending = self._pending.setdefault(layer, _Pending(attn))
        pending.cache = cache
        pending.key_bias = key_logit_bias(attn)
        pending.hidden.append(hidden[:, -1:])
        pending.cos.append(cos[..., -1:, :])
        pending.sin.append(sin[..., -1:, :])
        pending.lengths.append(cache.get_seq_length(attn.layer_idx) if cache is not None else hidden.shape[1])
        if cache is None:
            self._flush(layer, rotated(attn, hidden, (cos, sin), "k", self.sites))  # [B, Hkv, T, hd]
        elif len(pending.hidden) >= self.block:
            self._flush(layer)

    @torch.no_grad()
    def _flush(self, layer: int, keys: torch.Tensor | None = None) -> None:
        p = self._pending.pop(layer, None)
        if p is None or not p.hidden:
            return
        if keys is None:
            keys = p.cache.layers[p.attn.layer_idx].keys  # [B, Hkv, S, hd]; earlier keys never change
        hidden = torch.cat(p.hidden, dim=1)  # [B, k, d]
        pos = (torch.cat(p.cos, dim=-2), torch.cat(p.sin, dim=-2))  # [..., B, k, hd]
        q = rotated(p.attn, hidden, pos, "q", self.sites)  # [B, H, k, hd]
        S = max(p.lengths)
        lengths = torch.tensor(p.lengths, device=q.device)  # [k]
        onehot = self.tracker.onehot(S)  # [B, S, 4]
        window = attention_window(self.model)
        shares, lse = segment_shares(q, keys[:, :, :S], onehot, lengths, p.attn.scaling, self.chunk, window,
                                     p.key_bias)
        self._done.setdefault(layer, []).append((shares, lse))
        if layer in self.patch_layers:
            prompt = self.tracker.segment[:, : self.tracker.prompt_length]  # the request's own image keys only
            self._patches.setdefault(layer, []).append(
                [image_key_weights(q[r], keys[r, :, :S], prompt[r], lengths, lse[r],
                                   p.attn.scaling, window, p.key_bias, r) for r in self.patch_rows])

    def _finish(self) -> None:
        for layer in list(self._pending):
            self._flush(layer)
        if not self._done:
            return
        shares = torch.stack([torch.cat([s for s, _ in self._done[i]], dim=2) for i in self.layers], dim=1)
        lse = torch.stack([torch.cat([z for _, z in self._done[i]], dim=2) for i in self.layers], dim=1)
        patches = [[torch.cat([step[r] for step in self._patches[i]]).cpu().numpy() for i in self.patch_layers]
                   for r in range(len(self.patch_rows))]  # [R][Lp] -> [T, N_r]
        self._done, self._patches = {}, {}
        self.results.append(AttentionMassResult(
            shares=shares.cpu().numpy(),  # [B, L, H, T, 4]
            log_normaliser=lse.cpu().numpy(),  # [B, L, H, T]
            layers=list(self.layers), prompt_length=int(self.tracker.prompt_length), lengths=self.tracker.lengths(),
            patch_rows=list(self.patch_rows), patch_layers=list(self.patch_layers), patches=patches))
