"""The painter world as training data: Blind Painter records for Stage I (loss on the whole answer or on its
grounded claims only) and prompts for Stage II. Training scenes use seeds below the held-out range
(`EVAL_SEED_BASE`, 1,000,000). The answers are drawn like the base's own training data (its
train_info.json: gaps, fillers, passes), or with other fillers / longer gaps when asked."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from ..errors import InputError
from ..suites.world import EVAL_SEED_BASE, PaintSpec, make_grid_scene, render_grid
from ..suites.world.data import CurriculumDataset
from ..suites.world.scenes import N_CELLS
from ..suites.world.task import FILLERS, MAX_PASSES, N_ORDERS, UNIT
from .collate import SFTCollator
from .data import Record

TRAIN_INFO = "train_info.json"


def world_distribution(base_dir, max_gap: int | None = None, fillers=None) -> dict:
    """{"gaps", "fillers", "passes"} of the answers the base was trained on (its train_info.json), with
    0..max_gap filler tokens per step or other filler kinds when given. InputError for a base that was not
    trained on the painter world."""
    path = Path(base_dir) / TRAIN_INFO
    if not path.is_file():
        raise InputError(f"{path} is missing: this base was not trained on the painter world; pass --data FILE "
                         "(or, for Stage II, --suite scenes)")
    info = json.loads(path.read_text())
    kinds = tuple(info["fillers"]) if fillers is None else tuple(fillers)
    unknown = [k for k in kinds if k not in FILLERS]
    if unknown:
        raise InputError(f"unknown filler {unknown[0]!r}; known: {', '.join(FILLERS)}")
    gaps = tuple(info["train_gaps"]) if max_gap is None else tuple(range(max_gap + 1))
    return {"gaps": gaps, "fillers": kinds, "passes": tuple(info["passes"])}


def completion_budget(distribution: dict) -> int:
    """Tokens of the longest answer of the distribution, plus a margin: Stage II's completion length."""
    return 16 * max(distribution["passes"]) * (4 + max(distribution["gaps"])) + 8


class WorldSFTDataset(torch.utils.data.Dataset):
    """`n` Blind Painter records drawn like the base's own training data, from training seeds only;
    `seed` picks fresh examples of that distribution."""

    def __init__(self, processor, n: int, seed: int = 0, gaps=(8,), fillers=("count",), passes=(1,)):
        self.examples = CurriculumDataset(processor, n=n, seed=seed, gaps=gaps, short_gaps=gaps, warm_examples=0,
                                          fillers=fillers, passes=passes)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Record:
        example = self.examples[i]
        return Record(example.spec.prompt_text(), " ".join(example.answer), [example.image], f"world example {i}")


class ClaimsCollator(SFTCollator):
    """Labels on the grounded claims only: the colour and shape after each step's cell
    (``p{i} CELL COLOUR SHAPE``). Every other answer token -- steps, cells, counters, decoy
    triplets -- follows from the text alone, and in answers longer than the base's it is text the base
    never produced, which would otherwise dominate the loss."""

    def __init__(self, processor, max_length: int | None = None, warn=None):
        super().__init__(processor, max_length, warn)
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


def world_prompt(i: int, seed: int = 0, gaps=(8,), fillers=("count",), passes=(1,)) -> dict:
    """Stage II prompt i: the user turn, the image, and what the world rewards read (scene and spec)."""
    rng = random.Random(f"pvm-grpo-{seed}-{i}")
    filler = rng.choice(list(fillers))
    spec = PaintSpec(order=rng.randrange(N_ORDERS), gap=rng.choice(list(gaps)) // UNIT[filler], filler=filler,
                     passes=rng.choice(list(passes)))
    scene_seed = rng.randrange(EVAL_SEED_BASE)
    record = Record(spec.prompt_text(), None, [render_grid(make_grid_scene(scene_seed))], f"world prompt {i}")
    return {"record": record, "scene_seed": scene_seed, "order": spec.order, "gap": spec.gap, "filler": spec.filler,
            "passes": spec.passes}
