"""The Blind Painter harness: exact scoring on the painter world (`exact`)."""

from .exact import paint_with_controls, run_paint

__all__ = ["paint_with_controls", "run_paint"]
