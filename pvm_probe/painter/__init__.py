"""The Blind Painter harness: exact scoring on the painter world (`exact`)."""

from .exact import run_paint

__all__ = ["run_paint"]
