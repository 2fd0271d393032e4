"""Records -> the dilution report: `metrics.json`, figures (PNG + SVG), `report.html`. No model runs here.

`build_report(directory)` reads `run.json` and `records.jsonl` from a run directory and writes the report
beside them. `report_run(...)` is the whole job behind `pvm-probe report`: the runner fills a hidden
working directory beside the output (kept across interruptions, so a rerun resumes), the report is built
there, and the directory then replaces the output folder whole: readers see the old complete report or the
new complete one, never a mixture.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib.pyplot as plt

from ..errors import InputError
from ..io import atomic_write, atomic_write_json, atomic_write_text, swap_in, unwritable
from ..plots.chart import png
from ..records import RECORDS, RUN, read_records
from ..registry import SUITES
from .benchmarks import BENCHMARK_FILE
from .figures import report_figures
from .metrics import build_metrics
from .page import page


def metrics_of(directory) -> tuple[dict, list[dict], dict]:
    """(metrics, records, training curves) of a run directory, from its run.json and records.jsonl alone (the
    adapters' folders are not read again: run.json keeps what the report needs of them)."""
    directory = Path(directory)
    run = json.loads((directory / RUN).read_text())
    records = read_records(directory / RECORDS)
    if not records:
        raise InputError(f"{directory / RECORDS} holds no records: nothing to report")
    suite = SUITES.get(run["suite"]["suite"])
    benchmark = directory / BENCHMARK_FILE
    curves = {name: spec["about"]["curves"] for name, spec in run["variants"].items()
              if spec.get("control") is None and (spec.get("about") or {}).get("curves")}
    metrics = build_metrics(run, records, list(suite.claim_kinds), suite.higher_is_better, suite.positional)
    if benchmark.is_file():  # the suite's own benchmark metrics (benchmarks.write_benchmarks)
        metrics.update(json.loads(benchmark.read_text()))
    return metrics, records, curves


def build_report(directory) -> Path:
    """Write metrics.json, the figures and report.html into a run directory; returns report.html."""
    directory = Path(directory)
    metrics, records, logs = metrics_of(directory)
    figures = report_figures(metrics, records, logs)
    pngs = {}
    for figure in figures:  # each drawn once: the PNG file is also the page's fallback image
        pngs[figure.name] = png(figure.figure)
        atomic_write(directory / f"{figure.name}.png", lambda tmp, data=pngs[figure.name]: Path(tmp).write_bytes(data))
        atomic_write(directory / f"{figure.name}.svg", lambda tmp, fig=figure.figure: fig.savefig(
            tmp, format="svg", bbox_inches="tight"))
    atomic_write_json(directory / "metrics.json", metrics)
    path = atomic_write_text(directory / "report.html", page(metrics, figures, records, pngs))
    plt.close("all")  # a plug-in probe's figures may be pyplot's
    return path


def working_dir(out: Path) -> Path:
    """The hidden sibling a report is built in (and resumed from) before it replaces `out`."""
    return out.with_name(f".{out.name}.partial")


def check_output_dir(out) -> Path:
    """Fail before any work if `out` cannot become a report folder: a file, an unwritable place, or a folder
    with other contents (the new report replaces the folder whole, so it must be a report or empty)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is an existing file; a report is a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / RUN).is_file():
        raise InputError(f"--out {out} holds other files: a report replaces its folder whole, so give a new or "
                         "empty folder (or an earlier report)")
    problem = unwritable(out)
    if problem:
        raise InputError(f"--out {out}: {problem}")
    return out


def seed_from_previous(out: Path, work: Path) -> None:
    """Start the working directory from the records of a finished report at `out` (the runner keeps the ones
    that match this run and refuses the rest), so adding one adapter does not rerun the others."""
    if work.exists() or not (out / RECORDS).is_file() or not (out / RUN).is_file():
        return
    work.mkdir(parents=True)
    for name in (RUN, RECORDS):
        shutil.copy2(out / name, work / name)
    if (out / "tuned_lens").is_dir():  # the base's lens: the records were read through it
        shutil.copytree(out / "tuned_lens", work / "tuned_lens")


def publish(work: Path, out: Path) -> Path:
    """Move the finished working directory onto `out` (replacing an older report whole)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    swap_in(work, out)
    return out / "report.html"
