"""`train-pvm` as a library call: `train(job)` -> TrainResult.

    1. `plan.make_plan(job)`: every check that needs no weights (one-line InputErrors);
    2. load the base (`loading.load_base`; --max-pixels applied to its processor before the weights load);
    3. attach a new adapter (seeded: same seed, same adapter; --placement peak/decay measured on the base now)
       or load the --init one;
    4. Stage I (`sft.train_stage1`) or Stage II (`grpo.train_stage2`);
    5. write the adapter folder whole or not at all (`io.atomic_dir`): pvm_config.json, whose provenance holds
       the job (`TrainJob.to_dict()`), the data, the starting and final alphas and the final losses / rewards;
       pvm_model.safetensors; train_log.json (the Trainer's log history). Only the main process writes.

Runs the same under `accelerate launch` (the Trainers handle the processes).
"""

from __future__ import annotations

import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..inject import PVMHandle, attach_pvm, load_pvm
from ..io import atomic_dir, atomic_write_json
from ..loading import load_base
from ..placement import measure_mass, place
from ..suites import ScenesSuite, WorldSuite
from .collate import SFTCollator, limit_pixels
from .config import TrainJob
from .grpo import train_stage2
from .plan import Plan, eval_split_sizes, make_plan, pvm_config
from .prompts import data_prompts, scenes_prompts, world_prompts
from .sft import train_stage1
from .world_data import ClaimsCollator, WorldSFTDataset, completion_budget

LOG_FILE = "train_log.json"


@dataclass
class TrainResult:
    out: Path
    stage: str  # "I" or "II"
    alphas_before: dict[int, float]
    alphas: dict[int, float]
    log: list[dict]
    provenance: dict
    notes: list[str] = field(default_factory=list)


def warn(message: str) -> None:
    """One line on stderr (from the main process only)."""
    if _main_process():
        print(f"warning: {message}", file=sys.stderr)


def train(job: TrainJob, notify=warn) -> TrainResult:
    """Run `job`; `notify(message)` receives the one-line warnings (clipped warm-up, ignored --max-pixels, ...)."""
    plan = make_plan(job)
    for note in plan.notes:
        notify(note)
    job = plan.job
    model, processor = load_base(plan.base_dir, device=job.device or _local_device(), dtype=job.dtype,
                                 attn_implementation=job.attn,
                                 check_processor=lambda p: _limit_pixels(plan, p, notify))
    handle = _attach(plan, model, processor)
    before = handle.alphas()
    start = time.time()
    if job.stage == 1:
        log, details = _stage1(plan, model, processor, handle, notify)
    else:
        log, details = _stage2(plan, model, processor, handle)
    details["train_seconds"] = round(time.time() - start, 1)
    provenance = make_provenance(plan, handle, log, before, details)
    if _main_process():
        save_run(job.out, handle, provenance, log)
    return TrainResult(Path(job.out), job.optim.stage, before, handle.alphas(), log, provenance, plan.notes)


def _limit_pixels(plan: Plan, processor, notify) -> None:
    if plan.job.data.max_pixels is not None:
        note = limit_pixels(processor, plan.job.data.max_pixels)
        if note:
            plan.notes.append(note)
            notify(note)


def _attach(plan: Plan, model, processor) -> PVMHandle:
    spec = plan.job.adapter
    if spec.init:
        handle = load_pvm(model, spec.init)
        handle.provenance = {}
        return handle
    if plan.pvm is None:  # peak / decay: from this base's measured visual-attention profile
        layers = _measured_layers(spec.placement, spec.blocks, model, processor, plan.source)
        plan.pvm = pvm_config(spec, plan.text_config, layers)
    from transformers import set_seed

    set_seed(plan.job.optim.seed)  # the adapter's random init is part of the run: same seed, same adapter
    return attach_pvm(model, plan.pvm)


def _measured_layers(strategy: str, blocks: int, model, processor, source: str) -> tuple[int, ...]:
    suite = WorldSuite(scenes=8) if source == "world" else ScenesSuite(scenes=8, max_new_tokens=256)
    return place(strategy, measure_mass(model, processor, suite), blocks)


