"""What each arm costs per generated token: plain `generate`, PVM and every remedy, measured in one run.

Model: the real `Qwen3VLForConditionalGeneration` class, random weights, fp32, sdpa, on the CPU, with the real
vocabulary (151,936: the LM head, and MemVR's early-exit read-outs, scale with it) and head_dim (128), at a width and
depth this CPU runs in minutes: hidden 1024, 12 layers, 8 query / 2 KV heads (8B: 32 / 8), FFN 3072, a 1-layer
vision tower. Each request: a 512 x 512 image (32 x 32 patches of 16 px -> 256 merged image tokens) in a 32-token
prompt. Arms: PVM, 3 blocks of `PVMConfig.for_model` (the 8B preset's width scaled to the model) on strided layers,
alpha 1 (open); VCD (alpha 1, noise step 500) and PAI (alpha 0.2, gamma 1.1, layers 2..L-1) at their defaults, each
a second lane of rows; MemVR at its defaults with the paper's layer window scaled to depth (12 layers: 1..6, the
early-exit LM head read after layers 2..5 until every row has fired); DoLa ("low": hidden states 0, 2, 4 of 12,
one batched LM-head read-out), VISTA (two extra prompt forwards per request; SLA layers 9..10, one batched
read-out), SPARC (one rebuilt attention row in layer 7, selected cached values scaled) and OPERA (5 beams x (1 + 5
candidates) row-forwards per step, its own decoding: timed as (T(N tokens) - T(1 token)) / (N - 1)) at their
defaults.

Time: every arm on the same model in this process, in rounds of alternating order (drift hits all alike); per batch
size, `generate` of N new tokens (min_new_tokens = N) with a logits processor that stamps each step: prefill = up
to the first stamp, decode = the median interval between later stamps (ms per step; per row = / batch). The best
round counts.
Memory, both ways: (1) each arm in its own child process at the largest batch, the growth of peak RSS
(ru_maxrss) over the RSS just before its one `generate` (4 new tokens: the peak comes early; no warm-up, whose
peak would hide it); (2) here, the bytes of the KV cache `generate` returns after N tokens (VCD, PAI: 2B rows) plus
the arm's own state (PVM: the visual set and its latent K/V; MemVR: the visual set).
Arithmetic, for this model and for Qwen3-VL-8B (36 layers, d 4096, MemVR's paper window 5..16: ten 151,936-wide
read-outs per token): multiply-adds per decoded row (the ratio where compute bounds: large batches) and elements read
per step at batch 1 (where memory bandwidth bounds: batch-1 decode on a GPU; the lanes reuse the weights).

    python analyses/bench_arms.py [--smoke] [--new-tokens N] [--batches 1 4] [--rounds R]
prints a table, writes figures/bench_arms.json; the last line is arms_time_ratio_max=<largest decode-time ratio
of an arm to plain generate, over the batch sizes>.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext

import torch
from transformers import LogitsProcessor, LogitsProcessorList, Qwen3VLConfig, Qwen3VLForConditionalGeneration

from pvm_probe import PVMConfig, attach_pvm
from pvm_probe.io import atomic_write_json, describe_machine
from pvm_probe.registry import REMEDIES
from pvm_probe.remedies.base import Remedy
from pvm_probe.remedies.memvr import layer_window
from pvm_probe.remedies.vista import sla_window
from pvm_probe.zoo import IMAGE_TOKEN, PAD, VIDEO_TOKEN, VISION_END, VISION_START, Image, fake_request


def memvr_layers(n_layers: int) -> dict:
    """MemVR's layer window at the paper's share of depth (the arm's own default)."""
    start, end = layer_window(n_layers)
    return {"start_layer": start, "end_layer": end}

VOCAB = 151_936
SHAPES = {  # text decoder; `image`: the image's side in 16-px patches (merged tokens = image^2 / 4)
    "bench": dict(hidden=1024, layers=12, heads=8, kv_heads=2, head_dim=128, ffn=3072, image=32),
    "smoke": dict(hidden=128, layers=4, heads=2, kv_heads=1, head_dim=64, ffn=384, image=8),
    "qwen3-vl-8b": dict(hidden=4096, layers=36, heads=32, kv_heads=8, head_dim=128, ffn=12288, image=32),
}
ARM_NAMES = ("plain", "pvm", *REMEDIES.names())  # every registered remedy, plug-ins too
PUBLISHED = {  # per-token time over greedy, as the papers report it (LLaVA-1.5-7B)
    "memvr": (68.3 / 65.7, "MemVR paper: 68.3 vs 65.7 ms/token"),
    "vcd": (2.20, "as reported beside MemVR"),
    "opera": (3.66, "as reported beside MemVR"),
}
PROMPT = 32


# ---- the model and its arms ------------------------------------------------------------------------------
def build_model(shape: dict) -> Qwen3VLForConditionalGeneration:
    """Random weights (seed 0) of the real class at `shape`, the real vocabulary, a 1-layer vision tower."""
    section = [s * shape["head_dim"] // 128 for s in (24, 20, 20)]  # Qwen3-VL's mrope split, scaled
    config = Qwen3VLConfig(
        text_config=dict(vocab_size=VOCAB, hidden_size=shape["hidden"], intermediate_size=shape["ffn"],
                         num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                         num_key_value_heads=shape["kv_heads"], head_dim=shape["head_dim"],
                         max_position_embeddings=8192, pad_token_id=PAD, eos_token_id=2,
                         rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": section,
                                          "mrope_interleaved": True}),
        vision_config=dict(depth=1, hidden_size=256, intermediate_size=512, num_heads=4, patch_size=16,
                           out_hidden_size=shape["hidden"], deepstack_visual_indexes=[]),
        image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN, vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END, tie_word_embeddings=False)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return Qwen3VLForConditionalGeneration(config).eval()


def pvm_config(shape: dict) -> PVMConfig:
    return PVMConfig.for_model(shape["hidden"], shape["layers"], 3, alpha_init=1.0)


@contextmanager
def pvm_arm(model, shape: dict):
    """PVM attached with the same random weights every time (seed 1), alpha 1; removed on exit."""
    torch.manual_seed(1)
    handle = attach_pvm(model, pvm_config(shape))
    try:
        yield handle
    finally:
        handle.remove()


def arm(name: str, model, shape: dict):
    """The arm as a context manager on `model` (yields the object holding its state, or None)."""
    if name == "plain":
        return nullcontext()
    if name == "pvm":
        return pvm_arm(model, shape)
    remedy = REMEDIES.get(name)
    return remedy(model, **remedy.defaults(shape["layers"]))  # the official defaults (MemVR's window by depth)


def request(model, shape: dict, batch: int) -> dict:
    return fake_request(model, [Image(shape["image"], shape["image"])] * batch, prompt_len=PROMPT)


# ---- one generate, timed --------------------------------------------------------------------------------
class StepClock(LogitsProcessor):
    """Stamps the time at every generation step (after that step's forward)."""

    def __init__(self):
        self.stamps: list[float] = []

    def __call__(self, input_ids, scores):
        self.stamps.append(time.perf_counter())
        return scores


def timed_decode(remedy, inputs: dict, new_tokens: int) -> dict:
    """A remedy's own decoding: prefill ~ T(1 token), decode ms per step = (T(N) - T(1)) / (N - 1)."""
    times = []
    for n in (1, new_tokens):
        t0 = time.perf_counter()
        remedy.decode(inputs, n)
        times.append(time.perf_counter() - t0)
    return {"prefill_s": times[0], "decode_ms": 1e3 * (times[1] - times[0]) / max(new_tokens - 1, 1),
            "cache_mb": 0.0, "state_mb": 0.0}


def timed_generate(model, inputs: dict, new_tokens: int, state=None) -> dict:
    """generate N tokens: prefill s, decode ms per step (median), KV-cache and arm-state MB."""
    if isinstance(state, Remedy) and type(state).decode is not Remedy.decode:  # decodes itself (OPERA)
        return timed_decode(state, inputs, new_tokens)
    clock = StepClock()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             logits_processor=LogitsProcessorList([clock]), return_dict_in_generate=True)
    steps = [b - a for a, b in zip(clock.stamps, clock.stamps[1:], strict=False)]
    cache = getattr(out, "cache", None) or out.past_key_values
    return {"prefill_s": clock.stamps[0] - t0, "decode_ms": 1e3 * statistics.median(steps),
            "cache_mb": tensor_mb(cache), "state_mb": tensor_mb(getattr(state, "memory", None))}


