"""Cost of VisualAttentionMass vs plain `generate` vs `generate(output_attentions=True)`.

A tiny random Qwen3-VL (real class, eager attention, max_position_embeddings raised to 8192) generates
T new tokens (min_new_tokens = T) from one image request, three ways:
  plain  - model.generate
  probe  - model.generate inside `with VisualAttentionMass(model)` (all layers, all heads)
  attn   - model.generate(output_attentions=True, return_dict_in_generate=True)
Each (mode, T) runs in its own child process so its peak RSS is its own: `peak_mb` is the growth of
the high-water RSS over the RSS just before `generate`; `held_mb` is what the measurement keeps
(the probe's result arrays; the returned attention tensors). Time is the best of --repeats runs.
torch uses 1 thread: on a shared 2-core box two threads oversubscribe and the timings become noise.
Prints a table, writes JSON (--json), last line `probe_time_ratio=<ratio at the longest T>`.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

MODES = ("plain", "probe", "attn")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def build():
    import torch

    from pvm_probe.zoo import _CLASSES, Image, fake_request, tiny_config

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = tiny_config("qwen3_vl")
    config.text_config.max_position_embeddings = 8192
    config._attn_implementation = "eager"
    model = _CLASSES["qwen3_vl"](config).eval()
    return model, fake_request(model, [Image(4, 4)], prompt_len=16)


def run_child(mode: str, new_tokens: int, repeats: int) -> dict:
    """One mode at one length in this process: best time, peak RSS growth, bytes held."""
    import torch

    from pvm_probe.probes import VisualAttentionMass

    model, batch = build()
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    times, held, peak = [], 0.0, 0.0
    for rep in range(repeats):
        before = _rss_mb()
        t0 = time.perf_counter()
        with torch.no_grad():
            if mode == "probe":
                with VisualAttentionMass(model) as mass:
                    model.generate(**batch, **kw)
                held = (mass.result.shares.nbytes + mass.result.log_normaliser.nbytes) / 2**20
            elif mode == "attn":
                out = model.generate(**batch, **kw, output_attentions=True, return_dict_in_generate=True)
                held = sum(a.nbytes for step in out.attentions for a in step) / 2**20
                del out
            else:
                model.generate(**batch, **kw)
        times.append(time.perf_counter() - t0)
        if rep == 0:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    return {"mode": mode, "new_tokens": new_tokens, "time_s": min(times), "peak_mb": max(peak, 0.0), "held_mb": held}


def measure(mode: str, new_tokens: int, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, str(new_tokens), "--repeats", str(repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="default: figures/bench_probes.json (a --smoke run: out/bench/)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[500, 1000, 2000, 4000])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="two short lengths, one repeat")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "T"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.json = args.json or ("out/bench" if args.smoke else "figures") + "/bench_probes.json"
    if args.child:
        print(json.dumps(run_child(args.child[0], int(args.child[1]), args.repeats)))
        return 0.0
    lengths, repeats = ([16, 48], 1) if args.smoke else (args.lengths, args.repeats)
    rows = []
    print(f"{'T':>6} {'plain s':>8} {'probe s':>8} {'attn s':>8} {'ratio':>6} "
          f"{'probe MB':>9} {'attn MB':>9} {'probe held':>10} {'attn held':>10}")
    for T in lengths:
        r = {m: measure(m, T, repeats) for m in MODES}
        ratio = r["probe"]["time_s"] / r["plain"]["time_s"]
        rows.append({"new_tokens": T, "ratio": ratio, **{m: r[m] for m in MODES}})
        print(f"{T:>6} {r['plain']['time_s']:>8.2f} {r['probe']['time_s']:>8.2f} {r['attn']['time_s']:>8.2f} "
              f"{ratio:>6.2f} {r['probe']['peak_mb'] - r['plain']['peak_mb']:>9.1f} "
              f"{r['attn']['peak_mb'] - r['plain']['peak_mb']:>9.1f} {r['probe']['held_mb']:>10.3f} "
              f"{r['attn']['held_mb']:>10.1f}", flush=True)
    doc = {"machine": f"{platform.processor() or platform.machine()}, {_cpus()} CPUs, torch 1 thread",
           "model": "tiny Qwen3-VL (4 layers, 4 heads, d=64), eager", "repeats": repeats, "rows": rows,
           "note": "MB columns: peak RSS growth over plain generate; held: bytes kept by the measurement"}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    ratio = rows[-1]["ratio"]
    print(f"probe_time_ratio={ratio:.3f}")
    return ratio


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    main()
