"""Sampling whose randomness belongs to each completion, not to the process that generates it.

Stage II samples a group of completions per prompt, and under `accelerate launch` a group may be split over
processes. With one random stream per process the completions then depend on how many processes there
are. Here every completion draws from its own stream, keyed by (seed, generation round, the completion's
index in the global batch), through the Gumbel-max trick: argmax(logits / T + Gumbel noise) is an exact
sample of softmax(logits / T). So the same seed gives the same completions on 1 or N processes (up to
float differences between batch shapes), and the rewards and losses match.
"""

from __future__ import annotations

import copy
import functools
import warnings
from contextlib import contextmanager

import numpy as np
import torch


def stream_key(seed: int, round_: int, row: int) -> int:
    """A 63-bit seed for completion `row` of generation round `round_`."""
    return int(np.random.SeedSequence([seed, round_, row]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


class RowSeededSampler:
    """A logits processor for greedy `generate`: adds each row's own Gumbel noise to logits / temperature,
    so greedy decoding draws an exact sample of softmax(logits / temperature) from that row's stream."""

    def __init__(self, keys: list[int], temperature: float = 1.0):
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.keys, self.temperature = keys, temperature
        self.generators: list[torch.Generator] | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.generators is None:  # on the logits' device, at the first step
            self.generators = [torch.Generator(scores.device).manual_seed(k) for k in self.keys]
        if len(self.generators) != scores.shape[0]:
            raise RuntimeError(f"{len(self.generators)} sampling streams for a batch of {scores.shape[0]} rows")
        uniform = torch.stack([torch.rand(scores.shape[-1], generator=g, device=scores.device)
                               for g in self.generators])  # [B, V] in [0, 1)
        gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-20)))  # [B, V]
        return scores.float() / self.temperature + gumbel  # [B, V]


@contextmanager
def seeded_generation(model, keys: list[int], temperature: float = 1.0):
    """Within the block, `model.generate(...)` decodes greedily through a RowSeededSampler over `keys` (one
    per row of the batch it is called with); the model's own `generate` is back afterwards."""
    sampler = RowSeededSampler(keys, temperature)
    plain = model.generate

    @functools.wraps(plain)
    def generate(*args, generation_config=None, logits_processor=None, **kwargs):
        config = copy.deepcopy(generation_config if generation_config is not None else model.generation_config)
        # greedy over the sampler's perturbed logits; the sampler applies the temperature
        config.do_sample, config.temperature, config.top_k, config.top_p, config.min_p = False, 1.0, None, None, None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return plain(*args, **kwargs, generation_config=config,
                         logits_processor=[*(logits_processor or []), sampler])

    model.generate = generate
    try:
        yield sampler
    finally:
        del model.generate
