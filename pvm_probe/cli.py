"""One entry point: `pvm-probe <command>`; `main(argv)` is what the tests call."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COMMANDS = {}


def command(name: str, help: str):
    def register(fn):
        COMMANDS[name] = (fn, help)
        return fn

    return register


@command("info", "what an adapter checkpoint is: base, PVM layers, parameter count, provenance")
def info(parser: argparse.ArgumentParser):
    parser.add_argument("adapter", help="adapter directory or shipped adapter name")

    def run(args):
        from .checkpoints import read_adapter_meta, resolve_adapter

        meta = read_adapter_meta(args.adapter)
        pvm, base = meta["pvm"], meta["base"]
        print(f"adapter      {resolve_adapter(args.adapter)}")
        print(f"block        {pvm['block']} (visual source: {pvm['visual_source']})")
        print(f"layers       {pvm['layers']}  latent {pvm['latent_dim']}  heads {pvm['num_heads']}/"
              f"{pvm['num_kv_heads']} x {pvm['head_dim']}  ffn {pvm['ffn_dim']}")
        print(f"parameters   {meta['num_parameters']:,}")
        print(f"base         {base['architecture']}  hidden {base['hidden_size']}  layers {base['num_layers']}"
              f"  vocab {base['vocab_size']}")
        print(f"provenance   {json.dumps(meta.get('provenance', {}))}")

    return run


@command("report", "the dilution report: figures, metrics.json and a self-contained report.html")
def report(parser: argparse.ArgumentParser):
    parser.add_argument("--base", help="base model directory (default: the shipped baseline)")
    parser.add_argument("--pvm", action="append", help="adapter (repeatable; default: every shipped adapter)")
    parser.add_argument("--out", default="out/report", help="output directory")
    parser.add_argument("--scenes", type=int, default=64, help="held-out scenes for the Blind Painter")
    parser.add_argument("--probe-scenes", type=int, default=8, help="scenes generated under the probes")

    def run(args):
        from .report import build_report

        path = build_report(args.out, base=args.base, adapters=args.pvm, scenes=args.scenes,
                            probe_scenes=args.probe_scenes)
        print(f"wrote {path}")

    return run


@command("paint", "the Blind Painter: accuracy (world) or hallucination rates (scenes) by quarter of the answer")
def paint(parser: argparse.ArgumentParser):
    _model_arguments(parser)
    parser.add_argument("--suite", choices=["world", "scenes"], default="world",
                        help="world: the painter world (exact scoring); scenes: generated scenes for any local "
                             "Qwen3-VL / Qwen2.5-VL / LLaVA checkpoint (needs --base)")
    parser.add_argument("--scenes", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="held-out scene set (seeds >= 1,000,000)")
    parser.add_argument("--length", type=int, default=None, help="filler units per step (default: the long setting)")
    parser.add_argument("--filler", default=None, help="said | count (default: said, the decoy stretches)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--swap-pvm-image", action="store_true",
                        help="control: PVM reads another scene's image while the backbone sees the right one")
    parser.add_argument("--gates-off", action="store_true", help="ablation: alpha = 0 in every PVM layer")
    parser.add_argument("--forced", action="store_true",
                        help="teacher-forced text, model writes the claims (tests lengths it would not write)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="scenes: answer budget (default 1024)")
    parser.add_argument("--probe", action="store_true", help="scenes: image share of attention by quarter and layer")
    parser.add_argument("--device", default=None, help="scenes: cuda / cpu (default: cuda when available)")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default=None,
                        help="scenes: model dtype (default auto: bfloat16 on cuda, float32 on cpu)")
    parser.add_argument("--json", default=None, help="write the result here ('-' for stdout)")

    def run(args):
        _check_suite_flags(args)
        if args.suite == "world":
            from .painter import run_paint

            _emit(run_paint(args), args.json)
            return
        from .painter.scenes import format_table, run_scenes

        args.max_new_tokens = args.max_new_tokens or 1024
        args.dtype = args.dtype or "auto"
        _emit(run_scenes(args), args.json, show=format_table)

    return run


_SUITE_ONLY = {"world": ("length", "filler", "swap_pvm_image", "forced"),
               "scenes": ("max_new_tokens", "probe", "device", "dtype")}


def _check_suite_flags(args) -> None:
    """Flags of the other suite are errors, not silently ignored."""
    other = "world" if args.suite == "scenes" else "scenes"
    given = [name for name in _SUITE_ONLY[other] if getattr(args, name) not in (None, False)]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ValueError(f"{flags} only apply to --suite {other}")


@command("probe", "run the probes during generate on held-out scenes: mass, LogitLens, dilution fits, PVM retrieval")
def probe(parser: argparse.ArgumentParser):
    _model_arguments(parser)
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--json", default=None, help="write all results here ('-' for stdout)")

    def run(args):
        from .checkpoints import load_pvm
        from .loading import load_base
        from .report.collect import probe_model

        model, processor = load_base(args.base)
        handle = load_pvm(model, args.pvm) if args.pvm else None
        result = probe_model(model, processor, handle, args.scenes)
        _emit(result, args.json, show=_probe_headline)

    return run


@command("placement", "the paper's insertion strategies (strided, peak attention, max decay) from a base's measured profile")
def placement(parser: argparse.ArgumentParser):
    parser.add_argument("--base", help="base model directory (default: the shipped baseline)")
    parser.add_argument("--blocks", type=int, default=2, help="PVM layers to place")
    parser.add_argument("--suite", choices=["world", "scenes"], default=None,
                        help="where to measure (default: world for the shipped baseline, scenes otherwise)")
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--json", default=None, help="write the result here ('-' for stdout)")

    def run(args):
        from .placement import measure_profile

        result = measure_profile(args.base, args.blocks, args.suite, args.scenes)
        _emit(result, args.json)

    return run


@command("bench", "run a benchmark script from the repository's analyses/ folder (overhead, probes, train)")
def bench(parser: argparse.ArgumentParser):
    parser.add_argument("name", choices=["overhead", "probes", "train"])
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark (e.g. --smoke)")

    def run(args):
        import runpy

        script = Path(__file__).resolve().parent.parent / "analyses" / f"bench_{args.name}.py"
        if not script.is_file():
            raise FileNotFoundError(f"{script} not found: benchmarks run from a checkout of the repository")
        sys.argv = [str(script), *args.rest]
        runpy.run_path(str(script), run_name="__main__")

    return run


@command("train-base", "train the tiny Qwen3-VL baseline on the painter world from scratch (CPU)")
def train_base(parser: argparse.ArgumentParser):
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=None, help="language-model steps (default: the shipped recipe)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--attention-window", type=int, default=None,
                        help="text decoder sees only its last N tokens (the shipped baseline: 128)")

    def run(args):
        from .world.train_base import train_base as train

        kwargs = {"seed": args.seed, "window": args.attention_window} | ({"steps": args.steps} if args.steps else {})
        info = train(args.out, **kwargs)
        print(json.dumps(info, indent=2))

    return run


def _summary(result: dict) -> str:
    """The result as JSON without its per-claim and per-scene rows."""
    return json.dumps({k: v for k, v in result.items() if k not in ("claims", "scenes")}, indent=2)


def _probe_headline(result: dict) -> str:
    return json.dumps({"claim_mass_by_quarter": result["claim_mass_by_quarter"],
                       "dilution_plateau": result["dilution"]["plateau"],
                       "dilution_break_t": result["dilution"]["break_t"],
                       "convergence_layer_mean": result["convergence_layer_mean"]}, indent=2)


def _emit(result: dict, destination: str | None, show=_summary) -> None:
    """`-`: the whole result as JSON on stdout; otherwise print `show(result)` and write the file if asked."""
    from .io import atomic_write_json

    if destination == "-":
        print(json.dumps(result, indent=2))
        return
    print(show(result))
    if destination:
        atomic_write_json(destination, result)


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", help="base model directory (default: the shipped baseline)")
    parser.add_argument("--pvm", help="adapter directory or shipped name (pvm-stage1, pvm-stage2, mlp-control, ...)")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


@command("train-pvm", "train PVM (or a control) on a frozen base: Stage I (SFT) or Stage II (GRPO)")
def train_pvm(parser: argparse.ArgumentParser):
    parser.add_argument("--base", help="base model directory (default: the shipped baseline)")
    parser.add_argument("--out", required=True, help="adapter output directory")
    parser.add_argument("--stage", type=int, choices=[1, 2], default=1)
    parser.add_argument("--init", help="stage 2: adapter to start from (directory or shipped name)")
    parser.add_argument("--preset", help="PVM preset (qwen3-vl-8b, qwen3-vl-4b); default: scaled to the base")
    parser.add_argument("--layers", type=_ints, help="decoder layers, e.g. 2,3")
    parser.add_argument("--placement", choices=["strided", "peak", "decay"], default=None,
                        help="choose the layers by the paper's strategy from the base's measured attention profile")
    parser.add_argument("--blocks", type=int, default=2, help="PVM layers when --layers is not given")
    parser.add_argument("--block", choices=["pvm", "mlp"], default="pvm", help="mlp = iso-parameter control")
    parser.add_argument("--visual-source", default="embeddings", help="embeddings | hidden:<layer>")
    parser.add_argument("--alpha-init", type=float, default=None,
                        help="initial gate alpha (default 0: the attached adapter leaves outputs unchanged)")
    parser.add_argument("--data", help="SFT data file (.json/.jsonl/.parquet); default: the painter world")
    parser.add_argument("--examples", type=int, default=None, help="world examples (default: steps x batch)")
    parser.add_argument("--max-gap", type=int, default=None,
                        help="world answers with 0..N filler tokens per step (default: the base's own range)")
    parser.add_argument("--fillers", help="world filler kinds, e.g. said or said,count (default: the base's own)")
    parser.add_argument("--loss-on", choices=["claims", "answer"], default=None,
                        help="stage 1 loss: the world's grounded claims (world default) or every answer token (--data)")
    parser.add_argument("--backbone-visual-dropout", type=float, default=0.0, metavar="P",
                        help="stage 1: in this share of training requests only PVM sees the image")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--lr", type=float, default=None, help="default 1e-4 (stage 1), 1e-6 (stage 2)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=10, help="log the loss every N steps")
    parser.add_argument("--num-generations", type=int, default=8, help="stage 2 group size")
    parser.add_argument("--train-backbone", action="store_true", help="also train the language model")

    def run(args):
        from .train.run import train_pvm_command

        train_pvm_command(args)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pvm-probe", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (setup, help_text) in COMMANDS.items():
        child = sub.add_parser(name, help=help_text, description=help_text)
        child.set_defaults(run=setup(child))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"pvm-probe {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
