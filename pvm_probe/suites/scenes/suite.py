"""The `scenes` suite: generated scenes of coloured shapes, for any local checkpoint, no human labels.

Request i of set `seed`: scene seed EVAL_SEED_BASE + 100_000 * seed + i, rendered at `image_size` px, with
the prompt below. Every grounded claim of the description is scored against the scene (`scoring.py`:
object hallucinations CHAIR-style, attribute, count and position errors); a claim's quarter is where
its first word sits among the answer's words, its token the generated token holding that word.
"""

from __future__ import annotations

import copy

from ..base import Answer, Claim, Request, Suite, check_int
from ..world.scenes import EVAL_SEED_BASE
from ..world.suite import CALIBRATION_SET
from .layout import make_shape_scene, render_shapes
from .scoring import KINDS, score_description

PROMPT = (
    "Describe this image exhaustively. Name every object you see, one by one: its shape, its colour, "
    "how many objects of that kind there are, and where each one is in the image (top left, top, top right, "
    "left, center, right, bottom left, bottom, bottom right). Leave nothing out, and keep going in as much "
    "detail as you can."
)


class ScenesSuite(Suite):
    name = "scenes"
    options = ("scenes", "seed", "image_size", "max_new_tokens")
    claim_kinds = KINDS
    higher_is_better = False
    words = {"metric": "error rate", "claims": "claims (objects, colours, counts, positions)"}

    def __init__(self, scenes: int = 64, seed: int = 0, image_size: int = 448, max_new_tokens: int = 1024):
        check_int("scenes", scenes, 1)
        check_int("seed", seed, 0)
        check_int("image_size", image_size, 28, 4096)
        check_int("max_new_tokens", max_new_tokens, 1)
        self.scenes, self.seed, self.image_size, self.budget = scenes, seed, image_size, max_new_tokens

    def __len__(self) -> int:
        return self.scenes

    def request(self, index: int) -> Request:
        self.check_request(index)
        seed = EVAL_SEED_BASE + 100_000 * self.seed + index
        scene = make_shape_scene(seed)
        return Request(index, f"scene-{seed}", (render_shapes(scene, self.image_size),), PROMPT,
                       {"scene_seed": seed, "objects": scene.describe()})

    def calibration(self, count: int) -> list[Request]:
        """Held-out scenes of another set (seed + CALIBRATION_SET), never the evaluated ones."""
        other = copy.copy(self)
        other.scenes, other.seed = count, self.seed + CALIBRATION_SET
        return list(other.requests())

    def max_new_tokens(self, request: Request) -> int:
        return self.budget

    def score(self, request: Request, answer: Answer) -> list[Claim]:
        scene = make_shape_scene(request.meta["scene_seed"])
        boxes = [_box(o) for o in scene.objects]
        return [Claim(c["kind"], answer.token_at(c["char"]), c["text"], c["correct"], c["quarter"],
                      boxes=[boxes[i] for i in c["objects"]])
                for c in score_description(scene, answer.text)["claims"]]

    def settings(self) -> dict:
        return {"suite": self.name, "scenes": self.scenes, "seed": self.seed, "image_size": self.image_size,
                "max_new_tokens": self.budget, "prompt": PROMPT}


def _box(obj) -> list[float]:
    """[x0, y0, x1, y1] around an object, as fractions of the image."""
    (x, y), r = obj.centre, obj.radius
    return [max(0.0, x - r), max(0.0, y - r), min(1.0, x + r), min(1.0, y + r)]
