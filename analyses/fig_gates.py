"""PVM gates and retrieval: injection norm relative to the residual, attention entropy and weight on the
claimed cell by quarter, and where PVM looks at one late claim.

    python analyses/fig_gates.py [--smoke] [--scenes N]
writes figures/gates.{png,svg}, figures/retrieval_overlay.{png,svg} and figures/gates.json.
"""

from __future__ import annotations

from pathlib import Path

from figure_common import probe_metrics, save_figure, script_arguments

from pvm_probe.io import atomic_write_json
from pvm_probe.plots.report import pvm_gates
from pvm_probe.probes.builtin.pvm import retrieval_figure
from pvm_probe.records import RECORDS, read_records


def main(argv=None) -> dict:
    args = script_arguments(__doc__, argv)
    metrics = probe_metrics(args, ["pvm-stage2"], name="gates")
    records = read_records(Path(args.out) / "records" / f"gates-{args.scenes}" / RECORDS)
    save_figure(pvm_gates(metrics).static(), args.out, "gates")
    save_figure(retrieval_figure(records).static(), args.out, "retrieval_overlay")
    summary = {n: m["pvm"] for n, m in metrics["variants"].items() if "pvm" in m}
    atomic_write_json(f"{args.out}/gates.json", summary)
    for name, pvm in summary.items():
        print(name, "weight on the claimed cell by quarter, per block:", pvm["on_claimed_region_by_quarter"])
    return summary


if __name__ == "__main__":
    main()
