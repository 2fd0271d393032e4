"""The runner: every variant of a model over a suite's requests, with the probes riding along -> records.

    suite (requests, scoring) -> runner (generate with probes and remedies) -> records -> metrics -> report

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

import itertools
import math
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .backbones import attention_window, decoder_layers, stop_token_ids, visual_token_ids
from .errors import InputError
from .probes.protocol import Batch, Probe, Row
from .processes import process_state
from .records import RecordStore
from .registry import PROBES
from .remedies.base import replay
from .suites.base import Answer, Request, Suite
from .suites.inputs import chat_inputs
from .variants import Applied, Variant, applied


@dataclass
class RunConfig:
    """How the runner generates: batch size, a cap on the answer budget, the probes, the token explorer."""

    batch_size: int = 8
    max_new_tokens: int | None = None  # a cap on the suite's own budget
    probes: bool | list = True  # True: every registered probe (registry.PROBES) that applies; or a list of names
    explore: int = 2  # the first requests (by index) whose per-patch attention the token explorer shows
    explore_layers: int = 6  # decoder layers kept for them, spread through depth
    progress: bool = True

    def __post_init__(self):
        for name in ("batch_size", "explore_layers"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise InputError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        unknown = [n for n in self.probes if n not in PROBES] if isinstance(self.probes, list) else []
        if unknown:
            raise InputError(f"unknown probe {unknown[0]!r}; known: {', '.join(PROBES.names())}")

    def probe_names(self) -> list[str]:
        """The enabled probes, in registry order."""
        if not self.probes:
            return []
        return [n for n in PROBES.names() if self.probes is True or n in self.probes]


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
            with applied(variant, model) as on:
                _run_variant(model, processor, suite, variant, on, todo, left, store, config,
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
                  "probes": config.probe_names(), "explore": config.explore, "greedy": True,
                  "attention_window": attention_window(model),
                  "tuned_lens": None if lens is None else lens.config.training}
    return {"base": base, "architecture": type(model).__name__, "suite": suite.settings(),
            "generation": generation, "variants": {v.name: v.to_dict() for v in variants},
            "layers": len(decoder_layers(model))}


def _check_variants(suite: Suite, variants: list[Variant]) -> None:
    if any(v.control == "swapped_image" for v in variants) and len(suite) < 2:
        raise InputError("the swapped-image control gives each request another request's image: it needs at "
                         "least 2 requests")


def _run_variant(model, processor, suite, variant, on, todo, left, store, config, show, lens) -> None:
    batches = iter(lambda: list(itertools.islice(todo, config.batch_size)), [])
    total = math.ceil(left / config.batch_size)
    for indices in tqdm(batches, total=total, desc=f"{suite.name}: {variant.name}",
                        disable=not (config.progress and show)):
        requests = [suite.request(i) for i in indices]
        for record in run_batch(model, processor, suite, variant, on, requests, config, lens):
            store.append(record)


@torch.no_grad()
def run_batch(model, processor, suite, variant, on: Applied, requests: list[Request], config: RunConfig,
              lens=None) -> list[dict]:
    """Generate, probe and score one batch; one record per request. A remedy with a decoding of its own
    decodes first; its answer is then replayed token by token under the probes, so they read its own rows."""
    inputs = chat_inputs(processor, requests, model.device)
    budget = max(suite.max_new_tokens(r) for r in requests)
    budget = min(budget, config.max_new_tokens or budget)
    explore = [b for b, r in enumerate(requests) if r.index < config.explore]
    handle = on.handle
    decoded = on.remedy.decode(inputs, budget) if on.remedy is not None else None  # [B, P + N] or None
    with ExitStack() as stack:
        if variant.control == "swapped_image":
            stack.enter_context(_swapped(handle, processor, suite, requests, model.device))
        probes = _enter_probes(stack, model, handle, explore, config, lens,
                               variant.control == "swapped_image") if config.probes else []
        if decoded is None:
            sequences = model.generate(**inputs, max_new_tokens=budget, do_sample=False)  # [B, P + N]
        else:
            sequences = replay(model, inputs, decoded)  # [B, P + N]
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
        for probe in probes:
            section = probe.record(Row(b, lengths[b], record, cells[b], request))
            if section is not None:
                record[probe.name] = section
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


def _enter_probes(stack: ExitStack, model, handle, explore: list[int], config: RunConfig, lens,
                  swapped: bool) -> list[Probe]:
    """The enabled probes that apply to this batch, attached (in registry order: later ones may read earlier
    sections of a record)."""
    batch = Batch(model, handle, lens, explore, _explore_layers(model, config.explore_layers) if explore else [],
                  swapped)
    probes = [cls(batch) for cls in map(PROBES.get, config.probe_names()) if cls.applies(batch)]
    for probe in probes:
        stack.enter_context(probe)
    return probes


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

