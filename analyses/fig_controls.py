"""The controls table: baseline / MLP control / processed-states control / PVM I / PVM I+II / PVM with a
swapped image / PVM gates off, Blind Painter accuracy by quarter, at the default long setting (inside the
baseline's trained range, free generation) and at 12 decoy units per step (833 tokens: beyond the
baseline's range, inside the adapters' `--max-gap 48`; teacher-forced text, the model writes the claims).

    python analyses/fig_controls.py [--smoke] [--scenes N]
writes figures/controls.json and figures/controls_{in,beyond}.{png,svg}.
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from pathlib import Path

from figure_common import save_figure
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
SETTINGS = {  # name -> (length, forced)
    "in range (free)": (None, False),
    "beyond base range (forced)": (12, True),
}


def paint_row(model, processor, options: dict, length, forced: bool, scenes: int) -> dict:
    options = dict(options)
    adapter = options.pop("pvm", None)
    with load_pvm(model, adapter) if adapter else nullcontext() as handle:  # the handle removes its hooks on exit
        result = paint_with_controls(model, processor, handle, scenes=scenes, length=length, forced=forced, **options)
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
    jobs = [(s, r) for s in SETTINGS for r in ROWS]
    for setting, row in tqdm(jobs, desc="controls"):
        length, forced = SETTINGS[setting]
        table.setdefault(setting, {})[row] = paint_row(model, processor, ROWS[row], length, forced, scenes)
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
