"""The painter world: grid scenes, the Blind Painter task and its exact scoring, the tokenizer and processor,
the tiny Qwen3-VL baseline (its training and its attention window), and the `world` suite.

Importing this package registers ``PainterProcessor`` with ``AutoProcessor``.
Evaluation scenes use seeds >= ``EVAL_SEED_BASE`` (1_000_000); training never does.
"""
from .processor import PainterProcessor, build_processor, build_tokenizer
from .scenes import EVAL_SEED_BASE, GridScene, make_grid_scene, render_grid
from .scoring import accuracy_by_decoys, parse_claims, score_painting, summarize
from .suite import DEFAULT_FILLER, DEFAULT_LONG, DEFAULT_SHORT, WorldSuite
from .task import PaintSpec, answer_length, answer_tokens

__all__ = [
    "DEFAULT_FILLER", "DEFAULT_LONG", "DEFAULT_SHORT", "EVAL_SEED_BASE", "GridScene", "PaintSpec",
    "PainterProcessor", "WorldSuite", "accuracy_by_decoys", "answer_length", "answer_tokens", "build_processor",
    "build_tokenizer", "make_grid_scene", "parse_claims", "render_grid", "score_painting", "summarize",
]