def tensor_mb(obj) -> float:
    """Bytes of the tensors in a cache (layers' keys / values) or a VisualMemory (visual set, PVM's K/V)."""
    if obj is None:
        return 0.0
    if hasattr(obj, "layers"):  # a transformers Cache
        tensors = [t for layer in obj.layers for t in (getattr(layer, "keys", None), getattr(layer, "values", None))]
    else:
        tensors = [obj.tokens, *[t for kv in obj.kv.values() for t in (kv.key, kv.value)]]
    return sum(t.nbytes for t in tensors if isinstance(t, torch.Tensor)) / 2**20


def time_arms(model, shape: dict, batches: list[int], new_tokens: int, rounds: int) -> dict:
    """{arm: {batch: best measurement}} over `rounds` rounds, alternating the arms' order."""
    inputs = {b: request(model, shape, b) for b in batches}
    for name, b in [(n, batches[0]) for n in ARM_NAMES] + [("plain", b) for b in batches[1:]]:  # warm-up
        with arm(name, model, shape) as state:
            timed_generate(model, inputs[b], 2, state)
    best: dict = {name: {} for name in ARM_NAMES}
    for r in range(rounds):
        for name in ARM_NAMES if r % 2 == 0 else ARM_NAMES[::-1]:
            for b in batches:
                with arm(name, model, shape) as state:
                    m = timed_generate(model, inputs[b], new_tokens, state)
                old = best[name].get(b)
                best[name][b] = m if old is None else {**m, **{k: min(old[k], m[k]) for k in ("prefill_s", "decode_ms")}}
                print(f"  round {r + 1} {name:<6} batch {b}: decode {m['decode_ms']:7.1f} ms/step, "
                      f"prefill {m['prefill_s']:5.2f} s", flush=True)
    return best


