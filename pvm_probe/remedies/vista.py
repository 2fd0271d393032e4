"""VISTA, Visual Information Steering with Token-logit Augmentation (Li et al., ICML 2025), as a context manager.

Official code: LzVv123456/VISTA.
- **Visual steering vector (VSV)**, `steering_vector.py::obtain_vsv` + `llm_layers.py::VSVLayer`: per request,
  two forwards of the prompt, with the image ("positive") and without it ("negative": the prompt with the image
  removed, `model_loader.py::prepare_null_prompt`); per decoder layer l, v_l = h_l^pos - h_l^neg of the last
  prompt position, h_l the layer's output (`ForwardTracer`). (The official code passes the single difference
  through a rank-1 PCA, whose mean is the difference itself; the component of a zero-centred single sample is an
  arbitrary unit vector over all layers' dimensions at once, left out here.) During generation, every FFN output
  x of layer l (`layer.mlp = Sequential(mlp, VSVLayer)`, every position of every forward) becomes
      x' = normalize(normalize(x) + y) * |x|,  y = lambda * (1 + max(0, cos(x, -v_l))) * normalize(v_l).
- **Self-logits augmentation (SLA)**, `llava/model/language_model/llava_llama.py`: logits = alpha * mean over
  l in [s, e] of lm_head(h_l) + (1 - alpha) * logits, h_l the raw output of decoder layer l (no final norm).
Defaults, `run_chair.sh` (captions): lambda 0.17 (`run_pope.sh`: 0.01; argparse: 0.1), alpha 0.3, SLA layers
25..30 of LLaVA-1.5's 32 (`--logits-layers 25,30`), steering on all layers. Given as None, the SLA window keeps
that share of depth: s = floor(25 L / 32), e = min(floor(30 L / 32), L - 2), s <= e (36 layers: 28..33).

Per row here (the official code runs batch 1): each row gets its own vector; rows without an image are not
steered. The two extra prompt forwards run inside the request's prefill (no cache, steering off).

Off: lambda 0 and alpha 0 install nothing: generation is the plain model's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import check_layers, decoder_layers, forward_start, get_module
from ..errors import InputError
from .base import Remedy, cache_length, check_strength, require_image
from .lanes import text_only_prompt

CACHE_KEYS = ("cache", "past_key_values", "cache_position", "use_cache")


def steer(x: torch.Tensor, v: torch.Tensor, lam: float) -> torch.Tensor:
    """x [B, T, d] FFN outputs, v [B, d] steering vectors -> the official VSVLayer's output, in x's dtype."""
    xf, vf = x.float(), v.float()[:, None, :]  # [B, T, d], [B, 1, d]
    weight = 1 + F.cosine_similarity(xf, -vf, dim=-1).clamp_min(0)  # [B, T]
    y = lam * weight[..., None] * F.normalize(vf, dim=-1)  # [B, T, d]
    return (F.normalize(F.normalize(xf, dim=-1) + y, dim=-1) * xf.norm(dim=-1, keepdim=True)).to(x.dtype)


def sla_window(num_layers: int) -> list[int]:
    """The paper's SLA layers (25..30 of 32) at the same share of depth."""
    end = min(30 * num_layers // 32, num_layers - 2)
    return list(range(min(25 * num_layers // 32, end), end + 1))


class VISTA(Remedy):
    """`with VISTA(model, vsv_lambda=0.17, logits_alpha=0.3): model.generate(...)`."""

    name, title, changes = "vista", "VISTA", "residual"
    summary = ("steers every layer's FFN output toward the image-minus-no-image direction of the prompt's last "
               "position (VSV) and mixes early-layer logits into the final ones (SLA)")
    cost = ("two extra prompt forwards per request; per step, one LM-head read-out per SLA layer (6 on "
            "LLaVA-1.5-7B); no published per-token figure")
    sweep = {"vsv_lambda": [0.01, 0.05, 0.1, 0.17, 0.3], "logits_alpha": [0.0, 0.3]}

    def __init__(self, model: nn.Module, vsv_lambda: float = 0.17, logits_alpha: float = 0.3,
                 logits_layers: list[int] | None = None, layers: list[int] | None = None):
        super().__init__(model)
        self.lam = check_strength("VISTA vsv_lambda", vsv_lambda)
        self.alpha = check_strength("VISTA logits_alpha", logits_alpha)
        if self.alpha > 1:
            raise InputError(f"VISTA logits_alpha must be <= 1, got {logits_alpha}")
        n = len(decoder_layers(model))
        self.sla_layers = sla_window(n) if logits_layers is None else [int(i) for i in logits_layers]
        self.layers = list(range(n)) if layers is None else [int(i) for i in layers]
        check_layers(model, self.sla_layers + self.layers)
        if self.alpha > 0 and not self.sla_layers:
            raise InputError("VISTA logits_layers is empty: SLA needs at least one layer")
        self.vectors: torch.Tensor | None = None  # [B, L, d] this request's steering vectors
        self._steered: torch.Tensor | None = None  # [B] rows with an image
        self._measuring = False
        self._outputs: dict[int, torch.Tensor] = {}  # SLA layer -> [B, T, d] its output in the current forward
        self._last: dict[int, torch.Tensor] = {}  # layer -> [B, d] its last-position output in a measuring pass

    def _install(self) -> None:
        if self.lam == 0 and self.alpha == 0:
            return
        model, layers = self.model, decoder_layers(self.model)
        self._hook(model.register_forward_pre_hook(self._start, with_kwargs=True))
        keep = set(self.sla_layers) if self.alpha > 0 else set()
        if self.lam > 0:
            keep |= set(range(len(layers)))
            for i in self.layers:
                ffn = get_module(layers[i], self.sites.ffn)
                self._hook(ffn.register_forward_hook(lambda _m, _a, out, i=i: self._steer(i, out)))
        for i in sorted(keep):
            self._hook(layers[i].register_forward_hook(lambda _m, _a, out, i=i: self._keep(i, out)))
        if self.alpha > 0:
            self._hook(model.register_forward_hook(self._augment))

    # ---- hooks ---------------------------------------------------------------------------------
    def _keep(self, layer: int, output) -> None:
        hidden = output[0] if isinstance(output, (tuple, list)) else output  # [B, T, d]
        if self._measuring:
            self._last[layer] = hidden[:, -1]
        elif self.alpha > 0 and layer in self.sla_layers:
            self._outputs[layer] = hidden

    @torch.no_grad()
    def _start(self, module, args, kwargs) -> None:
        if self._measuring or cache_length(kwargs) > 0 or self.lam == 0:
            return
        require_image(self.title, self.model, kwargs)
        ids = kwargs.get("input_ids")
        if ids is None:
            raise InputError("VISTA needs input_ids: its image-free prompt drops the image tokens")
        multimodal = get_module(self.model, self.sites.multimodal)
        self._steered = forward_start(self.model, multimodal, args, kwargs).visual.any(1)  # [B]
        text_ids, text_mask = text_only_prompt(self.model, ids, kwargs.get("attention_mask"))
        positive = self._last_states({k: v for k, v in kwargs.items() if k not in CACHE_KEYS})
        negative = self._last_states({"input_ids": text_ids, "attention_mask": text_mask})
        self.vectors = positive - negative  # [B, L, d]

    def _last_states(self, inputs: dict) -> torch.Tensor:
        """Every decoder layer's output at the last position of one unsteered, uncached forward: [B, L, d]."""
        self._measuring = True
        try:
            self.model(**inputs, use_cache=False)
        finally:
            self._measuring = False
        return torch.stack([self._last.pop(i) for i in range(len(decoder_layers(self.model)))], dim=1)

    def _steer(self, layer: int, out: torch.Tensor):
        if self._measuring:
            return None
        steered = steer(out, self.vectors[:, layer].to(out.device), self.lam)
        return torch.where(self._steered.to(out.device)[:, None, None], steered, out)

    @torch.no_grad()
    def _augment(self, _module, _args, output):
        if self._measuring:
            return None
        logits = output[0] if isinstance(output, tuple) else output.logits  # [B, T, V]
        head = get_module(self.model, self.sites.lm_head)
        T = logits.shape[1]
        early = head.forward(torch.stack([self._outputs.pop(i)[:, -T:] for i in self.sla_layers])).mean(0)
        logits = self.alpha * early.float() + (1 - self.alpha) * logits.float()
        if isinstance(output, tuple):
            return (logits, *output[1:])
        output.logits = logits
        return output
