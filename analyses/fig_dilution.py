"""Visual attention mass against generated position per layer, baseline vs PVM, with the a/(t+b)+c fits.

    python analyses/fig_dilution.py [--smoke] [--adapter pvm-stage1]
writes figures/dilution.{png,svg} and figures/dilution.json (fits, break points, claim mass by quarter).
"""

from __future__ import annotations

from figure_common import probe_models, save_figure, script_arguments

from pvm_probe.io import atomic_write_json
from pvm_probe.plots.probes import plot_mass_vs_position


def main(argv=None) -> dict:
    args = script_arguments(__doc__, argv, default_adapter="pvm-stage1")
    results = probe_models(args)
    fig = plot_mass_vs_position({n: r["mass_by_layer"] for n, r in results.items()},
                                {n: r["dilution"] for n, r in results.items()})
    save_figure(fig, args.out, "dilution")
    summary = {n: {"dilution": r["dilution"], "claim_mass_by_quarter": r["claim_mass_by_quarter"],
                   "convergence_layer_mean": r["convergence_layer_mean"]} for n, r in results.items()}
    atomic_write_json(f"{args.out}/dilution.json", summary)
    for name, r in summary.items():
        print(name, "claim mass by quarter per layer:", r["claim_mass_by_quarter"])
    return summary


if __name__ == "__main__":
    main()
