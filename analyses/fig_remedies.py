"""PVM against the training-free remedies (VCD, PAI, MemVR) on the default long world, with the probes on.

Rows: the baseline, PVM Stage I, PVM Stage I+II, the MLP control, and each remedy at its paper's defaults and at
the strength that scored best (overall claims correct) in a sweep on the *training* split
(`WorldSuite(split="train")`: no held-out scene is looked at to tune). The held-out run gives claims correct and
the backbone's image share of attention by quarter of the answer. Two more probes say why a remedy can or cannot
help once the image has left the baseline's 128-token attention window:
- lane gap (VCD, PAI): KL(first lane || second lane) of the next-token distribution at each claim's colour token;
  VCD's lanes are the real and the noised image, PAI's the prompt with and without the image. Both remedies
  only amplify that gap (VCD: (1 + a) real - a noised; PAI: image + (gamma - 1) (image - text-only)), and PAI's
  attention boost multiplies image-key logits that the window has already masked.
- MemVR read-out: whether retracing fired at the claim's step, and the share of its memory weights
  silu(s_k x Z^T) (positive part) on the named cell's image token (chance 1/16), at each layer it can retrace in.

Sweep grids (the first entry is the paper's default; ties go to the earlier entry):
  VCD    alpha 1, 0.5, 2, 4 x noise_step 500, 999 (beta 0.1): the official scripts' alpha 1 and T = 500, the
         noise from half to pure, the contrast from half to four times the default
  PAI    alpha 0.2, 0.5, 1, 2 x gamma 1.1 (README), 2 (eval scripts' default); layers 2..L-1 as in the code
  MemVR  ratio 0.12 (README), 0.31 (CHAIR script), 0.5, 1 x threshold 0.75, 0.5, 0 (always retrace) x window:
         the paper's 5..16 of 32 layers scaled to depth (0..2 on 4 layers) and the widest one (0..L-1)

    python analyses/fig_remedies.py [--smoke] [--scenes N] [--sweep-scenes N]
    python analyses/fig_remedies.py --suite scenes [--base DIR] [--pvm ADAPTER ...] [--scenes N]
writes figures/remedies.json and figures/remedies.{png,svg}. `--suite scenes` writes remedies_scenes.*; without
--base it builds a tiny random Qwen3-VL checkpoint and an untrained PVM adapter in a temporary folder (the path
works, the numbers mean nothing); the scenes suite has no training split, so its sweep runs on held-out set 1.
"""

from __future__ import annotations

import json
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from figure_common import save_figure, script_arguments

from pvm_probe.backbones import decoder_layers, get_module, hook_sites, stop_token_ids
from pvm_probe.io import atomic_write_json
from pvm_probe.records import mean_of, rounded
from pvm_probe.registry import REMEDIES
from pvm_probe.remedies import MemVR
from pvm_probe.remedies.lanes import TwoLanes
from pvm_probe.report.metrics import build_metrics
from pvm_probe.runner import RunConfig, answer_lengths, describe, run
from pvm_probe.suites.base import Answer
from pvm_probe.suites.inputs import chat_inputs
from pvm_probe.suites.world.scenes import CELL_NAMES
from pvm_probe.suites.world.suite import WorldSuite
from pvm_probe.variants import BASELINE, Variant, plan

ADAPTERS = ["pvm-stage1", "pvm-stage2", "mlp-control"]
BATCH = 32


def arguments(parser) -> None:
    parser.add_argument("--sweep-scenes", type=int, default=32, help="training-split scenes per sweep setting")
    parser.add_argument("--suite", choices=["world", "scenes"], default="world")
    parser.add_argument("--base", help="scenes: a local checkpoint (default: a tiny random one)")
    parser.add_argument("--pvm", action="append", help="scenes: adapter(s) for --base (repeatable)")
    parser.add_argument("--max-new-tokens", type=int, help="scenes: answer budget")
    parser.add_argument("--table", help="print docs/remedies.md's markdown table of this remedies JSON and stop")


# ---- the remedies' settings ------------------------------------------------------------------------------
def defaults(arm: str, n_layers: int) -> dict:
    """The official defaults (`Remedy.defaults`; MemVR's layer window at the paper's share of depth)."""
    return REMEDIES.get(arm).defaults(n_layers)


