"""SPARC, Selective Progressive Attention ReCalibration (Jung et al., 2025), as a context manager.

Official code: mingi000508/SPARC, `attn_util.py` (a replacement LLaMA attention `forward` on every layer, with a
`SelectedIndexBuffer`), `eval.py`, `scripts/llava/captioning_coco.sh`. Per forward of a decode step:
- **Selection** (in the selected layer, after its attention): a = the last query's attention weights on the image
  keys, averaged over heads. The prefill stores e = a. At each decode step the image tokens with
  (a - e) / e >= tau are selected, then e <- (1 - beta) a + beta e (an exponential moving average).
- **Recalibration** (in every layer of the range, before its attention): the cached *values* of the image tokens
  selected at the previous step are multiplied by alpha, in place in the KV cache, so a token selected k times
  carries alpha^k from then on (the "progressive" part).
Defaults, `scripts/llava/captioning_coco.sh`: alpha 1.1, beta 0.1, tau 1.5, selected layer 20 and layers 0..31
of LLaVA-1.5-7B's 32 (`eval.py` installs nothing when alpha = 1). Given as None, the selected layer keeps that
share of depth: floor(20 L / 32) (36 layers: 22); recalibration covers every layer.

Per row here (the official code runs batch 1): each row selects among its own image tokens. The attention
weights are rebuilt from the layer's rotated query and cached keys (`key_bias.last_query_scores`), so eager and
sdpa give the same selection.

Off: alpha = 1 installs nothing: generation is the plain model's.
"""

from __future__ import annotations

import torch
from torch import nn

from ..backbones import check_layers, decoder_layers, forward_start, get_module
from ..errors import InputError
from ..key_bias import last_query_scores, last_row_mask
from ..probes._rotary import rotated
from .base import Remedy


def last_query_weights(attn: nn.Module, args, kwargs: dict, sites) -> torch.Tensor:
    """From a forward hook (with kwargs) on a self-attention module: the softmax weights of the forward's last
    query over every cached key, rebuilt from its rotated query and the cache: [B, H, S]."""
    hidden = kwargs.get("hidden_states", args[0] if args else None)[:, -1:]  # [B, 1, d]
    cos, sin = kwargs["position_embeddings"]
    query = rotated(attn, hidden, (cos[..., -1:, :], sin[..., -1:, :]), "q", sites)  # [B, H, 1, hd]
    keys = kwargs["cache"].layers[attn.layer_idx].keys  # [B, Hkv, S, hd]
    scores = last_query_scores(attn, query, keys, attn.scaling)  # [B, H, 1, S]
    return (scores + last_row_mask(kwargs.get("attention_mask"), scores)).float().softmax(-1)[:, :, 0]


def select(attention: torch.Tensor, average: torch.Tensor, image: torch.Tensor, tau: float) -> torch.Tensor:
    """attention, average [B, S] (head-mean attention on the keys, its running average), image [B, S] ->
    [B, S] True at image keys whose attention rose by tau or more relative to the average."""
    ratio = (attention - average) / average.where(image, torch.ones_like(average))
    return image & (ratio >= tau)


class SPARC(Remedy):
    """`with SPARC(model, alpha=1.1, beta=0.1, tau=1.5): model.generate(...)`."""

    name, title, changes = "sparc", "SPARC", "attention"
    summary = ("multiplies the cached values of the image tokens whose attention rose sharply at the last step by "
               "alpha, cumulatively, so the image keeps its weight as the answer lengthens")
    cost = "one head-mean attention row in one layer and an in-place scaling of selected cached values per step"
    sweep = {"alpha": [1.05, 1.1, 1.2], "tau": [1.0, 1.5, 2.0]}

    def __init__(self, model: nn.Module, alpha: float = 1.1, beta: float = 0.1, tau: float = 1.5,
                 selected_layer: int | None = None, layers: list[int] | None = None):
        super().__init__(model)
        if not alpha > 0:
            raise InputError(f"SPARC alpha must be > 0 (1 = off), got {alpha}")
        if not 0 <= beta < 1:
            raise InputError(f"SPARC beta (moving-average weight) must be in [0, 1), got {beta}")
        n = len(decoder_layers(model))
        self.selected_layer = 20 * n // 32 if selected_layer is None else int(selected_layer)
        self.layers = list(range(n)) if layers is None else [int(i) for i in layers]
        check_layers(model, [self.selected_layer, *self.layers])
        self.alpha, self.beta, self.tau = float(alpha), float(beta), float(tau)
        self.selections: list[torch.Tensor] = []  # per decode step: [B, S] the image keys it selected
        self._image: torch.Tensor | None = None  # [B, S] image keys of the KV cache
        self._average: torch.Tensor | None = None  # [B, P] running head-mean attention on the prompt's keys
        self._selected: torch.Tensor | None = None  # [B, P] selected in the selected layer of this step
        self._apply: torch.Tensor | None = None  # [B, P] selected at the previous step: recalibrated in this one
        self._past = 0

    def _install(self) -> None:
        if self.alpha == 1:
            return
        multimodal = get_module(self.model, self.sites.multimodal)
        self._hook(multimodal.register_forward_pre_hook(self._start_forward, with_kwargs=True))
        layers = decoder_layers(self.model)
        for i in self.layers:
            attn = get_module(layers[i], self.sites.self_attn)
            self._hook(attn.register_forward_pre_hook(lambda _m, _a, kw, i=i: self._recalibrate(i, kw),
                                                      with_kwargs=True))
        attn = get_module(layers[self.selected_layer], self.sites.self_attn)
        self._hook(attn.register_forward_hook(self._select, with_kwargs=True))

    def _start_forward(self, module, args, kwargs) -> None:
        start = forward_start(self.model, module, args, kwargs)
        self._past = start.past
        if start.past == 0:
            if not start.visual.any():
                raise InputError("SPARC needs an image: this request's first forward has no image tokens")
            self._image, self._average, self._selected = start.visual, None, None
        self._apply = self._selected  # the official buffer's indices2 <- indices1, at layer 0

    @torch.no_grad()
    def _recalibrate(self, layer: int, kwargs: dict) -> None:
        if self._past == 0 or self._apply is None or not self._apply.any():
            return
        values = kwargs["cache"].layers[layer].values  # [B, Hkv, S, hd]
        rows, keys = self._apply.nonzero(as_tuple=True)  # the selected (row, key) pairs only
        rows, keys = rows.to(values.device), keys.to(values.device)
        values[rows, :, keys] = values[rows, :, keys] * self.alpha  # [n, Hkv, hd]

    @torch.no_grad()
    def _select(self, attn, args, kwargs, _output) -> None:
        P = self._image.shape[1]
        attention = last_query_weights(attn, args, kwargs, self.sites)[:, :, :P].mean(1)  # [B, P] head mean
        image = self._image.to(attention.device)
        if self._average is None:  # the prefill
            self._average = attention
            return
        self._selected = select(attention, self._average, image, self.tau)
        self.selections.append(self._selected.cpu())
        self._average = (1 - self.beta) * attention + self.beta * self._average
