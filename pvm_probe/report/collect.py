"""Run everything the dilution report shows, on the base and each adapter, and return plain data.

Per model: Blind Painter accuracy by quarter (free generation, default long setting) and, for an
adapter, with its gates off and with a swapped image; the probes during one batched `generate`
(visual attention mass per layer and position, LogitLens, PVM retrieval); dilution fits per layer.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from ..backbones import attention_window
from ..checkpoints import load_pvm, read_adapter_meta, resolve_adapter
from ..loading import BASELINE_DIR, load_base
from ..painter import paint_with_controls
from ..probes import LogitLens, PVMRetrieval, VisualAttentionMass, dilution_report
from ..world.paint import DEFAULT_FILLER, DEFAULT_LONG, eval_examples, prompt_inputs
from ..world.scenes import CELL_NAMES
from ..world.scoring import parse_claims


def _paint(model, processor, handle, scenes: int, **controls) -> dict:
    result = paint_with_controls(model, processor, handle, scenes=scenes, **controls)
    return {k: result[k] for k in ("accuracy", "accuracy_by_quartile", "answer_tokens", "n_scenes")}


def _claim_rows(tokens: list[str]) -> list[int]:
    """Generated-token rows whose forward predicted a claim's colour (row t produced token t)."""
    return [pos for pos, *_ in parse_claims(tokens)]


def claim_mass_by_quarter(image: np.ndarray, tokens: list[list[str]]) -> np.ndarray:
    """image [B, L, T] image share per generated row -> [B, 4, L] mean over the claim-predicting rows of each
    quarter of the claims (NaN: no claim there). A claim cut off at the token budget has no row."""
    out = np.full((image.shape[0], 4, image.shape[1]), np.nan)
    for b, t in enumerate(tokens):
        claim_rows = [r for r in _claim_rows(t) if r < image.shape[2]]
        for q, rows in enumerate(np.array_split(claim_rows, 4)):
            if len(rows):
                out[b, q] = image[b][:, rows].mean(1)
    return out


def queried_cell_share(weights: np.ndarray, tokens: list[list[str]]) -> np.ndarray:
    """PVM attention weights [B, L, H, T, N] per generated row -> [B, 4, L]: the share PVM puts on the image
    token of the cell each claim names (the world's merged image token k is cell k; chance 1/16), averaged
    over heads and over the claims of each quarter."""
    share = np.full((weights.shape[0], weights.shape[1], weights.shape[3]), np.nan)  # [B, L, T]
    for b, t in enumerate(tokens):
        for row, cell, *_ in parse_claims(t):
            if row < share.shape[2]:
                share[b, :, row] = weights[b, :, :, row, CELL_NAMES.index(cell)].mean(1)
    return claim_mass_by_quarter(share, tokens)


def _nan_to_none(array: np.ndarray) -> list:
    return [[None if np.isnan(v) else float(v) for v in row] for row in array]


@torch.no_grad()
def probe_model(model, processor, handle, scenes: int) -> dict:
    examples = eval_examples(processor, scenes=scenes, seed=1, length=DEFAULT_LONG, filler=DEFAULT_FILLER)
    inputs = prompt_inputs(processor, examples)
    n_new = len(examples[0].answer) + 1
    with ExitStack() as probes:
        mass = probes.enter_context(VisualAttentionMass(model))
        lens = probes.enter_context(LogitLens(model))
        retrieval = probes.enter_context(PVMRetrieval(handle)) if handle and handle.config.block == "pvm" else None
        out = model.generate(**inputs, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False)
    tokens = [processor.tokenizer.convert_ids_to_tokens(row.tolist())
              for row in out[:, inputs["input_ids"].shape[1]:]]
    image = mass.result.segment("image").mean(2)  # [B, L, T] image share, mean over heads
    by_layer = image.mean(0)  # [L, T]
    claim_mass = claim_mass_by_quarter(image, tokens)  # [B, 4, L]
    data = {
        "mass_by_layer": by_layer.tolist(),
        "claim_mass_by_quarter": _nan_to_none(np.nanmean(claim_mass, axis=0).T),  # [L, 4]
        "convergence_layer_mean": float(lens.result.convergence_layer().mean()),
        "lens_kl_by_layer": lens.result.mean_kl().tolist(),
        "lens_kl": lens.result.kl.mean(0).tolist(),  # [L, T]
    }
    fits = dilution_report(by_layer)
    data["dilution"] = {"params": fits.params.tolist(), "errors": fits.errors.tolist(), "rmse": fits.rmse.tolist(),
                        "break_t": fits.break_t.tolist(), "plateau": fits.plateau.tolist(),
                        "profile": fits.profile.tolist()}
    if retrieval:
        r = retrieval.result
        data["pvm"] = {"layers": r.layers, "alpha": r.alpha.tolist(),
                       "injection_ratio": r.injection_ratio.mean(0).tolist(),  # [L, T]
                       "entropy": r.entropy().mean(axis=(0, 2)).tolist(),  # [L, T]
                       "retrieval_first_scene": r.weights[0].mean(1).tolist(),  # [L, T, N]
                       "queried_cell_by_quarter": _nan_to_none(np.nanmean(queried_cell_share(r.weights, tokens), 0).T)}
    return data


def _training_log(directory: Path, name: str) -> list[dict]:
    path = directory / name
    return json.loads(path.read_text()) if path.is_file() else []


def collect(base=None, adapters=(), scenes: int = 64, probe_scenes: int = 8) -> dict:
    base_dir = Path(base) if base else BASELINE_DIR
    models = {}
    model, processor = load_base(base_dir)
    models["baseline"] = {"paint": _paint(model, processor, None, scenes), "probes": probe_model(model, processor, None, probe_scenes),
                          "train_log": _training_log(base_dir, "log_history.json")}
    for adapter in adapters:
        directory = resolve_adapter(adapter)
        with load_pvm(model, directory) as handle:  # hooks removed on exit, also on error
            entry = {"paint": _paint(model, processor, handle, scenes),
                     "probes": probe_model(model, processor, handle, probe_scenes),
                     "meta": read_adapter_meta(directory), "train_log": _training_log(directory, "train_log.json")}
            if entry["meta"]["pvm"]["block"] == "pvm":
                entry["paint_gates_off"] = _paint(model, processor, handle, scenes, gates_off=True)
                entry["paint_swapped"] = _paint(model, processor, handle, scenes, swap_pvm_image=True)
        models[str(adapter)] = entry
    return {"base": str(base_dir), "setting": {"length": DEFAULT_LONG, "filler": DEFAULT_FILLER, "scenes": scenes,
                                               "probe_scenes": probe_scenes,
                                               "attention_window": attention_window(model)}, "models": models}
