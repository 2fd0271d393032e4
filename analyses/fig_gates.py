"""PVM gates and retrieval: injection norm relative to the residual, attention entropy per position,
and where PVM looks on the first probed scene.

    python analyses/fig_gates.py [--smoke] [--adapter pvm-stage2]
writes figures/gates.{png,svg}, figures/retrieval_overlay.{png,svg} and figures/gates.json.
"""

from __future__ import annotations

from figure_common import probe_models, save_figure, script_arguments

from pvm_probe.io import atomic_write_json
from pvm_probe.plots.probes import plot_gates, plot_retrieval_overlay
from pvm_probe.world.paint import eval_examples
from pvm_probe.world.processor import build_processor


def main(argv=None) -> dict:
    args = script_arguments(__doc__, argv, default_adapter="pvm-stage2")
    pvm = {n: r["pvm"] for n, r in probe_models(args).items() if "pvm" in r}
    if not pvm:
        raise SystemExit(f"{args.adapter}: no PVM retrieval to show (not a PVM adapter, or not shipped)")
    save_figure(plot_gates(pvm), args.out, "gates")
    name, first = next(iter(pvm.items()))
    image = eval_examples(build_processor(), scenes=1, seed=1, length=0)[0].image  # the first probed scene
    save_figure(plot_retrieval_overlay(image, first["retrieval_first_scene"], title=f"{name}: where PVM looks"),
                args.out, "retrieval_overlay")
    summary = {n: {"layers": d["layers"], "alpha": d["alpha"]} for n, d in pvm.items()}
    atomic_write_json(f"{args.out}/gates.json", summary)
    print(summary)
    return summary


if __name__ == "__main__":
    main()
