"""What the figure scripts share: arguments, running the probes on base + adapter, saving PNG + SVG."""

from __future__ import annotations

import argparse
from pathlib import Path

from pvm_probe.checkpoints import SHIPPED_ADAPTERS, load_pvm
from pvm_probe.io import atomic_write
from pvm_probe.loading import load_base
from pvm_probe.report.collect import probe_model
from pvm_probe.world.paint import DEFAULT_SHORT

# The two Blind Painter settings of the controls and placement figures: said units per step (None: the
# default long setting, where the image leaves the baseline's attention window mid-answer).
PAINT_SETTINGS = {"long (default)": None, "short (image always in the window)": DEFAULT_SHORT}


def script_arguments(doc: str, argv, default_adapter: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--adapter", default=default_adapter)
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default="figures")
    args = parser.parse_args(argv)
    if args.smoke:
        args.scenes = 2
    return args


def probe_models(args) -> dict:
    """Probe results for the shipped baseline and (when it exists) the adapter."""
    model, processor = load_base()
    results = {"baseline": probe_model(model, processor, None, args.scenes)}
    if (SHIPPED_ADAPTERS / args.adapter).is_dir() or Path(args.adapter).is_dir():
        with load_pvm(model, args.adapter) as handle:
            results[args.adapter] = probe_model(model, processor, handle, args.scenes)
    return results


def save_figure(fig, out, stem: str) -> None:
    for ext in ("png", "svg"):
        atomic_write(Path(out) / f"{stem}.{ext}", lambda tmp, ext=ext: fig.savefig(tmp, format=ext, dpi=120))
