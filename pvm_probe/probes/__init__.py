"""Probes: context managers that record what a (PVM-equipped) VLM does during `generate`.

`HookProbe` subclasses (VisualAttentionMass, LogitLens, PVMRetrieval, ...) are the measurements, usable on
their own; a `Probe` (protocol.py) carries one of them through the runner, the records and the report.
"""

from ._base import SEGMENTS, HookProbe
from .ablation import (
    image_zeroed_logits,
    nnsight_ablated_logits,
    patched_logits,
    patching_study,
    pvm_outputs,
    zeroing_study,
)
from .attention_mass import AttentionMassResult, VisualAttentionMass, segment_shares
from .dilution import DilutionFit, DilutionReport, dilution_report, find_break, fit_dilution, hyperbola
from .gates import HorizonCheck, HorizonResult, PVMRetrieval, RetrievalResult, pvm_log_normaliser
from .logit_lens import LogitLens, LogitLensResult, lens_metrics
from .protocol import Batch, Figure, Probe, Row
from .tuned_lens import LensData, LensTraining, TunedLens, TunedLensConfig, record_generations

__all__ = [
    "SEGMENTS",
    "AttentionMassResult",
    "Batch",
    "DilutionFit",
    "DilutionReport",
    "Figure",
    "HorizonCheck",
    "HorizonResult",
    "HookProbe",
    "LensData",
    "LensTraining",
    "LogitLens",
    "LogitLensResult",
    "PVMRetrieval",
    "Probe",
    "RetrievalResult",
    "Row",
    "TunedLens",
    "TunedLensConfig",
    "VisualAttentionMass",
    "dilution_report",
    "find_break",
    "fit_dilution",
    "hyperbola",
    "image_zeroed_logits",
    "lens_metrics",
    "nnsight_ablated_logits",
    "patched_logits",
    "patching_study",
    "pvm_log_normaliser",
    "pvm_outputs",
    "record_generations",
    "segment_shares",
    "zeroing_study",
]
