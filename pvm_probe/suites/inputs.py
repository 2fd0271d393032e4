"""A batch of requests as model inputs: the processor's chat template, left padding, optional forced answers."""

from __future__ import annotations

import torch

from ..errors import InputError
from .base import Request


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
