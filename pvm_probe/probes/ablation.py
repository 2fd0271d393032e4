"""Causal check: switch PVM's gates off at inference, through the handle or inside an nnsight trace.

`ablate_gates(handle, layers)` sets alpha = 0 in the given layers (all by default) and restores it;
`nnsight_ablated_logits(handle, inputs, layers)` instead replaces the chosen blocks' outputs (the
injection alpha * h_pvm * M_txt) with zeros inside an nnsight trace, leaving alpha untouched.
Both must give the logits of the model without PVM (tests/test_probes_gates.py).
"""

from __future__ import annotations

import torch

from ..backbones import hook_sites
from ..inject import BLOCK_ATTR


def ablate_gates(handle, layers=None):
    """Context manager: alpha = 0 in `layers` (all PVM layers by default), restored afterwards."""
    return handle.gates_off(layers)


def nnsight_ablated_logits(handle, inputs: dict, layers=None) -> torch.Tensor:
    """Logits [B, T, V] of one forward in which the chosen PVM blocks' outputs are zeroed by nnsight."""
    from nnsight import NNsight

    model = handle.model
    chosen = sorted(handle.blocks) if layers is None else sorted(layers)
    traced = NNsight(model)
    envoy = traced
    for part in hook_sites(model).layers.split("."):
        envoy = getattr(envoy, part)
    with torch.no_grad():
        with traced.trace(**inputs):
            for i in chosen:
                block = getattr(envoy[i], BLOCK_ATTR)
                block.output = torch.zeros_like(block.output)
            logits = traced.output.logits.save()
    return logits