# ---- the stages ---------------------------------------------------------------------------------------
def _stage1(plan: Plan, model, processor, handle, notify) -> tuple[list[dict], dict]:
    job, cfg = plan.job, plan.job.optim
    if plan.source == "data":
        dataset = plan.data
    else:
        dataset = WorldSFTDataset(processor, plan.examples, seed=cfg.seed + 1, **plan.distribution)
    train_set, eval_set = split(dataset, job.data.eval_split, cfg.seed)
    loss_on = job.data.loss_on or ("claims" if plan.source == "world" else "answer")
    collator = (ClaimsCollator if loss_on == "claims" else SFTCollator)(processor, job.data.max_length, notify)
    text_only = plan.data.kinds["text_only"] if plan.data is not None else 0
    log = train_stage1(model, handle, train_set, collator, cfg, eval_set, find_unused=text_only > 0)
    return log, {"loss_on": loss_on, "train_examples": len(train_set), "eval_examples": len(eval_set or ()),
                 "prompt_only_records": collator.prompt_only}


def split(dataset, fraction: float, seed: int):
    """(train, eval or None): a seeded random share `fraction` of the examples held out."""
    n_train, n_eval = eval_split_sizes(len(dataset), fraction)
    if not n_eval:
        return dataset, None
    order = list(range(len(dataset)))
    random.Random(f"pvm-eval-split-{seed}").shuffle(order)
    subset = torch.utils.data.Subset
    return subset(dataset, sorted(order[:n_train])), subset(dataset, sorted(order[n_train:]))


def _stage2(plan: Plan, model, processor, handle) -> tuple[list[dict], dict]:
    job, cfg = plan.job, plan.job.optim
    n = job.data.examples or cfg.steps * cfg.batch_size * plan.processes // cfg.num_generations
    if plan.source == "data":
        prompts = data_prompts(plan.data)
    elif plan.source == "scenes":
        prompts = scenes_prompts(n, cfg.seed, job.data.image_size or 448)
    else:
        prompts = world_prompts(n, cfg.seed, **plan.distribution)
    budget = cfg.max_completion_length or (completion_budget(plan.distribution) if plan.source == "world" else 1024)
    log = train_stage2(model, handle, processor, prompts, plan.rewards, cfg, budget)
    return log, {"prompts": len(prompts), "max_completion_length": budget}


# ---- the record ---------------------------------------------------------------------------------------
def make_provenance(plan: Plan, handle: PVMHandle, log: list[dict], before: dict, details: dict) -> dict:
    job = plan.job
    data = {"source": plan.source, "path": str(Path(job.data.path).resolve()) if job.data.path else None,
            **(plan.data.kinds if plan.data is not None else {}), **(plan.distribution or {})}
    init = None
    if job.adapter.init:
        init = {"adapter": job.adapter.init, "provenance": plan.init_meta["provenance"]}
    return {
        "stage": job.optim.stage, "trainer": "transformers.Trainer" if job.stage == 1 else "trl.GRPOTrainer",
        "job": job.to_dict(), "base": str(plan.base_dir), "data": data, "init": init,
        "trainable_parameters": sum(p.numel() for p in handle.model.parameters() if p.requires_grad),
        "processes": plan.processes, **details, "warnings": list(plan.notes),
        "result": {"alphas_initial": _by_layer(before), "alphas": _by_layer(handle.alphas()), **final_values(log)},
    }


def _by_layer(alphas: dict[int, float]) -> dict[str, float]:
    return {str(layer): value for layer, value in alphas.items()}


def final_values(log: list[dict]) -> dict:
    """The last logged loss, eval loss and weighted reward (with their steps), and the first reward."""
    out = {}
    for key, name in (("loss", "final_loss"), ("eval_loss", "final_eval_loss"), ("reward", "final_reward")):
        entries = [e for e in log if key in e]
        if entries:
            out[name], out[name + "_step"] = entries[-1][key], entries[-1].get("step")
    rewards = [e["reward"] for e in log if "reward" in e]
    if rewards:
        out["first_reward"] = rewards[0]
    return out


def save_run(out, handle: PVMHandle, provenance: dict, log: list[dict]) -> Path:
    """The adapter folder, whole or not at all: the adapter files and train_log.json."""
    with atomic_dir(out) as tmp:
        handle.provenance = {}
        handle.save(tmp, provenance)
        atomic_write_json(tmp / LOG_FILE, log)
    handle.provenance = provenance
    return Path(out)


def _local_device() -> str | None:
    """Under `accelerate launch` on GPUs: this process's own GPU (LOCAL_RANK), not cuda:0 for every process."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return None


def _main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0
