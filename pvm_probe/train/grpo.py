"""Stage II, Policy Refinement: GRPO with TRL's `GRPOTrainer` on the hooked VLM, with verifiable rewards.

A group of `num_generations` sampled answers per prompt; each completion's reward is the weighted sum of the
run's rewards (`pvm_probe.train.rewards`), normalised within its group (a group may span processes: TRL
gathers the rewards). PVM-only by default; `train_backbone` also trains the language model while the vision
tower stays frozen (what the official release does). Generation and the log-prob passes go through the
model's own forward, so the PVM hooks ride along. Completions are sampled from per-completion random
streams (`sampling.py`), so the same seed gives the same completions, rewards and losses on 1 or N processes.
"""

from __future__ import annotations

import tempfile
import warnings

import torch
from trl import GRPOConfig, GRPOTrainer

from ..inject import PVMHandle
from .config import StageIIConfig
from .rewards import Reward
from .sampling import seeded_generation, stream_key
from .sft import LogLastStep, leave_training, set_trainable


class SeededGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer whose completions come from per-completion random streams: stream (seed, round,
    global index), where the global index of local row r on process p is p x (local rows) + r, the order
    in which TRL's sampler lays the global batch out over the processes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._generation_round = 0

    def _generate_single_turn(self, prompt_ids, *args, **kwargs):
        first = self.accelerator.process_index * len(prompt_ids)
        keys = [stream_key(self.args.seed, self._generation_round, first + r) for r in range(len(prompt_ids))]
        self._generation_round += 1
        with seeded_generation(self.accelerator.unwrap_model(self.model), keys, self.temperature):
            return super()._generate_single_turn(prompt_ids, *args, **kwargs)


def grpo_arguments(cfg: StageIIConfig, scratch: str, weights: list[float], max_completion_length: int) -> GRPOConfig:
    return GRPOConfig(
        output_dir=scratch, max_steps=cfg.steps, learning_rate=cfg.lr, warmup_steps=cfg.warmup_steps,
        lr_scheduler_type="constant_with_warmup", seed=cfg.seed, data_seed=cfg.seed,
        per_device_train_batch_size=cfg.batch_size, num_generations=cfg.num_generations,
        max_completion_length=max_completion_length, temperature=cfg.temperature, beta=cfg.beta,
        logging_steps=cfg.logging_steps, save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False, reward_weights=weights, scale_rewards="group", loss_type="grpo",
        dataloader_num_workers=0, remove_unused_columns=False, bf16=cfg.bf16,
        activation_checkpointing=cfg.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
    )


def train_stage2(model, handle: PVMHandle, processor, prompts, rewards: list[Reward], cfg: StageIIConfig,
                 max_completion_length: int) -> list[dict]:
    """GRPO on `prompts` (pvm_probe.train.prompts) with `rewards`; returns the log history (loss, reward,
    rewards/<name>/mean, ...). The model ends in eval mode."""
    set_trainable(model, handle, cfg.train_backbone)
    with tempfile.TemporaryDirectory(prefix="pvm_probe_trainer_") as scratch:
        args = grpo_arguments(cfg, scratch, [r.weight for r in rewards], max_completion_length)
        trainer = SeededGRPOTrainer(model=model, reward_funcs=[r.function for r in rewards], args=args,
                                    train_dataset=prompts, processing_class=processor, callbacks=[LogLastStep()])
        try:
            with warnings.catch_warnings():
                # TRL 1.16 reads `model.is_gradient_checkpointing` around every generation round
                # (trl/models/utils.py), a property transformers 5 deprecates: its warning is not about this run
                warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                                        category=FutureWarning)
                trainer.train()
        finally:
            leave_training(model, cfg.gradient_checkpointing)
    return trainer.state.log_history
