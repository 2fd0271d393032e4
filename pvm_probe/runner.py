"""The runner: every variant of a model over a suite's requests, with the probes riding along -> records.

    suite (requests, scoring) -> runner (generate with probes and interventions) -> records -> metrics -> report

For each variant the runner generates greedy answers in batches (left padding, the model's own stop tokens),
under the probes when asked: the visual attention mass of every layer at every generated position, the
LogitLens, and PVM's gates and retrieval. It scores each answer with the suite and appends one record per
request to `records.jsonl` as it goes (`records.py`): a rerun after an interruption skips what is done. Under
`accelerate launch` (CPUs or GPUs, one machine or several; `processes.py`) process k of n takes requests
k, k + n, k + 2n, ... into its own shard, and process 0 merges the shards once every process is done.

Probe arrays in a record cover the answer's own tokens (row t produced token t); the padding steps
`generate` runs after a row has stopped are left out. The first `explore` requests also keep, for the
token explorer, each token's attention on every image patch (a few layers) and PVM's retrieval weights.
"""

from __future__ import annotations

import base64
import io
import itertools
import math
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .backbones import attention_window, decoder_layers, stop_token_ids, visual_token_ids
from .errors import InputError
from .probes import LogitLens, PVMRetrieval, VisualAttentionMass
from .probes._base import SEGMENTS
from .processes import process_state
from .records import RecordStore, rounded
from .suites.base import Answer, Request, Suite
from .variants import Variant, applied


