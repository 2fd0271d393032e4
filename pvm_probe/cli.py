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


@command("report", "the dilution report on the embedded default")
def report(parser: argparse.ArgumentParser):
    parser.add_argument("--out", default="out/report", help="output directory")

    def run(args):
        from .demo import demo_report

        path = demo_report(Path(args.out))
        print(f"wrote {path}")

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pvm-probe", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (setup, help_text) in COMMANDS.items():
        child = sub.add_parser(name, help=help_text, description=help_text)
        child.set_defaults(run=setup(child))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"pvm-probe {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
