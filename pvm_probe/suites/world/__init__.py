"""The painter world: scenes, the Blind Painter task, scoring, tokenizer/processor,
the tiny Qwen3-VL baseline (training and the shipped checkpoint).

Model-level entry points live in submodules: ``pvm_probe.world.paint.paint`` and ``pvm_probe.world.train_base.train_base``.

Importing this package registers ``PainterProcessor`` with ``AutoProcessor``.
Evaluation scenes use seeds >= ``EVAL_SEED_BASE`` (1_000_000); training never does.
"""
from .processor import PainterProcessor, build_processor, build_tokenizer, load_processor
from .scenes import EVAL_SEED_BASE, Scene, make_scene, render
from .scoring import accuracy_by_decoys, parse_claims, score_answer, summarize
from .task import PaintSpec, answer_length, answer_tokens

__all__ = [
    "EVAL_SEED_BASE", "PaintSpec", "PainterProcessor", "Scene", "accuracy_by_decoys", "answer_length",
    "answer_tokens", "build_processor", "build_tokenizer", "load_processor", "make_scene",
    "parse_claims", "render", "score_answer", "summarize",
]
