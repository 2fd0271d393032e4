"""Load a base model and its processor from a local directory (never from a hub).

`None` means the shipped painter-world baseline. Any local Hugging Face VLM directory of a supported
architecture (Qwen3-VL, Qwen2.5-VL, LLaVA) loads the same way, with or without torchvision
(`processors.load_processor`). Every command, notebook and API path goes through `load_base`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForImageTextToText

from .backbones import HOOK_SITES
from .errors import InputError
from .processors import load_processor
from .suites import world  # noqa: F401  (registers the painter world's processor with AutoProcessor)
from .suites.world.window import attn_implementation_for

BASELINE_DIR = Path(__file__).parent / "assets" / "baseline"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_model_dir(path) -> Path:
    """The directory, if it holds a config.json of a supported architecture; else a one-line InputError."""
    path = Path(path)
    config = path / "config.json"
    if not path.is_dir():
        raise InputError(f"base model directory {path} does not exist")
    if not config.is_file():
        raise InputError(f"{path} has no config.json: not a Hugging Face model directory")
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except (json.JSONDecodeError, AttributeError) as err:
        raise InputError(f"{config} is not a JSON object: {err}") from None
    if not any(a in HOOK_SITES for a in architectures):
        raise InputError(
            f"unsupported architecture {architectures} in {path}; supported: {', '.join(sorted(HOOK_SITES))}")
    return path


def resolve_device(device: str | None) -> torch.device:
    """`None`: a GPU when there is one, else the CPU. Under `accelerate launch` a GPU without an index is this
    process's own (LOCAL_RANK), not cuda:0 for every process."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto`: bfloat16 on a GPU, float32 on the CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise InputError(f"dtype must be auto or one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def load_base(path=None, *, device: str | None = None, dtype: str = "auto", attn_implementation: str = "sdpa",
              check_processor=None):
    """(model, processor) in eval mode from a local directory; `None` = the shipped baseline.

    `check_processor(processor)` runs before the weights load (e.g. a suite refusing a base it cannot
    run on), so a wrong combination fails in a second, not after minutes of loading."""
    path = check_model_dir(path or BASELINE_DIR)
    _check_weights(path)
    processor = load_processor(path)
    if check_processor is not None:
        check_processor(processor)
    device_ = resolve_device(device)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(
        path, config=config, attn_implementation=attn_implementation_for(config, attn_implementation),
        dtype=resolve_dtype(dtype, device_), local_files_only=True)
    _complete_generation_config(model, processor)
    return model.to(device_).eval(), processor


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def _check_weights(path: Path) -> None:
    """One line naming the directory when it holds no safetensors weights (transformers' own message for
    that starts "Error no file named")."""
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise InputError(f"{path} holds no model weights: expected {' or '.join(WEIGHT_FILES)}")


def _complete_generation_config(model, processor) -> None:
    """Stop and pad ids from the tokenizer where the checkpoint's generation config has none."""
    config, tokenizer = model.generation_config, processor.tokenizer
    if config.eos_token_id is None:
        config.eos_token_id = tokenizer.eos_token_id
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
