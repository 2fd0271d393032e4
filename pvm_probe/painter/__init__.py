"""The Blind Painter harness: exact scoring on the painter world (`exact`) and the label-free
"scenes" suite for real backbones (`scenes`)."""

from .exact import paint_with_controls, run_paint
from .scenes import paint_scenes, run_scenes

__all__ = ["paint_scenes", "paint_with_controls", "run_paint", "run_scenes"]
