"""`pvm-probe train-pvm`: load a base, attach (or load) an adapter, run Stage I or Stage II.

Runs the same under `accelerate launch` (the Trainers handle the processes)."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import set_seed

from ..backbones import decoder_layers, text_config
from ..checkpoints import load_pvm
from ..config import PVMConfig
from ..inject import attach_pvm
from ..loading import BASELINE_DIR, load_base
from ..placement import place, profile_of
from .data import RecordDataset, SFTCollator, load_records
from .grpo import StageIIConfig, train_stage2
from .sft import StageIConfig, train_stage1
from .world_data import ClaimsCollator, WorldSFTDataset, format_and_accuracy_rewards, world_prompts

TRAIN_INFO = "train_info.json"


def world_distribution(base_dir: Path, max_gap: int | None = None, fillers: str | None = None) -> dict:
    """The painter-world answers the base was trained on (gaps, fillers, passes), or the same with
    longer text-only stretches (0..max_gap filler tokens per step) or other filler kinds."""
    path = base_dir / TRAIN_INFO
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: for a base not trained on the painter world, pass --data")
    info = json.loads(path.read_text())
    gaps = tuple(info["train_gaps"]) if max_gap is None else tuple(range(max_gap + 1))
    kinds = tuple(info["fillers"]) if fillers is None else tuple(fillers.split(","))
    return {"gaps": gaps, "fillers": kinds, "passes": tuple(info["passes"])}


def pvm_config(args, model, processor) -> PVMConfig:
    overrides = {"block": args.block, "visual_source": args.visual_source}
    if args.alpha_init is not None:
        overrides["alpha_init"] = args.alpha_init
    if args.layers and args.placement:
        raise ValueError("give --layers or --placement, not both")
    if args.layers:
        overrides["layers"] = args.layers
    if args.placement:  # the paper's strategies, from this base's own measured attention profile
        suite = "scenes" if args.data else "world"
        overrides["layers"] = place(args.placement, profile_of(model, processor, suite), args.blocks)
    if args.preset:
        return PVMConfig.preset(args.preset, **overrides)
    return PVMConfig.for_model(text_config(model).hidden_size, len(decoder_layers(model)), n_blocks=args.blocks,
                               **overrides)


def _stage1_data(args, processor, base_dir):
    """(dataset, collator): a data file with loss on the whole answer, or the painter world with loss on
    its grounded claims (default) or on the whole answer (`--loss-on answer`)."""
    if args.data:
        if args.loss_on == "claims":
            raise ValueError("--loss-on claims needs the painter world's claim format: drop --data or use --loss-on answer")
        return RecordDataset(load_records(args.data)), SFTCollator(processor)
    n = args.examples or args.steps * args.batch_size * args.grad_accum
    dataset = WorldSFTDataset(processor, n, seed=args.seed + 1, **world_distribution(base_dir, args.max_gap, args.fillers))
    return dataset, (SFTCollator if args.loss_on == "answer" else ClaimsCollator)(processor)


def _stage1(args, model, processor, handle, base_dir, provenance):
    dataset, collator = _stage1_data(args, processor, base_dir)
    cfg = StageIConfig(steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
                       lr=args.lr or 1e-4, warmup_steps=args.warmup, seed=args.seed,
                       logging_steps=args.log_every, train_backbone=args.train_backbone,
                       backbone_visual_dropout=args.backbone_visual_dropout)
    return train_stage1(model, handle, dataset, collator, args.out, cfg, provenance)


def _stage2(args, model, processor, handle, base_dir, provenance):
    if args.data:
        raise ValueError("Stage II needs verifiable rewards: only the painter world is supported (drop --data)")
    dist = world_distribution(base_dir, args.max_gap, args.fillers)
    cfg = StageIIConfig(steps=args.steps, num_generations=args.num_generations,
                        prompts_per_step=max(1, args.batch_size // args.num_generations),
                        lr=args.lr or 1e-6, seed=args.seed, logging_steps=args.log_every,
                        train_backbone=args.train_backbone)
    longest = max(dist["gaps"])  # filler tokens per step
    cfg.max_completion_length = 16 * max(dist["passes"]) * (4 + longest) + 8
    rows = world_prompts(args.examples or args.steps * cfg.prompts_per_step, seed=args.seed, **dist)
    return train_stage2(model, handle, processor, rows, format_and_accuracy_rewards(), args.out, cfg, provenance)


def train_pvm_command(args) -> list[dict]:
    base_dir = Path(args.base) if args.base else BASELINE_DIR
    model, processor = load_base(base_dir)
    set_seed(args.seed)  # the adapter's random init is part of the run: same seed, same adapter
    if args.stage == 2 and args.init:
        handle = load_pvm(model, args.init)
    else:
        handle = attach_pvm(model, pvm_config(args, model, processor))
    provenance = {"base": str(base_dir), "data": args.data or "painter world",
                  "command": "pvm-probe " + " ".join(args.argv), "init": args.init}
    stage = _stage1 if args.stage == 1 else _stage2
    return stage(args, model, processor, handle, base_dir, provenance)
