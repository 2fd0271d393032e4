"""Stage II prompts, made on demand: a `datasets.Dataset` of indices whose transform builds each row when TRL
reads it, so neither a data file's images nor generated scenes are held in memory.

Every row has TRL's columns, `prompt` (the user turn: images, then text) and `images` (PIL), plus what the
rewards read:
    data file   answer (str or None), question, record ("data.jsonl line 12")
    scenes      scene_seed: a training scene of the scenes suite (seed < 1,000,000, disjoint from the
                held-out scenes that `paint --suite scenes` scores), rendered at `image_size`; the suite's prompt
    world       scene_seed, order, gap, filler, passes (pvm_probe.train.world_data.world_prompt)
"""

from __future__ import annotations

import random
from collections.abc import Callable

from datasets import Dataset

from ..suites.scenes import PROMPT, make_shape_scene, render_shapes
from ..suites.world import EVAL_SEED_BASE
from .data import DataFile, Record, open_image
from .world_data import world_prompt


def prompt_dataset(n: int, row: Callable[[int], dict]) -> Dataset:
    """n rows; `row(i)` -> {"record": Record, **reward columns}, called when TRL reads row i."""

    def transform(batch: dict) -> dict:
        rows = [row(int(i)) for i in batch["index"]]
        columns = {"prompt": [r["record"].messages() for r in rows],
                   "images": [[open_image(image) for image in r["record"].images] for r in rows]}
        for key in rows[0]:
            if key != "record":
                columns[key] = [r[key] for r in rows]
        return columns

    return Dataset.from_dict({"index": list(range(n))}).with_transform(transform)


def data_prompts(data: DataFile) -> Dataset:
    def row(i: int) -> dict:
        record = data[i]
        return {"record": record, "answer": record.answer, "question": record.question, "where": record.where}

    return prompt_dataset(len(data), row)


def scene_seed(i: int, seed: int = 0) -> int:
    """The training scene of prompt i (below EVAL_SEED_BASE: never a held-out scene)."""
    return random.Random(f"pvm-grpo-scenes-{seed}-{i}").randrange(EVAL_SEED_BASE)


def scenes_prompts(n: int, seed: int = 0, image_size: int = 448) -> Dataset:
    def row(i: int) -> dict:
        scene = make_shape_scene(scene_seed(i, seed))
        record = Record(PROMPT, None, [render_shapes(scene, image_size)], f"scene {scene.seed}")
        return {"record": record, "scene_seed": scene.seed}

    return prompt_dataset(n, row)


def world_prompts(n: int, seed: int = 0, **distribution) -> Dataset:
    return prompt_dataset(n, lambda i: world_prompt(i, seed, **distribution))
