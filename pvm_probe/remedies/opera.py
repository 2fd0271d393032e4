"""OPERA: Over-trust Penalty and Retrospection-Allocation (Huang et al., CVPR 2024), as a decoding strategy.

Official code: shikiw/OPERA, `transformers-4.29.2/src/transformers/generation/utils.py::opera_beam_search`
(defaults in its signature and the README: num_beams 5, scale_factor 50, threshold 15, num_attn_candidates 5,
penalty_weights 1, window_size 512). Beam search in which, at every step, for each beam:
- **Candidates.** The top `num_attn_candidates` tokens of the raw logits; each is run one step ahead (one
  forward per candidate on the beam's cache) to read its row of the last layer's attention, max over heads.
- **Over-trust penalty.** With the rows of the answer's tokens so far plus the candidate's, max over heads and
  renormalised per row, the local window is the answer-by-answer block (rows and columns from the prompt's end),
  times `scale_factor`; column j scores 1e-7 * prod over rows i >= j (stored in float16, as the official code
  does); the penalty is the max over columns, or, while the answer is at most 10 tokens long (window width <= 10),
  minus the candidate's attention to the image. Candidate score = logit - penalty_weights * penalty; all other
  tokens get -999; then log-softmax and the usual beam step (length penalty 1, no early stopping).
- **Retrospection.** Each step records, per beam, the mode over candidates of the argmax column. When the mode
  over beams, `loc`, has been every beam's recorded column more than `threshold` times, and loc >= 10, decoding
  rolls back to the step that chose the token after the summary token (position loc + 1, at most
  `num_attn_candidates` times per position, else position loc, else no rollback; never more than `window_size`
  tokens back), restores that step's beams, and re-chooses from the full vocabulary with the tokens chosen
  there before forbidden (-999).

Here each request is decoded on its own (the official code takes its rollback decision over the whole batch);
after a rollback the cache is rebuilt from the prompt's cache and the restored answers (the official code
re-runs the prompt too). The last layer's attention rows are rebuilt from its rotated query and cached keys
(`sparc.last_query_weights`), so eager and sdpa give the same decoding.

`decode(inputs, max_new_tokens)` returns [B, P + N] (answers left as `generate` leaves them: EOS, then padding);
`base.replay` then runs them through `generate` under the probes. num_beams 1, penalty_weights 0 and
rollback=False is greedy decoding, token for token.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache

from ..backbones import decoder_layers, get_module, stop_token_ids, visual_token_ids
from ..errors import InputError
from .base import Remedy
from .sparc import last_query_weights

SHORT_ANSWER = 10  # the official code's two "10"s: image-attention bonus up to here, no rollback before it
FILLER = -999.0  # the official code's score for every non-candidate token
IMAGE_INPUTS = ("pixel_values", "image_grid_thw", "image_sizes")


class OPERA(Remedy):
    """`OPERA(model).decode(inputs, max_new_tokens)` -> [B, P + N] token ids."""

    name, title, changes = "opera", "OPERA", "decoding"
    summary = ("beam search that penalises candidates whose last-layer attention piles onto one earlier answer "
               "token (a 'summary' token) and rolls back to re-choose after it when the pattern persists")
    cost = ("per step: 1 + num_attn_candidates forwards of num_beams rows (5 x 6 = 30 row-forwards at the "
            "defaults); published 3.66x greedy per token on LLaVA-1.5-7B")
    sweep = {"scale_factor": [25.0, 50.0], "threshold": [15, 25], "num_attn_candidates": [1, 5]}

    def __init__(self, model: nn.Module, num_beams: int = 5, scale_factor: float = 50.0, threshold: int = 15,
                 num_attn_candidates: int = 5, penalty_weights: float = 1.0, window_size: int = 512,
                 rollback: bool = True):
        super().__init__(model)
        for key, value in (("num_beams", num_beams), ("num_attn_candidates", num_attn_candidates),
                           ("window_size", window_size)):
            if not int(value) >= 1:
                raise InputError(f"OPERA {key} must be >= 1, got {value}")
        if not scale_factor > 0:
            raise InputError(f"OPERA scale_factor must be > 0, got {scale_factor}")
        if not penalty_weights >= 0:
            raise InputError(f"OPERA penalty_weights must be >= 0, got {penalty_weights}")
        self.num_beams, self.candidates, self.window = int(num_beams), int(num_attn_candidates), int(window_size)
        self.scale, self.threshold, self.weight = float(scale_factor), int(threshold), float(penalty_weights)
        self.rollback = bool(rollback)
        self.trace: list[dict] = []  # per step of the last request: beams' ids, candidates, penalties
        self.rollbacks: list[dict] = []  # per rollback: window width, target position, forbidden / chosen (beam, token)
        self._row: torch.Tensor | None = None  # [K, S] last layer, last query, max over heads

    def _install(self) -> None:
        """Nothing on `generate`: OPERA decodes itself (`decode`)."""

    # ---- decoding ------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, inputs: dict, max_new_tokens: int) -> torch.LongTensor:
        if max_new_tokens < 1:
            raise InputError(f"OPERA max_new_tokens must be >= 1, got {max_new_tokens}")
        attn = get_module(decoder_layers(self.model)[-1], self.sites.self_attn)
        handle = attn.register_forward_hook(self._keep_row, with_kwargs=True) if self._reads_attention else None
        try:
            answers = [self._decode_one(row, max_new_tokens) for row in split_requests(self.model, inputs)]
        finally:
            if handle is not None:
                handle.remove()
        width = max(len(a) for a in answers)
        pad = pad_token_id(self.model)
        ids = inputs["input_ids"]
        out = torch.full((len(answers), width), pad, dtype=ids.dtype, device=ids.device)
        for r, answer in enumerate(answers):
            out[r, : len(answer)] = torch.tensor(answer, dtype=ids.dtype)
        return torch.cat([ids, out], dim=1)

    @property
    def _reads_attention(self) -> bool:
        return self.weight > 0 or self.rollback

    def _prefill(self, request: dict) -> tuple:
        """One request's prompt, its cache repeated for the beams: (logits [K, V], cache, a copy of it,
        position of the prompt's last token [..., K, 1])."""
        ids = request["input_ids"]  # [1, P]
        positions = self.model._prepare_position_ids_for_generation(ids, dict(request))  # [..., 1, P]
        cache = DynamicCache(config=self.model.config)
        logits = self.model(**request, position_ids=positions, cache=cache, use_cache=True).logits[:, -1].float()
        cache.batch_repeat_interleave(self.num_beams)
        last = positions[..., -1:].repeat_interleave(self.num_beams, dim=-2)
        return logits.expand(self.num_beams, -1), cache, copy.deepcopy(cache), last

    def _keep_row(self, attn, args, kwargs, _output) -> None:
        self._row = last_query_weights(attn, args, kwargs, self.sites).amax(1)  # [K, S]

    def _forward(self, tokens: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor:
        """tokens [K, n] after the cache -> logits of the last one [K, V] (float)."""
        mask = torch.ones(tokens.shape[0], cache.get_seq_length() + tokens.shape[1], dtype=torch.long,
                          device=tokens.device)
        out = self.model(input_ids=tokens, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
        return out.logits[:, -1].float()

    def _decode_one(self, request: dict, new_tokens: int) -> list[int]:
        K, C = self.num_beams, self.candidates
        ids = request["input_ids"]  # [1, P]
        P, max_len = ids.shape[1], ids.shape[1] + new_tokens
        image = torch.isin(ids[0], torch.tensor(visual_token_ids(self.model), device=ids.device))  # [P]
        logits, cache, prompt_cache, last = self._prefill(request)
        seqs = ids.expand(K, P)
        scores = torch.full((K,), -1e9, device=ids.device)
        scores[0] = 0.0
        rows = logits.new_zeros(K, 0, P)  # [K, n, S] the answer tokens' attention rows
        beams, eos = Hypotheses(K), stop_token_ids(self.model)
        history, locs = [], []
        used = torch.zeros(self.window, dtype=torch.long)  # rollbacks per position
        rejected: list = [None] * self.window
        chosen = (None, None)  # (beam_next, beam_idx) of the previous step
        self.trace, self.rollbacks = [], []
        while True:
            n = seqs.shape[1] - P  # answer tokens so far
            state = {"seqs": seqs, "scores": scores.clone(), "beams": copy.deepcopy(beams), "chosen": chosen,
                     "rows": rows.cpu() if self.rollback else None}  # kept on the CPU, as the official code does
            top, tokens = logits.topk(C, dim=-1)  # [K, C]
            penalties = loc = None
            if self._reads_attention:
                penalties, loc = self._candidates(tokens, rows, cache, last + n + 1, image, P)
                top = top - self.weight * penalties
            self.trace.append({"seqs": seqs, "candidates": tokens, "penalties": penalties})
            if len(history) >= self.window:
                history.pop(0)
            history.append(state)
            target = None
            if loc is not None:
                locs.append(torch.mode(loc, dim=-1).values)  # [K] per beam
                target = self._rollback_target(torch.stack(locs, -1), used, n + 1, len(history))
            if target is None:
                step = torch.full_like(logits, FILLER).scatter_(1, tokens, top)  # [K, V]
            else:
                seqs, scores, beams, rows, step, cache = self._roll_back(target, n + 1, history, locs, rejected,
                                                                         prompt_cache, last, P)
            V = step.shape[-1]
            total = (step.log_softmax(-1) + scores[:, None]).view(-1)  # [K * V]
            best, flat = total.topk(2 * K)
            scores, beam_next, beam_idx, done = beams.process(seqs, best, flat % V, flat // V, eos)
            chosen = (beam_next, beam_idx)
            if target is not None:
                self.rollbacks[-1]["chosen"] = (beam_idx * V + beam_next).tolist()
            seqs = torch.cat([seqs[beam_idx], beam_next[:, None]], dim=1)
            rows = rows[beam_idx]
            cache.reorder_cache(beam_idx)
            if done or seqs.shape[1] >= max_len:
                break
            logits = self._forward(beam_next[:, None], last + (seqs.shape[1] - P), cache)
            if self._reads_attention:
                rows = torch.cat([F.pad(rows, (0, 1)), self._row[:, None]], dim=1)  # [K, n + 1, S + 1]
        best_seq = beams.finalize(seqs, scores, done)
        answer = best_seq[P:].tolist()
        return answer + eos[:1] if best_seq.shape[0] < max_len and eos else answer

    def _candidates(self, tokens, rows, cache, position, image, P) -> tuple:
        """Penalty and argmax column of each candidate: ([K, C], [K, C])."""
        K, C = tokens.shape
        penalties, locs = tokens.new_zeros(K, C, dtype=torch.float), tokens.new_zeros(K, C)
        for c in range(C):
            self._forward(tokens[:, c:c + 1], position, cache)
            cache.crop(-1)
            square = torch.cat([F.pad(rows, (0, 1)), self._row[:, None]], dim=1)  # [K, n + 1, S + 1]
            penalties[:, c], locs[:, c] = over_trust(square, P, image, self.scale)
        return penalties, locs

    def _rollback_target(self, gathered: torch.Tensor, used: torch.Tensor, width: int, kept: int) -> int | None:
        """The official retrospection rule: the position to roll back to, or None."""
        if not self.rollback:
            return None
        loc = int(torch.mode(gathered[:, -1]).values)
        if not bool(((gathered == loc).sum(-1) > self.threshold).all()) or loc < SHORT_ANSWER:
            return None
        target = loc + 1
        if target >= self.window:
            return None
        if used[target] >= self.candidates:
            target -= 1
            if used[target] >= self.candidates:
                return None
        used[target] += 1
        if width - target > self.window + 1:
            target = max(1, width - self.window - 1)
        if width - target > kept:  # the steps to restore are no longer kept (the official code gives up too)
            return None
        return target

    def _roll_back(self, target, width, history, locs, rejected, prompt_cache, last, P):
        """Restore the beams of the step that chose answer token `target`; rebuild their cache; forbid the
        tokens chosen there before. Returns (seqs, scores, beams, rows, logits [K, V])."""
        for j in range(width - target - 2):
            history.pop()
            locs.pop()
            rejected[-(j + 1)] = None  # as the official code clears its list (from the end)
        state, (beam_next, beam_idx) = history[-2], history[-1]["chosen"]
        history.pop()
        locs.pop()
        if target + 1 < len(rejected):
            rejected[target + 1] = None
        seqs = state["seqs"]
        cache = copy.deepcopy(prompt_cache)
        answer = seqs[:, P:]  # [K, m]
        positions = last + torch.arange(1, answer.shape[1] + 1, device=seqs.device)
        logits = self._forward(answer, positions, cache)
        V = logits.shape[-1]
        logits = logits - (-FILLER + logits.min(-1, keepdim=True).values)
        forbid = beam_idx * V + beam_next  # [K] flat over beams x vocab
        if target < len(rejected) and rejected[target] is not None:
            forbid = torch.cat([rejected[target], forbid])
        rejected[target] = forbid
        self.rollbacks.append({"width": width, "target": target, "forbidden": forbid.tolist()})
        logits = logits.view(-1).scatter(0, forbid, FILLER).view(-1, V)
        return seqs, state["scores"], state["beams"], state["rows"].to(seqs.device), logits, cache


def over_trust(square: torch.Tensor, P: int, image: torch.Tensor, scale: float) -> tuple:
    """square [K, n + 1, S + 1]: attention rows (max over heads) of the answer tokens and the candidate, last.
    Returns the official penalty [K] and argmax column [K]."""
    square = square / square.sum(-1, keepdim=True)
    local = scale * square[:, :, P:]  # [K, n + 1, n + 1] answer rows x answer columns
    width = local.shape[-1]
    below = torch.ones(width, width, dtype=torch.bool, device=local.device).tril()  # rows i >= column j
    column = 1e-7 * torch.where(below, local, torch.ones_like(local)).prod(dim=1)  # [K, n + 1]
    column = column.to(torch.float16).float()  # the official scores are a float16 tensor
    value, loc = column.max(-1)
    if width <= SHORT_ANSWER:
        value = -square[:, -1, :P][:, image.to(square.device)].sum(-1)
    return value, loc


class Hypotheses:
    """Finished beams of one request, as transformers 4.29's `BeamHypotheses` (length penalty 1, no early stop)."""

    def __init__(self, num_beams: int):
        self.num_beams, self.beams, self.worst = num_beams, [], 1e9
        self.done = False

    def add(self, seq: torch.Tensor, total: float) -> None:
        score = total / seq.shape[-1]
        if len(self.beams) < self.num_beams or score > self.worst:
            self.beams.append((score, seq))
            if len(self.beams) > self.num_beams:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst = ranked[1][0]
            else:
                self.worst = min(score, self.worst)

    def process(self, seqs, best, tokens, parents, eos) -> tuple:
        """One beam step from the 2K best (score, token, parent): new scores, tokens, parents [K], done."""
        K = self.num_beams
        scores, nxt, idx = best.new_zeros(K), tokens.new_zeros(K), parents.new_zeros(K)
        b = 0
        for rank, (score, token, parent) in enumerate(zip(best.tolist(), tokens.tolist(), parents.tolist(),
                                                          strict=True)):
            if token in eos:
                if rank < K:
                    self.add(seqs[parent].clone(), score)
            else:
                scores[b], nxt[b], idx[b] = score, token, parent
                b += 1
            if b == K:
                break
        if len(self.beams) >= K:
            self.done = self.done or self.worst >= float(best.max()) / seqs.shape[1]
        return scores, nxt, idx, self.done

    def finalize(self, seqs: torch.Tensor, scores: torch.Tensor, done: bool) -> torch.Tensor:
        if not done:
            for b in range(seqs.shape[0]):
                self.add(seqs[b], float(scores[b]))
        return max(self.beams, key=lambda item: item[0])[1]


def pad_token_id(model: nn.Module) -> int:
    pad = getattr(model.generation_config, "pad_token_id", None)
    if pad is None:
        pad = model.config.get_text_config().pad_token_id
    if pad is None:
        stops = stop_token_ids(model)
        pad = stops[0] if stops else 0
    return int(pad)


def split_requests(model: nn.Module, inputs: dict) -> list[dict]:
    """One unpadded single-row input dict per request row, each with its own images."""
    unknown = [k for k, v in inputs.items() if isinstance(v, torch.Tensor)
               and k not in ("input_ids", "attention_mask", "mm_token_type_ids", *IMAGE_INPUTS)]
    if unknown:
        raise InputError(f"OPERA cannot split the input {unknown[0]!r} by request")
    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    mask = torch.ones_like(ids) if mask is None else mask
    visual = torch.isin(ids, torch.tensor(visual_token_ids(model), device=ids.device)) & mask.bool()
    runs = (visual & ~F.pad(visual, (1, 0))[:, :-1]).sum(1).tolist()  # images per row: runs of visual tokens
    grids = inputs.get("image_grid_thw")
    per_image = grids.prod(-1).tolist() if grids is not None else [1] * sum(runs)  # pixel rows per image
    out, image, pixel = [], 0, 0
    for r, count in enumerate(runs):
        real = mask[r].bool()
        row = {"input_ids": ids[r, real][None], "attention_mask": torch.ones_like(ids[r, real])[None]}
        if inputs.get("mm_token_type_ids") is not None:
            row["mm_token_type_ids"] = inputs["mm_token_type_ids"][r, real][None]
        if count:
            rows = sum(per_image[image:image + count])
            row["pixel_values"] = inputs["pixel_values"][pixel:pixel + rows]
            for key in ("image_grid_thw", "image_sizes"):
                if inputs.get(key) is not None:
                    row[key] = inputs[key][image:image + count]
            image, pixel = image + count, pixel + rows
        out.append(row)
    return out
