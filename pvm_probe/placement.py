"""Where to put PVM: the paper's three insertion strategies, derived from a measured attention profile.

All three take the baseline's visual attention mass by layer and generated position, `mass` [L, T]
(`VisualAttentionMass(...).result.by_layer()`, or a mean over requests; NaN where a row has ended),
and return `n_blocks` decoder-layer indices, sorted:

* **Strided** (global coverage): evenly spaced through depth; needs only the layer count
  (36 layers, 3 blocks -> 8, 16, 24, the paper's choice for Qwen3-VL-8B).
* **Peak Attention** (reinforcement): the layers with the highest mean visual mass.
* **Max Decay** (compensation): the layers whose visual mass decays fastest: the largest relative
  drop from the first to the last quarter of the answer, 1 - mean(Q4) / mean(Q1). A decay rate is
  scale-free (a layer that starts with little mass can still lose most of it).
"""

from __future__ import annotations

import numpy as np
import torch

from .config import strided_layers
from .probes import VisualAttentionMass
from .world.paint import DEFAULT_FILLER, DEFAULT_LONG, eval_examples, prompt_inputs

STRATEGIES = ("strided", "peak", "decay")


def _check(mass: np.ndarray, n_blocks: int) -> np.ndarray:
    mass = np.asarray(mass, dtype=float)
    if mass.ndim != 2 or mass.shape[1] < 4:
        raise ValueError(f"mass must be [layers, positions] with at least 4 positions, got shape {mass.shape}")
    if not 0 < n_blocks <= mass.shape[0]:
        raise ValueError(f"cannot place {n_blocks} blocks in a {mass.shape[0]}-layer model")
    return mass


def _top(score: np.ndarray, n_blocks: int) -> tuple[int, ...]:
    order = np.argsort(-score, kind="stable")  # ties: the shallower layer first
    return tuple(sorted(int(i) for i in order[:n_blocks]))


def quarter_means(mass: np.ndarray) -> np.ndarray:
    """[L, 4] mean visual mass per quarter of the generated positions (NaN-aware)."""
    return np.stack([np.nanmean(part, axis=1) for part in np.array_split(mass, 4, axis=1)], axis=1)


def relative_decay(mass: np.ndarray) -> np.ndarray:
    """[L] 1 - mean(last quarter) / mean(first quarter) of each layer's visual mass."""
    quarters = quarter_means(mass)  # [L, 4]
    return 1.0 - quarters[:, 3] / quarters[:, 0]


def strided(num_layers: int, n_blocks: int) -> tuple[int, ...]:
    return strided_layers(num_layers, n_blocks)


def peak_attention(mass: np.ndarray, n_blocks: int) -> tuple[int, ...]:
    mass = _check(mass, n_blocks)
    return _top(np.nanmean(mass, axis=1), n_blocks)


def max_decay(mass: np.ndarray, n_blocks: int) -> tuple[int, ...]:
    mass = _check(mass, n_blocks)
    return _top(relative_decay(mass), n_blocks)


def place(strategy: str, mass: np.ndarray, n_blocks: int) -> tuple[int, ...]:
    """Layer list for one strategy (`strided`, `peak`, `decay`)."""
    mass = _check(mass, n_blocks)
    if strategy == "strided":
        return strided(mass.shape[0], n_blocks)
    if strategy == "peak":
        return peak_attention(mass, n_blocks)
    if strategy == "decay":
        return max_decay(mass, n_blocks)
    raise ValueError(f"unknown placement strategy {strategy!r}; known: {', '.join(STRATEGIES)}")


def all_placements(mass: np.ndarray, n_blocks: int) -> dict[str, tuple[int, ...]]:
    return {s: place(s, mass, n_blocks) for s in STRATEGIES}


@torch.no_grad()
def measure_mass(model, inputs: dict, new_tokens: int) -> np.ndarray:
    """[L, T] visual attention mass by layer and generated position, mean over requests and heads,
    measured by the streaming probe during a greedy `generate` of exactly `new_tokens` tokens."""
    with VisualAttentionMass(model) as mass:
        model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    return mass.result.by_layer()


def world_mass(model, processor, scenes: int = 16) -> np.ndarray:
    """The profile on held-out painter-world scenes at the default long setting."""
    examples = eval_examples(processor, scenes=scenes, seed=2, length=DEFAULT_LONG, filler=DEFAULT_FILLER)
    return measure_mass(model, dict(prompt_inputs(processor, examples)), len(examples[0].answer) + 1)


def scenes_mass(model, processor, scenes: int = 8, new_tokens: int = 256, image_size: int = 448) -> np.ndarray:
    """The profile of any local VLM on held-out generated scenes, under the scenes suite's prompt."""
    from .painter.scenes import make_scene, render, scene_seeds
    from .painter.scenes.generate import chat_inputs

    images = [render(make_scene(s), image_size) for s in scene_seeds(scenes, seed=2)]
    return measure_mass(model, dict(chat_inputs(processor, images).to(model.device)), new_tokens)


def layer_scores(mass: np.ndarray) -> dict[str, list[float]]:
    """What the strategies rank: mean visual mass per layer and its relative decay over the answer."""
    mass = np.asarray(mass, dtype=float)
    return {"mean_mass": np.nanmean(mass, axis=1).tolist(), "mass_by_quarter": quarter_means(mass).tolist(),
            "relative_decay": relative_decay(mass).tolist()}


def profile_of(model, processor, suite: str, scenes: int = 8) -> np.ndarray:
    """[L, T] measured visual mass of a loaded model: on the painter world or on generated scenes."""
    if suite == "world":
        return world_mass(model, processor, scenes)
    if suite == "scenes":
        return scenes_mass(model, processor, scenes)
    raise ValueError(f"unknown suite {suite!r}; known: world, scenes")


def measure_profile(base=None, n_blocks: int = 2, suite: str | None = None, scenes: int = 8) -> dict:
    """Load a base, measure its profile, and return every strategy's layers with what they ranked."""
    from .loading import BASELINE_DIR, load_base
    from .painter.scenes import load_processor

    suite = suite or ("scenes" if base else "world")
    loader = {"load_processor": load_processor} if suite == "scenes" else {}
    model, processor = load_base(base, **loader)
    mass = profile_of(model, processor, suite, scenes)  # [L, T]
    return {"base": str(base or BASELINE_DIR), "suite": suite, "blocks": n_blocks,
            "layers": {s: list(v) for s, v in all_placements(mass, n_blocks).items()}, **layer_scores(mass)}
