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

import tempfile

import numpy as np

from .config import strided_layers
from .names import PLACEMENTS
from .probes.builtin.mass import mass_curve
from .runner import RunConfig, run
from .variants import BASELINE


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
        return strided_layers(mass.shape[0], n_blocks)
    if strategy == "peak":
        return peak_attention(mass, n_blocks)
    if strategy == "decay":
        return max_decay(mass, n_blocks)
    raise ValueError(f"unknown placement strategy {strategy!r}; known: {', '.join(PLACEMENTS)}")


def all_placements(mass: np.ndarray, n_blocks: int) -> dict[str, tuple[int, ...]]:
    return {s: place(s, mass, n_blocks) for s in PLACEMENTS}


def measure_mass(model, processor, suite, batch_size: int = 8, max_new_tokens: int | None = None) -> np.ndarray:
    """[L, T] visual attention mass of the loaded model by layer and generated position, mean over the suite's
    requests (NaN where no answer reaches t), measured by the runner's streaming probe during `generate`."""
    config = RunConfig(batch_size=batch_size, max_new_tokens=max_new_tokens, probes=["mass"], explore=0,
                       progress=False)
    with tempfile.TemporaryDirectory(prefix="pvm_probe_placement_") as tmp:
        return mass_curve(run(model, processor, suite, [BASELINE], tmp, config))


def layer_scores(mass: np.ndarray) -> dict[str, list[float]]:
    """What the strategies rank: mean visual mass per layer and its relative decay over the answer."""
    mass = np.asarray(mass, dtype=float)
    return {"mean_mass": np.nanmean(mass, axis=1).tolist(), "mass_by_quarter": quarter_means(mass).tolist(),
            "relative_decay": relative_decay(mass).tolist()}
