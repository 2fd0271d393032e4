"""The processes a run is split over: `accelerate launch` (or `torchrun`) on GPUs (nccl) or on CPUs (gloo).

accelerate's `PartialState()` joins the launched processes only when an accelerator backend is found; on a
machine without one it reports a single process (DistributedType.NO) in every process unless it is told
that the run is on the CPU (`cpu=True`, which joins them over gloo). `process_state` tells it, from the
device the model is on, so every process sees the same group on CPUs and GPUs alike.
"""

from __future__ import annotations

import torch


def process_state(device):
    """accelerate's PartialState of this process, joined with the other launched processes (if any)."""
    from accelerate import PartialState

    return PartialState(cpu=torch.device(device).type == "cpu")

