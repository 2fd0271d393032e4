"""Seeded painter scenes: a 4x4 grid of cells, each a colour and a shape, rendered with PIL.

Seeds: training draws scenes from seeds < EVAL_SEED_BASE; evaluation (``paint``) uses
seeds >= EVAL_SEED_BASE (1_000_000), which training never touches.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

GRID = 4                      # 4x4 cells
CELL_PX = 32                  # 32 px per cell -> 128x128 image; patch 16 + merge 2 = 1 token per cell
IMAGE_PX = GRID * CELL_PX
N_CELLS = GRID * GRID
EVAL_SEED_BASE = 1_000_000    # seeds >= this are held out for evaluation

COLOURS = {
    "red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240),
    "yellow": (235, 225, 40), "magenta": (220, 50, 220), "cyan": (40, 220, 220),
}
SHAPES = ("square", "circle", "triangle", "cross", "diamond", "bar")
CELL_NAMES = tuple(f"r{r}c{c}" for r in range(GRID) for c in range(GRID))  # row-major


@dataclass(frozen=True)
class GridScene:
    """One scene: ``cells[k] = (colour, shape)`` for cell k (row-major)."""
    seed: int
    cells: tuple[tuple[str, str], ...]

    def truth(self, cell: str) -> tuple[str, str]:
        return self.cells[CELL_NAMES.index(cell)]


def make_grid_scene(seed: int) -> GridScene:
    """Deterministic scene for ``seed`` (independent of global RNG state)."""
    rng = random.Random(f"scene-{seed}")
    colours, shapes = list(COLOURS), list(SHAPES)
    cells = tuple((rng.choice(colours), rng.choice(shapes)) for _ in range(N_CELLS))
    return GridScene(seed=seed, cells=cells)


def _draw_shape(d: ImageDraw.ImageDraw, shape: str, x0: int, y0: int, rgb) -> None:
    m, s = 5, CELL_PX - 10                     # margin, shape size inside the cell
    a, b, c, e = x0 + m, y0 + m, x0 + m + s, y0 + m + s
    mx, my = (a + c) // 2, (b + e) // 2
    if shape == "square":
        d.rectangle([a, b, c, e], fill=rgb)
    elif shape == "circle":
        d.ellipse([a, b, c, e], fill=rgb)
    elif shape == "triangle":
        d.polygon([(mx, b), (c, e), (a, e)], fill=rgb)
    elif shape == "cross":
        d.rectangle([mx - 3, b, mx + 3, e], fill=rgb)
        d.rectangle([a, my - 3, c, my + 3], fill=rgb)
    elif shape == "diamond":
        d.polygon([(mx, b), (c, my), (mx, e), (a, my)], fill=rgb)
    elif shape == "bar":
        d.rectangle([a, my - 4, c, my + 4], fill=rgb)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def render_grid(scene: GridScene) -> Image.Image:
    """128x128 RGB image, black background, cell k at row k//4, column k%4."""
    img = Image.new("RGB", (IMAGE_PX, IMAGE_PX), (0, 0, 0))
    d = ImageDraw.Draw(img)
    for k, (colour, shape) in enumerate(scene.cells):
        r, c = divmod(k, GRID)
        _draw_shape(d, shape, c * CELL_PX, r * CELL_PX, COLOURS[colour])
    return img
