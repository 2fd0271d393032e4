"""The `world` suite: the Blind Painter on held-out painter-world scenes, scored exactly.

Request i of set `seed`: scene seed EVAL_SEED_BASE + 100_000 * seed + i (>= 1,000,000, never drawn in
training), cell order drawn from (seed, i). The prompt asks for `length` filler units after every claim
(`said`: 4-token decoy triplets naming other cells; `count`: one counter token each), so the answer has
16 * passes * (4 + unit * length) + 1 tokens. Claims: one per step, `p{i} CELL COLOUR SHAPE`, correct when
colour and shape are true of the cell it names; a step with no claim is missing (wrong, no token). A
claim's quarter is where its step stands in the reference answer, so every scene's quarters cover the
same steps. The claim's token is its colour word: the probes' row that chose the colour.

`split="train"` draws scenes from the training range instead (seed TRAIN_SEED_BASE + 10,000 * seed + i,
below 900,000): for tuning a setting (a remedy's strength) without looking at the held-out scenes.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass

import torch

from ...errors import InputError
from ..base import Answer, Claim, Request, Suite, check_int, quarter_of
from ..inputs import forced_inputs
from .scenes import CELL_NAMES, EVAL_SEED_BASE, GRID, make_grid_scene, render_grid
from .scoring import parse_claims, score_painting
from .task import FILLERS, MAX_GAP, MAX_PASSES, N_ORDERS, PaintSpec, answer_length, answer_tokens, vocabulary

TRAIN_SEED_BASE = 800_000  # split="train": scenes of the training distribution (seeds < 900,000)
CALIBRATION_SET = 500  # held-out scene set offset for calibration requests (a tuned lens)
DEFAULT_FILLER = "said"  # decoy stretches: the text competes with the image
DEFAULT_LONG, DEFAULT_SHORT = 3, 0  # said units per step: 257 / 65 answer tokens (trained: 0..4 units)


class WorldSuite(Suite):
    name = "world"
    options = ("scenes", "seed", "length", "filler")
    claim_kinds = ("cell",)
    higher_is_better = True
    words = {"metric": "claims correct", "claims": "claims (cell, colour, shape)"}

    def __init__(self, scenes: int = 64, seed: int = 0, length: int = DEFAULT_LONG, filler: str = DEFAULT_FILLER,
                 passes: int = 1, split: str = "held-out"):
        check_int("scenes", scenes, 1)
        check_int("seed", seed, 0)
        if split not in ("held-out", "train"):
            raise InputError(f"split must be 'held-out' or 'train', got {split!r}")
        if split == "train" and TRAIN_SEED_BASE + 10_000 * seed + scenes > EVAL_SEED_BASE - 100_000:
            raise InputError("the training split holds scene sets 0..9 of up to 10,000 scenes")
        check_int("length", length, 0, MAX_GAP)
        check_int("passes", passes, 1, MAX_PASSES)
        if filler not in FILLERS:
            raise InputError(f"filler must be one of {', '.join(FILLERS)}, got {filler!r}")
        self.scenes, self.seed, self.length, self.filler, self.passes = scenes, seed, length, filler, passes
        self.split = split

    def __len__(self) -> int:
        return self.scenes

    def spec(self, index: int) -> PaintSpec:
        order = random.Random(f"paint-{self.seed}-{index}").randrange(N_ORDERS)
        return PaintSpec(order=order, gap=self.length, filler=self.filler, passes=self.passes)

    def scene_seed(self, index: int) -> int:
        if self.split == "train":
            return TRAIN_SEED_BASE + 10_000 * self.seed + index
        return EVAL_SEED_BASE + 100_000 * self.seed + index

    def request(self, index: int) -> Request:
        self.check_request(index)
        seed, spec = self.scene_seed(index), self.spec(index)
        meta = {"scene_seed": seed, "order": spec.order, "gap": spec.gap, "filler": spec.filler, "passes": spec.passes}
        return Request(index, f"scene-{seed}", (render_grid(make_grid_scene(seed)),), spec.prompt_text(), meta)

    def calibration(self, count: int) -> list[Request]:
        """Held-out scenes of another set (seed + CALIBRATION_SET), never the evaluated ones."""
        other = copy.copy(self)
        other.scenes, other.seed = count, self.seed + CALIBRATION_SET
        return list(other.requests())

    def max_new_tokens(self, request: Request) -> int:
        return answer_length(self.spec(request.index)) + 8

    def score(self, request: Request, answer: Answer) -> list[Claim]:
        scene, spec = make_grid_scene(request.meta["scene_seed"]), self.spec(request.index)
        return [_claim(record) for record in score_painting(scene, spec, answer.tokens)["claims"]]

    def settings(self) -> dict:
        return {"suite": self.name, "split": self.split, "scenes": self.scenes, "seed": self.seed, "length": self.length,
                "filler": self.filler, "passes": self.passes,
                "answer_tokens": answer_length(PaintSpec(gap=self.length, filler=self.filler, passes=self.passes))}

    def check_processor(self, processor) -> None:
        """The world's words must be whole tokens of the base's tokenizer (only the world's own base has them)."""
        tokenizer = processor.tokenizer
        words = vocabulary()
        ids = tokenizer.convert_tokens_to_ids(words)
        unknown = [w for w, i in zip(words, ids, strict=True) if i is None or i == tokenizer.unk_token_id]
        if unknown:
            raise InputError(f"the painter world needs its own vocabulary, and this base's tokenizer lacks "
                             f"{len(unknown)} of its {len(words)} words (e.g. {unknown[0]!r}): use --suite scenes "
                             "or --suite images for this base")


@dataclass
class ForcedClaims:
    """Teacher-forced reference answers of some requests: one forward scores every claim token at once.

    inputs: prompt + reference answer (`suites.inputs.forced_inputs`); logits row P - 1 + t predicts answer token t.
    target [B, A] the answer's ids; claim [B, A] True at the colour and shape tokens; quarter [B, A] 0..3."""

    inputs: dict
    prompt: int
    target: torch.Tensor
    claim: torch.Tensor
    quarter: torch.Tensor

    def correct_by_quarter(self, logits: torch.Tensor) -> list[float]:
        """Share of claim tokens the model predicts right, per quarter of the answer, from logits [B, S, V]."""
        A = self.target.shape[1]
        right = logits[:, self.prompt - 1:self.prompt - 1 + A].argmax(-1) == self.target  # [B, A]
        return [float(right[self.claim & (self.quarter == q)].float().mean()) for q in range(4)]


def forced_claims(suite: WorldSuite, processor, indices, device="cpu") -> ForcedClaims:
    """Reference answers of `indices` with their claim tokens: the colour and shape after each step's cell
    (not the decoys' colours and shapes, which follow from the text)."""

    requests = [suite.request(i) for i in indices]
    answers = [answer_tokens(make_grid_scene(r.meta["scene_seed"]), suite.spec(r.index)) for r in requests]
    ids = [processor.tokenizer.convert_tokens_to_ids(a) for a in answers]
    inputs = forced_inputs(processor, requests, ids, device)
    claim = torch.zeros(len(answers), len(answers[0]), dtype=torch.bool)  # [B, A]
    for b, (a, r) in enumerate(zip(answers, requests, strict=True)):
        for slot, *_ in parse_claims(a, suite.spec(r.index).steps()):  # the colour; the shape follows it
            claim[b, slot:slot + 2] = True
    quarter = torch.tensor([[quarter_of(t, len(a)) for t in range(len(a))] for a in answers])
    return ForcedClaims(inputs, inputs["input_ids"].shape[1] - len(ids[0]), torch.tensor(ids), claim, quarter)


def cell_box(cell: str) -> list[float]:
    """[x0, y0, x1, y1] of a cell as fractions of the image (row-major 4 x 4 grid)."""
    row, col = divmod(CELL_NAMES.index(cell), GRID)
    return [col / GRID, row / GRID, (col + 1) / GRID, (row + 1) / GRID]


def _claim(record: dict) -> Claim:
    cell = record["cell"]
    text = "(missing)" if record["missing"] else f"p{record['step']} {cell} {record['colour']} {record['shape']}"
    detail = {k: record[k] for k in ("step", "expected_cell", "cell", "colour", "shape", "colour_ok", "shape_ok",
                                     "order_ok", "decoys_before", "missing")}
    return Claim("cell", record["position"], text, record["correct"], record["quartile"],
                 boxes=[cell_box(cell)] if cell else [], detail=detail)
