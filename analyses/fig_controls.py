"""The controls table: baseline / MLP control / processed-states control / PVM I / PVM I+II, each memory
adapter also with its gates off and with another scene's image, Blind Painter claims correct by quarter,
free generation inside the trained range: at the default long setting (3 decoy units per step, 257 tokens:
the image leaves the baseline's attention window around the middle of the answer) and at the short one (no
decoys, 65 tokens: the image stays in the window throughout, so an adapter can only lose there).

    python analyses/fig_controls.py [--smoke] [--scenes N]
writes figures/controls.json and figures/controls_{long,short}.{png,svg}.
"""

from __future__ import annotations

from figure_common import PAINT_SETTINGS, paint_metrics, save_figure, script_arguments

from pvm_probe.io import atomic_write_json
from pvm_probe.jobs import SHIPPED_ORDER
from pvm_probe.plots.report import claims_by_quarter


def main(argv=None) -> dict:
    args = script_arguments(__doc__, argv, scenes=64)
    table = {}
    for setting, length in PAINT_SETTINGS.items():
        metrics = paint_metrics(args, list(SHIPPED_ORDER), length, name=f"controls-{setting.split()[0]}")
        table[setting] = {n: {"accuracy": m["primary"], "accuracy_by_quartile": m["primary_by_quarter"],
                              "answer_tokens": m["answer_tokens_mean"]} for n, m in metrics["variants"].items()}
        fig = claims_by_quarter(metrics).static()
        fig.suptitle(f"Blind Painter, {setting}", fontsize=9)
        save_figure(fig, args.out, "controls_" + setting.split()[0])
        print(f"\n{setting}  ({args.scenes} scenes)")
        for name, r in table[setting].items():
            quarters = " ".join(f"{100 * q:5.1f}" for q in r["accuracy_by_quartile"])
            print(f"  {name:34s} {100 * r['accuracy']:5.1f}   Q1-Q4 {quarters}")
    atomic_write_json(f"{args.out}/controls.json", {"scenes": args.scenes, "table": table})
    return table


if __name__ == "__main__":
    main()
