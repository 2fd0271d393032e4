"""Visual Contrastive Decoding (VCD; Leng et al., CVPR 2024), as a context manager.

Official code: DAMO-NLP-SG/VCD. `vcd_utils/vcd_add_noise.py::add_diffusion_noise` distorts the
preprocessed image tensor with the forward diffusion process q(x_t | x_0) = sqrt(abar_t) x_0 +
sqrt(1 - abar_t) eps, over a 1000-step schedule betas = sigmoid(linspace(-6, 6, 1000)) *
(0.5e-2 - 1e-5) + 1e-5, at t = noise_step. `vcd_utils/vcd_sample.py::sample` runs a second,
separately cached pass on the distorted image each step and uses

    logits_vcd = (1 + alpha) * logits(v, x) - alpha * logits(v', x),
    masked to -inf where logits(v, x) < log(beta) + max logits(v, x)

(the adaptive plausibility constraint, "version 2" of their cut-off: tokens whose probability under
the real image is below beta times the most likely token's are removed).

Defaults are the official scripts': alpha = 1, beta = 0.1, noise_step = 500
(`experiments/eval/object_hallucination_vqa_*.py` argparse; the shipped POPE script passes beta 0.2).

Here the distorted pass is a second lane of the same batch (`lanes.TwoLanes`): rows B..2B-1 carry
the same tokens and the distorted pixels, with their own KV cache rows, so each step costs one
batched forward of 2B rows and the prefix is never re-run. Qwen's rope deltas need nothing: the
lane's tokens and image grids equal the request's, so `generate`'s 3-D position ids are duplicated.
Inside the context `model.input_modalities` is set to text only, so `generate` hands the raw pixels
to the prefill forward instead of encoding them beforehand (its pre-encoded features would leave no
pixels to distort); it is restored on exit. The noise is drawn from a generator seeded with `seed`
at each request, over the whole `pixel_values` tensor (Qwen: the flattened patches), so a request
and its batch composition give the same distortion every run. Video inputs are not supported.

alpha = 0 installs nothing but the image check: generation is the plain model's.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import InputError
from .base import cache_length, check_strength, require_image
from .lanes import TwoLanes, duplicate

DIFFUSION_STEPS = 1000


def noise_schedule(steps: int = DIFFUSION_STEPS) -> torch.Tensor:
    """abar_t = prod_{s<=t} (1 - beta_s), [steps], the official sigmoid schedule."""
    betas = torch.sigmoid(torch.linspace(-6, 6, steps)) * (0.5e-2 - 1e-5) + 1e-5
    return torch.cumprod(1 - betas, dim=0)


def diffusion_noise(pixels: torch.Tensor, noise_step: int = 500, seed: int = 0) -> torch.Tensor:
    """sqrt(abar_t) * pixels + sqrt(1 - abar_t) * eps, eps ~ N(0, 1) drawn on the CPU from a generator
    seeded with `seed` (same numbers on every device)."""
    alpha_bar = noise_schedule()[noise_step]
    eps = torch.randn(pixels.shape, generator=torch.Generator().manual_seed(seed))
    noisy = alpha_bar.sqrt() * pixels.float() + (1 - alpha_bar).sqrt() * eps.to(pixels.device)
    return noisy.to(pixels.dtype)


def contrast(real: torch.Tensor, distorted: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """(1 + alpha) * real - alpha * distorted, -inf where real < log(beta) + max(real); [..., V]."""
    real, distorted = real.float(), distorted.float()
    cutoff = math.log(beta) + real.amax(-1, keepdim=True)
    return ((1 + alpha) * real - alpha * distorted).masked_fill(real < cutoff, float("-inf"))


class VCD(TwoLanes):
    """`with VCD(model, alpha=1.0, beta=0.1, noise_step=500): model.generate(**inputs)`."""

    name, title, changes = "vcd", "VCD", "logits"
    summary = "contrast the next-token logits with those of a diffusion-noised image"
    cost = "a second lane of the batch on the noised image: 2B rows per step (published: 2.20x per token)"
    sweep = {"alpha": [1.0, 0.5, 2.0, 4.0], "noise_step": [500, 999]}

    def __init__(self, model: nn.Module, alpha: float = 1.0, beta: float = 0.1, noise_step: int = 500,
                 seed: int = 0):
        super().__init__(model)
        self.alpha = check_strength("VCD alpha", alpha)
        if not 0 < beta <= 1:
            raise InputError(f"VCD beta (plausibility cut-off) must be in (0, 1], got {beta}")
        if not 0 <= noise_step < DIFFUSION_STEPS:
            raise InputError(f"VCD noise_step must be in 0..{DIFFUSION_STEPS - 1}, got {noise_step}")
        self.beta, self.noise_step, self.seed = float(beta), int(noise_step), int(seed)
        self._modalities = None

    def _install(self) -> None:
        if self.alpha == 0:
            self._hook(self.model.register_forward_pre_hook(self._check_only, with_kwargs=True))
            return
        self._modalities = self.model.__dict__.get("input_modalities", _UNSET)
        self.model.input_modalities = ("text",)  # generate: raw pixels to the prefill, no pre-encoding
        self._install_lanes()

    def _restore(self) -> None:
        if self._modalities is _UNSET:
            del self.model.input_modalities
        elif self._modalities is not None:
            self.model.input_modalities = self._modalities
        self._modalities = None

    def _check_only(self, _module, _args, kwargs) -> None:
        if cache_length(kwargs) == 0:
            require_image(self.title, self.model, kwargs)

    def _start(self, kwargs: dict) -> None:
        if kwargs.get("mm_encoder_outputs"):
            raise InputError("VCD needs raw pixel_values to distort, not pre-encoded mm_encoder_outputs")
        require_image(self.title, self.model, kwargs)
        if kwargs.get("pixel_values") is None:
            raise InputError("VCD needs an image: this request's first forward has no pixel_values")

    def _lane(self, kwargs: dict) -> dict:
        return duplicate(kwargs)

    def _images(self, kwargs: dict) -> dict:
        pixels = kwargs.get("pixel_values")
        if pixels is None:
            return {}
        out = {"pixel_values": torch.cat([pixels, diffusion_noise(pixels, self.noise_step, self.seed)])}
        for key in ("image_grid_thw", "image_sizes"):
            if kwargs.get(key) is not None:
                out[key] = torch.cat([kwargs[key], kwargs[key]])
        return out

    def combine(self, real: torch.Tensor, distorted: torch.Tensor) -> torch.Tensor:
        return contrast(real, distorted, self.alpha, self.beta)


_UNSET = object()
