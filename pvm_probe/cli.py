"""One entry point: `pvm-probe <command>`; `main(argv)` is what the tests call.

Parsing imports nothing heavy (torch and transformers load inside the commands), so `--help` and argument
errors come back at once. Arguments are checked by their argparse types; paths and suite settings before
any model loads. Every expected failure (bad input, a file that cannot be read or written, a checkpoint
that does not fit) is one line on stderr with exit code 2; Ctrl-C is one line with exit code 130, and
SIGTERM stops the same way with exit code 143 (temporary files are removed on the way out, and a report
left unfinished resumes on the next run). Any other exception is a bug: its traceback is always shown.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from . import cli_types as t
from .errors import InputError, one_line
from .registry import PROBES, REMEDIES, SUITES
from .specs import ModelSpec, SuiteSpec, add_fields, from_fields

COMMANDS = {}


def command(name: str, help: str):
    def register(fn):
        COMMANDS[name] = (fn, help)
        return fn

    return register


# ---- shared arguments ---------------------------------------------------------------------------------
def _model_arguments(parser) -> None:
    add_fields(parser, ModelSpec, "model")


def _suite_arguments(parser, scenes_default: str = "64") -> None:
    add_fields(parser, SuiteSpec, f"suite (world / scenes default to {scenes_default} scenes here)")


def _run_arguments(parser, batch: int = 8) -> None:
    group = parser.add_argument_group("run")
    group.add_argument("--pvm", action="append", metavar="ADAPTER", help="adapter directory or shipped name "
                       "(repeatable)")
    group.add_argument("--batch-size", type=t.positive_int, default=batch)
    group.add_argument("--remedy", "--arm", dest="remedy", action="append", type=t.remedy, metavar="NAME[:OPT=V,...]",
                       help=f"a training-free remedy run on the baseline (repeatable), of {', '.join(REMEDIES.names())}; "
                            "official defaults unless options are given, e.g. vcd:alpha=2")
    group.add_argument("--probes", nargs="+", choices=PROBES.names(), metavar="PROBE",
                       help=f"the probes to run, of {', '.join(PROBES.names())} (default: every one that applies)")


def _job(args, default_scenes: int | None = None, **run_options):
    """The job the arguments describe (`default_scenes`: this command's own default for world / scenes)."""
    from .jobs import Job
    from .runner import RunConfig

    suite = from_fields(SuiteSpec, args)
    if suite.scenes is None and "scenes" in SUITES.get(suite.resolved_name(args.base)).options:
        suite.scenes = default_scenes
    if getattr(args, "probes", None):
        run_options.setdefault("probes", list(args.probes))
    return Job(model=from_fields(ModelSpec, args), suite=suite, adapters=args.pvm, remedies=args.remedy or [],
               run=RunConfig(batch_size=args.batch_size, **run_options))


# ---- commands -----------------------------------------------------------------------------------------
@command("report", "the dilution report: metrics.json, figures and a self-contained report.html")
def report(parser):
    _model_arguments(parser)
    _suite_arguments(parser)
    _run_arguments(parser)
    parser.add_argument("--no-controls", action="store_true", help="skip gates-off and swapped-image variants")
    parser.add_argument("--no-tuned-lens", action="store_true", help="skip fitting a tuned lens of the base")
    parser.add_argument("--explore", type=t.non_negative_int, default=2, help="answers in the token explorer")
    parser.add_argument("--out", type=t.output_dir, default="out/report", help="output folder (replaced whole)")

    def run(args):
        from .jobs import report as report_job

        job = _job(args, explore=args.explore)
        job.controls, job.tuned_lens = not args.no_controls, not args.no_tuned_lens
        page = report_job(job, args.out)
        if page:  # process 0 wrote the report (the others only generate their share)
            _warn("report", json.loads((page.parent / "metrics.json").read_text()))
            print(f"wrote {page}")

    return run


@command("paint", "the Blind Painter: claims correct (world) or error rates (scenes, images) by quarter")
def paint(parser):
    _model_arguments(parser)
    _suite_arguments(parser)
    _run_arguments(parser, batch=32)
    parser.add_argument("--gates-off", action="store_true", help="the adapter with alpha = 0 in every block")
    parser.add_argument("--swap-pvm-image", action="store_true",
                        help="control: PVM reads another request's image while the backbone sees the right one")
    parser.add_argument("--compare", action="store_true", help="baseline, adapters and their controls side by side")
    parser.add_argument("--probe", action="store_true", help="run the probes too (image share by quarter)")
    _output_arguments(parser)

    def run(args):
        from .jobs import paint as paint_job
        from .jobs import probe as probe_job

        if args.gates_off and args.swap_pvm_image:
            raise InputError("--gates-off and --swap-pvm-image are two variants: use --compare for both")
        job = _job(args)
        job.adapters = args.pvm or []  # paint the baseline unless an adapter is named
        job.only = None if args.compare else ("gates_off" if args.gates_off else
                                             "swapped_image" if args.swap_pvm_image else "adapter")
        metrics = (probe_job if args.probe else paint_job)(job, args.records)
        _warn("paint", metrics)
        _emit(metrics, args.json, _probe_table if args.probe else _paint_table)

    return run


@command("probe", "the probes during generate: visual attention mass, dilution fits, LogitLens, PVM retrieval")
def probe(parser):
    _model_arguments(parser)
    _suite_arguments(parser, scenes_default="8")
    _run_arguments(parser)
    parser.add_argument("--compare", action="store_true", help="baseline, adapters and their controls side by side")
    _output_arguments(parser)

    def run(args):
        from .jobs import probe as probe_job

        job = _job(args, default_scenes=8, explore=0)
        job.adapters = args.pvm or []
        job.only = None if args.compare else "adapter"
        metrics = probe_job(job, args.records)
        _warn("probe", metrics)
        _emit(metrics, args.json, _probe_table)

    return run


@command("placement", "the paper's insertion strategies (strided, peak attention, max decay) from a measured profile")
def placement(parser):
    _model_arguments(parser)
    _suite_arguments(parser, scenes_default="8")
    parser.add_argument("--blocks", type=t.positive_int, default=2, help="PVM layers to place")
    parser.add_argument("--batch-size", type=t.positive_int, default=8)
    parser.add_argument("--json", type=t.output_file, help="write the result here ('-' for stdout)")

    def run(args):
        from .jobs import measure_profile

        args.pvm, args.remedy = [], []
        _emit(measure_profile(_job(args, default_scenes=8, explore=0), args.blocks), args.json)

    return run


@command("info", "what an adapter is: base, PVM layers and trained gates, parameters, provenance")
def info(parser):
    parser.add_argument("adapter", help="adapter directory or shipped adapter name")
    parser.add_argument("--json", action="store_true", help="the raw pvm_config.json (validated) and the alphas")

    def run(args):
        from .checkpoints import describe_adapter

        described = describe_adapter(args.adapter)
        print(json.dumps(described["raw"], indent=2) if args.json else described["text"])

    return run


@command("train-pvm", "train PVM (or a control) on a frozen base: Stage I (SFT) or Stage II (GRPO)")
def train_pvm(parser):
    from .train.cli import add_arguments

    add_arguments(parser)

    def run(args):
        from .train.cli import train_from_arguments

        train_from_arguments(args)

    return run


@command("train-base", "retrain the embedded painter-world baseline from scratch (CPU)")
def train_base(parser):
    parser.add_argument("--out", type=t.output_dir, required=True)
    parser.add_argument("--steps", type=t.positive_int, help="language-model steps (default: the shipped recipe)")
    parser.add_argument("--seed", type=t.non_negative_int, default=0)
    parser.add_argument("--attention-window", type=t.positive_int,
                        help="the text decoder sees only its last N tokens (the shipped baseline: 128)")

    def run(args):
        from .suites.world.train_base import train_base as train

        kwargs = {"seed": args.seed, "window": args.attention_window} | ({"steps": args.steps} if args.steps else {})
        print(json.dumps(train(args.out, **kwargs), indent=2))

    return run


@command("score", "CHAIR of captions generated elsewhere ({image_id, caption} JSON lines) against a COCO directory")
def score(parser):
    parser.add_argument("captions", type=t.readable_file,
                        help="JSON lines (or a JSON list) of {image_id, caption}; '-' reads standard input")
    parser.add_argument("--coco", type=t.existing_dir, required=True,
                        help="COCO directory: annotations/instances_<split>.json and captions_<split>.json")
    parser.add_argument("--split", help="the annotations' split, e.g. val2014 (default: the only one there)")
    parser.add_argument("--json", type=t.output_file, help="write the metrics and per-caption results here ('-' for stdout)")

    def run(args):
        from .benchmarks.score import score_captions, table

        _emit(score_captions(args.captions, args.coco, args.split), args.json, table)

    return run


@command("bench", "run a benchmark from the repository's analyses/ folder")
def bench(parser):
    parser.add_argument("name", choices=["overhead", "probes", "train", "fit", "arms"])
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark (e.g. --smoke)")

    def run(args):
        import runpy

        script = Path(__file__).resolve().parent.parent / "analyses" / f"bench_{args.name}.py"
        if not script.is_file():
            raise FileNotFoundError(f"{script} not found: benchmarks run from a checkout of the repository")
        sys.argv = [str(script), *args.rest]
        runpy.run_path(str(script), run_name="__main__")

    return run


# ---- output -------------------------------------------------------------------------------------------
def _output_arguments(parser) -> None:
    parser.add_argument("--json", type=t.output_file, help="write the metrics here ('-' for stdout)")
    parser.add_argument("--records", type=t.output_dir,
                        help="keep the per-request records in this folder (a rerun resumes there)")


def _warn(command: str, metrics: dict) -> None:
    """The report's warnings (e.g. no claim parsed), one line each on stderr."""
    if metrics is None:  # not process 0 under `accelerate launch`
        return
    for warning in metrics.get("warnings", []):
        print(f"pvm-probe {command}: warning: {warning}", file=sys.stderr)


def _emit(result: dict, destination: str | None, show=None) -> None:
    """'-': the whole result as JSON on stdout; otherwise print `show(result)` and write the file if asked."""
    from .io import atomic_write_json

    if result is None:  # not process 0 under `accelerate launch`: process 0 prints the whole result
        return
    if destination == "-":
        print(json.dumps(result, indent=2))
        return
    print(show(result) if show else json.dumps(result, indent=2))
    if destination:
        atomic_write_json(destination, result)


def _cells(values, scale: float = 100.0, digits: int = 1) -> str:
    return "".join(f"{'-' if v is None else f'{scale * v:.{digits}f}':>8}" for v in values)


def _paint_table(metrics: dict) -> str:
    name = metrics["metric"]["name"]
    kinds = [k for k in metrics["metric"]["kinds"] if len(metrics["metric"]["kinds"]) > 1]
    lines = [f"{metrics['suite']} suite, {name} (%) by quarter of the answer",
             f"{'variant':<34}{'all':>8}" + "".join(f"{q:>8}" for q in ("Q1", "Q2", "Q3", "Q4")) + "  answers, tokens"]
    for variant, m in metrics["variants"].items():
        lines.append(f"{variant[:33]:<34}{_cells([m['primary']])}{_cells(m['primary_by_quarter'])}"
                     f"  {m['requests']}, {m['answer_tokens_mean']:.0f}")
        for kind in kinds:
            table = m["claims_by_quarter"][kind]
            rate = table["correct_rate"] if metrics["metric"]["higher_is_better"] else table["error_rate"]
            lines.append(f"{'  ' + kind + ' claims':<34}{'':>8}{_cells(rate)}  n={sum(table['n'])}")
    return "\n".join(lines)


def _probe_table(metrics: dict) -> str:
    from .records import mean_of

    lines = [_paint_table(metrics), "", "image share at claim tokens by quarter (mean over layers); "
             "dilution plateau and break (mean over layers); LogitLens convergence layer"]
    for variant, m in metrics["variants"].items():
        if "claim_mass_by_quarter" not in m:
            continue
        by_q = [mean_of([row[q] for row in m["claim_mass_by_quarter"]]) for q in range(4)]
        dilution = m.get("dilution", {})
        lines.append(f"{variant[:33]:<34}{'':>8}{_cells(by_q, 1.0, 3)}  plateau "
                     f"{mean_of(dilution.get('plateau', [])) or 0:.4f} break t={mean_of(dilution.get('break_t', [])) or 0:.0f}"
                     f"  convergence {m['lens']['convergence_layer_mean'] or 0:.2f}")
    return "\n".join(lines)


# ---- entry point --------------------------------------------------------------------------------------
class Terminated(BaseException):
    """SIGTERM, raised where the program is, so `finally` blocks and temporary-file cleanup run."""


def _on_sigterm(signum, frame):
    raise Terminated


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (`pvm-probe paint: error: argument --scenes: ...`), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="pvm-probe", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, (setup, help_text) in COMMANDS.items():
        child = sub.add_parser(name, help=help_text, description=help_text)
        child.set_defaults(run=setup(child))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help (0) or an argument error (2, already printed by argparse)
        return int(exit_.code or 0)
    args.argv = argv
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        args.run(args)
    except KeyboardInterrupt:
        print(f"pvm-probe {args.command}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"pvm-probe {args.command}: stopped by SIGTERM", file=sys.stderr)
        return 143
    except (InputError, OSError) as err:  # bad input of any kind; files that cannot be read or written
        print(f"pvm-probe {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
