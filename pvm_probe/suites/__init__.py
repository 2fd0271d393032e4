"""Suites: what to ask a model and how to score its answers (one interface, `base.Suite`; registered by
name in `pvm_probe.registry.SUITES`).

    world    the painter world: the Blind Painter on the embedded default, scored exactly
    scenes   generated scenes of coloured shapes, for any checkpoint, scored CHAIR-style
    images   the user's own JSONL of image + prompt (+ the objects present), scored CHAIR-style
"""

from .base import Answer, Claim, Request, Suite, quarter_of
from .images import ImagesSuite
from .scenes.suite import ScenesSuite
from .world.suite import WorldSuite

__all__ = ["Answer", "Claim", "ImagesSuite", "Request", "ScenesSuite", "Suite", "WorldSuite",
           "quarter_of"]
