"""Training-free remedies for visual dilution, as context managers on a loaded model.

`VCD` (contrast with a distorted image), `PAI` (boost image attention + text-only guidance) and
`MemVR` (re-inject the visual tokens as FFN memory when a layer is unsure) each go on with `with`
and come off cleanly, hooks removed even when the body raises, on every backbone of the hook-site
table. `key_bias` is how an attention change is shared with the attention-mass probe.
"""

from ..key_bias import key_logit_bias, register_key_logit_bias
from .base import replay
from .dola import DoLa
from .memvr import MemVR, retrace, top_k_entropy
from .pai import PAI, guidance
from .opera import OPERA
from .sparc import SPARC
from .vista import VISTA
from .vcd import VCD, contrast, diffusion_noise, noise_schedule

ARMS = {"vcd": VCD, "pai": PAI, "memvr": MemVR}  # the runner's variants, at the papers' defaults
ARMS["dola"] = DoLa
ARMS["vista"] = VISTA
ARMS["sparc"] = SPARC
ARMS["opera"] = OPERA

__all__ = [
    "ARMS",
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
