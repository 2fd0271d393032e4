"""Generated scenes of coloured shapes for any checkpoint: layout and rendering, word lists, CHAIR-style
scoring of a description, and the `scenes` suite."""

from .layout import ShapeObject, ShapeScene, make_shape_scene, render_shapes
from .scoring import KINDS, score_description
from .suite import PROMPT, ScenesSuite

__all__ = ["KINDS", "PROMPT", "ScenesSuite", "ShapeObject", "ShapeScene", "make_shape_scene", "render_shapes",
           "score_description"]
