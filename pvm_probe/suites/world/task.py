"""The Blind Painter task: prompt and reference answer for a scene.

Prompt (user turn, after the image):  ``paint o{order} g{gap} f{filler} x{passes}``.
Answer: for each step ``i`` the step token, the cell named by the order table, the
cell's colour and shape (needs the image), then a text-only stretch of ``gap`` units:

* filler ``count``: ``n1 n2 ... n{gap}`` (one token per unit);
* filler ``said``: ``s1 C c s  s2 C c s ...`` (four tokens per unit): decoy triplets
  naming *other* cells with colours/shapes given by a fixed rule from the previous
  triplet — fully predictable from the text, usually false about the image.

With ``passes=2`` the 16 cells are painted twice (second pass = same order), so the
model may copy from its own earlier text, where decoys can hijack it.
Everything except the colour/shape after a cell is predictable from the text alone.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from ...names import FILLERS
from .scenes import CELL_NAMES, COLOURS, N_CELLS, SHAPES, GridScene

N_ORDERS = 8
MAX_GAP = 32
MAX_PASSES = 2
UNIT = {"count": 1, "said": 4}      # tokens per filler unit


def _orders() -> tuple[tuple[int, ...], ...]:
    """Eight fixed cell orders: 6 geometric walks and 2 fixed shuffles."""
    idx = [[r * 4 + c for c in range(4)] for r in range(4)]
    row = [k for r in idx for k in r]
    col = [idx[r][c] for c in range(4) for r in range(4)]
    snake = [k for i, r in enumerate(idx) for k in (r if i % 2 == 0 else r[::-1])]
    shuf = [random.Random(f"order-{s}").sample(range(N_CELLS), N_CELLS) for s in (0, 1)]
    return tuple(tuple(o) for o in (row, col, row[::-1], col[::-1], snake, snake[::-1], *shuf))


ORDERS = _orders()
DECOY_CELL = {c: CELL_NAMES[(i + 5) % N_CELLS] for i, c in enumerate(CELL_NAMES)}  # cell -> other cell
_cp, _sp = list(COLOURS), list(SHAPES)
DECOY_COLOUR = {c: _cp[(i + 1) % 6] for i, c in enumerate(_cp)}   # derangements: never the same
DECOY_SHAPE = {s: _sp[(i + 2) % 6] for i, s in enumerate(_sp)}


def vocabulary() -> list[str]:
    """World words (no special tokens), stable order."""
    words = ["user", "assistant", "paint"]
    words += [f"o{i}" for i in range(N_ORDERS)] + [f"g{i}" for i in range(MAX_GAP + 1)]
    words += [f"f{f}" for f in FILLERS] + [f"x{i}" for i in range(1, MAX_PASSES + 1)]
    words += [f"p{i}" for i in range(N_CELLS * MAX_PASSES)]
    words += list(CELL_NAMES) + list(COLOURS) + list(SHAPES)
    words += [f"n{i}" for i in range(1, MAX_GAP + 1)] + [f"s{i}" for i in range(1, MAX_GAP + 1)]
    words += ["hidden"]          # appended later: keeps earlier token ids stable
    return words


@dataclass(frozen=True)
class PaintSpec:
    """One Blind Painter request: which order, how long the text-only stretches are."""
    order: int = 0
    gap: int = 8
    filler: str = "count"
    passes: int = 1
    named: bool = True       # False: claims omit the cell ("p{i} COLOUR SHAPE"), the query must be computed

    def prompt_text(self) -> str:
        base = f"paint o{self.order} g{self.gap} f{self.filler} x{self.passes}"
        return base if self.named else base + " hidden"

    def steps(self) -> list[str]:
        return [CELL_NAMES[k] for k in ORDERS[self.order]] * self.passes


def filler_tokens(spec: PaintSpec, triplet: tuple[str, str, str]) -> list[str]:
    """Text-only stretch after a claim ``triplet = (cell, colour, shape)``."""
    if spec.filler == "count":
        return [f"n{j}" for j in range(1, spec.gap + 1)]
    out, (cell, col, shp) = [], triplet
    for j in range(1, spec.gap + 1):
        cell, col, shp = DECOY_CELL[cell], DECOY_COLOUR[col], DECOY_SHAPE[shp]
        out += [f"s{j}", cell, col, shp]
    return out


def answer_tokens(scene: GridScene, spec: PaintSpec) -> list[str]:
    """Reference answer (without the end-of-turn token)."""
    out: list[str] = []
    for i, cell in enumerate(spec.steps()):
        col, shp = scene.truth(cell)
        out += [f"p{i}"] + ([cell] if spec.named else []) + [col, shp] + filler_tokens(spec, (cell, col, shp))
    return out


def answer_length(spec: PaintSpec) -> int:
    """Tokens in the reference answer (+1 for the end-of-turn token)."""
    return len(spec.steps()) * (3 + spec.named + UNIT[spec.filler] * spec.gap) + 1


def random_spec(rng: random.Random, gaps, filler: str = "count", passes=(1,)) -> PaintSpec:
    """A training spec: random order, gap drawn from ``gaps``."""
    return PaintSpec(order=rng.randrange(N_ORDERS), gap=rng.choice(list(gaps)),
                     filler=filler, passes=rng.choice(list(passes)))