def grid(arm: str, n_layers: int, smoke: bool) -> list[dict]:
    """The sweep of one remedy (`Remedy.grid`), its official defaults first."""
    options = REMEDIES.get(arm).grid(n_layers)
    return options[:1] if smoke else options


def label(arm: str, options: dict, n_layers: int) -> str:
    """`vcd` at the defaults, else `vcd (alpha=2)`: the settings that differ from the defaults."""
    changed = {k: v for k, v in options.items() if defaults(arm, n_layers).get(k) != v}
    return arm if not changed else f"{arm} ({', '.join(f'{k}={v}' for k, v in changed.items())})"


# ---- running variants ------------------------------------------------------------------------------------
def run_variants(model, processor, suite, variants, directory: Path, probes: bool, base: str):
    """Records of every variant on `suite` (kept and resumed in `directory`) -> (metrics, records)."""
    config = RunConfig(batch_size=BATCH, probes=probes, explore=0, progress=False)
    records = run(model, processor, suite, variants, directory, config, base=base)
    description = describe(suite, variants, config, model, base)
    return build_metrics(description, records, list(suite.claim_kinds), suite.higher_is_better), records


def sweep(model, processor, suite, directory: Path, base: str, smoke: bool) -> tuple[dict, dict]:
    """The baseline and each remedy over its grid on the sweep suite (no probes) ->
    ({arm: {"results": [...], "chosen": {...}}}, the baseline's result)."""
    n_layers = len(decoder_layers(model))
    by_arm = {arm: [Variant(f"sweep {i}: {label(arm, o, n_layers)}", remedy=arm, options=o)
                    for i, o in enumerate(grid(arm, n_layers, smoke))] for arm in REMEDIES.names()}
    metrics, _ = run_variants(model, processor, suite, [BASELINE, *[v for vs in by_arm.values() for v in vs]],
                              directory, probes=False, base=base)
    sign = 1 if suite.higher_is_better else -1
    baseline = {k: metrics["variants"]["baseline"][k] for k in ("primary", "primary_by_quarter")}
    out = {}
    for arm, variants in by_arm.items():
        results = [{"options": v.options, "primary": metrics["variants"][v.name]["primary"],
                    "primary_by_quarter": metrics["variants"][v.name]["primary_by_quarter"]} for v in variants]
        scored = [r for r in results if r["primary"] is not None]
        best = max(scored, key=lambda r: sign * r["primary"]) if scored else results[0]  # first of equals
        out[arm] = {"results": results, "chosen": {**best, "label": label(arm, best["options"], n_layers),
                                                   "is_default": best["options"] == defaults(arm, n_layers)}}
    return out, baseline


def comparison(adapters: list, tuned: dict, n_layers: int) -> list[Variant]:
    """Baseline, adapters, each remedy at its defaults and (when it differs) at its tuned setting."""
    remedies = []
    for arm in REMEDIES.names():
        remedies.append(Variant(arm, remedy=arm, options=defaults(arm, n_layers)))
        if not tuned[arm]["chosen"]["is_default"]:
            remedies.append(Variant(tuned[arm]["chosen"]["label"], remedy=arm, options=tuned[arm]["chosen"]["options"]))
    return plan(adapters, controls=False, remedies=remedies)


# ---- probes of why ---------------------------------------------------------------------------------------
@contextmanager
def lane_gap(arm):
    """KL(first lane || second lane) of the last position's next-token distribution at every forward, [B] each."""
    gaps, inner = [], arm.combine

    def combine(first, second):
        p, q = first[:, -1].float().log_softmax(-1), second[:, -1].float().log_softmax(-1)  # [B, V]
        gaps.append((p.exp() * (p - q)).sum(-1).cpu())
        return inner(first, second)

    arm.combine = combine  # TwoLanes calls self.combine: this instance reads the lanes first
    try:
        yield lambda b, t, _cell: {"lane_kl": float(gaps[t][b])}
    finally:
        del arm.combine


