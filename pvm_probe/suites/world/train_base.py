"""Train the tiny Qwen3-VL baseline on the painter world (CPU, 2 threads).

Stage 1: vision tower alone (``vision_pretrain``); stage 2: language model with
``transformers.Trainer`` (tower frozen), seeded, curriculum short -> long gaps.
Writes model + processor (safetensors), ``log_history.json`` and ``train_info.json``.

    python -m pvm_probe.world.train_base --out DIR [--steps N] [--seed S]
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForImageTextToText, AutoTokenizer, Trainer, TrainingArguments

from ...backbones import attention_window
from ...io import atomic_dir, atomic_write_json
from .data import CurriculumDataset, collate_train
from .model import build_model
from .processor import build_processor
from .task import PaintSpec, answer_length
from .vision_pretrain import pretrain_vision
from .window import attn_implementation_for, set_attention_window

DEFAULT_GAPS = tuple(range(0, 25))       # filler units per step seen in training (count filler)
DEFAULT_SHORT_GAPS = tuple(range(0, 5))  # curriculum warm-up


class WeightedTrainer(Trainer):
    """Token-weighted cross entropy (claim tokens weighted, see data.CLAIM_WEIGHT)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels, w = inputs.pop("labels"), inputs.pop("loss_weights")      # [B, T], [B, T]
        out = model(**inputs)
        logits = out.logits[:, :-1].float()                                # [B, T-1, V]
        tgt, w = labels[:, 1:], w[:, 1:]                                   # [B, T-1]
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100, reduction="none")
        loss = (nll * w.reshape(-1)).sum() / w.sum().clamp_min(1.0)
        return (loss, out) if return_outputs else loss

    def _get_train_sampler(self, *args, **kwargs):
        return torch.utils.data.SequentialSampler(self.train_dataset)   # keep the curriculum order


def train_base(out_dir, *, steps: int = 700, seed: int = 0, batch_size: int = 32, lr: float = 3e-3,
               gaps=DEFAULT_GAPS, short_gaps=DEFAULT_SHORT_GAPS, warm_steps: int = 100,
               fillers=("count",), passes=(1,), vision_steps: int = 200, threads: int = 2,
               init_from=None, named=(True,), window: int | None = None) -> dict:
    """Train a baseline from scratch and save it to ``out_dir``. Returns train_info.

    ``init_from``: continue the language-model stage from a saved checkpoint (its vision
    tower stays frozen, no vision stage); its train_info is kept under ``"previous"``."""
    torch.set_num_threads(threads)
    t0 = time.time()
    if init_from is None:
        processor = build_processor()
        model = build_model(processor, seed=seed)
        vision_acc = pretrain_vision(model, processor.image_processor, steps=vision_steps, seed=seed)
    else:
        model, processor, vision_acc, vision_steps = *_load(init_from), None, 0
    if window is not None:
        set_attention_window(model, window)
    t_vision = time.time() - t0
    data = CurriculumDataset(processor, n=steps * batch_size, seed=seed, gaps=gaps, short_gaps=short_gaps,
                              warm_examples=warm_steps * batch_size, fillers=fillers, passes=passes,
                             named=named)
    with tempfile.TemporaryDirectory(prefix="pvm_train_base_") as scratch:
        log = _train_language_model(model, processor, data, scratch, steps=steps, batch_size=batch_size, lr=lr,
                                    seed=seed)
    recipe = dict(seed=seed, init_from=init_from, vision_steps=vision_steps, vision_acc=vision_acc, steps=steps,
                  batch_size=batch_size, lr=lr, fillers=fillers, passes=passes, named=named, gaps=gaps,
                  short_gaps=short_gaps, warm_steps=warm_steps, threads=threads)
    info = _info(recipe, model, t0, t_vision)
    with atomic_dir(out_dir) as tmp:  # the checkpoint appears whole or not at all
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        atomic_write_json(Path(tmp) / "log_history.json", log)
        atomic_write_json(Path(tmp) / "train_info.json", info)
    return info


