"""Dilution fit: visual mass m(t) ~ a / (t + b) + c per layer, the decay/plateau break, the layer profile.

`fit_dilution(curve)` fits one curve with scipy's curve_fit (1-sigma errors from the covariance);
`find_break(curve)` locates the end of the decay phase (two-phase dilution) as the best two-segment
fit: a/(t+b) decay before the break, a constant after it; `dilution_report(by_layer)` does both for every
layer of an `AttentionMassResult.by_layer()` array [L, T] and adds the per-layer profile.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import curve_fit

from ._io import ResultIO


def hyperbola(t, a, b, c):
    return a / (t + b) + c


@dataclass
class DilutionFit(ResultIO):
    a: float
    b: float
    c: float
    errors: list  # 1-sigma errors of (a, b, c)
    rmse: float
    break_t: int  # end of the decay phase (T if the curve never plateaus, 0 for a pure plateau)
    plateau: float  # mean level after the break


@dataclass
class DilutionReport(ResultIO):
    params: np.ndarray  # [L, 3] (a, b, c) per layer
    errors: np.ndarray  # [L, 3] 1-sigma errors
    rmse: np.ndarray  # [L]
    break_t: np.ndarray  # [L] int
    plateau: np.ndarray  # [L]
    profile: np.ndarray  # [L] mean mass per layer
    layers: list = field(default_factory=list)

    def top_layers(self, k: int = 3) -> list[int]:
        """The k layers that carry the most visual mass."""
        return [self.layers[i] for i in np.argsort(-self.profile)[:k]]


def fit_hyperbola(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares a/(t+b)+c with b > -min(t); returns params [3], 1-sigma errors [3], rmse."""
    span = max(float(y.max() - y.min()), 1e-12)
    p0 = (span * (t[-1] - t[0] + 1) / 10, 1.0, float(y[-1]))
    lower, upper = (-np.inf, -float(t.min()) + 1e-6, -np.inf), (np.inf, 1e6, np.inf)
    try:
        params, cov = curve_fit(hyperbola, t, y, p0=p0, bounds=(lower, upper), maxfev=20000)
        errors = np.sqrt(np.clip(np.diag(cov), 0, None))
    except (RuntimeError, ValueError):
        params, errors = np.array([0.0, 1.0, float(y.mean())]), np.full(3, np.inf)
    errors = np.where(np.isfinite(errors), errors, np.inf)
    rmse = float(np.sqrt(np.mean((hyperbola(t, *params) - y) ** 2)))
    return params, errors, rmse


def find_break(y: np.ndarray, min_plateau: int = 4) -> tuple[int, float]:
    """Two-phase split: the t* minimising the squared error of [a/(t+b)+c on t < t*] + [constant on t >= t*].
    A flat curve gives t* = 0; a curve decaying to the end gives t* = T."""
    T = len(y)
    t = np.arange(T, dtype=float)
    flat = float(((y - y.mean()) ** 2).sum())
    best, best_cost = 0, flat
    noise = np.median(np.abs(np.diff(y))) ** 2 * T  # a break must beat the flat fit by more than noise
    for k in range(4, T - min_plateau + 1, max(1, T // 64)):
        params, _, rmse = fit_hyperbola(t[:k], y[:k])
        cost = rmse**2 * k + float(((y[k:] - y[k:].mean()) ** 2).sum())
        if cost < best_cost - noise:
            best, best_cost = k, cost
    decay_only = fit_hyperbola(t, y)[2] ** 2 * T
    if decay_only < best_cost - noise:
        best = T
    return best, float(y[best:].mean()) if best < T else float(y[-1])


def fit_dilution(y: np.ndarray) -> DilutionFit:
    """Fit one curve y [T] (visual mass at generated positions t = 0..T-1)."""
    y = np.asarray(y, dtype=float)
    t = np.arange(len(y), dtype=float)
    params, errors, rmse = fit_hyperbola(t, y)
    break_t, plateau = find_break(y)
    return DilutionFit(*map(float, params), errors=errors.tolist(), rmse=rmse, break_t=int(break_t), plateau=plateau)


def dilution_report(by_layer: np.ndarray, layers=None) -> DilutionReport:
    """by_layer [L, T] (e.g. AttentionMassResult.by_layer()) -> per-layer fits and profile."""
    fits = [fit_dilution(row) for row in by_layer]
    return DilutionReport(
        params=np.array([[f.a, f.b, f.c] for f in fits]), errors=np.array([f.errors for f in fits]),
        rmse=np.array([f.rmse for f in fits]), break_t=np.array([f.break_t for f in fits]),
        plateau=np.array([f.plateau for f in fits]), profile=np.asarray(by_layer).mean(1),
        layers=list(range(len(by_layer))) if layers is None else list(layers))
