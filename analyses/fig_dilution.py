"""Visual attention mass against generated position per layer, baseline vs PVM, with the a/(t+b)+c fits.

    python analyses/fig_dilution.py [--smoke] [--adapter pvm-stage1]
writes figures/dilution.{png,svg} and figures/dilution.json (fits, break points, claim mass by quarter).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pvm_probe.checkpoints import SHIPPED_ADAPTERS, load_pvm
from pvm_probe.io import atomic_write, atomic_write_json
from pvm_probe.loading import load_base
from pvm_probe.plots.probes import plot_mass_vs_position
from pvm_probe.report.collect import probe_model


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", default="pvm-stage1")
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default="figures")
    args = parser.parse_args(argv)
    scenes = 2 if args.smoke else args.scenes
    model, processor = load_base()
    results = {"baseline": probe_model(model, processor, None, scenes)}
    if (SHIPPED_ADAPTERS / args.adapter).is_dir() or Path(args.adapter).is_dir():
        handle = load_pvm(model, args.adapter)
        results[args.adapter] = probe_model(model, processor, handle, scenes)
        handle.remove()
    fig = plot_mass_vs_position({n: r["mass_by_layer"] for n, r in results.items()},
                                {n: r["dilution"] for n, r in results.items()})
    out = Path(args.out)
    for ext in ("png", "svg"):
        atomic_write(out / f"dilution.{ext}", lambda tmp, ext=ext: fig.savefig(tmp, format=ext, dpi=120))
    summary = {n: {"dilution": r["dilution"], "claim_mass_by_quarter": r["claim_mass_by_quarter"],
                   "convergence_layer_mean": r["convergence_layer_mean"]} for n, r in results.items()}
    atomic_write_json(out / "dilution.json", summary)
    for name, r in summary.items():
        print(name, "claim mass by quarter per layer:", [[round(v, 3) for v in row] for row in r["claim_mass_by_quarter"]])
    return summary


if __name__ == "__main__":
    main()
