"""LogitLens KL(final || layer) by layer and the convergence layer by quarter of the answer, baseline vs PVM.

    python analyses/fig_logit_lens.py [--smoke] [--scenes N]
writes figures/logit_lens.{png,svg} and figures/logit_lens.json.
"""

from __future__ import annotations

from figure_common import probe_metrics, save_figure, script_arguments

from pvm_probe.io import atomic_write_json
from pvm_probe.plots.report import logit_lens


def main(argv=None) -> dict:
    args = script_arguments(__doc__, argv)
    metrics = probe_metrics(args, ["pvm-stage2"], name="gates")
    save_figure(logit_lens(metrics).static(), args.out, "logit_lens")
    summary = {n: m["lens"] for n, m in metrics["variants"].items() if "lens" in m}
    atomic_write_json(f"{args.out}/logit_lens.json", summary)
    for name, lens in summary.items():
        print(f"{name}: convergence layer {lens['convergence_layer_mean']:.2f}, by quarter "
              f"{[None if v is None else round(v, 2) for v in lens['convergence_by_quarter']]}")
    return summary


if __name__ == "__main__":
    main()
