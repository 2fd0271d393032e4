"""Training-free remedies for visual dilution, as context managers on a loaded model.

`VCD` (contrast with a distorted image), `PAI` (boost image attention + text-only guidance), `MemVR`
(re-inject the visual tokens as FFN memory when a layer is unsure), `DoLa` (contrast the final layer
with a premature one), `VISTA` (steer the residual stream toward the image, mix in early-layer logits)
and `SPARC` (rescale the cached values of image tokens whose attention rises) each go on with `with`
and come off cleanly, hooks removed even when the body raises, on every backbone of the hook-site
table. `OPERA` decodes itself (`decode`, beam search with an over-trust penalty and rollback); `replay`
forces its answers through `generate` so probes read them. Each is registered by name in
`pvm_probe.registry.REMEDIES` and becomes a runner variant there.
"""

from ..key_bias import key_logit_bias, register_key_logit_bias
from .base import replay
from .dola import DoLa
from .memvr import MemVR, retrace, top_k_entropy
from .opera import OPERA
from .pai import PAI, guidance
from .sparc import SPARC
from .vcd import VCD, contrast, diffusion_noise, noise_schedule
from .vista import VISTA

__all__ = [
    "DoLa",
    "MemVR",
    "OPERA",
    "PAI",
    "SPARC",
    "VCD",
    "VISTA",
    "contrast",
    "diffusion_noise",
    "guidance",
    "key_logit_bias",
    "noise_schedule",
    "register_key_logit_bias",
    "replay",
    "retrace",
    "top_k_entropy",
]