def _train_language_model(model, processor, data, scratch: str, *, steps: int, batch_size: int, lr: float,
                          seed: int) -> list[dict]:
    """Stage 2: the language model with the tower frozen; returns the Trainer's log history."""
    args = TrainingArguments(
        output_dir=scratch, max_steps=steps, per_device_train_batch_size=batch_size,
        learning_rate=lr, adam_beta1=0.9, adam_beta2=0.98, weight_decay=0.01, warmup_steps=50,
        lr_scheduler_type="cosine", max_grad_norm=1.0, logging_steps=10, save_strategy="no",
        report_to=[], seed=seed, data_seed=seed, use_cpu=True, dataloader_num_workers=0,
        remove_unused_columns=False, disable_tqdm=False)
    trainer = WeightedTrainer(model=model, args=args, train_dataset=data,
                              data_collator=lambda ex: collate_train(processor, ex))
    trainer.train()
    return trainer.state.log_history


def _info(run: dict, model, t0: float, t_vision: float) -> dict:
    """train_info.json: the recipe, the machine and the time, and the previous stage's info."""
    gaps, fillers, passes, init_from = run["gaps"], run["fillers"], run["passes"], run["init_from"]
    info = {"seed": run["seed"], "init_from": str(init_from) if init_from else None,
            "vision_steps": run["vision_steps"], "vision_heldout_cell_accuracy": run["vision_acc"],
            "lm_steps": run["steps"], "batch_size": run["batch_size"], "lr": run["lr"], "fillers": list(fillers),
            "passes": list(passes), "named": list(run["named"]), "attention_window": attention_window(model),
            "train_gaps": list(gaps), "warmup_gaps": list(run["short_gaps"]), "warm_steps": run["warm_steps"],
            "train_scene_seeds": "random.Random(f'train-{seed}-{i}') draws in [0, 900000)",
            "eval_scene_seeds": ">= 1000000", "seconds_vision": round(t_vision, 1),
            "seconds_total": round(time.time() - t0, 1), "threads": run["threads"],
            "machine": f"{platform.machine()} {platform.processor() or ''} {platform.system()}, "
                       f"torch {torch.__version__}, {torch.get_num_threads()} threads"}
    info["train_answer_tokens"] = [answer_length(PaintSpec(gap=min(gaps), filler=f)) for f in fillers] + \
                                  [answer_length(PaintSpec(gap=max(gaps), filler=f, passes=max(passes))) for f in fillers]
    if init_from is not None:
        info["previous"] = json.loads((Path(init_from) / "train_info.json").read_text())
        info["seconds_total_all_stages"] = round(info["seconds_total"] + info["previous"].get(
            "seconds_total_all_stages", info["previous"]["seconds_total"]), 1)
    return info


def _load(path):
    """A saved world base to train on (its attention window kept), with the current processor."""
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(
        path, config=config, attn_implementation=attn_implementation_for(config, "sdpa"), local_files_only=True)
    for p in model.model.visual.parameters():
        p.requires_grad_(False)
    processor = build_processor()                      # current vocabulary (words only ever appended)
    old = AutoTokenizer.from_pretrained(path, local_files_only=True).get_vocab()
    assert all(processor.tokenizer.convert_tokens_to_ids(w) == i for w, i in old.items())
    if len(processor.tokenizer) > model.config.text_config.vocab_size:
        model.resize_token_embeddings(len(processor.tokenizer))
    return model.train(), processor


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-gap", type=int, default=max(DEFAULT_GAPS))
    ap.add_argument("--filler", nargs="+", default=["count"])
    ap.add_argument("--passes", nargs="+", type=int, default=[1])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warm-max-gap", type=int, default=max(DEFAULT_SHORT_GAPS))
    ap.add_argument("--warm-steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--init", default=None, help="continue from this checkpoint")
    ap.add_argument("--attention-window", type=int, default=None,
                    help="text decoder attends to its last N tokens only (kept from --init unless given)")
    ap.add_argument("--named", choices=["named", "hidden", "both"], default="named",
                    help="claims name their cell, hide it (computed query), or both")
    ap.add_argument("--gaps", type=int, nargs="*", default=None,
                    help="explicit list of training gaps (tokens; repeats skew the mix); overrides --max-gap")
    a = ap.parse_args(argv)
    info = train_base(a.out, steps=a.steps, seed=a.seed, batch_size=a.batch_size,
                      gaps=tuple(a.gaps) if a.gaps else tuple(range(0, a.max_gap + 1)),
                      short_gaps=tuple(range(0, a.warm_max_gap + 1)), warm_steps=a.warm_steps, lr=a.lr, init_from=a.init,
                      named={"named": (True,), "hidden": (False,), "both": (True, False)}[a.named], fillers=tuple(a.filler), passes=tuple(a.passes), threads=a.threads,
                      window=a.attention_window)
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
