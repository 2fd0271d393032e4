"""Visual attention mass of claim-predicting positions, by quarter of the answer.

A simple measurement (eager attention, ``output_attentions=True``, one forward pass over
prompt + painted answer): for each layer, the share of attention (mean over heads) that
queries which predict a colour or shape token put on the 16 image tokens.
"""
from __future__ import annotations

import torch

from .scenes import CELL_NAMES, COLOURS
from .scoring import _STEP


def claim_query_positions(answer: list[str]) -> list[int]:
    """Answer indices whose *next* token is a claim's colour or shape."""
    out = []
    for i in range(len(answer) - 2):
        if _STEP.match(answer[i]) and answer[i + 1] in CELL_NAMES:
            out.append(i + 1)                                   # cell token predicts the colour
            if answer[i + 2] in COLOURS:
                out.append(i + 2)                               # colour token predicts the shape
        elif _STEP.match(answer[i]) and answer[i + 1] in COLOURS:
            out += [i, i + 1]                                   # hidden cell: step token predicts the colour
    return out


@torch.no_grad()
def visual_mass_by_quartile(model, processor, examples, answers, ref_lengths=None) -> dict:
    """{"by_layer": [[q1, q2, q3, q4] per layer], "n_queries": [...]}; answers are token lists.

    Quartile of a query = 4 * (its answer index) // (reference answer length)."""
    img_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    n_layers = model.config.text_config.num_hidden_layers
    sums = torch.zeros(n_layers, 4)
    counts = torch.zeros(4)
    for k, (e, ans) in enumerate(zip(examples, answers, strict=True)):
        inputs = processor(text=[e.prompt + " ".join(ans)], images=[e.image], return_tensors="pt")
        n_prompt = inputs["input_ids"].shape[1] - len(ans)
        out = model(**inputs, output_attentions=True)
        img = inputs["input_ids"][0] == img_id                              # [T]
        ref_len = ref_lengths[k] if ref_lengths else len(e.answer) + 1
        for i in claim_query_positions(ans):
            q = min(3, 4 * i // ref_len)
            for layer, att in enumerate(out.attentions):                    # att: [1, H, T, T]
                sums[layer, q] += att[0, :, n_prompt + i, img].sum(-1).mean().item()
            counts[q] += 1
    by_layer = (sums / counts.clamp_min(1)).tolist()
    return {"by_layer": [[round(x, 4) for x in row] for row in by_layer], "n_queries": counts.int().tolist()}
