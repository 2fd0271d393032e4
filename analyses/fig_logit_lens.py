"""LogitLens KL(final || layer) per layer and generated position, baseline vs PVM (heatmaps).

    python analyses/fig_logit_lens.py [--smoke] [--adapter pvm-stage2]
writes figures/logit_lens.{png,svg} and figures/logit_lens.json (mean KL per layer, convergence layer).
"""

from __future__ import annotations

from figure_common import probe_models, save_figure, script_arguments

from pvm_probe.io import atomic_write_json
from pvm_probe.plots.probes import plot_lens_kl


def main(argv=None) -> dict:
    args = script_arguments(__doc__, argv, default_adapter="pvm-stage2")
    results = probe_models(args)
    save_figure(plot_lens_kl({n: r["lens_kl"] for n, r in results.items()}), args.out, "logit_lens")
    summary = {n: {"kl_by_layer": r["lens_kl_by_layer"], "convergence_layer_mean": r["convergence_layer_mean"]}
               for n, r in results.items()}
    atomic_write_json(f"{args.out}/logit_lens.json", summary)
    for name, s in summary.items():
        print(f"{name}: convergence layer {s['convergence_layer_mean']:.2f}, KL by layer "
              f"{[round(v, 3) for v in s['kl_by_layer']]}")
    return summary


if __name__ == "__main__":
    main()
