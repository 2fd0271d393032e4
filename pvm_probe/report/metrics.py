"""Records -> metrics: what the report, `paint` and `probe` print, per variant, for any suite.

Everything is computed from `records.jsonl` alone (no model). Layers are named by their decoder-layer
index everywhere; PVM blocks by the decoder layer they sit in. Quarters are the suite's own (see its
docstring). Rates are None where a quarter holds no claim.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..records import mean_of
from ..registry import PROBES

SCHEMA_VERSION = 2


def primary_name(suite: dict, higher_is_better: bool) -> str:
    return "claims correct" if higher_is_better else ("hallucination rate" if suite["suite"] == "images"
                                                      else "error rate")


def variant_metrics(records: list[dict], kinds: list[str], higher_is_better: bool) -> dict:
    """One variant's records -> its metrics (JSON-able): claims by quarter, then each probe's own keys."""
    claims = [c for r in records for c in r["claims"]]
    out = {"requests": len(records), "answer_tokens_mean": mean_of([r["n_tokens"] for r in records]),
           "stopped_share": mean_of([r["stopped"] for r in records]),
           "claims_by_quarter": _claims_by_quarter(claims, kinds)}
    rates = out["claims_by_quarter"]["all"]
    out["primary_by_quarter"] = rates["correct_rate"] if higher_is_better else rates["error_rate"]
    out["primary"] = rates["correct_overall"] if higher_is_better else rates["error_overall"]
    if "object" in kinds:
        objects = out["claims_by_quarter"]["object"]
        out["chair_i_by_quarter"], out["chair_i"] = objects["error_rate"], objects["error_overall"]
        out["chair_s"] = mean_of([any(c["kind"] == "object" and not c["correct"] for c in r["claims"])
                                for r in records if any(c["kind"] == "object" for c in r["claims"])])
    for name, probe in PROBES.items():
        if records and name in records[0]:
            section = probe.metrics(records)
            clash = sorted(set(section) & set(out))
            if clash:
                raise InputError(f"probe {name!r} writes metrics key {clash[0]!r}, which another section holds")
            out.update(section)
    return out


def _claims_by_quarter(claims: list[dict], kinds: list[str]) -> dict:
    """{kind or "all": {"n": [4], "correct": [4], "correct_rate": [4], "error_rate": [4], overall rates}}."""
    table = {}
    for kind in ["all", *kinds]:
        chosen = [c for c in claims if kind in ("all", c["kind"])]
        n = [sum(c["quarter"] == q for c in chosen) for q in range(4)]
        correct = [sum(c["quarter"] == q and c["correct"] for c in chosen) for q in range(4)]
        total, right = sum(n), sum(correct)
        table[kind] = {"n": n, "correct": correct,
                       "correct_rate": [k / m if m else None for k, m in zip(correct, n, strict=True)],
                       "error_rate": [1 - k / m if m else None for k, m in zip(correct, n, strict=True)],
                       "correct_overall": right / total if total else None,
                       "error_overall": 1 - right / total if total else None}
    return table


PAPER = [  # the paper's reported numbers (Qwen3-VL), for side-by-side reading only
    ("average accuracy gain over 8 benchmarks, 8B", "+4.8 points", None),
    ("average accuracy gain over 8 benchmarks, 4B", "+4.4 points", None),
    ("MathVerse gain by answer-length quarter, 8B", "+6.1 / +7.3 / +17.0 / +27.3 points", "gain_by_quarter"),
    ("controls, 8B average accuracy: baseline / iso-parameter MLP / PVM", "66.7 / 69.0 / 71.5", "controls"),
    ("PVM parameters, 8B (layers 8, 16, 24)", "27.92 M (0.32 % of 8B)", "num_parameters"),
    ("latency per token, H200 bf16: baseline / PVM", "24.28 / 25.46 ms", None),
    ("throughput, H200 bf16: baseline / PVM", "41.18 / 39.28 tokens/s", None),
]


def build_metrics(run: dict, records: list[dict], kinds: list[str], higher_is_better: bool,
                  positional: bool = True) -> dict:
    """metrics.json (schema 2) from a run's description (run.json) and records: nothing else is read.
    `positional`: whether a claim's place in the answer means anything (`Suite.positional`)."""
    metrics = {"schema_version": SCHEMA_VERSION, "suite": run["suite"]["suite"], "base": run["base"],
               "architecture": run["architecture"], "setting": setting_of(run),
               "metric": {"name": primary_name(run["suite"], higher_is_better), "higher_is_better": higher_is_better,
                          "kinds": list(kinds), "positional": positional},
               "variants": {}}
    for name, spec in run["variants"].items():
        mine = [r for r in records if r["variant"] == name]
        if not mine:
            continue
        about = spec.get("about") or {}
        extra = {k: about[k] for k in ("num_parameters", "block", "visual_source") if k in about}
        metrics["variants"][name] = {"kind": _kind(spec), **extra, **variant_metrics(mine, kinds, higher_is_better)}
    metrics["image_leaves_window_at"] = _window_exit(metrics)
    metrics["headline"] = headline(metrics)
    metrics["paper"] = [{"what": w, "paper": v} for w, v, _ in PAPER]
    metrics["warnings"] = warnings_of(metrics)
    return metrics


