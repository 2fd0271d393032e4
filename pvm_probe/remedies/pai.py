"""Paying More Attention to Image (PAI; Liu et al., ECCV 2024), as a context manager.

Official code: LALBJ/PAI.
- `attention.py::llama_new_forward` (installed on layers start_layer..end_layer-1 by `llama_modify`):
  after the pre-softmax logits A = q.k / sqrt(d) + mask, the **last query row** of every forward
  (the query that predicts the next token: the last prompt position at prefill, then each generated
  token) is changed at the image keys, A <- A + alpha * |A|, then softmax. Other rows and text keys
  are untouched. The boost is off during the unconditional (text-only) pass (`use_cfg`).
- `CFG.py::CFGLogits` (a logits processor with its own cached text-only pass, prompt = the prompt
  with the image removed, `model_loader.init_cfg_processor`): with lp = log_softmax,
      out = gamma * (lp(y | v, x) - lp(y | x)) + lp(y | x),
  masked to -inf where lp(y | v, x) < log(0.1) + max lp(y | v, x); gamma = 1 returns lp unchanged.

Defaults, from the official README commands and scripts: alpha = 0.2, gamma = 1.1 (the README and
`init_cfg_processor`; the eval scripts' argparse default is 2), layers 2..L-1 (start_layer 2,
end_layer 32 on the 32-layer LLaVA-1.5-7B), cut-off 0.1.

Here the boost is a key-logit bias (`key_bias.py`): the chosen layers' attention runs through
`keybias_<eager|sdpa>`, which applies the bias alpha * |A| at image keys to the last query row, so
eager and sdpa give the same result and `VisualAttentionMass` can apply the same bias. Image keys
are the request's visual placeholder tokens, tracked over the KV cache. The text-only pass is a
second lane of the batch (`lanes.TwoLanes`): each row's prompt without its image tokens and the
image's start/end markers (`visual_marker_ids`), left-padded to the prompt's width, with its own KV
cache rows and position ids built from its own mask; it has no image keys, so it gets no boost.

alpha = 0 leaves the attention alone and gamma = 1 adds no lane: with both, generation is the plain
model's. A request without an image raises at its first forward.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..backbones import check_layers, decoder_layers, forward_start, get_module
from ..errors import InputError
from ..key_bias import biased_implementation, register_key_logit_bias, supports
from .base import cache_length, check_strength, require_image
from .lanes import TwoLanes, text_only_prompt


def guidance(cond: torch.Tensor, uncond: torch.Tensor, gamma: float, cutoff: float = 0.1) -> torch.Tensor:
    """gamma * (lp_c - lp_u) + lp_u with lp = log_softmax, -inf where lp_c < log(cutoff) + max lp_c."""
    lp_c, lp_u = cond.float().log_softmax(-1), uncond.float().log_softmax(-1)
    out = gamma * (lp_c - lp_u) + lp_u
    return out.masked_fill(lp_c < math.log(cutoff) + lp_c.amax(-1, keepdim=True), float("-inf"))


class PAI(TwoLanes):
    """`with PAI(model, alpha=0.2, gamma=1.1, layers=None): model.generate(**inputs)`."""

    name, title, changes = "pai", "PAI", "attention"
    summary = "more attention on the image keys in the middle layers, plus guidance against a text-only pass"
    cost = "a key-logit bias, and a text-only lane of the batch when gamma != 1: 2B rows per step"
    sweep = {"alpha": [0.2, 0.5, 1.0, 2.0], "gamma": [1.1, 2.0]}

    def __init__(self, model: nn.Module, alpha: float = 0.2, gamma: float = 1.1, layers: list[int] | None = None,
                 cutoff: float = 0.1):
        super().__init__(model)
        self.alpha = check_strength("PAI alpha", alpha)
        if not gamma >= 1:
            raise InputError(f"PAI gamma (guidance strength) must be >= 1 (1 = no guidance), got {gamma}")
        if not 0 < cutoff <= 1:
            raise InputError(f"PAI cutoff must be in (0, 1], got {cutoff}")
        n = len(decoder_layers(model))
        self.layers = list(range(min(2, n), n)) if layers is None else [int(i) for i in layers]
        check_layers(model, self.layers)
        self.gamma, self.cutoff = float(gamma), float(cutoff)
        self._implementation: str | None = None
        self._image_keys: torch.Tensor | None = None  # [B', S] True at image keys of the KV cache
        self._text: tuple | None = None  # (ids [B, P], mask [B, P]) of the text-only prompt

    # ---- install / restore -----------------------------------------------------------------------
    def _install(self) -> None:
        multimodal = get_module(self.model, self.sites.multimodal)
        self._hook(multimodal.register_forward_pre_hook(self._track, with_kwargs=True))
        if self.alpha > 0:
            self._boost_layers()
        if self.gamma > 1:
            self._install_lanes()

    def _boost_layers(self) -> None:
        current = self.model.config.get_text_config()._attn_implementation
        if not supports(current):
            raise InputError(f"PAI needs eager or sdpa attention, not {current!r}")
        self._implementation = current
        self.model.set_attn_implementation({"text_config": biased_implementation(current)})
        layers = decoder_layers(self.model)
        for i in self.layers:
            attn = get_module(layers[i], self.sites.self_attn)
            self._hook(register_key_logit_bias(attn, self._bias))

    def _restore(self) -> None:
        if self._implementation is not None:
            self.model.set_attn_implementation({"text_config": self._implementation})
            self._implementation = None

    # ---- the attention boost ---------------------------------------------------------------------
    def _track(self, module, args, kwargs) -> None:
        start = forward_start(self.model, module, args, kwargs)
        if start.past == 0 or self._image_keys is None:
            if not start.visual.any():
                raise InputError("PAI needs an image: this request's first forward has no image tokens")
            self._image_keys = start.visual  # [B', T]
        else:
            self._image_keys = torch.cat([self._image_keys, start.visual], dim=1)  # [B', S]

    def _bias(self):
        """The bias of the current forward: alpha * |A| at image keys (a snapshot of the image keys)."""
        image_keys, alpha = self._image_keys, self.alpha

        def bias(scores: torch.Tensor, positions: torch.Tensor, rows: torch.Tensor | None = None):
            keys = image_keys if rows is None else image_keys[rows.to(image_keys.device)]  # [b, S]
            image = keys[:, positions.to(keys.device)].to(scores.dtype)  # [b, S']
            image = image.view(image.shape[0], *[1] * (scores.dim() - 2), image.shape[1])  # [B, 1.., S']
            return alpha * scores.abs() * image

        return bias

    # ---- the text-only lane ----------------------------------------------------------------------
    def _start(self, kwargs: dict) -> None:
        ids = kwargs.get("input_ids")
        if ids is None:
            raise InputError("PAI guidance needs input_ids: its text-only prompt drops the image tokens")
        require_image(self.title, self.model, kwargs)
        self._text = text_only_prompt(self.model, ids, kwargs.get("attention_mask"))

    def _lane(self, kwargs: dict) -> dict:
        ids = kwargs["input_ids"]
        n, past = ids.shape[1], cache_length(kwargs)
        if self._text is None:
            raise RuntimeError("PAI guidance must see the request start (its prefill) inside the context")
        text_ids, text_mask = self._text
        mask = kwargs.get("attention_mask")
        if mask is None:  # no padding in the request: all of its past + n keys are real
            mask = torch.ones(ids.shape[0], past + n, dtype=text_mask.dtype, device=ids.device)
        lane_mask = torch.cat([text_mask, mask[:, text_mask.shape[1]:]], dim=1)  # [B, past + n]
        lane = {"input_ids": text_ids if past == 0 else ids, "attention_mask": lane_mask}
        for key in ("token_type_ids", "mm_token_type_ids"):
            if kwargs.get(key) is not None:
                lane[key] = torch.zeros_like(kwargs[key])
        if kwargs.get("position_ids") is not None:
            lane["position_ids"] = _positions(lane_mask, n, kwargs["position_ids"])
        return lane

    def combine(self, cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
        return guidance(cond, uncond, self.gamma, self.cutoff)


def _positions(mask: torch.Tensor, n: int, like: torch.Tensor) -> torch.Tensor:
    """Text-only position ids of the last n tokens from the lane's own mask, shaped like `like`
    ([B, n] or [k, B, n]: a text-only row has the same position in every rotary section)."""
    pos = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)[:, -n:]  # [B, n]
    return pos.expand(*like.shape[:-2], *pos.shape).to(like.dtype)