@contextmanager
def memvr_readout(arm, model):
    """At every forward, the FFN input x of each layer MemVR can retrace in. Yields (row, step, named cell) ->
    whether retracing fired at that step, and the share of relu(silu(s_k x Z^T)) on the named cell's token, Z the
    arm's visual memory (read while the arm is on: it is cleared when the arm comes off)."""
    sites, layers = hook_sites(model), decoder_layers(model)
    chosen = range(arm.start_layer + 2, arm.end_layer + 1)
    inputs = {i: [] for i in chosen}
    handles = [get_module(layers[i], sites.ffn).register_forward_pre_hook(
        lambda _m, args, i=i: inputs[i].append(args[0][:, -1].detach())) for i in chosen]  # [B, d] per forward

    def at(b: int, t: int, cell: int) -> dict:
        z = arm.memory.tokens[b]  # [N, d]
        out = {"fired": float(arm.triggers[t][b] >= 0)}
        for i in chosen:
            w_up = get_module(get_module(layers[i], sites.ffn), sites.ffn_up).weight
            s_k = w_up.abs().mean() / z.abs().mean()
            weights = F.silu(s_k * (z @ inputs[i][t][b])).clamp_min(0)  # [N]
            out[f"on_cell_layer{i}"] = float(weights[cell] / weights.sum().clamp_min(1e-30))
        return out

    try:
        yield at
    finally:
        for handle in handles:
            handle.remove()


def diagnose(model, processor, suite: WorldSuite, variant: Variant) -> dict:
    """The arm's probe of why (lane gap or MemVR read-out) at each claim's colour token, mean by quarter."""
    rows = []
    for start in range(0, len(suite), BATCH):
        requests = [suite.request(i) for i in range(start, min(start + BATCH, len(suite)))]
        inputs = chat_inputs(processor, requests, model.device)
        arm = REMEDIES.get(variant.remedy)(model, **variant.options)
        with torch.no_grad(), arm, (memvr_readout(arm, model) if isinstance(arm, MemVR) else lane_gap(arm)) as at:
            sequences = model.generate(**inputs, max_new_tokens=max(suite.max_new_tokens(r) for r in requests),
                                       do_sample=False)
            new = sequences[:, inputs["input_ids"].shape[1]:].cpu()  # [B, N]
            lengths, _ = answer_lengths(new, stop_token_ids(model))
            for b, request in enumerate(requests):
                answer = Answer.decode(processor.tokenizer, new[b, :lengths[b]].tolist())
                for claim in suite.score(request, answer):
                    if claim.token is not None and claim.detail.get("cell") in CELL_NAMES:
                        rows.append((claim.quarter, at(b, claim.token, CELL_NAMES.index(claim.detail["cell"]))))
    keys = rows[0][1] if rows else {}
    return {k: [mean_of([r[k] for q, r in rows if q == quarter]) for quarter in range(4)] for k in keys}


def changed_claims(records: list[dict], name: str) -> list:
    """Share of the claim steps where `name` claims another cell, colour or shape than the baseline, by quarter."""
    def claims(variant):
        return {(r["request"], c["detail"]["step"]): (c["quarter"], c["text"])
                for r in records if r["variant"] == variant for c in r["claims"]}
    base, mine = claims("baseline"), claims(name)
    return [mean_of([mine[k][1] != v[1] for k, v in base.items() if k in mine and v[0] == q]) for q in range(4)]


# ---- the table -------------------------------------------------------------------------------------------
def table(metrics: dict, records: list[dict], world: bool) -> dict:
    """Per variant: claims correct overall and by quarter, the backbone's image share by quarter (mean over
    layers, and per layer), and (world) the claims that differ from the baseline's."""
    rows = {}
    for name, m in metrics["variants"].items():
        shares = np.array([[np.nan if v is None else v for v in layer] for layer in m.get("mass_by_quarter", [])])
        rows[name] = {"kind": m["kind"], "primary": m["primary"], "primary_by_quarter": m["primary_by_quarter"],
                      "image_share_by_quarter": rounded(np.nanmean(shares, 0)) if shares.size else None,
                      "image_share_by_layer_and_quarter": m.get("mass_by_quarter"),
                      "answer_tokens_mean": m["answer_tokens_mean"]}
        if world:
            rows[name]["claims_changed_vs_baseline"] = changed_claims(records, name)
        if "pvm" in m:
            rows[name]["pvm_on_claimed_cell_by_quarter"] = m["pvm"]["on_claimed_region_by_quarter"]
    return rows


