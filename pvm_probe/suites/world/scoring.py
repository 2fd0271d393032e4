"""Exact scoring of a Blind Painter answer, claim by claim, by position.

A *claim* is ``p{i} CELL COLOUR SHAPE`` in the answer. It is correct when colour and
shape are both true of the cell it names (``order_ok`` says whether that was the cell
the prompt's order asked for). Expected step i is matched to the i-th claim of the
answer; a step with no claim is *missing* (wrong); claims beyond the expected number
are *extra* (counted, not scored). A claim's quartile comes from where step i stands
in the reference answer (so every scene's quartiles cover the same steps); its actual
token position in the answer is recorded too. ``decoys_before`` counts text decoy
triplets (``s{j} CELL c s``) naming the same cell with a false colour or shape that
precede the claim in the answer.
"""
from __future__ import annotations

import re

from .scenes import CELL_NAMES, COLOURS, SHAPES, GridScene
from .task import PaintSpec, answer_tokens

_STEP, _DECOY = re.compile(r"p\d+$"), re.compile(r"s\d+$")


def _triplets(tokens: list[str], marker) -> list[tuple[int, str, str | None, str | None]]:
    """(position of colour slot, cell, colour, shape) for every ``marker CELL ...`` in tokens."""
    out = []
    for i in range(len(tokens) - 1):
        if marker.match(tokens[i]) and tokens[i + 1] in CELL_NAMES:
            col = tokens[i + 2] if i + 2 < len(tokens) and tokens[i + 2] in COLOURS else None
            shp = tokens[i + 3] if i + 3 < len(tokens) and tokens[i + 3] in SHAPES else None
            out.append((i + 2, tokens[i + 1], col, shp))
    return out


def parse_claims(tokens: list[str], steps: list[str] | None = None):
    """Claims ``(colour-slot position, cell, colour, shape)``. With ``steps`` (the spec's cell order),
    hidden-cell claims ``p{i} COLOUR SHAPE`` are read too, their cell being ``steps[i]``."""
    out = _triplets(tokens, _STEP)
    if steps is not None:
        for i in range(len(tokens) - 1):
            if _STEP.match(tokens[i]) and tokens[i + 1] in COLOURS:
                k = int(tokens[i][1:])
                shp = tokens[i + 2] if i + 2 < len(tokens) and tokens[i + 2] in SHAPES else None
                out.append((i + 1, steps[k] if k < len(steps) else None, tokens[i + 1], shp))
        out = sorted(c for c in out if c[1] is not None)
    return out


def _reference_positions(scene: GridScene, spec: PaintSpec) -> tuple[list[int], int]:
    ref = answer_tokens(scene, spec)
    return [p for p, *_ in parse_claims(ref, spec.steps())], len(ref)


def score_painting(scene: GridScene, spec: PaintSpec, tokens: list[str]) -> dict:
    """Per-claim records plus accuracy and accuracy_by_quartile for one answer."""
    tokens = [t for t in tokens if t not in ("<|im_end|>", "<|endoftext|>")]
    claims, decoys = parse_claims(tokens, spec.steps()), _triplets(tokens, _DECOY)
    ref_pos, ref_len = _reference_positions(scene, spec)
    records = []
    for i, cell_exp in enumerate(spec.steps()):
        rec = {"step": i, "expected_cell": cell_exp, "ref_position": ref_pos[i],
               "quartile": min(3, 4 * ref_pos[i] // ref_len)}
        if i < len(claims):
            pos, cell, col, shp = claims[i]
            t_col, t_shp = scene.truth(cell)
            rec.update(position=pos, cell=cell, colour=col, shape=shp, missing=False,
                       colour_ok=col == t_col, shape_ok=shp == t_shp, order_ok=cell == cell_exp,
                       decoys_before=sum(1 for p, c, dc, ds in decoys
                                         if p < pos and c == cell and (dc, ds) != (t_col, t_shp)),
                       own_before=sum(1 for p, c, *_ in claims[:i] if c == cell))
        else:
            rec.update(position=None, cell=None, colour=None, shape=None, missing=True,
                       colour_ok=False, shape_ok=False, order_ok=False, decoys_before=0, own_before=0)
        rec["correct"] = rec["colour_ok"] and rec["shape_ok"]
        records.append(rec)
    return {"claims": records, "n_extra": max(0, len(claims) - len(records)), **summarize(records)}


def summarize(records: list[dict]) -> dict:
    """accuracy, accuracy_by_quartile (4 numbers, None where empty), colour/shape accuracy."""
    def mean(xs):
        return sum(xs) / len(xs) if xs else None
    by_q = [mean([r["correct"] for r in records if r["quartile"] == q]) for q in range(4)]
    return {"accuracy": mean([r["correct"] for r in records]), "accuracy_by_quartile": by_q,
            "colour_accuracy": mean([r["colour_ok"] for r in records]),
            "shape_accuracy": mean([r["shape_ok"] for r in records]),
            "n_claims": len(records), "n_missing": sum(r["missing"] for r in records)}


def accuracy_by_decoys(records: list[dict]) -> dict:
    """Accuracy against the number of same-cell false decoys seen before the claim."""
    out: dict = {}
    for r in records:
        out.setdefault(r["decoys_before"], []).append(r["correct"])
    return {k: {"n": len(v), "accuracy": sum(v) / len(v)} for k, v in sorted(out.items())}
