"""Memory-space Visual Retracing (MemVR; Zou et al., ICML 2025), as a context manager.

Official code: 1zhou-Wang/MemVR. `memvr.py` (LLaVA: `forward` of the LLaMA model and `LlamaMLP`),
`modeling/modeling_qwen.py` and `modeling/modeling_chatglm.py` (Qwen-VL, GLM-4V). Per forward:
- **Trigger.** After each decoder layer l, the early-exit logits of the last position,
  lm_head(norm(h_l)), give an uncertainty: the entropy of the softmax over the top-10 logits,
  divided by log 10 (so in [0, 1]). The first layer with entropy > threshold and
  start_layer < l < end_layer (strict) triggers retracing in layer l + 1; at most once per forward.
- **Retracing.** Layer l + 1's FFN also reads the visual tokens Z [N, d] (the image features in the
  language model's space) as key-value memory, keys K = s_k Z with s_k = mean|W_up| / mean|Z|:
      delta = phi(x K^T) Z,   FFN'(x) = (1 - r) FFN(x) + r * (mean|FFN(x)| / mean|delta|) * delta,
  x the FFN input (after its norm), r the retracing ratio, means over the forward's positions. The
  official values Z s_v (s_v = mean|W_down| / mean|Z|) cancel in that normalisation and are left out.
  phi = SiLU in the Qwen-VL and GLM-4V files (the paper's key-value memory); the LLaVA file applies
  no activation (`activation=None` reproduces it).
Defaults, from the README and the LLaVA scripts: ratio 0.12 (`eval_scripts/llava/mme.sh`; CHAIR uses
0.31, Qwen-VL 0.28-0.29 with start 9), threshold 0.75, start_layer 5, end_layer 16 of LLaVA's 32 layers.
Given as None, the layer window keeps that share of depth on any model: start = floor(5 L / 32), end =
max(start + 2, round(16 L / 32)) (36 layers: 5 and 18; the tiny 4-layer default: 0 and 2).

Per row here (the official code sums the entropy over the batch): each row triggers on its own
entropy, only rows with an image retrace, and the means are over that row's non-padding positions.
As in the official code the whole forward's positions get the memory (the prompt at prefill).
Cost: the official code reads the vocabulary after *every* layer of every forward (`memvr.py`: lm_head(norm(h))
over all positions, then the last one; 32 read-outs per token on LLaVA-1.5-7B), whatever the window. Here the
read-out is the last position only, only after the window's layers (start_layer < l < end_layer: 10 on the
paper's 5..16), and stops once every row with an image has fired (later read-outs cannot change anything).
Z is the request's visual set, captured once from `inputs_embeds` (as PVM captures it: MemVR is
PVM's closest training-free relative, with no training, no gate and a trigger instead).
`self.triggers` records, per forward, the retracing layer of each row (-1: none).

ratio = 0 installs nothing: generation is the plain model's.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import decoder_layers, forward_start, get_module
from ..errors import InputError
from ..inject import VisualMemory
from .base import Remedy, check_strength

TOP_K = 10
ACTIVATIONS = {"silu": F.silu, None: lambda x: x}


def top_k_entropy(logits: torch.Tensor, k: int = TOP_K) -> torch.Tensor:
    """logits [B, V] -> entropy of the softmax over the top-k logits / log k, [B]."""
    p = logits.float().topk(k, dim=-1).values.softmax(-1)  # [B, k]
    return -(p * p.log()).sum(-1) / math.log(k)


def retrace(x: torch.Tensor, ffn_out: torch.Tensor, tokens: torch.Tensor, key_mask: torch.Tensor,
            w_up: torch.Tensor, ratio: float, real: torch.Tensor, activation=F.silu) -> torch.Tensor:
    """The FFN output with the visual memory, for every row given.

    x, ffn_out [B, T, d]; tokens [B, N, d] (zero rows at padding); key_mask [B, N]; real [B, T]
    (non-padding positions, over which the means run); w_up: the FFN's up-projection weight."""
    d = x.shape[-1]
    token_abs = tokens.abs().sum((1, 2)) / (key_mask.sum(1) * d).clamp_min(1)  # [B] mean|Z|
    s_k = w_up.abs().mean() / token_abs.clamp_min(1e-30)  # [B]
    act = activation(s_k[:, None, None] * (x @ tokens.transpose(1, 2)))  # [B, T, N]; padded keys give 0
    delta = act @ tokens  # [B, T, d]
    scale = _mean_abs(ffn_out, real) / _mean_abs(delta, real).clamp_min(1e-30)  # [B]
    return (1 - ratio) * ffn_out + ratio * scale[:, None, None] * delta


