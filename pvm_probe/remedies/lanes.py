"""A second lane of rows in the same batched forward: the contrast pass of VCD and PAI's guidance.

A pre-hook on the top-level model appends B rows to every forward (prefill and each decode step):
rows 0..B-1 are the request as given, rows B..2B-1 its counterpart (the distorted image, the prompt
without the image), built by the subclass. The model runs 2B rows, so the counterpart has its own
KV cache rows inside the same cache object and costs a second row per step, never a re-run of the
prefix. A forward hook on the top-level model combines the logits back to B rows, so `generate`
(which keeps B-row inputs, masks and position ids and adds one token per row) never sees the lane.

Inputs with a batch dimension are extended here: ids, embeddings, 2-D attention mask, token types
(dim 0) and position ids (dim -2: [B, T] or [k, B, T], Qwen's 3-D positions). Image inputs
(`pixel_values`, `image_grid_thw`, `image_sizes`) are the subclass's business. Outputs other than
the logits (hidden states, attentions, the cache) keep 2B rows.
"""

from __future__ import annotations

import torch
from torch import nn

from ..backbones import visual_marker_ids, visual_token_ids
from ..errors import InputError
from .base import Remedy, cache_length

ROW_INPUTS = ("input_ids", "inputs_embeds", "attention_mask", "token_type_ids", "mm_token_type_ids")
IMAGE_INPUTS = ("pixel_values", "image_grid_thw", "image_sizes", "mm_encoder_outputs")
UNBATCHED = ("cache", "past_key_values", "cache_position", "logits_to_keep", *IMAGE_INPUTS)


class TwoLanes(Remedy):
    """Subclasses define `_start(kwargs)` (a request begins: check it, prepare the lane),
    `_lane(kwargs)` (the B counterpart rows of every row input present, plus `position_ids`),
    `_images(kwargs)` (image inputs for 2B rows; default unchanged) and `combine(a, b)` -> logits."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self._rows = 0

    def _install_lanes(self) -> None:
        self._hook(self.model.register_forward_pre_hook(self._extend, with_kwargs=True))
        self._hook(self.model.register_forward_hook(self._combine))

    def _start(self, kwargs: dict) -> None:
        raise NotImplementedError

    def _lane(self, kwargs: dict) -> dict:
        raise NotImplementedError

    def _images(self, kwargs: dict) -> dict:
        return {}

    def combine(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # ---- hooks ---------------------------------------------------------------------------------
    def _extend(self, _module, args, kwargs):
        if args:
            raise InputError(f"inside {self.title}, call the model with keyword arguments (as generate does)")
        for key, value in kwargs.items():
            if isinstance(value, torch.Tensor) and key not in ROW_INPUTS + UNBATCHED + ("position_ids",):
                raise InputError(f"{self.title} does not know how to batch the input {key!r}")
        if cache_length(kwargs) == 0:
            self._start(kwargs)
        rows = kwargs.get("input_ids")
        self._rows = (rows if rows is not None else kwargs["inputs_embeds"]).shape[0]
        lane = self._lane(kwargs)
        out = {**kwargs, **self._images(kwargs)}
        for key, extra in lane.items():
            out[key] = _stack(key, kwargs.get(key), extra)
        return args, out

    def _combine(self, _module, _args, output):
        B = self._rows
        if isinstance(output, tuple):
            return (self.combine(output[0][:B], output[0][B:]), *output[1:])
        output.logits = self.combine(output.logits[:B], output.logits[B:])  # [B, T, V]
        return output


def _stack(key: str, first: torch.Tensor | None, second: torch.Tensor) -> torch.Tensor:
    """Rows of the request, then the lane's rows, along the batch dimension of `key`."""
    if first is None:  # the lane needs a mask the request did without: all of its keys are real
        first = torch.ones_like(second)
    dim = -2 if key == "position_ids" else 0
    return torch.cat([first, second.to(first.dtype)], dim=dim)


def duplicate(kwargs: dict) -> dict:
    """The lane's rows as copies of the request's rows (every row input and the position ids)."""
    return {k: kwargs[k] for k in (*ROW_INPUTS, "position_ids") if kwargs.get(k) is not None}


def text_only_prompt(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor | None) -> tuple:
    """Each row's prompt without its image tokens and the image's start / end markers, left-padded to
    the prompt's width: (ids [B, P], mask [B, P])."""
    mask = torch.ones_like(ids) if mask is None else mask
    drop = torch.isin(ids, torch.tensor(visual_token_ids(model) + visual_marker_ids(model), device=ids.device))
    keep = mask.bool() & ~drop  # [B, P]
    order = torch.sort(keep.to(torch.int8), dim=1, stable=True).indices  # dropped first, kept in order
    kept = keep.gather(1, order)  # [B, P] left-padded
    pad = model.config.get_text_config().pad_token_id or 0
    return ids.gather(1, order).masked_fill(~kept, pad), kept.to(mask.dtype)
