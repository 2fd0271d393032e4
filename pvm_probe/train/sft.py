"""Stage I, Visual Memory Alignment: supervised fine-tuning of the PVM blocks only.

Driven by `transformers.Trainer` (so `accelerate launch`, DeepSpeed and FSDP configs work as for any
Trainer run). The backbone is frozen; the loss covers answer tokens only (the collator's labels).
The adapter (not the backbone) is what gets saved, with the loss log beside it.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments

from ..backbones import get_module, hook_sites
from ..inject import PVMHandle, freeze_backbone
from ..io import atomic_write_json

LOG_FILE = "train_log.json"


@dataclass
class StageIConfig:
    steps: int = 300
    batch_size: int = 16  # global batch = batch_size x grad_accum x processes
    grad_accum: int = 1
    lr: float = 1e-4
    schedule: str = "cosine"
    warmup_steps: int = 20
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    logging_steps: int = 10
    train_backbone: bool = False  # True: the language model trains too (vision tower stays frozen)
    backbone_visual_dropout: float = 0.0  # share of training requests whose image only PVM sees


def answer_token_loss(outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Cross entropy summed over answer tokens / answer tokens in the *global* batch.

    With `num_items_in_batch` (counted by the Trainer across processes and accumulation steps) the
    loss is the same token-weighted mean whether the batch runs in 1 process or N."""
    logits = outputs.logits[:, :-1].float()  # [B, T-1, V] predicts token t+1
    targets = labels[:, 1:].to(logits.device)  # [B, T-1]
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100,
                            reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else (targets != -100).sum()
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


class AdapterSaving:
    """Trainer mixin: saving writes the PVM adapter (with its provenance), not the whole model."""

    def __init__(self, *args, handle: PVMHandle, provenance: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.handle, self.provenance = handle, provenance

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        if self.is_world_process_zero():
            self.handle.save(output_dir or self.args.output_dir, provenance=self.provenance)


class AdapterTrainer(AdapterSaving, Trainer):
    """transformers.Trainer for Stage I."""


def run_and_save(trainer, out_dir: Path) -> list[dict]:
    """Train, record the wall time in the provenance, save the adapter and the log beside it."""
    start = time.time()
    trainer.train()
    trainer.provenance["train_seconds"] = round(time.time() - start, 1)
    trainer.save_model(str(out_dir))
    if trainer.is_world_process_zero():
        atomic_write_json(out_dir / LOG_FILE, trainer.state.log_history)
    trainer.model.eval()
    return trainer.state.log_history


def set_trainable(model, handle: PVMHandle, train_backbone: bool) -> int:
    """PVM-only by default; optionally the language model too. Returns the trainable parameter count."""
    freeze_backbone(model, handle)
    if train_backbone:
        model.requires_grad_(True)
        for path in hook_sites(model).vision:
            get_module(model, path).requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def scratch_dir() -> str:
    """The Trainer's own output folder: nothing lands in the adapter folder until the adapter is saved."""
    return tempfile.mkdtemp(prefix="pvm_probe_trainer_")


def training_arguments(cfg: StageIConfig) -> TrainingArguments:
    return TrainingArguments(
        output_dir=scratch_dir(), max_steps=cfg.steps, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.lr, lr_scheduler_type=cfg.schedule,
        warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed, data_seed=cfg.seed, logging_steps=cfg.logging_steps, save_strategy="no",
        report_to=[], remove_unused_columns=False, dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(), disable_tqdm=False,
    )


def train_stage1(model, handle: PVMHandle, dataset, collator, out_dir, cfg: StageIConfig,
                 provenance: dict | None = None) -> list[dict]:
    """Train the attached PVM blocks; save the adapter and its loss log to `out_dir`."""
    out_dir = Path(out_dir)
    trainable = set_trainable(model, handle, cfg.train_backbone)
    provenance = {"stage": "I", "trainer": "transformers.Trainer", "config": asdict(cfg),
                  "trainable_parameters": trainable, **(provenance or {})}
    trainer = AdapterTrainer(model=model, args=training_arguments(cfg), train_dataset=dataset,
                             data_collator=collator, compute_loss_func=answer_token_loss,
                             handle=handle, provenance=provenance)
    with BackboneVisualDropout(handle, cfg.backbone_visual_dropout, cfg.seed):
        return run_and_save(trainer, out_dir)
