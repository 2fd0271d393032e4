"""Decode-step cost of PVM at real Qwen3-VL-8B width, projected to the whole model.

One real `Qwen3VLTextDecoderLayer` at 8B width (random weights) sits in a 1-layer
`Qwen3VLForConditionalGeneration`; a prefill of ~1,000 image tokens + ~1,000 text tokens fills its
KV cache and PVM's visual memory through the real hooks. Then one decode step of that layer is
timed with and without PVM attached (alternating rounds, same run), and the LM head on its own.
Projection: 36 layers, 3 with PVM, plus the LM head -> throughput drop in %.
The paper measured 4.6 % on an H200 (bf16); the arithmetic floor is ~0.3 %.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import Qwen3VLForConditionalGeneration

from pvm_probe import PVMConfig, attach_pvm
from pvm_probe.io import atomic_write_json, describe_machine
from pvm_probe.zoo import qwen3_vl_config

N_LAYERS, N_PVM = 36, 3


def build_one_layer_model(dtype: torch.dtype, attn: str) -> Qwen3VLForConditionalGeneration:
    config = qwen3_vl_config("qwen3-vl-8b")
    config.text_config.num_hidden_layers = 1
    config.vision_config.depth = 1  # the tower is not timed: image tokens enter as placeholders
    config._attn_implementation = attn
    torch.manual_seed(0)
    return Qwen3VLForConditionalGeneration(config).to(dtype).eval()


def prefill(model, n_image: int, n_text: int):
    """Real forward over [text, image placeholders, text]; returns the cache and the last hidden state."""
    image_id = model.config.image_token_id
    ids = torch.randint(0, 1000, (1, n_text + n_image))
    ids[0, n_text // 2: n_text // 2 + n_image] = image_id  # [1, T]: PVM's hook reads these as visual tokens
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    return out.cache if hasattr(out, "cache") else out.past_key_values


def time_layer_step(model, cache, steps: int) -> list[float]:
    """One decode step of decoder layer 0 (hooks included), cache cropped back after each step."""
    text = model.model.language_model
    layer, start = text.layers[0], cache.get_seq_length()
    hidden = torch.randn(1, 1, text.config.hidden_size, dtype=next(model.parameters()).dtype)  # [1, 1, d]
    position_ids = torch.full((3, 1, 1), start)  # [3, B, 1] text position for all three mrope axes
    cos_sin = text.rotary_emb(hidden, position_ids)
    times = []
    with torch.no_grad():
        for _ in range(steps + 1):
            t0 = time.perf_counter()
            layer(hidden, position_embeddings=cos_sin, attention_mask=None, cache=cache)
            times.append(time.perf_counter() - t0)
            cache.crop(start - cache.get_seq_length())  # negative: tokens to drop
    return times[1:]  # the first call builds PVM's visual K/V once per request


def time_head(model, steps: int) -> list[float]:
    hidden = torch.randn(1, 1, model.config.text_config.hidden_size, dtype=next(model.parameters()).dtype)
    times = []
    with torch.no_grad():
        for _ in range(steps):
            t0 = time.perf_counter()
            model.lm_head(model.model.language_model.norm(hidden))
            times.append(time.perf_counter() - t0)
    return times


def arithmetic_floor(cfg: PVMConfig, hidden: int, n_visual: int, backbone_params: float) -> dict:
    """Multiply-adds per decoded token of the PVM branch (visual K/V cached) against the backbone's."""
    dl, per_layer = cfg.latent_dim, 0
    per_layer += 2 * hidden * dl  # W_x, W_up
    per_layer += dl * cfg.num_heads * cfg.head_dim * 2  # q, o
    per_layer += 2 * cfg.num_heads * cfg.head_dim * n_visual  # scores + weighted sum over the visual set
    per_layer += 3 * dl * cfg.ffn_dim  # SwiGLU
    pvm_flop = 2 * len(cfg.layers) * per_layer
    return {"pvm_mflop_per_token": pvm_flop / 1e6, "backbone_gflop_per_token": 2 * backbone_params / 1e9,
            "flop_ratio_pct": 100 * pvm_flop / (2 * backbone_params)}


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    model = build_one_layer_model(dtype, args.attn)
    cfg = PVMConfig.preset("qwen3-vl-8b", layers=(0,))
    handle = attach_pvm(model, cfg)
    state = {k: v.clone() for k, v in handle.state_dict().items()}
    with torch.no_grad():
        state = {k: (v.fill_(0.5) if k.endswith("alpha") else v) for k, v in state.items()}
    cache = prefill(model, args.visual, args.kv - args.visual)
    memory = handle.memory
    handle.remove()
    base, pvm = [], []
    for _ in range(args.rounds):  # alternate so drift hits both alike
        base += time_layer_step(model, cache, args.steps)
        handle = attach_pvm(model, cfg)
        with torch.no_grad():
            for name, p in handle.named_parameters():
                p.copy_(state[name])
        memory.kv = {}
        memory.visual_mask = torch.zeros(1, 1, dtype=torch.bool)  # [B, 1]: what the hook sets for a text step
        handle.memory = memory
        pvm += time_layer_step(model, cache, args.steps)
        handle.remove()
    head = time_head(model, args.steps)
    t_layer, t_pvm_layer, t_head = (statistics.median(x) for x in (base, pvm, head))
    delta = t_pvm_layer - t_layer
    step_base = N_LAYERS * t_layer + t_head
    step_pvm = step_base + N_PVM * delta
    backbone = 8.2e9  # text backbone + head of Qwen3-VL-8B, for the arithmetic floor
    result = {
        "machine": describe_machine(), "threads": args.threads,
        "dtype": args.dtype, "attn": args.attn, "visual_tokens": args.visual, "kv_length": args.kv,
        "layer_ms": 1e3 * t_layer, "layer_with_pvm_ms": 1e3 * t_pvm_layer, "pvm_delta_ms": 1e3 * delta,
        "lm_head_ms": 1e3 * t_head, "projected_step_ms": 1e3 * step_base, "projected_step_pvm_ms": 1e3 * step_pvm,
        "decode_throughput_drop_pct": 100 * (1 - step_base / step_pvm),
        "paper_h200_bf16_drop_pct": 4.6,
        **arithmetic_floor(PVMConfig.preset("qwen3-vl-8b"), 4096, args.visual, backbone),
    }
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--visual", type=int, default=1000, help="visual tokens in PVM's memory")
    parser.add_argument("--kv", type=int, default=2000, help="KV-cache length at the timed step")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="short run: 200 visual / 400 KV, few steps")
    parser.add_argument("--json", help="default: figures/bench_overhead.json (a --smoke run: out/bench/)")
    args = parser.parse_args(argv)
    args.json = args.json or ("out/bench" if args.smoke else "figures") + "/bench_overhead.json"
    if args.smoke:
        args.visual, args.kv, args.steps, args.rounds = 200, 400, 3, 1
    result = run(args)
    for key, value in result.items():
        print(f"{key:>28}: {value:.3f}" if isinstance(value, float) else f"{key:>28}: {value}")
    atomic_write_json(args.json, result)
    print(f"decode_throughput_drop_pct={result['decode_throughput_drop_pct']:.3f}")
    return result


if __name__ == "__main__":
    main()
