"""Causal interventions on PVM and on the image, inside nnsight traces (one forward each, no hooks left).

    nnsight_ablated_logits(handle, inputs, layers)   the chosen blocks' injections zeroed (= gates off)
    pvm_outputs(handle, inputs)                      every block's injection [B, T, d] from a clean forward
    patched_logits(handle, inputs, layer, value)     one block's injection replaced (activation patching)
    image_zeroed_logits(model, inputs, layer)        the image tokens' hidden states zeroed at the input of a
                                                     decoder layer: the image is gone from that layer on
    patching_study / zeroing_study                   the two experiments of notebook 03 and fig_interventions.py

The gate ablation must give the logits of the model without PVM (tests/test_probes_gates.py); patching a
clean run's injection into a run where PVM reads another image tells which block carries the retrieval.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from ..backbones import decoder_layers, get_module, hook_sites, visual_token_ids
from ..memory import BLOCK_ATTR


def _layers(traced, model):
    """The traced model's decoder-layer list (an nnsight envoy), found through the hook-site table."""
    return get_module(traced, hook_sites(model).layers)


@torch.no_grad()
def nnsight_ablated_logits(handle, inputs: dict, layers=None) -> torch.Tensor:
    """Logits [B, T, V] of one forward in which the chosen PVM blocks' outputs are zeroed by nnsight."""
    from nnsight import NNsight

    traced = NNsight(handle.model)
    envoys = _layers(traced, handle.model)
    with traced.trace(**inputs):
        for i in sorted(handle.blocks) if layers is None else sorted(layers):
            block = getattr(envoys[i], BLOCK_ATTR)
            block.output = torch.zeros_like(block.output)
        logits = traced.output.logits.save()
    return logits


@torch.no_grad()
def pvm_outputs(handle, inputs: dict) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Every PVM block's injection [B, T, d] (by decoder layer) and the logits [B, T, V] of one forward."""
    from nnsight import NNsight

    traced = NNsight(handle.model)
    envoys = _layers(traced, handle.model)
    layers, saved = sorted(handle.blocks), []
    with traced.trace(**inputs):
        for i in layers:
            saved.append(getattr(envoys[i], BLOCK_ATTR).output.save())
        logits = traced.output.logits.save()
    return dict(zip(layers, saved, strict=True)), logits


@torch.no_grad()
def patched_logits(handle, inputs: dict, layer: int, value: torch.Tensor) -> torch.Tensor:
    """Logits [B, T, V] with the PVM block of `layer` injecting `value` [B, T, d] instead of its own output."""
    from nnsight import NNsight

    traced = NNsight(handle.model)
    with traced.trace(**inputs):
        getattr(_layers(traced, handle.model)[layer], BLOCK_ATTR).output = value
        logits = traced.output.logits.save()
    return logits


@torch.no_grad()
def image_zeroed_logits(model, inputs: dict, layer: int) -> torch.Tensor:
    """Logits [B, T, V] with the hidden states at the image positions zeroed at the input of decoder layer
    `layer`: from there on the backbone cannot read the image (PVM, which keeps the image embeddings it
    captured before layer 0, still can)."""
    from nnsight import NNsight

    image = torch.isin(inputs["input_ids"], torch.tensor(visual_token_ids(model), device=inputs["input_ids"].device))
    traced = NNsight(model)
    with traced.trace(**inputs):
        envoy = _layers(traced, model)[layer]
        envoy.input = envoy.input * (~image)[..., None].to(envoy.input.dtype)
        logits = traced.output.logits.save()
    return logits


def patching_study(handle, forced, partner_inputs: dict) -> dict[str, list[float]]:
    """Claims correct by quarter (`forced.correct_by_quarter`) when PVM reads another request's image, and
    when one block at a time gets back the injection of the clean run: the block whose patch restores the
    late claims is the one that carries the retrieval. `forced`: teacher-forced claims (e.g.
    `suites.world.suite.forced_claims`); `partner_inputs`: chat inputs of the requests whose images PVM reads."""
    clean, logits = pvm_outputs(handle, forced.inputs)
    table = {"PVM reads its own image": forced.correct_by_quarter(logits)}
    with handle.swapped_visual(*handle.encode_visual(**partner_inputs)):
        with torch.no_grad():
            table["PVM reads another image"] = forced.correct_by_quarter(handle.model(**forced.inputs).logits)
        for layer, value in clean.items():
            patched = patched_logits(handle, forced.inputs, layer, value)
            table[f"another image, block at layer {layer} patched"] = forced.correct_by_quarter(patched)
    return table


def zeroing_study(handle, forced) -> dict[str, list[float]]:
    """Claims correct by quarter with the image zeroed at the input of each decoder layer, without PVM (gates
    off) and with it."""
    table = {}
    for label, context in (("without PVM", handle.gates_off), ("with PVM", nullcontext)):
        with context():
            for layer in range(len(decoder_layers(handle.model))):
                logits = image_zeroed_logits(handle.model, forced.inputs, layer)
                table[f"{label}, image zeroed from layer {layer}"] = forced.correct_by_quarter(logits)
    return table


