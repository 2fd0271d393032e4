"""Cost of the dilution fit at real scale: `dilution_report` on 36 layers x 1,024 tokens vs the old curve_fit way.

The curves (seeded): per layer a hyperbola a/(t+b)+c with noise; odd layers drop to a plateau at a known
t (two-phase), even layers decay to the end. `dilution_report` (closed-form fit over a zoomed b grid, break
search over every split with prefix sums) is timed on all layers, best of --repeats. The baseline is the
previous implementation, copied below: scipy curve_fit for the hyperbola and a break search calling
curve_fit at every T//64-th split. It runs on ONE layer only and is extrapolated x L (said in the output).
Prints a table, writes JSON (--json) with the machine description, last line `fit_seconds=<seconds>`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pvm_probe.io import atomic_write_json, describe_machine
from pvm_probe.probes import dilution_report, hyperbola

NOISE = 5e-4


def make_curves(layers: int, tokens: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy curves [L, T] and the true break per layer [L] (T for the layers that decay to the end)."""
    rng = np.random.default_rng(seed)
    t = np.arange(tokens, dtype=float)
    curves, breaks = [], []
    for layer in range(layers):
        decay = hyperbola(t, rng.uniform(0.5, 3.0), rng.uniform(1.0, 50.0), rng.uniform(0.0, 0.05))
        k0 = int(rng.integers(tokens // 10, tokens * 9 // 10)) if layer % 2 else tokens
        curves.append(np.where(t < k0, decay, decay[k0 - 1] * 0.7) + rng.normal(0, NOISE, tokens))
        breaks.append(k0)
    return np.stack(curves), np.array(breaks)


# ---------------------------------------------------------------- baseline: the previous implementation


class Baseline:
    """The curve_fit fit and strided break search as they were, counting curve_fit calls."""

    def __init__(self):
        self.calls, self.seconds_in_curve_fit = 0, 0.0

    def fit_hyperbola(self, t, y):
        from scipy.optimize import curve_fit

        span = max(float(y.max() - y.min()), 1e-12)
        p0 = (span * (t[-1] - t[0] + 1) / 10, 1.0, float(y[-1]))
        lower, upper = (-np.inf, -float(t.min()) + 1e-6, -np.inf), (np.inf, 1e6, np.inf)
        start = time.perf_counter()
        try:
            params, cov = curve_fit(hyperbola, t, y, p0=p0, bounds=(lower, upper), maxfev=20000)
            errors = np.sqrt(np.clip(np.diag(cov), 0, None))
        except (RuntimeError, ValueError):
            params, errors = np.array([0.0, 1.0, float(y.mean())]), np.full(3, np.inf)
        self.calls += 1
        self.seconds_in_curve_fit += time.perf_counter() - start
        rmse = float(np.sqrt(np.mean((hyperbola(t, *params) - y) ** 2)))
        return params, errors, rmse

    def find_break(self, y, min_plateau=4):
        T = len(y)
        t = np.arange(T, dtype=float)
        flat = float(((y - y.mean()) ** 2).sum())
        best, best_cost = 0, flat
        noise = np.median(np.abs(np.diff(y))) ** 2 * T
        for k in range(4, T - min_plateau + 1, max(1, T // 64)):
            _, _, rmse = self.fit_hyperbola(t[:k], y[:k])
            cost = rmse**2 * k + float(((y[k:] - y[k:].mean()) ** 2).sum())
            if cost < best_cost - noise:
                best, best_cost = k, cost
        if self.fit_hyperbola(t, y)[2] ** 2 * T < best_cost - noise:
            best = T
        return best

    def fit_dilution(self, y):
        params, _, _ = self.fit_hyperbola(np.arange(len(y), dtype=float), y)
        return params, self.find_break(y)


# ---------------------------------------------------------------------------------------------- main


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="default: figures/bench_fit.json (a --smoke run: out/bench/)")
    parser.add_argument("--layers", type=int, default=36)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-layer", type=int, default=1, help="the one layer the baseline fits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="4 layers x 128 tokens, one repeat")
    args = parser.parse_args(argv)
    args.json = args.json or ("out/bench" if args.smoke else "figures") + "/bench_fit.json"
    if args.smoke:
        args.layers, args.tokens, args.repeats = 4, 128, 1
    curves, breaks = make_curves(args.layers, args.tokens, args.seed)  # [L, T], [L]

    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        report = dilution_report(curves)
        times.append(time.perf_counter() - start)
    fit_seconds = min(times)
    break_error = np.abs(report.break_t - breaks)  # [L]

    layer = min(args.baseline_layer, args.layers - 1)
    baseline = Baseline()
    start = time.perf_counter()
    old_params, old_break = baseline.fit_dilution(curves[layer])
    baseline_layer_s = time.perf_counter() - start
    baseline_s = baseline_layer_s * args.layers
    per_call = baseline.seconds_in_curve_fit / baseline.calls
    all_splits = args.tokens - 4 - 4 + 1  # curve_fit at every split, as the new search does

    print(f"curves: {args.layers} layers x {args.tokens} tokens, noise {NOISE}, seed {args.seed}")
    print(f"new   dilution_report, all layers, every split:   {fit_seconds:9.3f} s "
          f"(best of {args.repeats}: {', '.join(f'{s:.3f}' for s in times)}), "
          f"{1000 * fit_seconds / args.layers:.1f} ms/layer")
    print(f"old   curve_fit, layer {layer} only, split every {max(1, args.tokens // 64)}: {baseline_layer_s:9.3f} s "
          f"({baseline.calls} curve_fit calls, {1000 * per_call:.1f} ms each)")
    print(f"old   extrapolated x{args.layers} layers (not run):         {baseline_s:9.3f} s")
    print(f"old   with curve_fit at every split ({all_splits}), extrapolated x{args.layers} (not run): "
          f"{per_call * (all_splits + 2) * args.layers:9.1f} s")
    print(f"speed-up vs the extrapolated baseline: {baseline_s / fit_seconds:.1f}x")
    print(f"breaks: new within 2 tokens of the truth on {int((break_error <= 2).sum())}/{args.layers} layers; "
          f"layer {layer}: truth {breaks[layer]}, new {report.break_t[layer]}, old {old_break}")
    doc = {"machine": describe_machine(), "layers": args.layers, "tokens": args.tokens, "noise": NOISE,
           "seed": args.seed, "repeats": args.repeats, "fit_seconds": fit_seconds, "fit_seconds_all": times,
           "baseline_layer": layer, "baseline_one_layer_s": baseline_layer_s,
           "baseline_extrapolated_s": baseline_s, "baseline_curve_fit_calls": baseline.calls,
           "baseline_seconds_per_curve_fit": per_call,
           "baseline_every_split_extrapolated_s": per_call * (all_splits + 2) * args.layers,
           "speedup": baseline_s / fit_seconds,
           "true_break": breaks.tolist(), "new_break": report.break_t.tolist(), "old_break_baseline_layer": old_break,
           "old_params_baseline_layer": old_params.tolist(), "new_params_baseline_layer": report.params[layer].tolist(),
           "note": "baseline (scipy curve_fit, break search at every T//64-th split) run on one layer only and "
                   "extrapolated x layers; the every-split figure is calls x mean seconds per call, not run"}
    atomic_write_json(args.json, doc)
    print(f"fit_seconds={fit_seconds:.3f}")
    return fit_seconds


if __name__ == "__main__":
    main()
