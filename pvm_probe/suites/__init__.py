"""Suites: what to ask a model and how to score its answers (one interface, `base.Suite`; registered by
name in `pvm_probe.registry.SUITES`).

    world    the painter world: the Blind Painter on the embedded default, scored exactly
    scenes   generated scenes of coloured shapes, for any checkpoint, scored CHAIR-style
    images   the user's own JSONL of image + prompt (+ the objects present), scored CHAIR-style
    chair    CHAIR on a local COCO directory: a pinned protocol (image ids, prompt, tokens) or a seeded sample
    pope     POPE's yes/no object questions on a local COCO directory, built (seeded) or the official files
    amber    AMBER's generative task on a local copy of AMBER's data
"""

from .amber import AmberSuite
from .base import Answer, Claim, Request, Suite, quarter_of
from .chair import ChairSuite
from .images import ImagesSuite
from .pope import PopeSuite
from .scenes.suite import ScenesSuite
from .world.suite import WorldSuite

__all__ = ["AmberSuite", "Answer", "ChairSuite", "Claim", "ImagesSuite", "PopeSuite", "Request", "ScenesSuite",
           "Suite", "WorldSuite", "quarter_of"]
