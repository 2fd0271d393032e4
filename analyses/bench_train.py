"""Stage I cost: PVM-only training against full fine-tuning of the language model, same run.

Each mode runs in its own subprocess (so peak memory is that mode's own, read from ru_maxrss) on the
same base and the same painter-world batches through `transformers.Trainer`; the first steps are
warm-up and not timed. Prints a table, writes JSON, last line `pvm_only_speedup=<ratio>`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from pvm_probe.io import atomic_write_json, describe_machine

MODES = ("pvm", "full")


def child(mode: str, steps: int, warmup: int, batch_size: int, base: str | None, threads: int) -> dict:
    import tempfile

    import torch
    from transformers import Trainer, TrainerCallback

    from pvm_probe import PVMConfig, attach_pvm
    from pvm_probe.loading import load_base
    from pvm_probe.train.collate import SFTCollator
    from pvm_probe.train.config import StageIConfig
    from pvm_probe.train.sft import answer_token_loss, set_trainable, training_arguments
    from pvm_probe.train.world_data import WorldSFTDataset

    torch.set_num_threads(threads)
    model, processor = load_base(base)
    cfg_text = model.config.get_text_config()
    n_blocks = min(2, cfg_text.num_hidden_layers - 1)
    handle = attach_pvm(model, PVMConfig.for_model(cfg_text.hidden_size, cfg_text.num_hidden_layers, n_blocks))
    trainable = set_trainable(model, handle, train_backbone=mode == "full")
    model.train()
    collator = SFTCollator(processor)
    dataset = WorldSFTDataset(processor, (steps + warmup) * batch_size, gaps=(16,), fillers=("said",))

    class Clock(TrainerCallback):
        times, tokens = [], []

        def on_step_begin(self, *a, **k):
            self.start = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter() - self.start)

    clock = Clock()
    cfg = StageIConfig(steps=steps + warmup, batch_size=batch_size, warmup_steps=0, logging_steps=10_000)
    with tempfile.TemporaryDirectory(prefix="pvm_probe_bench_") as scratch:
        args = training_arguments(cfg, scratch)
        args.disable_tqdm = True
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                          compute_loss_func=answer_token_loss, callbacks=[clock])
        trainer.train()
    tokens_per_batch = collator([dataset[i] for i in range(batch_size)])["attention_mask"].sum().item()
    timed = clock.times[warmup:]
    return {"mode": mode, "trainable_parameters": trainable, "steps_timed": len(timed),
            "seconds_per_step": sum(timed) / len(timed), "tokens_per_s": tokens_per_batch * len(timed) / sum(timed),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--base", default=None, help="base model dir (default: shipped baseline)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", help="default: figures/bench_train.json (a --smoke run: out/bench/)")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.json = args.json or ("out/bench" if args.smoke else "figures") + "/bench_train.json"
    if args.smoke:
        args.steps, args.warmup, args.batch_size = 3, 1, 4
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.warmup, args.batch_size, args.base, args.threads)))
        return {}
    rows = {}
    for mode in MODES:
        cmd = [sys.executable, __file__, "--child", mode, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--batch-size", str(args.batch_size), "--threads", str(args.threads)] + (["--base", args.base] if args.base else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows[mode] = json.loads(out.strip().splitlines()[-1])
    for row in rows.values():
        print(f"{row['mode']:>5}: trainable {row['trainable_parameters']:>9,}  {row['tokens_per_s']:8.0f} tok/s  "
              f"{row['seconds_per_step']:.3f} s/step  peak RSS {row['peak_rss_mb']:.0f} MB")
    result = {"machine": describe_machine(),
              "batch_size": args.batch_size, **rows,
              "pvm_only_speedup": rows["pvm"]["tokens_per_s"] / rows["full"]["tokens_per_s"],
              "peak_memory_ratio": rows["pvm"]["peak_rss_mb"] / rows["full"]["peak_rss_mb"]}
    atomic_write_json(args.json, result)
    print(f"pvm_only_speedup={result['pvm_only_speedup']:.3f}")
    return result


if __name__ == "__main__":
    main()
