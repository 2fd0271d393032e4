"""The controls table: baseline / MLP control / processed-states control / PVM I / PVM I+II / PVM with a
swapped image / PVM gates off, Blind Painter accuracy by quarter, free generation inside the trained range:
at the default long setting (3 decoy units per step, 257 tokens: the image leaves the baseline's attention
window around the middle of the answer) and at the short one (no decoys, 65 tokens: the image stays in the
window throughout, so an adapter can only lose there).

    python analyses/fig_controls.py [--smoke] [--scenes N]
writes figures/controls.json and figures/controls_{long,short}.{png,svg}.
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from pathlib import Path

from figure_common import PAINT_SETTINGS, save_figure
from tqdm.auto import tqdm

from pvm_probe.checkpoints import load_pvm
from pvm_probe.io import atomic_write_json
from pvm_probe.loading import load_base
from pvm_probe.painter import paint_with_controls
from pvm_probe.plots import plot_accuracy_by_quartile

ROWS = {  # name -> paint options
    "baseline": {},
    "mlp-control": {"pvm": "mlp-control"},
    "processed-control": {"pvm": "processed-control"},
    "pvm-stage1": {"pvm": "pvm-stage1"},
    "pvm-stage2": {"pvm": "pvm-stage2"},
    "pvm-stage2, swapped image": {"pvm": "pvm-stage2", "swap_pvm_image": True},
    "pvm-stage2, gates off": {"pvm": "pvm-stage2", "gates_off": True},
}


def paint_row(model, processor, options: dict, length, scenes: int) -> dict:
    options = dict(options)
    adapter = options.pop("pvm", None)
    with load_pvm(model, adapter) if adapter else nullcontext() as handle:  # the handle removes its hooks on exit
        result = paint_with_controls(model, processor, handle, scenes=scenes, length=length, **options)
    return {k: result[k] for k in ("accuracy", "accuracy_by_quartile", "answer_tokens", "length", "n_scenes")}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=64)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default="figures")
    args = parser.parse_args(argv)
    scenes = 4 if args.smoke else args.scenes
    model, processor = load_base()
    table = {}
    jobs = [(s, r) for s in PAINT_SETTINGS for r in ROWS]
    for setting, row in tqdm(jobs, desc="controls"):
        table.setdefault(setting, {})[row] = paint_row(model, processor, ROWS[row], PAINT_SETTINGS[setting], scenes)
    out = Path(args.out)
    atomic_write_json(out / "controls.json", table)
    for setting, rows in table.items():
        print(f"\n{setting}  ({next(iter(rows.values()))['answer_tokens']} answer tokens, {scenes} scenes)")
        for name, r in rows.items():
            quarters = " ".join(f"{100 * q:5.1f}" for q in r["accuracy_by_quartile"])
            print(f"  {name:28s} {100 * r['accuracy']:5.1f}   Q1-Q4 {quarters}")
    for setting, rows in table.items():
        fig = plot_accuracy_by_quartile(rows, title=f"Blind Painter, {setting}")
        save_figure(fig, out, "controls_" + setting.split()[0])
    return table


if __name__ == "__main__":
    main()
