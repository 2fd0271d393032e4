"""Load a base model and its processor from a local directory (never from a hub).

`None` means the shipped painter-world baseline. Any local Hugging Face VLM directory of a
supported architecture (Qwen3-VL, Qwen2.5-VL, LLaVA) works the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from . import world  # noqa: F401  (registers the painter world's processor with AutoProcessor)
from .backbones import HOOK_SITES
from .world.window import attn_implementation_for

BASELINE_DIR = Path(__file__).parent / "assets" / "baseline"


def _check_model_dir(path: Path) -> None:
    config = path / "config.json"
    if not path.is_dir():
        raise FileNotFoundError(f"base model directory {path} does not exist")
    if not config.is_file():
        raise FileNotFoundError(f"{path} has no config.json: not a Hugging Face model directory")
    architectures = json.loads(config.read_text()).get("architectures") or []
    if not any(a in HOOK_SITES for a in architectures):
        raise ValueError(
            f"unsupported architecture {architectures} in {path}; supported: {', '.join(sorted(HOOK_SITES))}"
        )


def _auto_processor(path: Path):
    return AutoProcessor.from_pretrained(path, local_files_only=True)


def load_base(path=None, attn_implementation: str = "eager", dtype=torch.float32, load_processor=_auto_processor):
    """(model, processor) in eval mode, from a local directory; `None` = the shipped baseline.

    `load_processor(path)` builds the processor (default: AutoProcessor)."""
    path = Path(path) if path else BASELINE_DIR
    _check_model_dir(path)
    processor = load_processor(path)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(
        path, config=config, attn_implementation=attn_implementation_for(config, attn_implementation), dtype=dtype,
        local_files_only=True,
    )
    return model.eval(), processor
