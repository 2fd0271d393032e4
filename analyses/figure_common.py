"""What the figure scripts share: arguments, running the jobs with their records kept (and resumed) under
`<out>/records/`, building metrics from them, saving PNG + SVG."""

from __future__ import annotations

import argparse
from pathlib import Path

from pvm_probe.io import atomic_write
from pvm_probe.jobs import Job, SuiteSpec, paint, probe
from pvm_probe.runner import RunConfig
from pvm_probe.suites.world import DEFAULT_SHORT

# The two Blind Painter settings of the controls and placement figures: said units per step (None: the
# default long setting, where the image leaves the baseline's attention window mid-answer).
PAINT_SETTINGS = {"long (default)": None, "short (image always in the window)": DEFAULT_SHORT}


def script_arguments(doc: str, argv, scenes: int = 8, extra=None) -> argparse.Namespace:
    """--scenes, --smoke, --out, and whatever `extra(parser)` adds."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=scenes)
    parser.add_argument("--smoke", action="store_true", help="2-4 scenes: checks the script runs")
    parser.add_argument("--out", help="default: figures/ (a --smoke run: out/smoke/)")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    args.out = args.out or ("out/smoke" if args.smoke else "figures")
    if args.smoke:
        args.scenes = 2
    return args


def world_job(adapters: list[str], scenes: int, length: int | None = None, controls: bool = True) -> Job:
    return Job(suite=SuiteSpec(scenes=scenes, length=length), adapters=adapters, controls=controls,
               run=RunConfig(batch_size=32, progress=True))


def probe_metrics(args, adapters: list[str], name: str = "probes") -> dict:
    """Probe metrics of the embedded baseline and `adapters` on held-out world scenes (records kept)."""
    return probe(world_job(adapters, args.scenes), Path(args.out) / "records" / f"{name}-{args.scenes}")


def paint_metrics(args, adapters: list[str], length: int | None, name: str) -> dict:
    return paint(world_job(adapters, args.scenes, length), Path(args.out) / "records" / f"{name}-{args.scenes}")


def save_figure(fig, out, stem: str) -> None:
    for ext in ("png", "svg"):
        atomic_write(Path(out) / f"{stem}.{ext}", lambda tmp, ext=ext: fig.savefig(tmp, format=ext, dpi=120,
                                                                                   bbox_inches="tight"))
