"""Decoding by Contrasting Layers (DoLa; Chuang et al., ICLR 2024), as a context manager.

Official code: voidism/DoLa, `transformers-4.28.1/src/transformers/generation/utils.py::dola_greedy_decode`
(and `dola.py`). Per step, from the last position only:
- premature logits lm_head(h_j) for each candidate layer j, where h_j is the hidden state *entering*
  decoder layer j (j = 0: the embeddings; the official LLaMA file reads `hidden_states[j]` and applies
  no final norm, `modeling_llama.py` `early_exit_layers`);
- the premature layer: argmax over candidates of JSD(softmax(final) || softmax(premature_j)), the KL
  terms averaged over the vocabulary (`F.kl_div(..., reduction='none').mean(-1)`);
- logits = log_softmax(final) - log_softmax(premature), -inf where log_softmax(final) < max + log(relative_top)
  (`relative_top_filter`, relative_top 0.1);
- then the logits processors, among them the repetition penalty, 1.2 for DoLa in the official
  open-ended script (`gpt4_judge_eval.py`; 1.0 for the baseline).
Candidate layers, "low" / "high" / explicit, follow the port of the same code into transformers
(`_dola_decoding`, transformers 4.45-4.5x): with N layers, start = 2 if the word embeddings are tied (else 0);
"low" = range(start, N // 2, 2) (N > 40: range(start, 20, 2)), "high" = range(N // 2, N, 2) (N > 40:
range(N - 20, N, 2)); the README's LLaMA-7B setting `0,2,...,14` is "low". transformers 5 moved DoLa out of the
library to the Hub repository `transformers-community/dola` (run with `trust_remote_code`); this suite downloads
nothing and runs no remote code, so the contrast is computed here.

Differences from the official code: the premature layer is chosen per row (the official code averages
the JSD over the batch, so one layer serves the whole batch, and masks row 0 only); the repetition
penalty is applied here (transformers' `RepetitionPenaltyLogitsProcessor` over the request's ids so far)
so the runner needs no extra `generate` argument.

Off: `layers=()` and `repetition_penalty=1` install nothing: generation is the plain model's.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import RepetitionPenaltyLogitsProcessor

from ..backbones import decoder_layers, get_module
from ..errors import InputError
from .base import Remedy, cache_length


def candidate_layers(model: nn.Module, which) -> list[int]:
    """The candidate premature layers (hidden-state indices: j = the input of decoder layer j)."""
    n = len(decoder_layers(model))
    if isinstance(which, str):
        start = 2 if tied_embeddings(model) and n > 2 else 0
        if which == "low":
            return [start] if start >= n // 2 else list(range(start, n // 2 if n <= 40 else 20, 2))
        if which == "high":
            return list(range(n // 2, n, 2) if n <= 40 else range(n - 20, n, 2))
        raise InputError(f"DoLa layers must be 'low', 'high' or a list of layer indices, got {which!r}")
    layers = [int(j) for j in which]
    bad = [j for j in layers if not 0 <= j < n]
    if bad:
        raise InputError(f"DoLa layer {bad[0]} out of range: candidates are hidden states 0..{n - 1} (n = final)")
    return layers


def tied_embeddings(model: nn.Module) -> bool:
    config = model.config
    return bool(getattr(config, "tie_word_embeddings", False)
                or getattr(config.get_text_config(), "tie_word_embeddings", False))


def jsd(final: torch.Tensor, premature: torch.Tensor) -> torch.Tensor:
    """final [B, V], premature [C, B, V] logits -> [C, B]: the official JSD (KL terms averaged over V)."""
    lp_f, lp_p = final.float().log_softmax(-1), premature.float().log_softmax(-1)
    mixture = 0.5 * (lp_f.exp()[None] + lp_p.exp())  # [C, B, V]
    kl_f = F.kl_div(lp_f[None].expand_as(lp_p), mixture, reduction="none").mean(-1)
    kl_p = F.kl_div(lp_p, mixture, reduction="none").mean(-1)
    return 0.5 * (kl_f + kl_p)


def contrast_layers(final: torch.Tensor, premature: torch.Tensor, relative_top: float) -> tuple:
    """final [B, V], premature [C, B, V] -> (DoLa logits [B, V], chosen candidate index [B])."""
    chosen = jsd(final, premature).argmax(0)  # [B]
    base = premature[chosen, torch.arange(final.shape[0], device=final.device)]  # [B, V]
    lp_f, lp_b = final.float().log_softmax(-1), base.float().log_softmax(-1)
    out = lp_f - lp_b
    if relative_top > 0:
        out = out.masked_fill(lp_f < lp_f.amax(-1, keepdim=True) + math.log(relative_top), float("-inf"))
    return out, chosen


class DoLa(Remedy):
    """`with DoLa(model, layers="low", relative_top=0.1, repetition_penalty=1.2): model.generate(...)`."""

    name, title, changes = "dola", "DoLa", "logits"
    summary = ("next-token logits = log p(final layer) - log p(premature layer), the premature layer chosen per "
               "step by max JSD among candidates, within the final layer's top-probability set")
    cost = ("one extra LM-head read-out per candidate layer per step (8 on LLaVA-1.5-7B 'low'); "
            "no published per-token figure for VLMs")
    sweep = {"layers": ["low", "high"], "repetition_penalty": [1.0, 1.2]}

    def __init__(self, model: nn.Module, layers: Literal["low", "high"] | list[int] = "low",
                 relative_top: float = 0.1, repetition_penalty: float = 1.2, norm: bool = False):
        super().__init__(model)
        self.layers = candidate_layers(model, layers)
        if not 0 <= relative_top < 1:
            raise InputError(f"DoLa relative_top must be in [0, 1), got {relative_top}")
        if not repetition_penalty > 0:
            raise InputError(f"DoLa repetition_penalty must be > 0, got {repetition_penalty}")
        self.relative_top, self.norm = float(relative_top), bool(norm)
        self.penalty = RepetitionPenaltyLogitsProcessor(repetition_penalty) if repetition_penalty != 1 else None
        self.chosen: list[torch.Tensor] = []  # per forward: [B] premature layer of each row
        self._hidden: dict[int, torch.Tensor] = {}  # candidate -> [B, d] last position
        self._history: torch.Tensor | None = None  # [B, S] the request's ids so far

    def _install(self) -> None:
        if not self.layers and self.penalty is None:
            return
        self._hook(self.model.register_forward_pre_hook(self._track, with_kwargs=True))
        layers = decoder_layers(self.model)
        for j in self.layers:
            self._hook(layers[j].register_forward_pre_hook(
                lambda _m, args, kwargs, j=j: self._keep(j, kwargs.get("hidden_states", args[0] if args else None)),
                with_kwargs=True))
        self._hook(self.model.register_forward_hook(self._contrast))

    def _track(self, _module, _args, kwargs) -> None:
        ids = kwargs.get("input_ids")
        if ids is None:
            raise InputError("inside DoLa, call the model with input_ids (its repetition penalty reads them)")
        self._history = ids if cache_length(kwargs) == 0 or self._history is None else torch.cat(
            [self._history, ids], dim=1)

    def _keep(self, j: int, hidden: torch.Tensor) -> None:
        self._hidden[j] = hidden[:, -1]  # [B, d]

    @torch.no_grad()
    def _contrast(self, _module, _args, output):
        logits = output[0] if isinstance(output, tuple) else output.logits  # [B, T, V]
        last = logits[:, -1].float()  # [B, V]
        if self.layers:
            head = get_module(self.model, self.sites.lm_head)
            norm = get_module(self.model, self.sites.final_norm)
            hidden = torch.stack([self._hidden.pop(j) for j in self.layers])  # [C, B, d]
            premature = head.forward(norm.forward(hidden) if self.norm else hidden).float()  # [C, B, V]
            last, chosen = contrast_layers(last, premature, self.relative_top)
            self.chosen.append(torch.tensor(self.layers)[chosen.cpu()])
        if self.penalty is not None:
            last = self.penalty(self._history.to(last.device), last)
        logits = torch.cat([logits[:, :-1].float(), last[:, None]], dim=1)  # [B, T, V]
        if isinstance(output, tuple):
            return (logits, *output[1:])
        output.logits = logits
        return output

