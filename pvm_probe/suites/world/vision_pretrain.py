"""Stage 1: train the real vision tower alone, one linear head per merged token.

Each merged token k (= cell k) must predict the cell's colour, shape and index.
Joint training from step 0 wipes the tower out, hence this stage; after it
``merger.linear_fc2`` is rescaled (weight and bias, an exact rescale) so merged tokens
have norm ~``target_norm``, and the tower is frozen for the language-model stage.
"""
from __future__ import annotations

import random

import torch
from torch import nn
from tqdm.auto import tqdm

from .scenes import COLOURS, N_CELLS, SHAPES, make_grid_scene, render_grid

_COL, _SHP = list(COLOURS), list(SHAPES)


def _vision_batch(image_processor, seeds: list[int]):
    scenes = [make_grid_scene(s) for s in seeds]
    px = image_processor(images=[render_grid(s) for s in scenes], return_tensors="pt")
    col = torch.tensor([[_COL.index(c) for c, _ in s.cells] for s in scenes]).flatten()   # [B*16]
    shp = torch.tensor([[_SHP.index(h) for _, h in s.cells] for s in scenes]).flatten()   # [B*16]
    cell = torch.arange(N_CELLS).repeat(len(scenes))                                     # [B*16]
    return px["pixel_values"], px["image_grid_thw"], col, shp, cell


def cell_tokens(model, pixel_values, grid_thw) -> torch.Tensor:
    """Merged vision tokens, [B*16, d] (cell k of image b at row b*16 + k)."""
    return model.model.visual(pixel_values, grid_thw=grid_thw).pooler_output


def cell_accuracy(model, head, image_processor, seeds) -> dict:
    """Per-cell accuracy of the linear head on the given scenes."""
    pv, thw, col, shp, cell = _vision_batch(image_processor, seeds)
    with torch.no_grad():
        z = head(cell_tokens(model, pv, thw))                 # [N, 6+6+16]
    return {"colour": (z[:, :6].argmax(-1) == col).float().mean().item(),
            "shape": (z[:, 6:12].argmax(-1) == shp).float().mean().item(),
            "cell": (z[:, 12:].argmax(-1) == cell).float().mean().item()}


def pretrain_vision(model, image_processor, *, steps: int = 150, batch: int = 32, lr: float = 1e-3,
                    seed: int = 0, target_norm: float = 2.0) -> dict:
    """Train tower + head, rescale merger.linear_fc2, freeze the tower. Returns held-out accuracy."""
    torch.manual_seed(seed)
    rng = random.Random(f"vision-{seed}")
    visual = model.model.visual
    head = nn.Linear(visual.merger.linear_fc2.out_features, 6 + 6 + N_CELLS)
    opt = torch.optim.AdamW(list(visual.parameters()) + list(head.parameters()), lr=lr)
    ce = nn.CrossEntropyLoss()
    for _ in (bar := tqdm(range(steps), desc="vision stage")):
        pv, thw, col, shp, cell = _vision_batch(image_processor, [rng.randrange(900_000) for _ in range(batch)])
        z = head(cell_tokens(model, pv, thw))                 # [B*16, 28]
        loss = ce(z[:, :6], col) + ce(z[:, 6:12], shp) + ce(z[:, 12:], cell)
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    held_out = list(range(1_000_000, 1_000_064))              # evaluation seeds
    acc = cell_accuracy(model, head, image_processor, held_out)
    _rescale_merger(model, image_processor, held_out, target_norm)
    for p in visual.parameters():
        p.requires_grad_(False)
    return acc


@torch.no_grad()
def _rescale_merger(model, image_processor, seeds, target_norm: float) -> None:
    pv, thw, *_ = _vision_batch(image_processor, seeds)
    norm = cell_tokens(model, pv, thw).norm(dim=-1).mean()
    fc2 = model.model.visual.merger.linear_fc2
    fc2.weight.mul_(target_norm / norm)
    fc2.bias.mul_(target_norm / norm)
