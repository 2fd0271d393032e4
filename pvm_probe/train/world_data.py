"""The painter world as training data: SFT records for Stage I, prompts and verifiable rewards for
Stage II (format 0.1 + accuracy 0.9, the paper's weights). Training seeds stay below the
evaluation range (`EVAL_SEED_BASE`)."""

from __future__ import annotations

import random

import torch

from ..world import EVAL_SEED_BASE, PaintSpec, make_scene, render, score_answer
from ..world.data import CurriculumDataset
from ..world.scenes import N_CELLS
from ..world.task import MAX_PASSES, N_ORDERS, UNIT
from .data import Record, SFTCollator

FORMAT_WEIGHT, ACCURACY_WEIGHT = 0.1, 0.9


def _spec(rng: random.Random, gaps, filler: str, passes) -> PaintSpec:
    return PaintSpec(order=rng.randrange(N_ORDERS), gap=rng.choice(list(gaps)) // UNIT[filler], filler=filler,
                     passes=rng.choice(list(passes)))


class WorldSFTDataset(torch.utils.data.Dataset):
    """`n` Blind Painter records drawn like the base's own training data (same gaps, fillers, passes),
    from training seeds only; `seed` picks fresh examples of that distribution."""

    def __init__(self, processor, n: int, seed: int = 0, gaps=(8,), fillers=("count",), passes=(1,)):
        self.examples = CurriculumDataset(processor, n=n, seed=seed, gaps=gaps, short_gaps=gaps, warm_examples=0,
                                          fillers=fillers, passes=passes)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Record:
        example = self.examples[i]
        return Record(example.spec.prompt_text(), " ".join(example.answer), [example.image])


class ClaimsCollator(SFTCollator):
    """Labels on the grounded claims only: the colour and shape after each step's cell
    (``p{i} CELL COLOUR SHAPE``). Every other answer token -- steps, cells, counters, decoy
    triplets -- follows from the text alone, and in answers longer than the base's it is text the base
    never produced, which would otherwise dominate the loss."""

    def __init__(self, processor, max_length: int | None = None):
        super().__init__(processor, max_length)
        steps = [f"p{i}" for i in range(N_CELLS * MAX_PASSES)]
        self.step_ids = torch.tensor(processor.tokenizer.convert_tokens_to_ids(steps))

    def claim_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, T] True at colour (step + 2) and shape (step + 3) tokens."""
        is_step = torch.isin(input_ids, self.step_ids)  # [B, T]
        claim = torch.zeros_like(is_step)
        claim[:, 2:] |= is_step[:, :-2]
        claim[:, 3:] |= is_step[:, :-3]
        return claim

    def __call__(self, records: list[Record]) -> dict:
        batch = super().__call__(records)
        keep = self.claim_mask(batch["input_ids"]) & (batch["labels"] != -100)
        batch["labels"] = torch.where(keep, batch["labels"], -100)
        return batch


def world_prompts(n: int, seed: int = 0, gaps=(8,), fillers=("count",), passes=(1,)) -> list[dict]:
    """Rows for TRL's GRPOTrainer: a conversational prompt, the image, and what the reward needs.
    Gaps count filler tokens, as in the base's training data."""
    rows = []
    for i in range(n):
        rng = random.Random(f"pvm-grpo-{seed}-{i}")
        spec = _spec(rng, gaps, rng.choice(list(fillers)), passes)
        scene_seed = rng.randrange(EVAL_SEED_BASE)
        prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": spec.prompt_text()}]}]
        rows.append({"prompt": prompt, "image": render(make_scene(scene_seed)), "scene_seed": scene_seed,
                     "order": spec.order, "gap": spec.gap, "filler": spec.filler, "passes": spec.passes})
    return rows


def _completion_tokens(completion) -> list[str]:
    text = completion[0]["content"] if isinstance(completion, list) else completion
    return text.split()


def _scores(completions, scene_seed, order, gap, filler, passes) -> list[dict]:
    return [score_answer(make_scene(s), PaintSpec(o, g, f, p), _completion_tokens(c))
            for c, s, o, g, f, p in zip(completions, scene_seed, order, gap, filler, passes, strict=True)]


def format_reward(completions, scene_seed, order, gap, filler, passes, **_) -> list[float]:
    """0.1 when every step is claimed, in the prompt's order, with nothing extra."""
    out = []
    for score in _scores(completions, scene_seed, order, gap, filler, passes):
        claims = score["claims"]
        well_formed = score["n_extra"] == 0 and all(not c["missing"] and c["order_ok"] for c in claims)
        out.append(FORMAT_WEIGHT * float(well_formed))
    return out


def accuracy_reward(completions, scene_seed, order, gap, filler, passes, **_) -> list[float]:
    """0.9 x the share of claims whose colour and shape are true of the image."""
    return [ACCURACY_WEIGHT * score["accuracy"]
            for score in _scores(completions, scene_seed, order, gap, filler, passes)]


def format_and_accuracy_rewards():
    return [format_reward, accuracy_reward]