# ---- memory, one child process per arm -----------------------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


MEMORY_TOKENS = 4


def child(name: str, shape_name: str, batch: int) -> float:
    """In a fresh process: peak RSS growth (MB) of one generate with the arm on."""
    torch.set_num_threads(1)
    shape = SHAPES[shape_name]
    model = build_model(shape)
    inputs = request(model, shape, batch)
    with arm(name, model, shape) as state:
        before = _rss_mb()
        timed_generate(model, inputs, MEMORY_TOKENS, state)
        return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before, 0.0)


def peak_memory(shape_name: str, batch: int) -> dict:
    """{arm: peak RSS growth MB} at `batch`, each arm in its own process."""
    result = {}
    for name in ARM_NAMES:
        cmd = [sys.executable, __file__, "--child", name, "--shape", shape_name, "--batches", str(batch)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        result[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  memory {name:<6}: batch {batch} +{result[name]:.0f} MB", flush=True)
    return result


# ---- arithmetic ----------------------------------------------------------------------------------------
def _per_token(shape: dict, kv: int, visual: int, checks: int, rows: int) -> dict:
    """Per decode step of `rows` requests: (multiply-adds, elements read: weights + KV cache) of each arm."""
    d, heads, hd, kvh, layers = shape["hidden"], shape["heads"], shape["head_dim"], shape["kv_heads"], shape["layers"]
    weights = layers * (2 * d * heads * hd + 2 * d * kvh * hd + 3 * d * shape["ffn"]) + d * VOCAB
    attention = layers * 2 * heads * hd * kv  # scores + weighted sum, per row
    cache = layers * 2 * kvh * hd * kv  # keys + values read, per row
    cfg = pvm_config(shape)
    dl, pvm_attention = cfg.latent_dim, 2 * cfg.num_heads * cfg.head_dim * visual
    pvm_weights = len(cfg.layers) * (2 * d * dl + 2 * dl * cfg.num_heads * cfg.head_dim + 3 * dl * cfg.ffn_dim)
    pvm_cache = len(cfg.layers) * 2 * cfg.num_kv_heads * cfg.head_dim * visual
    plain = (rows * (weights + attention), weights + rows * cache)
    lanes = (2 * plain[0], weights + 2 * rows * cache)  # VCD, PAI: 2B rows, the weights read once
    return {"plain": plain,
            "pvm": (plain[0] + rows * (pvm_weights + len(cfg.layers) * pvm_attention),
                    plain[1] + pvm_weights + rows * pvm_cache),
            "vcd": lanes,
            "pai": (lanes[0] + rows * (layers - 2) * heads * hd * kv, lanes[1]),  # the boosted query's scores
            "memvr": (plain[0] + rows * (checks * d * VOCAB + 2 * visual * d), plain[1] + checks * d * VOCAB),
            "memvr_fires_at_once": (plain[0] + rows * (d * VOCAB + 2 * visual * d), plain[1] + d * VOCAB),
            **_remedies(shape, kv, visual, rows, plain, weights, cache)}


def _remedies(shape: dict, kv: int, visual: int, rows: int, plain: tuple, weights: int, cache: int) -> dict:
    """DoLa, VISTA, SPARC, OPERA at their defaults: (multiply-adds, elements read) per decode step."""
    d, heads, hd, kvh, layers = shape["hidden"], shape["heads"], shape["head_dim"], shape["kv_heads"], shape["layers"]
    dola = len(range(0, layers // 2 if layers <= 40 else 20, 2))  # "low" candidates, untied embeddings
    sla = len(sla_window(layers))
    attention = layers * 2 * heads * hd * kv
    one_row = d * heads * hd + 2 * heads * hd * kv  # SPARC: the selected layer's query and its softmax row
    selected = layers * kvh * hd * visual * 2  # SPARC, at most: every image value read and written, every layer
    beams, candidates = 5, 5  # OPERA: per request, (1 + candidates) forwards of `beams` rows
    return {"dola": (plain[0] + rows * dola * d * VOCAB, plain[1] + d * VOCAB),
            "vista": (plain[0] + rows * (sla * d * VOCAB + layers * 8 * d), plain[1] + d * VOCAB),
            "sparc": (plain[0] + rows * one_row, plain[1] + d * heads * hd + rows * (kvh * hd * kv + selected)),
            "opera": ((1 + candidates) * beams * rows * (weights + attention),
                      (1 + candidates) * (weights + beams * rows * cache))}


def arithmetic(shape: dict, new_tokens: int) -> dict:
    """Ratios to plain, mid-answer (KV: prompt + image + N/2): multiply-adds per row (where compute bounds: large
    batches) and elements read per step at batch 1 (where memory bandwidth bounds: batch-1 decode on a GPU)."""
    visual = shape["image"] ** 2 // 4
    window = memvr_layers(shape["layers"])
    checks = window["end_layer"] - window["start_layer"] - 1
    cost = _per_token(shape, PROMPT + visual + 2 + new_tokens // 2, visual, checks, rows=1)
    return {"gmac_per_row": {k: v[0] / 1e9 for k, v in cost.items()},
            "macs_ratio_to_plain": {k: v[0] / cost["plain"][0] for k, v in cost.items()},
            "reads_ratio_to_plain_batch1": {k: v[1] / cost["plain"][1] for k, v in cost.items()},
            "memvr_window": window, "memvr_readouts_per_token": checks, "new_tokens": new_tokens}


# ---- the report -----------------------------------------------------------------------------------------
def rows(times: dict, memory: dict, batches: list[int]) -> list[dict]:
    out = []
    for b in batches:
        plain, pvm = times["plain"][b]["decode_ms"], times["pvm"][b]["decode_ms"]
        for name in ARM_NAMES:
            t = times[name][b]
            out.append({"arm": name, "batch": b, **t, "ms_per_row": t["decode_ms"] / b,
                        "ratio_to_plain": t["decode_ms"] / plain, "ratio_to_pvm": t["decode_ms"] / pvm,
                        "prefill_ratio_to_plain": t["prefill_s"] / times["plain"][b]["prefill_s"],
                        "peak_rss_growth_mb": memory[name] if b == max(batches) else None})
    return out


def print_rows(table: list[dict]) -> None:
    print(f"\n{'arm':<7}{'batch':>6}{'ms/step':>9}{'ms/row':>8}{'x plain':>9}{'x PVM':>7}{'prefill s':>10}"
          f"{'x plain':>8}{'KV MB':>8}{'state MB':>9}{'peak RSS +MB':>13}")
    for r in table:
        print(f"{r['arm']:<7}{r['batch']:>6}{r['decode_ms']:>9.1f}{r['ms_per_row']:>8.1f}{r['ratio_to_plain']:>9.2f}"
              f"{r['ratio_to_pvm']:>7.2f}{r['prefill_s']:>10.2f}{r['prefill_ratio_to_plain']:>8.2f}"
              f"{r['cache_mb']:>8.1f}{r['state_mb']:>9.2f}"
              + (f"{r['peak_rss_growth_mb']:>13.0f}" if r["peak_rss_growth_mb"] is not None else f"{'-':>13}"))


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="a 4-layer, 128-wide model, 8 tokens: seconds")
    parser.add_argument("--json", help="default: figures/bench_arms.json (a --smoke run: out/bench/)")
    parser.add_argument("--child", choices=ARM_NAMES, help=argparse.SUPPRESS)
    parser.add_argument("--shape", default="bench", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.json = args.json or ("out/bench" if args.smoke else "figures") + "/bench_arms.json"
    if args.child:
        print(json.dumps(child(args.child, args.shape, args.batches[0])))
        return 0.0
    if args.smoke:
        args.shape, args.new_tokens, args.batches, args.rounds = "smoke", 8, [1, 2], 1
    torch.set_num_threads(1)  # two shared cores: two threads would oversubscribe
    shape, start = SHAPES[args.shape], time.perf_counter()
    model = build_model(shape)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.0f} M parameters ({args.shape}); timing")
    times = time_arms(model, shape, args.batches, args.new_tokens, args.rounds)
    del model
    print("memory (one process per arm)")
    memory = peak_memory(args.shape, max(args.batches))
    table = rows(times, memory, args.batches)
    print_rows(table)
    expected = {"bench": arithmetic(shape, args.new_tokens), "qwen3-vl-8b": arithmetic(SHAPES["qwen3-vl-8b"], 512)}
    for where, a in expected.items():
        for key in ("macs_ratio_to_plain", "reads_ratio_to_plain_batch1"):
            print(f"arithmetic, {where}, {key.replace('_', ' ')}: " + ", ".join(
                f"{k} {v:.3f}" for k, v in a[key].items()))
    for name, (ratio, source) in PUBLISHED.items():
        measured = ", ".join(f"batch {r['batch']} {r['ratio_to_plain']:.2f}x" for r in table if r["arm"] == name)
        print(f"published, {name}: {ratio:.2f}x ({source}); here {measured}")
    worst = max(r["ratio_to_plain"] for r in table if r["arm"] != "plain")
    for name in ARM_NAMES[1:]:
        print(f"{name}_time_ratio_max=" + f"{max(r['ratio_to_plain'] for r in table if r['arm'] == name):.3f}")
    atomic_write_json(args.json, {
        "machine": describe_machine(), "threads": 1, "dtype": "float32", "attn": "sdpa", "shape": shape,
        "shape_name": args.shape, "vocab": VOCAB, "image_tokens": shape["image"] ** 2 // 4, "prompt_tokens": PROMPT,
        "new_tokens": args.new_tokens, "rounds": args.rounds, "pvm": pvm_config(shape).to_dict(),
        "memvr": memvr_layers(shape["layers"]), "rows": table, "arithmetic": expected,
        "published": {k: v[0] for k, v in PUBLISHED.items()},
        "seconds": time.perf_counter() - start,
        "note": "decode_ms: median step after the first (one row per request, B rows per step); cache_mb: the KV "
                "cache generate returns (VCD/PAI hold 2B rows); state_mb: PVM's visual set + latent K/V, MemVR's "
                "visual set; peak_rss_growth_mb (largest batch only): ru_maxrss growth over the RSS before one "
                f"generate of {MEMORY_TOKENS} tokens, each arm in its own process, no warm-up"})
    print(f"{time.perf_counter() - start:.0f} s")
    print(f"arms_time_ratio_max={worst:.3f}")
    return worst


if __name__ == "__main__":
    main()