def _pct(values) -> str:
    return " ".join(" - " if v is None else f"{100 * v:5.1f}" for v in values)


def print_table(rows: dict, metric: str) -> None:
    print(f"\n{'variant':<40}{metric[:14]:>14} (all | Q1-Q4)     image share of attention Q1-Q4")
    for name, r in rows.items():
        share = " ".join(" - " if v is None else f"{v:.3f}" for v in r["image_share_by_quarter"] or [])
        print(f"{name[:39]:<40}{_pct([r['primary']]):>8} | {_pct(r['primary_by_quarter'])}    {share}")


def markdown_table(rows: dict) -> str:
    """docs/remedies.md's table: overall and by quarter (%), and the backbone's image share by quarter."""
    def share(v):
        return "-" if v is None else "0" if v == 0 else f"{v:.3f}".lstrip("0")

    lines = ["| variant | overall | Q1 / Q2 / Q3 / Q4 | image share Q1 / Q2 / Q3 / Q4 |", "|---|---|---|---|"]
    for name, r in rows.items():
        by_q = " / ".join("-" if v is None else f"{100 * v:.1f}" for v in r["primary_by_quarter"])
        shares = " / ".join(share(v) for v in r["image_share_by_quarter"] or [])
        lines.append(f"| {name} | {100 * r['primary']:.1f} | {by_q} | {shares} |")
    return "\n".join(lines)


def print_sweep(tuned: dict, baseline: dict, where: str, n_layers: int) -> None:
    print(f"\nsweep baseline ({where}): {_pct([baseline['primary']])} | {_pct(baseline['primary_by_quarter'])}")
    for arm, s in tuned.items():
        print(f"\nsweep {arm} ({where}):")
        for r in s["results"]:
            opts = label(arm, r["options"], n_layers)
            print(f"  {opts:<58}{_pct([r['primary']])} | {_pct(r['primary_by_quarter'])}")
        print(f"  chosen: {s['chosen']['label']}{' (the default)' if s['chosen']['is_default'] else ''}")


# ---- the two settings ------------------------------------------------------------------------------------
def world(args) -> dict:
    from pvm_probe.loading import load_base

    model, processor = load_base(None)
    n_layers, base = len(decoder_layers(model)), "embedded default (pvm_probe/assets/baseline)"
    records_dir = Path(args.out) / "records"
    seconds, t0 = {}, time.perf_counter()
    train = WorldSuite(scenes=args.sweep_scenes, split="train")
    tuned, sweep_baseline = sweep(model, processor, train, records_dir / f"remedies-sweep-{args.sweep_scenes}", base,
                                  args.smoke)
    seconds["sweep"], t0 = time.perf_counter() - t0, time.perf_counter()
    print_sweep(tuned, sweep_baseline, "training split", n_layers)
    held_out = WorldSuite(scenes=args.scenes)
    variants = comparison(ADAPTERS, tuned, n_layers)
    metrics, records = run_variants(model, processor, held_out, variants, records_dir / f"remedies-{args.scenes}",
                                    probes=True, base=base)
    seconds["held_out"], t0 = time.perf_counter() - t0, time.perf_counter()
    why = {v.name: diagnose(model, processor, held_out, v) for v in variants   # the remedies with a probe of why
           if v.remedy and issubclass(REMEDIES.get(v.remedy), (TwoLanes, MemVR))}
    seconds["probes_of_why"] = time.perf_counter() - t0
    rows = table(metrics, records, world=True)
    print_table(rows, metrics["metric"]["name"])
    print_why(why)
    return {"suite": "world", "held_out": held_out.settings(), "sweep_split": train.settings(),
            "image_leaves_window_at": metrics["image_leaves_window_at"], "table": rows, "why": why,
            "chosen": {arm: s["chosen"] for arm, s in tuned.items()},
            "sweep": {arm: s["results"] for arm, s in tuned.items()}, "sweep_baseline": sweep_baseline,
            "seconds": seconds, "metrics": metrics}


def print_why(why: dict) -> None:
    print("\nwhy, at the claims' colour tokens, by quarter:")
    for name, values in why.items():
        for key, by_quarter in values.items():
            print(f"  {name[:36]:<38}{key:<18}" + " ".join(" - " if v is None else f"{v:8.4f}" for v in by_quarter))


