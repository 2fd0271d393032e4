"""LogitLens: read each decoder layer's residual output through the model's final norm and LM head.

Per forward inside the context (prefill, then each decode step) and per layer, at the forward's last
position: KL(final || layer), the rank and probability under the layer's distribution of the final
top-1 token, and the layer's own top-1. Row t is the position that produced generated token t.
"Final" is the model's own output logits (read from the LM head), so PVM's injection, deepstack
and anything else inside the model is included exactly as the model computed it.

`LogitLens(model, lens=tuned)` reads through a `TunedLens` (`tuned_lens.py`): each layer's state is
translated by the lens before the final norm and LM head; everything else, and the result, is the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..backbones import check_layers, decoder_layers, get_module
from ._base import HookProbe, RequestTracker, last_hidden, valid_rows
from ._io import ResultIO


@dataclass
class LogitLensResult(ResultIO):
    """What `LogitLens` recorded, per request, layer and generated position (row t made token t)."""

    kl: np.ndarray  # [B, L, T] KL(final || layer) in nats
    rank: np.ndarray  # [B, L, T] int: tokens the layer scores strictly above the final top-1 (0 = top)
    prob: np.ndarray  # [B, L, T] the layer's probability of the final top-1 token
    top1: np.ndarray  # [B, L, T] int: the layer's own top-1 token
    final_token: np.ndarray  # [B, T] int: the final top-1 token
    layers: list = field(default_factory=list)
    prompt_length: int = 0
    lens: str = "logit"  # "logit", or "tuned" when read through a TunedLens
    lengths: list = field(default_factory=list)  # [B] rows of each request's answer (default: all T)

    def agrees(self) -> np.ndarray:
        """[B, L, T] bool: the layer's top-1 is the final top-1."""
        return self.top1 == self.final_token[:, None, :]

    def convergence_layer(self) -> np.ndarray:
        """[B, T] first recorded layer from which top-1 agrees with the final output and keeps
        agreeing in every later recorded layer; -1 if the last recorded layer disagrees."""
        agree = self.agrees()  # [B, L, T]
        stays = np.flip(np.logical_and.accumulate(np.flip(agree, 1), axis=1), 1)  # [B, L, T]
        first = stays.argmax(1)  # [B, T]
        return np.where(stays.any(1), np.asarray(self.layers)[first], -1)

    def mean_kl(self) -> np.ndarray:
        """[L] KL averaged over rows and the positions of each row's answer."""
        T = self.kl.shape[2]
        valid = valid_rows(self.lengths or [T] * len(self.kl), T)  # [B, T]
        return (self.kl * valid[:, None]).sum(axis=(0, 2)) / max(int(valid.sum()), 1)


def lens_metrics(layer_logits: torch.Tensor, final_logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """layer_logits [L, B, V], final_logits [B, V] -> kl, rank, prob, top1 [L, B] and token [B]."""
    layer_lp = layer_logits.float().log_softmax(-1)  # [L, B, V]
    final_lp = final_logits.float().log_softmax(-1)  # [B, V]
    token = final_lp.argmax(-1)  # [B]
    kl = (final_lp.exp() * (final_lp - layer_lp)).sum(-1)  # [L, B]
    chosen = layer_lp.gather(-1, token[None, :, None].expand(len(layer_lp), -1, 1))  # [L, B, 1]
    rank = (layer_lp > chosen).sum(-1)  # [L, B]
    return {"kl": kl, "rank": rank, "prob": chosen[..., 0].exp(), "top1": layer_lp.argmax(-1), "token": token}


class LogitLens(HookProbe):
    """Context manager: logit lens of every (or the chosen) decoder layer during `generate`.

    lens: a `TunedLens` of this model's base (or anything with `check(model)` and
    `translate(hidden [L, B, d], layers)`); None reads the raw residual stream."""

    def __init__(self, model: nn.Module, layers=None, lens=None):
        super().__init__(model)
        n = len(decoder_layers(model))
        self.layers = list(range(n)) if layers is None else [int(i) for i in layers]
        check_layers(model, self.layers)
        if lens is not None:
            lens.check(model)
        self.lens = lens
        self.norm = get_module(model, self.sites.final_norm)
        self.lm_head = get_module(model, self.sites.lm_head)
        self._current: dict[int, torch.Tensor] = {}  # layer -> [B, d] of the running forward
        self._steps: list[dict] = []

    def _install(self) -> None:
        self.tracker = RequestTracker(self, on_new_request=self._finish)
        layers = decoder_layers(self.model)
        for i in self.layers:
            self._hook(layers[i].register_forward_hook(lambda _m, _a, out, i=i: self._keep(i, out)))
        self._hook(self.lm_head.register_forward_hook(lambda _m, _a, out: self._read(out)))

    def _keep(self, layer: int, output) -> None:
        self._current[layer] = last_hidden(output)[:, -1]  # [B, d]

    @torch.no_grad()
    def _read(self, logits: torch.Tensor) -> None:
        if len(self._current) != len(self.layers):
            return  # an LM-head call outside a full forward (e.g. another probe's): not ours
        hidden = torch.stack([self._current[i] for i in self.layers])  # [L, B, d]
        self._current = {}
        if self.lens is not None:
            hidden = self.lens.translate(hidden, self.layers)  # [L, B, d]
        layer_logits = self.lm_head.forward(self.norm.forward(hidden))  # [L, B, V]
        self._steps.append(lens_metrics(layer_logits, logits[:, -1]))

    def _finish(self) -> None:
        if not self._steps:
            return
        stacked = {k: torch.stack([s[k] for s in self._steps], dim=-1).cpu().numpy() for k in self._steps[0]}
        self._steps = []
        self.results.append(LogitLensResult(
            kl=stacked["kl"].transpose(1, 0, 2), rank=stacked["rank"].transpose(1, 0, 2),
            prob=stacked["prob"].transpose(1, 0, 2), top1=stacked["top1"].transpose(1, 0, 2),
            final_token=stacked["token"], layers=list(self.layers), prompt_length=int(self.tracker.prompt_length),
            lens="logit" if self.lens is None else "tuned", lengths=self.tracker.lengths()))
