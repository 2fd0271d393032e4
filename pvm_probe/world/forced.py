"""Teacher-forced Blind Painter: the harness writes every text token, the model only fills claims.

One forward pass over prompt + reference answer; the colour and shape of each claim are
the model's argmax at those slots (conditioned on the reference text before them). This
reaches any answer length even when the model could not write the text-only stretches
itself (e.g. a model trained on short answers only: train-short / paint-long).
"""
from __future__ import annotations

import torch

from .paint import DEFAULT_FILLER, DEFAULT_LONG, eval_examples
from .scoring import accuracy_by_decoys, parse_claims, score_answer, summarize
from .task import answer_length


@torch.no_grad()
def forced_answers(model, processor, examples, batch_size: int = 16) -> list[list[str]]:
    """Reference answers with each claim's colour/shape replaced by the model's argmax."""
    tok, outs = processor.tokenizer, []
    for s in range(0, len(examples), batch_size):
        batch = examples[s:s + batch_size]
        texts = [e.prompt + " ".join(e.answer) + " <|im_end|>" for e in batch]
        inputs = processor(text=texts, images=[e.image for e in batch], return_tensors="pt", padding=True)
        pred = model(**inputs).logits.argmax(-1)                       # [b, T]
        for b, e in enumerate(batch):
            n = len(e.answer) + 1
            p = tok.convert_ids_to_tokens(pred[b, -n - 1:-1].tolist())  # p[i] predicts answer[i]
            ans = list(e.answer)
            for pos, *_ in parse_claims(e.answer, e.spec.steps()):                     # pos = colour slot
                ans[pos], ans[pos + 1] = p[pos], p[pos + 1]
            outs.append(ans)
    return outs


def paint_forced(model, processor, *, scenes: int = 64, seed: int = 0, length: int = DEFAULT_LONG,
                 filler: str = DEFAULT_FILLER, passes: int = 1, batch_size: int = 16, named: bool = True) -> dict:
    """Same output schema as ``paint`` (teacher-forced text, model claims)."""
    examples = eval_examples(processor, scenes=scenes, seed=seed, length=length, filler=filler, passes=passes,
                             named=named)
    records = []
    for e, ans in zip(examples, forced_answers(model, processor, examples, batch_size), strict=True):
        records += score_answer(e.scene, e.spec, ans)["claims"]
    return {"mode": "teacher_forced", "n_scenes": scenes, "length": length, "seed": seed, "filler": filler,
            "passes": passes, "answer_tokens": answer_length(examples[0].spec), **summarize(records),
            "accuracy_by_decoys": accuracy_by_decoys(records), "claims": records}
