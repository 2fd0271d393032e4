"""`pvm-probe train-pvm`: arguments -> a `TrainJob` -> `pvm_probe.train.run.train`.

Building the parser imports nothing heavy (argparse, `pvm_probe.cli_types` and this package's dataclass module,
whose fields are the adapter and data flags). Numbers are checked by their argparse types; a flag of the other stage
(e.g. --reward with --stage 1) is an InputError; everything else is checked by `plan.make_plan` before any
weights load.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import cli_types as t
from ..errors import InputError
from ..specs import add_fields, from_fields
from .config import (
    REWARD_NAMES,
    AdapterSpec,
    DataSpec,
    RewardSpec,
    StageIConfig,
    StageIIConfig,
    TrainJob,
    default_weight,
)

STAGE1_ONLY = ("loss_on", "max_length", "eval_split", "eval_every", "backbone_visual_dropout", "grad_accum")
STAGE2_ONLY = ("reward", "num_generations", "max_completion_length", "temperature")


# ---- argparse types ---------------------------------------------------------------------------------------
def group_size(text: str) -> int:
    value = t.positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"a GRPO group needs at least 2 completions, got {text!r}")
    return value


def reward(text: str):
    """NAME[=WEIGHT]: a shipped reward or module:function; the weight defaults to 0.1 (format) / 0.9."""
    name, _, weight = text.partition("=")
    name = name.strip()
    if ":" not in name and name not in REWARD_NAMES:
        raise argparse.ArgumentTypeError(f"unknown reward {name!r}; known: {', '.join(REWARD_NAMES)}, "
                                         "or module:function")
    return RewardSpec(name, t.finite_float(weight) if weight else default_weight(name))


# ---- the parser -------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=t.output_dir, required=True, help="adapter folder (written whole at the end)")
    parser.add_argument("--overwrite", action="store_true", help="replace an adapter already at --out")
    parser.add_argument("--stage", type=int, choices=[1, 2], default=1, help="1: SFT (default), 2: GRPO")
    model = parser.add_argument_group("model")
    model.add_argument("--base", type=t.existing_dir, help="local checkpoint directory (default: the embedded base)")
    model.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    model.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="float32",
                       help="weights as loaded (default float32: fp32 master weights; add --bf16 for bf16 compute)")
    model.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    add_fields(parser, AdapterSpec, "adapter")
    add_fields(parser, DataSpec, "data")
    parser.add_argument("--eval-every", type=t.positive_int, help="stage 1: eval loss every N steps too (default: end)")
    _optim_arguments(parser)
    stage2 = parser.add_argument_group("stage 2 (GRPO)")
    stage2.add_argument("--reward", type=reward, action="append", metavar="NAME[=WEIGHT]",
                        help=f"repeatable: {', '.join(REWARD_NAMES)} or module:function; total = sum of weight x "
                             "reward (default weight 0.1 for format, 0.9 otherwise)")
    stage2.add_argument("--num-generations", type=group_size, help="completions per prompt (default 8)")
    stage2.add_argument("--max-completion-length", type=t.positive_int,
                        help="answer budget in tokens (default: the world's longest answer, else 1024)")
    stage2.add_argument("--temperature", type=t.positive_float, help="sampling temperature (default 1)")


def _optim_arguments(parser) -> None:
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--steps", type=t.positive_int, help="optimiser steps (default 300 / 50)")
    optim.add_argument("--batch-size", type=t.positive_int,
                       help="per process: examples (stage 1) or completions (stage 2); default 16")
    optim.add_argument("--grad-accum", type=t.positive_int, help="stage 1 gradient accumulation (default 1)")
    optim.add_argument("--lr", type=t.positive_float, help="default 1e-4 (stage 1), 1e-6 (stage 2)")
    optim.add_argument("--warmup", type=t.non_negative_int, help="warm-up steps (default 20 / 0)")
    optim.add_argument("--seed", type=t.non_negative_int, default=0)
    optim.add_argument("--log-every", type=t.positive_int, help="log every N steps (default 10 / 5)")
    optim.add_argument("--train-backbone", action="store_true", help="also train the language model (not the vision)")
    optim.add_argument("--backbone-visual-dropout", type=t.probability, metavar="P",
                       help="stage 1: in this share of requests only PVM sees the image")
    optim.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations (memory)")
    optim.add_argument("--bf16", action="store_true", help="bf16 autocast (a GPU, or the accelerate configs)")


# ---- arguments -> job -------------------------------------------------------------------------------------
def job_from_arguments(args):
    """The TrainJob the arguments describe; a flag of the other stage is an InputError."""

    other = STAGE2_ONLY if args.stage == 1 else STAGE1_ONLY
    given = [name for name in other if getattr(args, name) is not None]
    if given:
        raise InputError(f"--{given[0].replace('_', '-')} is a Stage {2 if args.stage == 1 else 1} option "
                         f"(this is --stage {args.stage})")
    adapter, data = from_fields(AdapterSpec, args), from_fields(DataSpec, args)
    common = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "warmup_steps": args.warmup,
              "seed": args.seed, "logging_steps": args.log_every}
    if args.stage == 1:
        optim = StageIConfig(**_set(common, grad_accum=args.grad_accum, eval_steps=args.eval_every,
                                    backbone_visual_dropout=args.backbone_visual_dropout))
    else:
        optim = StageIIConfig(**_set(common, num_generations=args.num_generations, temperature=args.temperature,
                                     max_completion_length=args.max_completion_length,
                                     rewards=tuple(args.reward or ())))
    optim.train_backbone, optim.gradient_checkpointing, optim.bf16 = (
        args.train_backbone, args.gradient_checkpointing, args.bf16)
    return TrainJob(out=args.out, optim=optim, base=args.base, adapter=adapter, data=data, device=args.device,
                    dtype=args.dtype, attn=args.attn)


def _set(values: dict, **more) -> dict:
    """The values that were given (None: the config's default)."""
    return {k: v for k, v in {**values, **more}.items() if v is not None}


def train_from_arguments(args) -> None:
    from .run import _main_process, train
    from .summary import summary

    if not args.overwrite:
        refuse_existing_adapter(Path(args.out))
    result = train(job_from_arguments(args))
    if _main_process():
        print(summary(result))


def refuse_existing_adapter(out: Path) -> None:
    """An InputError when `out` already holds an adapter (naming the adapters beside it that started from it
    with --init): replacing one takes --overwrite."""
    from ..checkpoints import CONFIG_FILE
    from ..errors import InputError

    if not (out / CONFIG_FILE).is_file():
        return
    here = out.resolve()
    children = [p.name for p in sorted(here.parent.iterdir()) if p != here and _init_of(p) == here]
    named = f" that {', '.join(children)} started from (--init)" if children else ""
    raise InputError(f"--out {out} already holds an adapter{named}: add --overwrite to replace it")


def _init_of(adapter: Path) -> Path | None:
    """The resolved --init adapter recorded in an adapter's provenance, if any."""
    from ..checkpoints import CONFIG_FILE

    try:
        init = json.loads((adapter / CONFIG_FILE).read_text())["provenance"]["init"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    init = init.get("adapter") if isinstance(init, dict) else init
    return Path(init).resolve() if isinstance(init, str) else None