def _mean_abs(t: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """t [B, T, d], real [B, T] -> mean |t| over the real positions, [B]."""
    return (t.abs() * real[..., None]).sum((1, 2)) / (real.sum(1).clamp_min(1) * t.shape[-1])


def layer_window(num_layers: int) -> tuple[int, int]:
    """The paper's layer window (5, 16 of 32) at the same share of depth of any model."""
    start = 5 * num_layers // 32
    return start, min(num_layers - 1, max(start + 2, round(16 * num_layers / 32)))


class MemVR(Remedy):
    """`with MemVR(model, ratio=0.12, threshold=0.75): model.generate(...)` (layer window scaled to depth)."""

    name, title, changes = "memvr", "MemVR", "ffn"
    summary = "re-inject the visual tokens as FFN key-value memory in a middle layer when an early exit is unsure"
    cost = "an early-exit read-out of the vocabulary per layer in the window (published: 1.04x per token)"
    sweep = {"ratio": [0.12, 0.31, 0.5, 1.0], "threshold": [0.75, 0.5, 0.0]}

    @classmethod
    def defaults(cls, num_layers: int) -> dict:
        start, end = layer_window(num_layers)
        return {**super().defaults(num_layers), "start_layer": start, "end_layer": end}

    @classmethod
    def grid(cls, num_layers: int) -> list[dict]:
        """The sweep at the paper's layer window and over the whole depth."""
        paper = super().grid(num_layers)
        options = [{**o, **w} for w in ({}, {"start_layer": 0, "end_layer": num_layers - 1}) for o in paper]
        return [o for i, o in enumerate(options) if o not in options[:i]]

    def __init__(self, model: nn.Module, ratio: float = 0.12, threshold: float = 0.75, start_layer: int | None = None,
                 end_layer: int | None = None, activation: Literal["silu"] | None = "silu"):
        super().__init__(model)
        self.ratio = check_strength("MemVR ratio", ratio)
        if self.ratio > 1:
            raise InputError(f"MemVR ratio must be <= 1, got {ratio}")
        n = len(decoder_layers(model))
        default_start, default_end = layer_window(n)
        start_layer = default_start if start_layer is None else start_layer
        end_layer = default_end if end_layer is None else end_layer
        if not 0 <= start_layer < end_layer <= n - 1:
            raise InputError(f"MemVR needs 0 <= start_layer < end_layer <= {n - 1} (it retraces in layer "
                             f"l + 1 for start_layer < l < end_layer), got {start_layer}, {end_layer}")
        if activation not in ACTIVATIONS:
            raise InputError(f"MemVR activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
        self.threshold, self.start_layer, self.end_layer = float(threshold), int(start_layer), int(end_layer)
        self.activation = ACTIVATIONS[activation]
        self.memory = VisualMemory()
        self.triggers: list[torch.Tensor] = []  # per forward: [B] retracing layer per row, -1 for none
        self._real: torch.Tensor | None = None  # [B, T] non-padding positions of the current forward

    def _install(self) -> None:
        if self.ratio == 0:
            return
        model, sites = self.model, self.sites
        hook = self._hook
        multimodal, language = get_module(model, sites.multimodal), get_module(model, sites.language_model)
        hook(multimodal.register_forward_pre_hook(self._start_forward, with_kwargs=True))
        hook(language.register_forward_pre_hook(self._capture, with_kwargs=True))
        layers = decoder_layers(model)
        for i in range(self.start_layer + 1, self.end_layer):
            hook(layers[i].register_forward_hook(lambda _m, _a, out, i=i: self._check(i, out)))
        for i in range(self.start_layer + 2, self.end_layer + 1):
            ffn = get_module(layers[i], sites.ffn)
            hook(ffn.register_forward_hook(lambda m, args, out, i=i: self._retrace(i, m, args[0], out)))

    def _restore(self) -> None:
        self.memory = VisualMemory()

    # ---- hooks ---------------------------------------------------------------------------------
    def _start_forward(self, module, args, kwargs) -> None:
        start = forward_start(self.model, module, args, kwargs)
        if start.new_request:
            self.memory.reset(start.visual)
        self._real = start.real.to(torch.get_default_dtype())  # [B, T]
        self.triggers.append(torch.full((start.visual.shape[0],), -1, dtype=torch.long))

    def _capture(self, _module, _args, kwargs) -> None:
        if self.memory.capturing:
            self.memory.capture(kwargs["inputs_embeds"])

    @torch.no_grad()
    def _check(self, layer: int, output) -> None:
        if self.memory.tokens is None:
            return  # no image in this request: nothing to retrace
        trigger = self.triggers[-1]
        waiting = (trigger < 0) & self.memory.key_mask.any(1).cpu()  # [B] rows with an image not yet fired
        if not waiting.any():
            return  # later read-outs could change nothing
        hidden = output[0] if isinstance(output, (tuple, list)) else output  # [B, T, d]
        norm = get_module(self.model, self.sites.final_norm)
        head = get_module(self.model, self.sites.lm_head)
        entropy = top_k_entropy(head.forward(norm.forward(hidden[:, -1])))  # [B]
        fire = (entropy.cpu() > self.threshold) & waiting  # [B]
        trigger[fire] = layer + 1

    def _retrace(self, layer: int, ffn: nn.Module, x: torch.Tensor, out: torch.Tensor):
        rows = (self.triggers[-1] == layer).to(out.device)  # [B]
        if not rows.any():
            return None
        memory = self.memory
        w_up = get_module(ffn, self.sites.ffn_up).weight
        new = retrace(x, out, memory.tokens.to(x.dtype), memory.key_mask, w_up, self.ratio,
                      self._real.to(device=x.device, dtype=x.dtype), self.activation)  # [B, T, d]
        return torch.where(rows[:, None, None], new, out)
