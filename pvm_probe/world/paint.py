"""Run the Blind Painter on held-out scenes and score it exactly.

Evaluation scenes use seeds ``EVAL_SEED_BASE + 100_000 * seed + i`` (>= 1_000_000,
never drawn in training). ``length`` is the gap knob: filler units after every claim
(``count``: 1 token each; ``said``: 4 tokens each), so the answer has
``16 * passes * (4 + unit * length) + 1`` tokens.
"""
from __future__ import annotations

import random

import torch
from tqdm.auto import tqdm

from .data import make_example
from .scenes import EVAL_SEED_BASE
from .scoring import accuracy_by_decoys, score_answer, summarize
from .task import N_ORDERS, PaintSpec, answer_length

DEFAULT_FILLER = "said"                  # decoy stretches: the text competes with the image
DEFAULT_LONG, DEFAULT_SHORT = 3, 0       # said units (257 / 65 answer tokens); trained: 0..4 units (0..16 tokens)


def eval_examples(processor, *, scenes: int, seed: int, length: int, filler: str = "count",
                  passes: int = 1, named: bool = True) -> list:
    """Held-out examples: scene seeds >= EVAL_SEED_BASE, orders drawn per scene."""
    rng = random.Random(f"paint-{seed}")
    base = EVAL_SEED_BASE + 100_000 * seed
    return [make_example(processor, base + i, PaintSpec(order=rng.randrange(N_ORDERS), gap=length,
                                                        filler=filler, passes=passes, named=named))
            for i in range(scenes)]


def prompt_inputs(processor, examples) -> dict:
    """The padded prompts of `examples` with their images: what `generate` starts from."""
    return processor(text=[e.prompt for e in examples], images=[e.image for e in examples],
                     return_tensors="pt", padding=True)


@torch.no_grad()
def generate_answers(model, processor, examples, batch_size: int = 32, progress: bool = True) -> list[list[str]]:
    """Greedy decoding with the KV cache, batched with left padding; answer tokens only."""
    tok, eos = processor.tokenizer, processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    tok.padding_side = "left"
    outs = []
    chunks = range(0, len(examples), batch_size)
    for s in tqdm(chunks, desc="paint", disable=not progress):
        batch = examples[s:s + batch_size]
        inputs = prompt_inputs(processor, batch)
        max_new = max(answer_length(e.spec) for e in batch) + 8
        seq = model.generate(**inputs, max_new_tokens=max_new, do_sample=False, use_cache=True,
                             eos_token_id=eos, pad_token_id=tok.pad_token_id)     # [b, T + new]
        for row in seq[:, inputs["input_ids"].shape[1]:]:
            toks = tok.convert_ids_to_tokens(row.tolist())
            outs.append(toks[:toks.index("<|im_end|>")] if "<|im_end|>" in toks else toks)
    return outs


def paint(model, processor, *, scenes: int = 64, seed: int = 0, length: int = DEFAULT_LONG,
          batch_size: int = 32, pvm_handle=None, filler: str = DEFAULT_FILLER, passes: int = 1,
          progress: bool = True, named: bool = True) -> dict:
    """Blind Painter accuracy overall, by quartile of the answer, and per claim (JSON-able).

    ``pvm_handle``: PVM hooks must already be attached to ``model``; it is only recorded."""
    examples = eval_examples(processor, scenes=scenes, seed=seed, length=length, filler=filler, passes=passes,
                             named=named)
    answers = generate_answers(model, processor, examples, batch_size, progress)
    records, per_scene = [], []
    for e, ans in zip(examples, answers, strict=True):
        sc = score_answer(e.scene, e.spec, ans)
        for r in sc["claims"]:
            r["scene_seed"] = e.scene.seed
        records += sc["claims"]
        per_scene.append({"scene_seed": e.scene.seed, "order": e.spec.order, "accuracy": sc["accuracy"],
                          "n_extra": sc["n_extra"], "answer_tokens": len(ans)})
    return {"n_scenes": scenes, "length": length, "seed": seed, "filler": filler, "passes": passes, "named": named,
            "answer_tokens": answer_length(examples[0].spec) if examples else 0,
            "pvm": None if pvm_handle is None else repr(pvm_handle),
            **summarize(records), "accuracy_by_decoys": accuracy_by_decoys(records),
            "scenes": per_scene, "claims": records}
