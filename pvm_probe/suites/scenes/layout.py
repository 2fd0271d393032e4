"""Seeded scenes of coloured shapes in a 3x3 grid of regions, and their rendering with PIL.

A scene holds 2..9 objects, at most one per region, drawn from up to 4 kinds (shape, colour); a kind
may repeat (1..3 copies), so counts are non-trivial. Everything is a pure function of the seed;
held-out evaluation scenes use seeds >= EVAL_SEED_BASE, as the painter world does.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from .words import PALETTE, REGIONS, SHAPES

BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class ShapeObject:
    """One drawn object: its centre and radius are fractions of the image side."""

    shape: str
    colour: str
    region: int  # index into REGIONS (row-major 3x3)
    centre: tuple[float, float]  # (x, y) in [0, 1]
    radius: float


@dataclass(frozen=True)
class ShapeScene:
    seed: int
    objects: tuple[ShapeObject, ...]

    def matching(self, shape: str | None = None, colour: str | None = None) -> list[ShapeObject]:
        """Objects of this shape and colour (None matches any)."""
        return [o for o in self.objects if shape in (None, o.shape) and colour in (None, o.colour)]

    def count(self, shape: str | None = None, colour: str | None = None) -> int:
        return len(self.matching(shape, colour))

    def describe(self) -> list[dict]:
        """JSON-able ground truth, one entry per object."""
        return [{"shape": o.shape, "colour": o.colour, "region": REGIONS[o.region]} for o in self.objects]


def make_shape_scene(seed: int) -> ShapeScene:
    """Deterministic scene for `seed`, independent of any global random state."""
    rng = random.Random(f"scenes-suite-{seed}")
    kinds = rng.sample([(s, c) for s in SHAPES for c in PALETTE], rng.randint(2, 4))
    regions = rng.sample(range(len(REGIONS)), len(REGIONS))
    objects = []
    for shape, colour in kinds:
        for _ in range(min(rng.randint(1, 3), len(regions))):
            objects.append(_place(rng, shape, colour, regions.pop()))
    return ShapeScene(seed=seed, objects=tuple(sorted(objects, key=lambda o: o.region)))


def _place(rng: random.Random, shape: str, colour: str, region: int) -> ShapeObject:
    row, col = divmod(region, 3)
    centre = ((col + 0.5) / 3 + rng.uniform(-0.03, 0.03), (row + 0.5) / 3 + rng.uniform(-0.03, 0.03))
    return ShapeObject(shape, colour, region, centre, radius=rng.uniform(0.09, 0.12))


def render_shapes(scene: ShapeScene, size: int = 448) -> Image.Image:
    """size x size RGB image: white background, each object filled with its palette colour."""
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for o in scene.objects:
        x, y, r = o.centre[0] * size, o.centre[1] * size, o.radius * size
        _DRAW[o.shape](draw, x, y, r, PALETTE[o.colour])
    return image


def _regular(x: float, y: float, r: float, sides: int, turn: float = 0.0) -> list[tuple[float, float]]:
    """Vertices of a regular polygon centred at (x, y), first vertex pointing up (then `turn`)."""
    angles = (turn - math.pi / 2 + 2 * math.pi * k / sides for k in range(sides))
    return [(x + r * math.cos(a), y + r * math.sin(a)) for a in angles]


def _star(x: float, y: float, r: float) -> list[tuple[float, float]]:
    outer, inner = _regular(x, y, r, 5), _regular(x, y, 0.45 * r, 5, turn=math.pi / 5)
    return [p for pair in zip(outer, inner, strict=True) for p in pair]


def _heart(draw: ImageDraw.ImageDraw, x: float, y: float, r: float, rgb) -> None:
    lobe, top = 0.5 * r, y - r  # two round lobes on top of a downward triangle
    for cx in (x - lobe, x + lobe):
        draw.ellipse([cx - lobe, top, cx + lobe, top + 2.5 * lobe], fill=rgb)
    draw.polygon([(x - 2 * lobe, top + 1.5 * lobe), (x + 2 * lobe, top + 1.5 * lobe), (x, y + r)], fill=rgb)


def _cross(draw: ImageDraw.ImageDraw, x: float, y: float, r: float, rgb) -> None:
    arm = 0.35 * r
    draw.rectangle([x - arm, y - r, x + arm, y + r], fill=rgb)
    draw.rectangle([x - r, y - arm, x + r, y + arm], fill=rgb)


_DRAW = {
    "circle": lambda d, x, y, r, rgb: d.ellipse([x - r, y - r, x + r, y + r], fill=rgb),
    "square": lambda d, x, y, r, rgb: d.rectangle([x - 0.85 * r, y - 0.85 * r, x + 0.85 * r, y + 0.85 * r], fill=rgb),
    "triangle": lambda d, x, y, r, rgb: d.polygon(_regular(x, y + 0.2 * r, 1.1 * r, 3), fill=rgb),
    "star": lambda d, x, y, r, rgb: d.polygon(_star(x, y, 1.1 * r), fill=rgb),
    "heart": _heart,
    "cross": _cross,
    "diamond": lambda d, x, y, r, rgb: d.polygon(_regular(x, y, r, 4), fill=rgb),
    "hexagon": lambda d, x, y, r, rgb: d.polygon(_regular(x, y, r, 6), fill=rgb),
}
