"""Batched greedy generation of scene descriptions, optionally under the visual-attention-mass probe.

Each request is one chat turn: the image, then PROMPT. Prompts are left padded; only the new tokens
are decoded, up to the first end-of-sequence token.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ...probes import VisualAttentionMass

PROMPT = (
    "Describe this image exhaustively. Name every object you see, one by one: its shape, its colour, "
    "how many objects of that kind there are, and where each one is in the image (top left, top, top right, "
    "left, center, right, bottom left, bottom, bottom right). Leave nothing out, and keep going in as much "
    "detail as you can."
)


@dataclass
class Answer:
    text: str
    tokens: int  # generated tokens before the first end-of-sequence token
    image_share: np.ndarray | None = None  # [L, 4] image share of attention per layer and answer quarter


def conversation(image) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": PROMPT}]}]


def _stop_ids(model, processor) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    return ids or [processor.tokenizer.eos_token_id]


def answer_lengths(new_tokens: torch.Tensor, stop_ids: list[int]) -> list[int]:
    """new_tokens [B, N] -> per row, the number of tokens before the first stop token (N if none)."""
    stops = torch.isin(new_tokens, torch.tensor(stop_ids, device=new_tokens.device))  # [B, N]
    first = torch.where(stops.any(1), stops.int().argmax(1), new_tokens.shape[1])  # [B]
    return first.tolist()


def image_share_by_quarter(mass, lengths: list[int]) -> list[np.ndarray]:
    """Per answer, the image share of attention [L, 4] (mean over heads) in each quarter of its tokens."""
    share = mass.result.segment("image").mean(2)  # [B, L, T]; row t is the query that produced token t
    out = []
    for row, n in zip(share, lengths, strict=True):
        quarters = np.array_split(np.arange(n), 4)
        out.append(np.stack([row[:, q].mean(1) if len(q) else np.full(len(row), np.nan) for q in quarters], 1))
    return out


def chat_inputs(processor, images: list):
    """Left-padded chat inputs, one request per image (the image, then PROMPT), ready for `generate`."""
    processor.tokenizer.padding_side = "left"
    return processor.apply_chat_template(
        [conversation(image) for image in images], add_generation_prompt=True, tokenize=True,
        return_dict=True, return_tensors="pt", processor_kwargs={"padding": True})


@torch.no_grad()
def generate_batch(model, processor, images: list, max_new_tokens: int, probe: bool = False) -> list[Answer]:
    """Greedy answers for one left-padded batch of images."""
    inputs = chat_inputs(processor, images).to(model.device)
    with (VisualAttentionMass(model) if probe else nullcontext()) as mass:
        sequences = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                   pad_token_id=processor.tokenizer.pad_token_id)  # [B, P + N]
    new = sequences[:, inputs["input_ids"].shape[1]:]  # [B, N]
    lengths = answer_lengths(new, _stop_ids(model, processor))
    texts = processor.batch_decode([row[:n] for row, n in zip(new, lengths, strict=True)], skip_special_tokens=True)
    shares = image_share_by_quarter(mass, lengths) if probe else [None] * len(texts)
    return [Answer(t, n, s) for t, n, s in zip(texts, lengths, shares, strict=True)]


def generate_answers(model, processor, images: list, *, max_new_tokens: int, batch_size: int,
                     probe: bool = False, progress: bool = True) -> list[Answer]:
    """Answers for every image, `batch_size` requests per `generate` call, with a progress bar."""
    starts = range(0, len(images), batch_size)
    return [answer for s in tqdm(starts, desc="scenes", disable=not progress)
            for answer in generate_batch(model, processor, images[s:s + batch_size], max_new_tokens, probe)]
