"""Stage II, Policy Refinement: GRPO with TRL's `GRPOTrainer` on the hooked VLM.

Group of 8 sampled answers per prompt, rewards format 0.1 + accuracy 0.9 (the paper's), lr 1e-6 at
paper scale. PVM-only by default; `train_backbone=True` also trains the language model while the
vision tower stays frozen (what the official release does). TRL drives generation and log-prob
passes through the model's own forward, so the PVM hooks ride along unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from ..inject import PVMHandle
from .sft import AdapterSaving, run_and_save, scratch_dir, set_trainable


@dataclass
class StageIIConfig:
    steps: int = 50
    num_generations: int = 8  # the group size
    prompts_per_step: int = 2  # prompts in one optimisation step (x num_generations completions)
    max_completion_length: int = 256
    lr: float = 1e-6
    temperature: float = 1.0
    beta: float = 0.0  # KL to a reference policy; 0 needs no reference model
    seed: int = 0
    logging_steps: int = 5
    train_backbone: bool = False


class AdapterGRPOTrainer(AdapterSaving, GRPOTrainer):
    """TRL's GRPOTrainer for Stage II."""


def grpo_arguments(cfg: StageIIConfig) -> GRPOConfig:
    batch = cfg.prompts_per_step * cfg.num_generations
    return GRPOConfig(
        output_dir=scratch_dir(), max_steps=cfg.steps, learning_rate=cfg.lr, seed=cfg.seed,
        per_device_train_batch_size=batch, num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, beta=cfg.beta,
        logging_steps=cfg.logging_steps, save_strategy="no", report_to=[], lr_scheduler_type="constant",
        use_cpu=not torch.cuda.is_available(), disable_tqdm=False, reward_weights=None,
        scale_rewards="group", loss_type="grpo", dataloader_num_workers=0,
    )


def train_stage2(model, handle: PVMHandle, processor, rows: list[dict], reward_funcs, out_dir,
                 cfg: StageIIConfig, provenance: dict | None = None) -> list[dict]:
    """GRPO on `rows` (conversational prompt + image + reward fields); saves adapter + log."""
    out_dir = Path(out_dir)
    trainable = set_trainable(model, handle, cfg.train_backbone)
    provenance = {"stage": "II", "trainer": "trl.GRPOTrainer", "config": asdict(cfg),
                  "trainable_parameters": trainable, **(provenance or {})}
    trainer = AdapterGRPOTrainer(model=model, reward_funcs=reward_funcs, args=grpo_arguments(cfg),
                                 train_dataset=Dataset.from_list(rows), processing_class=processor,
                                 handle=handle, provenance=provenance)
    return run_and_save(trainer, out_dir)