def warnings_of(metrics: dict) -> list[str]:
    """What a reader must know before the numbers: the variants in which no claim was parsed (their headline
    is all "-" and their claim panels are empty)."""
    empty = [n for n, m in metrics["variants"].items() if not sum(m["claims_by_quarter"]["all"]["n"])]
    if not empty:
        return []
    hint = ("; lines without \"objects\" are not scored: give each line the objects truly present"
            if metrics["suite"] == "images" else "")
    if len(empty) < len(metrics["variants"]):
        return [f"no claim was parsed in the answers of {', '.join(empty)}: their headline rows and claim panels "
                f"are empty{hint}"]
    return [f"no claim was parsed in any answer: the headline and the claim panels are empty, and nothing here "
            f"tells right from wrong; the {metrics['suite']} suite found nothing to score in the answers "
            f"(read a few in records.jsonl){hint}"]


def setting_of(run: dict) -> dict:
    """The suite's settings and the generation's; the answer budget is the suite's, capped by the runner's
    (a run without a cap keeps the suite's budget rather than None)."""
    suite, generation = run["suite"], run["generation"]
    budgets = [b for b in (suite.get("max_new_tokens"), generation.get("max_new_tokens")) if b is not None]
    return {**suite, **generation, "max_new_tokens": min(budgets) if budgets else None}


def _kind(spec: dict) -> str:
    return spec.get("control") or spec.get("remedy") or ("adapter" if spec.get("adapter") else "baseline")


def _window_exit(metrics: dict) -> int | None:
    """First generated position from which the baseline's image share is exactly 0 in every layer (the
    image has left a windowed base's attention window), or None."""
    base = metrics["variants"].get("baseline", {})
    if "mass_by_layer" not in base:
        return None
    curve = _curve(base)  # [L, T]
    reached = ~np.isnan(curve).all(0)  # [T] positions some answer reached
    zero = (curve == 0).all(0) & reached  # [T]
    stays = np.flip(np.logical_and.accumulate(np.flip(zero | ~reached)))  # [T] zero from t on
    hits = np.flatnonzero(stays & zero)
    return int(hits[0]) if len(hits) else None


def _curve(m: dict) -> np.ndarray:
    """A variant's `mass_by_layer` back as an array [L, T], None -> NaN."""
    return np.array([[np.nan if v is None else v for v in row] for row in m["mass_by_layer"]], dtype=float)


def _late_mass(m: dict) -> float | None:
    """Mean image share over the last quarter of generated positions and every layer."""
    if "mass_by_layer" not in m:
        return None
    curve = _curve(m)  # [L, T]
    part = np.array_split(curve, 4, axis=1)[3]
    return float(np.nanmean(part)) if np.isfinite(part).any() else None


def headline(metrics: dict) -> dict:
    """Per variant: the primary metric in the first and last quarter and overall, the last-quarter image share,
    and the gain over the baseline (in points; positive = better); then what the controls say, in lines."""
    variants, better = metrics["variants"], metrics["metric"]["higher_is_better"]
    base = variants.get("baseline")
    sign = 1 if better else -1
    rows = {}
    for name, m in variants.items():
        q = m["primary_by_quarter"]
        row = {"q1": q[0], "q4": q[3], "overall": m["primary"], "q4_image_share": _late_mass(m)}
        if base is not None and name != "baseline":
            row["gain_q4"] = _points(sign, q[3], base["primary_by_quarter"][3])
            row["gain_overall"] = _points(sign, m["primary"], base["primary"])
        rows[name] = row
    lines, missing = _control_lines(variants, rows)
    return {"variants": rows, "controls": lines, "missing_controls": missing}


def signed(points: float) -> str:
    """Points with their sign to one decimal; a value that rounds to zero is +0.0, never -0.0."""
    return f"{round(points, 1) + 0.0:+.1f}"


def _points(sign: int, value, reference) -> float | None:
    return None if value is None or reference is None else round(100 * sign * (value - reference), 2)


def _control_lines(variants: dict, rows: dict) -> tuple[list[str], list[str]]:
    """One sentence per control that was run, and the names of the controls that were not."""
    lines, missing = [], []
    adapters = [n for n, m in variants.items() if m["kind"] == "adapter"]
    memory = [n for n in adapters if variants[n].get("block", "pvm") == "pvm"]
    for name in memory:
        gain = rows[name].get("gain_q4")
        swapped = rows.get(f"{name} | swapped image")
        if swapped is None:
            missing.append(f"swapped image for {name}")
        elif gain:
            removed = 100 * (gain - (swapped.get("gain_q4") or 0)) / gain
            lines.append(f"{name}: the swapped image removes {removed:.0f} % of its last-quarter gain "
                         f"({signed(gain)} -> {signed(swapped.get('gain_q4') or 0)} points)")
        else:
            lines.append(f"{name}: no last-quarter gain to explain (gain {gain} points)")
        off = rows.get(f"{name} | gates off")
        if off is None:
            missing.append(f"gates off for {name}")
        else:
            lines.append(f"{name}, gates off: {signed(off.get('gain_overall') or 0)} points against the baseline "
                         "(must be 0: alpha = 0 is the backbone)")
    mlp = [n for n in adapters if variants[n].get("block") == "mlp"]
    for name in mlp:
        lines.append(f"the MLP control {name} (same size, no image) gains {signed(rows[name].get('gain_q4') or 0)} "
                     f"points in the last quarter")
    if memory and not mlp:
        missing.append("an iso-parameter MLP control adapter (train-pvm --block mlp)")
    return lines, missing
