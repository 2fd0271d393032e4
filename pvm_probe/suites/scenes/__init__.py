"""The Blind Painter "scenes" suite: generated scenes of coloured shapes, no human labels.

`layout` (seeded scenes, PIL rendering), `words` (object / colour / number / position word lists and
a CHAIR-style noun list), `scoring` (every grounded claim of an answer, by quarter), `summary`
(CHAIR_i / CHAIR_s and error rates by quarter), `generate` (batched greedy generation, optional
attention-mass probe), `processor` (loading a local checkpoint's processor without torchvision),
`run` (the `pvm-probe paint --suite scenes` command).
"""

from ...world.scenes import EVAL_SEED_BASE
from .generate import PROMPT, Answer, generate_answers
from .layout import Scene, SceneObject, make_scene, render
from .processor import load_processor
from .run import paint_scenes, run_scenes, scene_seeds
from .scoring import score_answer
from .summary import format_table, summarize

__all__ = [
    "EVAL_SEED_BASE", "PROMPT", "Answer", "Scene", "SceneObject", "format_table", "generate_answers",
    "load_processor", "make_scene", "paint_scenes", "render", "run_scenes", "scene_seeds", "score_answer",
    "summarize",
]
