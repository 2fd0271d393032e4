"""Measure a checkpoint: accuracy by quartile (long/short), decoys, visual attention mass.

    python -m pvm_probe.world.report --base DIR --long 20 --short 2 --scenes 64 --json out.json
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from .attention import visual_mass_by_quartile
from .paint import (
    DEFAULT_FILLER,
    DEFAULT_LONG,
    DEFAULT_SHORT,
    eval_examples,
    generate_answers,
    load_baseline,
    paint,
)


def _brief(r: dict) -> dict:
    keys = ("length", "filler", "passes", "answer_tokens", "n_scenes", "accuracy", "accuracy_by_quartile",
            "colour_accuracy", "shape_accuracy", "n_missing", "accuracy_by_decoys")
    return {k: r[k] for k in keys}


def measure(path=None, *, long: int = DEFAULT_LONG, short: int = DEFAULT_SHORT, scenes: int = 64,
            seed: int = 0, filler: str = DEFAULT_FILLER, passes: int = 1, attn_scenes: int = 8,
            extra_lengths=()) -> dict:
    """Paint the same held-out scenes short and long (and extra lengths); attention mass at long."""
    model, proc = load_baseline(path)
    out = {"checkpoint": str(path or "shipped baseline"), "seed": seed}
    for name, L in [("short", short), ("long", long)] + [(f"L{L}", L) for L in extra_lengths]:
        t = time.time()
        r = paint(model, proc, scenes=scenes, seed=seed, length=L, filler=filler, passes=passes)
        out[name] = _brief(r) | {"seconds": round(time.time() - t, 1)}
        print(name, json.dumps(out[name]["accuracy_by_quartile"]), out[name]["accuracy"], flush=True)
    ex = eval_examples(proc, scenes=attn_scenes, seed=seed, length=long, filler=filler, passes=passes)
    ans = generate_answers(model, proc, ex, progress=False)
    out["visual_mass_long"] = visual_mass_by_quartile(model, proc, ex, ans)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default=None)
    ap.add_argument("--long", type=int, default=DEFAULT_LONG)
    ap.add_argument("--short", type=int, default=DEFAULT_SHORT)
    ap.add_argument("--extra", type=int, nargs="*", default=[])
    ap.add_argument("--scenes", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--filler", default=DEFAULT_FILLER)
    ap.add_argument("--passes", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    r = measure(a.base, long=a.long, short=a.short, scenes=a.scenes, seed=a.seed, filler=a.filler,
                passes=a.passes, extra_lengths=a.extra)
    print(json.dumps({k: v for k, v in r.items()}, indent=1)[:4000])
    if a.json:
        open(a.json, "w").write(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