def scenes(args) -> dict:
    """The same comparison on the scenes suite: a local checkpoint, or a tiny random one built here."""
    from pvm_probe.loading import load_base
    from pvm_probe.suites.scenes.suite import ScenesSuite

    with tempfile.TemporaryDirectory(prefix="remedies_scenes_") as tmp:
        base, adapters = (args.base, args.pvm or []) if args.base else tiny_base(Path(tmp))
        model, processor = load_base(base)
        n_layers = len(decoder_layers(model))
        budget = args.max_new_tokens or (32 if not args.base else 1024)
        size = 448 if args.base else 64
        records_dir = (Path(args.out) / "records" if args.base else Path(tmp) / "records")
        name = str(Path(base).resolve())
        tuned, sweep_baseline = sweep(model, processor, ScenesSuite(args.sweep_scenes, seed=1, image_size=size, max_new_tokens=budget),
                      records_dir / f"remedies-scenes-sweep-{args.sweep_scenes}", name, args.smoke)
        print_sweep(tuned, sweep_baseline, "held-out set 1", n_layers)
        suite = ScenesSuite(args.scenes, seed=0, image_size=size, max_new_tokens=budget)
        metrics, records = run_variants(model, processor, suite, comparison(adapters, tuned, n_layers),
                                        records_dir / f"remedies-scenes-{args.scenes}", probes=True, base=name)
    rows = table(metrics, records, world=False)
    print_table(rows, metrics["metric"]["name"])
    return {"suite": "scenes", "base": args.base or "tiny random Qwen3-VL (pvm_probe.zoo)", "held_out": suite.settings(),
            "table": rows, "chosen": {arm: s["chosen"] for arm, s in tuned.items()},
            "sweep": {arm: s["results"] for arm, s in tuned.items()}, "sweep_baseline": sweep_baseline,
            "metrics": metrics}


def tiny_base(directory: Path) -> tuple[str, list[str]]:
    """A tiny random Qwen3-VL checkpoint with the scenes' words, and an untrained PVM adapter (alpha 1) for it."""
    from pvm_probe import PVMConfig, attach_pvm
    from pvm_probe.loading import load_base
    from pvm_probe.suites.scenes.words import SCENE_WORDS
    from pvm_probe.zoo import save_tiny_checkpoint

    base = save_tiny_checkpoint("qwen3_vl", directory / "base", words=SCENE_WORDS)
    model, _ = load_base(base)
    text = model.config.get_text_config()
    torch.manual_seed(0)
    handle = attach_pvm(model, PVMConfig.for_model(text.hidden_size, text.num_hidden_layers, alpha_init=1.0))
    handle.save(directory / "pvm-untrained")
    handle.remove()
    return str(base), [str(directory / "pvm-untrained")]


def main(argv=None) -> dict:
    args = script_arguments(__doc__, argv, scenes=64, extra=arguments)
    if args.table:  # docs/remedies.md's table from a finished run's JSON
        print(markdown_table(json.loads(Path(args.table).read_text())["table"]))
        return {}
    if args.smoke:
        args.sweep_scenes = 2
    start = time.perf_counter()
    result = write(args, scenes(args) if args.suite == "scenes" else world(args), start)
    if args.smoke and args.suite == "world":  # the scenes path too, on a tiny random checkpoint (seconds)
        args.suite, start = "scenes", time.perf_counter()
        write(args, scenes(args), start)
    return result


def write(args, result: dict, start: float) -> dict:
    """The figure and the JSON of one setting (remedies.* for the world, remedies_scenes.* for scenes)."""
    from pvm_probe.plots.report import remedies

    stem = "remedies" if result["suite"] == "world" else "remedies_scenes"
    fig = remedies(result.pop("metrics"), REMEDIES.names()).static()
    fig.suptitle(f"{result['suite']} suite: PVM vs training-free remedies ({args.scenes} held-out scenes)", fontsize=9,
                 y=1.03)
    save_figure(fig, args.out, stem)
    result.update(scenes=args.scenes, sweep_scenes=args.sweep_scenes, total_seconds=time.perf_counter() - start)
    atomic_write_json(Path(args.out) / f"{stem}.json", result)
    print(f"\n{stem}: {result['total_seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
