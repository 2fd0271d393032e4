"""Training curves of the shipped baseline and adapters, from the logs saved beside them.

    python analyses/fig_training.py [--smoke]
writes figures/training.{png,svg}.
"""

from __future__ import annotations

import argparse
import json

from figure_common import save_figure

from pvm_probe.checkpoints import SHIPPED_ADAPTERS
from pvm_probe.loading import BASELINE_DIR
from pvm_probe.plots.report import training_curves


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="same work: it only reads logs")
    parser.add_argument("--out", help="default: figures/ (a --smoke run: out/smoke/)")
    args = parser.parse_args(argv)
    args.out = args.out or ("out/smoke" if args.smoke else "figures")
    logs = {"baseline (last stage)": json.loads((BASELINE_DIR / "log_history.json").read_text())}
    for path in sorted(SHIPPED_ADAPTERS.glob("*/train_log.json")):
        logs[path.parent.name] = json.loads(path.read_text())
    save_figure(training_curves(logs).static(), args.out, "training")
    return {name: len(log) for name, log in logs.items()}


if __name__ == "__main__":
    main()
