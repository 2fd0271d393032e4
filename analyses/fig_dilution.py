"""Visual attention mass against generated position per layer, baseline vs PVM, with the two-phase fits.

    python analyses/fig_dilution.py [--smoke] [--scenes N]
writes figures/dilution.{png,svg} and figures/dilution.json (fits, break points, claim mass by quarter).
"""

from __future__ import annotations

from figure_common import probe_metrics, save_figure, script_arguments

from pvm_probe.io import atomic_write_json
from pvm_probe.plots.report import mass_vs_position


def main(argv=None) -> dict:
    args = script_arguments(__doc__, argv)
    metrics = probe_metrics(args, ["pvm-stage1"])
    save_figure(mass_vs_position(metrics).static(), args.out, "dilution")
    summary = {n: {k: m.get(k) for k in ("dilution", "claim_mass_by_quarter", "mass_profile")}
               for n, m in metrics["variants"].items()}
    atomic_write_json(f"{args.out}/dilution.json", summary)
    for name, s in summary.items():
        print(name, "claim mass by quarter per layer:", s["claim_mass_by_quarter"])
    return summary


if __name__ == "__main__":
    main()