@dataclass
class RunConfig:
    batch_size: int = 8
    max_new_tokens: int | None = None  # a cap on the suite's own budget
    probes: bool = True  # attention mass, LogitLens, PVM retrieval
    explore: int = 2  # the first requests (by index) whose per-patch attention the token explorer shows
    explore_layers: int = 6  # decoder layers kept for them, spread through depth
    progress: bool = True

    def __post_init__(self):
        for name in ("batch_size", "explore_layers"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise InputError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")


def run(model, processor, suite: Suite, variants: list[Variant], directory, config: RunConfig | None = None,
        base: str = "", lens=None) -> list[dict]:
    """Fill `directory` with the records of every variant x request (resuming what is there); returns them.
    `lens`: a tuned lens of the base, read beside the LogitLens when the probes run."""
    config = config or RunConfig()
    state = process_state(model.device)
    _check_variants(suite, variants)
    store = RecordStore(directory, describe(suite, variants, config, model, base, lens), state.process_index,
                        state.num_processes)
    if state.is_main_process:
        store.write_run()
    mine = range(state.process_index, len(suite), state.num_processes)
    for variant in variants:
        left = len(mine) - store.count(variant.name, mine)
        if left:
            todo = (i for i in mine if not store.done(variant.name, i))  # lazily: memory does not grow with it
            with applied(variant, model) as handle:
                _run_variant(model, processor, suite, variant, handle, todo, left, store, config,
                             state.is_main_process, lens)
    state.wait_for_everyone()
    names = [v.name for v in variants]
    records = store.merge(names) if state.is_main_process else []
    state.wait_for_everyone()
    if state.is_main_process:
        _check_complete(records, names, len(suite), state.num_processes)
    return records


def _check_complete(records: list[dict], names: list[str], requests: int, processes: int) -> None:
    """Every process has finished: a record missing now was written where process 0 cannot read it."""
    missing = len(names) * requests - sum(1 for r in records if r["variant"] in names)
    if missing:
        raise InputError(f"{missing} records are missing after all {processes} processes finished: under several "
                         "machines the output folder must be on a file system that every machine shares")


def describe(suite: Suite, variants: list[Variant], config: RunConfig, model, base: str, lens=None) -> dict:
    """What `run.json` records; a resumed run must match it (records.py)."""
    generation = {"max_new_tokens": config.max_new_tokens, "dtype": str(model.dtype).removeprefix("torch."),
                  "probes": config.probes, "explore": config.explore, "greedy": True,
                  "attention_window": attention_window(model),
                  "tuned_lens": None if lens is None else lens.config.training}
    return {"base": base, "architecture": type(model).__name__, "suite": suite.settings(),
            "generation": generation, "variants": {v.name: v.to_dict() for v in variants},
            "layers": len(decoder_layers(model))}


def _check_variants(suite: Suite, variants: list[Variant]) -> None:
    if any(v.control == "swapped_image" for v in variants) and len(suite) < 2:
        raise InputError("the swapped-image control gives each request another request's image: it needs at "
                         "least 2 requests")


def _run_variant(model, processor, suite, variant, handle, todo, left, store, config, show, lens) -> None:
    batches = iter(lambda: list(itertools.islice(todo, config.batch_size)), [])
    total = math.ceil(left / config.batch_size)
    for indices in tqdm(batches, total=total, desc=f"{suite.name}: {variant.name}",
                        disable=not (config.progress and show)):
        requests = [suite.request(i) for i in indices]
        for record in run_batch(model, processor, suite, variant, handle, requests, config, lens):
            store.append(record)


def chat_inputs(processor, requests: list[Request], device) -> dict:
    """Left-padded chat-template inputs, one row per request; non-finite pixels are refused."""
    processor.tokenizer.padding_side = "left"
    inputs = processor.apply_chat_template(
        [r.messages() for r in requests], add_generation_prompt=True, tokenize=True, return_dict=True,
        return_tensors="pt", processor_kwargs={"padding": True})
    pixels = inputs.get("pixel_values")
    if pixels is not None and not torch.isfinite(pixels).all():
        raise InputError(f"non-finite pixel values in request(s) {', '.join(r.id for r in requests)}")
    return dict(inputs.to(device))


def forced_inputs(processor, requests: list[Request], answers: list[list[int]], device) -> dict:
    """Teacher forcing: each request's chat inputs with a given answer (token ids) appended, right-padded to
    the longest (padding masked). Position P - 1 + t of the logits predicts answer token t (P = prompt width)."""
    inputs = chat_inputs(processor, requests, device)
    width = max(map(len, answers))
    pad = processor.tokenizer.pad_token_id or 0
    ids = torch.tensor([a + [pad] * (width - len(a)) for a in answers], device=device)  # [B, A]
    mask = torch.tensor([[1] * len(a) + [0] * (width - len(a)) for a in answers], device=device)  # [B, A]
    out = {**inputs, "input_ids": torch.cat([inputs["input_ids"], ids], 1),
           "attention_mask": torch.cat([inputs["attention_mask"], mask], 1)}
    if "mm_token_type_ids" in inputs:
        out["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(ids)], 1)
    return out


@torch.no_grad()
def run_batch(model, processor, suite, variant, handle, requests: list[Request], config: RunConfig,
              lens=None) -> list[dict]:
    """Generate, probe and score one batch; one record per request."""
    inputs = chat_inputs(processor, requests, model.device)
    budget = max(suite.max_new_tokens(r) for r in requests)
    budget = min(budget, config.max_new_tokens or budget)
    explore = [b for b, r in enumerate(requests) if r.index < config.explore] if config.probes else []
    with ExitStack() as stack:
        if variant.control == "swapped_image":
            stack.enter_context(_swapped(handle, processor, suite, requests, model.device))
        probes = _enter_probes(stack, model, handle, explore, config, lens)
        sequences = model.generate(**inputs, max_new_tokens=budget, do_sample=False)  # [B, P + N]
    new = sequences[:, inputs["input_ids"].shape[1]:].cpu()  # [B, N]
    lengths, stopped = answer_lengths(new, stop_token_ids(model))
    cells = visual_cells(model, inputs, requests) if probes else None
    records = []
    for b, request in enumerate(requests):
        answer = Answer.decode(processor.tokenizer, new[b, :lengths[b]].tolist())
        claims = suite.score(request, answer)
        record = {"variant": variant.name, "request": request.index, "id": request.id, "meta": request.meta,
                  "prompt": request.prompt, "answer": answer.text, "token_ids": answer.token_ids, "pieces": answer.pieces,
                  "n_tokens": lengths[b], "stopped": stopped[b], "claims": [c.to_dict() for c in claims]}
        if probes:
            _add_probes(record, probes, b, lengths[b], cells[b], request, explore, variant)
        records.append(record)
    return records


def answer_lengths(new_tokens: torch.Tensor, stop_ids: list[int]) -> tuple[list[int], list[bool]]:
    """new_tokens [B, N] -> tokens before each row's first stop token (N if none), and whether it stopped."""
    stops = torch.isin(new_tokens, torch.tensor(stop_ids or [-1]))  # [B, N]
    first = torch.where(stops.any(1), stops.int().argmax(1), new_tokens.shape[1])  # [B]
    return first.tolist(), stops.any(1).tolist()


def _swapped(handle, processor, suite, requests, device):
    """PVM reads request i + 1's image (cyclically over the suite) while the backbone sees request i's."""
    partners = [suite.request((r.index + 1) % len(suite)) for r in requests]
    tokens, key_mask = handle.encode_visual(**chat_inputs(processor, partners, device))
    return handle.swapped_visual(tokens, key_mask)


def _explore_layers(model, count: int) -> list[int]:
    n = len(decoder_layers(model))
    return sorted({round(i * (n - 1) / max(count - 1, 1)) for i in range(min(count, n))})


def _enter_probes(stack: ExitStack, model, handle, explore: list[int], config: RunConfig, lens) -> dict | None:
    if not config.probes:
        return None
    probes = {"mass": VisualAttentionMass(model, patch_rows=explore, patch_layers=_explore_layers(
        model, config.explore_layers) if explore else ()), "lens": LogitLens(model)}
    if lens is not None:
        probes["tuned_lens"] = LogitLens(model, lens=lens)
    if handle is not None and handle.config.block == "pvm":
        probes["pvm"] = PVMRetrieval(handle)
    for probe in probes.values():
        stack.enter_context(probe)
    return probes


def _add_probes(record: dict, probes: dict, b: int, n: int, cells: np.ndarray, request, explore, variant) -> None:
    """The row's probe arrays (its n answer tokens) into the record, and per claim the values at its token.
    With a swapped image PVM's weights are over the partner's image, so the explorer leaves them out."""
    mass, lens = probes["mass"].result, probes["lens"].result
    image = mass.shares[b, :, :, :n, SEGMENTS.index("image")].mean(1)  # [L, n] mean over heads
    split = mass.shares[b, :, :, :n].mean(1)  # [L, n, 4]
    record["mass"] = {"layers": mass.layers, "image": rounded(image),
                      "split": {s: rounded(split[..., j].mean(1) if n else np.full(len(mass.layers), np.nan))
                                for j, s in enumerate(SEGMENTS)}}
    record["lens"] = _lens_summary(lens, b, n)
    if "tuned_lens" in probes:
        record["tuned_lens"] = _lens_summary(probes["tuned_lens"].result, b, n)
    pvm = probes["pvm"].result if "pvm" in probes else None
    if pvm is not None:
        record["pvm"] = {"layers": pvm.layers, "alpha": rounded(pvm.alpha, 6),
                         "injection_ratio": rounded(pvm.injection_ratio[b, :, :n]),
                         "entropy": rounded(pvm.entropy[b, :, :n], 4)}
    for claim in record["claims"]:
        t = claim["token"]
        at_token = t is not None and t < n
        claim["mass"] = rounded(image[:, t]) if at_token else None
        inside = _inside(cells, claim["boxes"]) if claim["boxes"] else None  # [N] tokens in the claimed region
        claim["box_share"] = round(float(inside.mean()), 5) if inside is not None and len(inside) else None
        claim["pvm_on_boxes"] = (rounded(pvm.weights[b, :, t, : len(inside)][:, inside].sum(1))
                                 if pvm is not None and inside is not None and at_token else None)
    if b in explore:
        own_pvm = None if variant.control == "swapped_image" else pvm
        record["explore"] = _explore_record(mass, own_pvm, explore.index(b), b, n, cells, request)


def _lens_summary(lens, b: int, n: int) -> dict:
    kl = lens.kl[b, :, :n]  # [L, n]
    quarters = np.array_split(np.arange(n), 4)
    return {"layers": lens.layers, "kl": rounded(kl.mean(1) if n else np.full(len(lens.layers), np.nan), 4),
            "kl_by_quarter": rounded(np.stack([kl[:, q].mean(1) if len(q) else np.full(len(kl), np.nan)
                                               for q in quarters], 1), 4),
            "convergence": [int(v) for v in lens.convergence_layer()[b, :n]]}


def _inside(cells: np.ndarray, boxes: list) -> np.ndarray:
    """[N] True where a visual token's cell centre (of image 0) lies in one of the boxes."""
    cx, cy = (cells[:, 1] + cells[:, 3]) / 2, (cells[:, 2] + cells[:, 4]) / 2  # [N]
    hit = np.zeros(len(cells), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        hit |= (cells[:, 0] == 0) & (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
    return hit


def _explore_record(mass, pvm, r: int, b: int, n: int, cells: np.ndarray, request) -> dict:
    """Per-patch attention of one request for the token explorer (image 0's tokens only)."""
    own = cells[:, 0] == 0  # [N]
    out = {"image": _thumbnail(request.images[0]), "cells": rounded(cells[own, 1:], 4),
           "layers": mass.patch_layers,
           "attention": [rounded(layer[:n, : len(own)][:, own], 4) for layer in mass.patches[r]]}
    if pvm is not None:
        out["pvm_layers"] = pvm.layers
        out["pvm"] = [rounded(pvm.weights[b, i, :n, : len(own)][:, own], 4) for i in range(len(pvm.layers))]
    return out


def _thumbnail(image, side: int = 256) -> str:
    image = image.copy()
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def visual_cells(model, inputs: dict, requests: list[Request]) -> list[np.ndarray]:
    """Per request, each visual token's place in its image: [N, 5] (image, x0, y0, x1, y1 as fractions).

    Qwen-VL emits each image's merged patches row-major over (h / merge, w / merge) per frame; LLaVA a square
    grid. A token that fits no grid (e.g. a class token) gets image -1."""
    ids = inputs["input_ids"].cpu()
    visual = torch.isin(ids, torch.tensor(visual_token_ids(model)))  # [B, P]
    grids = _grids(model, inputs, requests, visual)
    return [_cells(grid, int(row.sum())) for grid, row in zip(grids, visual, strict=True)]


def _grids(model, inputs, requests, visual) -> list[list[tuple[int, int]]]:
    """Per request, (rows, cols) of each of its images' token grids."""
    thw = inputs.get("image_grid_thw")
    if thw is not None:  # Qwen: one (t, h, w) row per image, in batch order
        merge = model.config.vision_config.spatial_merge_size
        shapes = [(int(h) // merge, int(w) // merge) for t, h, w in thw.tolist() for _ in range(int(t))]
        out, start = [], 0
        for r in requests:
            out.append(shapes[start:start + len(r.images)])
            start += len(r.images)
        return out
    side = [math.isqrt(int(row.sum()) // max(len(r.images), 1)) for r, row in zip(requests, visual, strict=True)]
    return [[(s, s)] * len(r.images) for s, r in zip(side, requests, strict=True)]


def _cells(grid: list[tuple[int, int]], count: int) -> np.ndarray:
    cells = [(image, c / w, r / h, (c + 1) / w, (r + 1) / h)
             for image, (h, w) in enumerate(grid) for r in range(h) for c in range(w)]
    cells += [(-1, 0, 0, 0, 0)] * max(0, count - len(cells))
    return np.array(cells[:count], dtype=float).reshape(-1, 5)

