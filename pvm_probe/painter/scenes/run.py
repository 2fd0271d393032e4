"""`pvm-probe paint --suite scenes`: the Blind Painter on generated scenes, for any local backbone.

Scene i of set `seed` has seed EVAL_SEED_BASE + 100_000 * seed + i (held out, as in the painter world).
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext

import numpy as np
import torch

from ...checkpoints import load_pvm, resolve_adapter
from ...loading import load_base
from ...world.scenes import EVAL_SEED_BASE
from .generate import PROMPT, generate_answers
from .layout import make_scene, render
from .processor import load_processor
from .scoring import score_answer
from .summary import summarize

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def scene_seeds(scenes: int, seed: int = 0) -> list[int]:
    return [EVAL_SEED_BASE + 100_000 * seed + i for i in range(scenes)]


def paint_scenes(model, processor, *, scenes: int, seed: int = 0, max_new_tokens: int = 1024, batch_size: int = 8,
                 probe: bool = False, image_size: int = 448, progress: bool = True) -> dict:
    """Describe `scenes` held-out scenes with an already loaded model and score every claim (JSON-able)."""
    scene_list = [make_scene(s) for s in scene_seeds(scenes, seed)]
    answers = generate_answers(model, processor, [render(s, image_size) for s in scene_list],
                               max_new_tokens=max_new_tokens, batch_size=batch_size, probe=probe, progress=progress)
    scores = [score_answer(s, a.text) for s, a in zip(scene_list, answers, strict=True)]
    result = {"suite": "scenes", "n_scenes": scenes, "seed": seed, "max_new_tokens": max_new_tokens,
              "image_size": image_size, "prompt": PROMPT, **summarize(scores, [a.tokens for a in answers])}
    if probe:
        with warnings.catch_warnings():  # a quarter no answer reached is NaN -> None
            warnings.simplefilter("ignore", RuntimeWarning)
            share = np.nanmean(np.stack([a.image_share for a in answers]), axis=0)  # [L, 4]
        result["image_attention_by_quarter"] = [[None if np.isnan(v) else float(v) for v in row] for row in share]
    result["scenes"] = [{"seed": s.seed, "objects": s.describe(), "answer": a.text, "answer_tokens": a.tokens, **score}
                        for s, a, score in zip(scene_list, answers, scores, strict=True)]
    return result


def _device_and_dtype(device: str | None, dtype: str) -> tuple[str, torch.dtype]:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return device, DTYPES[dtype]


def run_scenes(args) -> dict:
    """Load `--base` (and `--pvm`), then paint; `--gates-off` zeroes every PVM alpha."""
    if not args.base:
        raise ValueError("--suite scenes needs --base DIR (a local Qwen3-VL, Qwen2.5-VL or LLaVA checkpoint)")
    if args.gates_off and not args.pvm:
        raise ValueError("--gates-off needs an adapter (--pvm)")
    device, dtype = _device_and_dtype(args.device, args.dtype)
    model, processor = load_base(args.base, attn_implementation="sdpa", dtype=dtype, load_processor=load_processor)
    model.to(device)
    handle = load_pvm(model, args.pvm) if args.pvm else None
    with handle.gates_off() if args.gates_off else nullcontext():
        result = paint_scenes(model, processor, scenes=args.scenes, seed=args.seed, max_new_tokens=args.max_new_tokens,
                              batch_size=args.batch_size, probe=args.probe)
    result.update(base=str(args.base), pvm=str(resolve_adapter(args.pvm)) if args.pvm else None,
                  gates_off=args.gates_off, device=device, dtype=str(dtype).removeprefix("torch."))
    return result
