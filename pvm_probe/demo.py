"""A self-check of PVM on a tiny random Qwen3-VL: what `pvm-probe report` runs until the default
world and its trained checkpoints exist. Every number is measured live, nothing is stored."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Qwen3VLForConditionalGeneration

from .checkpoints import count_pvm_params
from .config import PVMConfig
from .inject import attach_pvm
from .io import atomic_write_json, atomic_write_text
from .zoo import Image, fake_request, qwen3_vl_config, tiny_model


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def self_check(new_tokens: int = 16) -> dict:
    model = tiny_model("qwen3_vl")
    batch = fake_request(model, [Image(4, 4)])
    with torch.no_grad():
        plain = model(**batch).logits
    handle = attach_pvm(model, PVMConfig.for_model(64, 4, n_blocks=2))
    with torch.no_grad():
        identity_diff = _max_diff(model(**batch).logits, plain)
        for block in handle.blocks.values():
            block.alpha.fill_(1.0)
    out = model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                         output_logits=True, return_dict_in_generate=True)
    full = {**batch, "input_ids": out.sequences,
            "attention_mask": torch.ones_like(out.sequences),
            "mm_token_type_ids": torch.nn.functional.pad(batch["mm_token_type_ids"], (0, new_tokens))}
    with torch.no_grad():
        full_logits = model(**full).logits[:, batch["input_ids"].shape[1] - 1:-1]
    decode_diff = _max_diff(torch.stack(out.logits, 1), full_logits)
    handle.remove()
    with torch.no_grad():
        removed_diff = _max_diff(model(**batch).logits, plain)
    config_8b = qwen3_vl_config("qwen3-vl-8b")
    with torch.device("meta"):
        backbone_8b = sum(p.numel() for p in Qwen3VLForConditionalGeneration(config_8b).parameters())
    pvm_8b = count_pvm_params(PVMConfig.preset("qwen3-vl-8b"), config_8b)
    return {
        "kind": "self-check on a tiny random Qwen3-VL (no trained checkpoint yet)",
        "alpha0_max_abs_logit_diff": identity_diff,
        "after_remove_max_abs_logit_diff": removed_diff,
        "cached_decode_vs_full_forward_max_abs_diff": decode_diff,
        "pvm_params_8b": pvm_8b,
        "pvm_share_of_8b_pct": 100 * pvm_8b / backbone_8b,
        "paper_pvm_params_8b": 27.92e6,
        "paper_pvm_share_of_8b_pct": 0.32,
    }


def demo_report(out: Path) -> Path:
    metrics = self_check()
    atomic_write_json(out / "metrics.json", metrics)
    lines = ["# pvm_probe self-check", "", metrics["kind"], ""]
    lines += [f"- {key}: {value}" for key, value in metrics.items() if key != "kind"]
    return atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
