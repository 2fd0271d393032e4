"""Blind Painter examples and batches (prompt + reference answer + image)."""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from PIL import Image

from .scenes import GridScene, make_grid_scene, render_grid
from .task import UNIT, PaintSpec, answer_tokens

CLAIM_WEIGHT = 3.0   # loss weight of colour/shape tokens (the image-grounded ones)


def prompt_messages(spec: PaintSpec, with_image: bool = True) -> list[dict]:
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": spec.prompt_text()}]
    return [{"role": "user", "content": content}]


def prompt_text(processor, spec: PaintSpec, with_image: bool = True) -> str:
    """Chat-formatted prompt ending with the assistant header."""
    return processor.apply_chat_template(prompt_messages(spec, with_image), add_generation_prompt=True,
                                         tokenize=False)


@dataclass
class Example:
    scene: GridScene
    spec: PaintSpec
    image: Image.Image
    prompt: str
    answer: list[str]          # reference answer tokens (no end token)


def make_example(processor, seed: int, spec: PaintSpec) -> Example:
    scene = make_grid_scene(seed)
    return Example(scene, spec, render_grid(scene), prompt_text(processor, spec), answer_tokens(scene, spec))


def collate_train(processor, examples: list[Example]) -> dict:
    """Left-padded batch; labels only on answer tokens (+ <|im_end|>), claim tokens weighted."""
    from .scenes import COLOURS, SHAPES
    texts = [e.prompt + " ".join(e.answer) + " <|im_end|>" for e in examples]
    batch = processor(text=texts, images=[e.image for e in examples], return_tensors="pt", padding=True)
    ids = batch["input_ids"]                                    # [B, T]
    labels = torch.full_like(ids, -100)
    weights = torch.zeros(ids.shape, dtype=torch.float32)      # [B, T]
    tok = processor.tokenizer
    claim_ids = set(tok.convert_tokens_to_ids(list(COLOURS) + list(SHAPES)))
    for b, e in enumerate(examples):
        n = len(e.answer) + 1
        labels[b, -n:] = ids[b, -n:]
        w = [CLAIM_WEIGHT if int(t) in claim_ids else 1.0 for t in ids[b, -n:]]
        weights[b, -n:] = torch.tensor(w)
    batch["labels"], batch["loss_weights"] = labels, weights
    return dict(batch)


class CurriculumDataset(torch.utils.data.Dataset):
    """``n`` training examples from seeds < EVAL_SEED_BASE, deterministic per index.

    Meant to be read in order (curriculum): indices below ``warm_examples`` draw the
    gap from ``short_gaps``, later ones from ``gaps``. Filler kind and passes per example.
    Gaps are in filler *tokens*: a ``said`` example gets ``gap // 4`` decoy triplets."""

    def __init__(self, processor, *, n: int, seed: int, gaps, short_gaps, warm_examples: int,
                 fillers=("count",), passes=(1,), named=(True,)):
        self.processor, self.seed, self.n = processor, seed, n
        self.named = list(named)
        self.gaps, self.short_gaps, self.warm = list(gaps), list(short_gaps), warm_examples
        self.fillers, self.passes = list(fillers), list(passes)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Example:
        rng = random.Random(f"train-{self.seed}-{i}")
        gaps = self.short_gaps if i < self.warm else self.gaps
        filler, gap = rng.choice(self.fillers), rng.choice(gaps)
        gap = gap // UNIT[filler]                  # gaps count filler tokens; "said" units are 4 tokens
        spec = PaintSpec(order=rng.randrange(8), gap=gap, filler=filler, passes=rng.choice(self.passes),
                         named=rng.choice(self.named))
        return make_example(self.processor, rng.randrange(900_000), spec)
