"""Stage I, Visual Memory Alignment: supervised fine-tuning of the PVM blocks (the backbone frozen).

Driven by `transformers.Trainer`, so `accelerate launch` with a DDP, DeepSpeed or FSDP config works as for any
Trainer run. The loss covers the answer tokens only (the collator's labels), token-weighted over the global
batch; an eval set gives `eval_loss` entries in the log (every `eval_steps`, and at the end). The Trainer's
own output folder is a temporary directory, removed when training ends, however it ends: the adapter is
written by the caller (`pvm_probe.train.run`).
"""

from __future__ import annotations

import tempfile

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback, TrainingArguments

from ..backbones import get_module, hook_sites
from ..inject import PVMHandle, freeze_backbone
from .config import StageIConfig


def answer_token_loss(outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Cross entropy summed over answer tokens / answer tokens in the *global* batch.

    With `num_items_in_batch` (counted by the Trainer across processes and accumulation steps) the
    loss is the same token-weighted mean whether the batch runs in 1 process or N; without it (evaluation)
    it is this batch's token mean."""
    logits = outputs.logits[:, :-1].float()  # [B, T-1, V] predicts token t+1
    targets = labels[:, 1:].to(logits.device)  # [B, T-1]
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100,
                            reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else (targets != -100).sum()
    count = count.clamp_min(1) if torch.is_tensor(count) else max(count, 1)  # a batch of prompt-only records: 0
    return total / count


class BackboneVisualDropout:
    """Stage I augmentation: in a random share `p` of training requests the backbone's image embeddings are
    zeroed *after* PVM has captured them, so in those requests the image reaches the answer only through
    PVM. Without it a frozen backbone already carries the image to every claim, and PVM has no reason to
    learn retrieval (it learns text-side corrections an MLP can learn too). Active only in training mode;
    evaluation and generation see the image as usual. With `visual_source hidden:K` PVM reads the blinded
    backbone's states, so the processed-states control gets no image in those requests either."""

    def __init__(self, handle: PVMHandle, p: float, seed: int = 0):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"backbone visual dropout must be in [0, 1), got {p}")
        self.handle, self.p = handle, p
        self.generator = torch.Generator().manual_seed(seed)
        self._hook = None

    def __enter__(self):
        if self.p > 0:
            target = get_module(self.handle.model, hook_sites(self.handle.model).language_model)
            self._hook = target.register_forward_pre_hook(self._blind, with_kwargs=True)  # after PVM's capture hook
        return self

    def __exit__(self, *exc) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _blind(self, module, args, kwargs):
        visual = self.handle.memory.visual_mask  # [B, T]
        embeds = kwargs.get("inputs_embeds")
        if not module.training or visual is None or embeds is None or not visual.any():
            return None
        rows = torch.rand(embeds.shape[0], generator=self.generator) < self.p  # [B]
        hidden = (visual & rows[:, None].to(visual.device))[..., None]  # [B, T, 1]
        return args, {**kwargs, "inputs_embeds": embeds.masked_fill(hidden, 0.0)}


class LogLastStep(TrainerCallback):
    """Log at the last step too, whatever `logging_steps` is: the run's final loss is always in the log."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_log = True
        return control


def set_trainable(model, handle: PVMHandle, train_backbone: bool) -> int:
    """PVM-only by default; optionally the language model too (the vision tower and projector stay frozen).
    Returns the trainable parameter count."""
    freeze_backbone(model, handle)
    if train_backbone:
        model.requires_grad_(True)
        for path in hook_sites(model).vision:
            get_module(model, path).requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def training_arguments(cfg: StageIConfig, scratch: str, evaluate: bool = False,
                       find_unused: bool = False) -> TrainingArguments:
    """The Trainer's arguments; `find_unused`: some batches leave PVM unused (text-only records), so DDP must
    look for unused parameters."""
    return TrainingArguments(
        output_dir=scratch, max_steps=cfg.steps, per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr, lr_scheduler_type=cfg.schedule, warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, seed=cfg.seed, data_seed=cfg.seed,
        logging_steps=cfg.logging_steps, save_strategy="no", report_to=[], remove_unused_columns=False,
        eval_strategy="steps" if evaluate and cfg.eval_steps else "no", eval_steps=cfg.eval_steps,
        dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(), disable_tqdm=False, bf16=cfg.bf16,
        activation_checkpointing=cfg.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        ddp_find_unused_parameters=find_unused,
    )


def train_stage1(model, handle: PVMHandle, train_set, collator, cfg: StageIConfig, eval_set=None,
                 find_unused: bool = False) -> list[dict]:
    """Train the attached blocks (and the language model with `cfg.train_backbone`); returns the log history
    (loss entries, eval_loss entries when there is an eval set). The model ends in eval mode."""
    set_trainable(model, handle, cfg.train_backbone)
    with tempfile.TemporaryDirectory(prefix="pvm_probe_trainer_") as scratch:
        args = training_arguments(cfg, scratch, eval_set is not None, find_unused)
        trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                          data_collator=collator, compute_loss_func=answer_token_loss, callbacks=[LogLastStep()])
        try:
            with BackboneVisualDropout(handle, cfg.backbone_visual_dropout, cfg.seed):
                trainer.train()
            if eval_set is not None and not _evaluated_last(trainer):
                trainer.evaluate()
        finally:
            leave_training(model, cfg.gradient_checkpointing)
    return trainer.state.log_history


def leave_training(model, gradient_checkpointing: bool) -> None:
    """Back to inference: eval mode; checkpointing off again, with the hook that made the input embeddings
    require grad (transformers adds it for checkpointing and leaves it)."""
    if gradient_checkpointing:
        model.activation_checkpointing_disable()
        if hasattr(model, "_require_grads_hook"):
            model.disable_input_require_grads()
    model.eval()


def _evaluated_last(trainer) -> bool:
    last = [e for e in trainer.state.log_history if "eval_loss" in e]
    return bool(last) and last[-1].get("step") == trainer.state.global_step
