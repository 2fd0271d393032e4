"""Dilution fit: visual mass m(t) ~ a / (t + b) + c per layer, the decay/plateau break, the layer profile.

Method (numpy only, bounded time). For a fixed b the model is linear in (a, c) with x = 1 / (t + b), so
a and c, and the sum of squared errors SSE(b), come from closed-form least squares. b is searched on a
log-spaced grid of u = b + min(t) over (0, ~1e4], vectorised over the grid, then refined by zooming
around the best grid point (six rounds, each 16x finer: u to ~1e-8 relative). 1-sigma errors of (a, b, c) come from the
Jacobian at the optimum (columns x, -a x^2, 1; cov = s^2 (J^T J)^-1), infinite where it is singular.

Two-phase break: for every split k (decay on the first k points, constant on the rest; all k, no stride)
the cost is SSE of the best hyperbola on the prefix plus SSE of a constant on the suffix. Prefix sums
over t of x, x^2, xy (per grid b) and of y, y^2 give every (b, k) in O(1): a [G, T] array per layer,
zoomed in b around the best split (three rounds), then b refined fully at the chosen split. A break must beat both the flat fit and the decay-only fit by more
than a noise term (median |diff y|^2 * T); a decay-only fit must beat the flat fit by the same margin.
So a curve decaying to the end gives break_t = T, a pure plateau gives 0 (the earlier version compared a
break only with the flat fit, so noisy curves decaying to the end got a break somewhere inside).

NaN entries (positions no request reached) are left out; the fit uses the finite entries at their true
t. A curve with fewer than MIN_POINTS finite entries gets NaN parameters and break_t = -1.
`dilution_report(by_layer [L, T])` fits every layer (one at a time; each fit is vectorised over b).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from ._io import ResultIO

MIN_POINTS = 4  # fewer finite points than this: no fit (NaN parameters)
B_MAX = 1e4  # upper end of the b search
U_MIN = 1e-4  # lower end of the search of u = b + min(t) > 0
GRID = 97  # log-spaced grid points over [U_MIN, B_MAX + min(t)] (12 per decade)
ZOOM = 33  # grid points per zoom round, spanning the two grid cells around the best point
FIT_ROUNDS = 6  # zoom rounds for the full-curve fit (each narrows the step 16x)
BREAK_ROUNDS = 3  # zoom rounds for the break search
SINGULAR = 1e12  # condition number of the scaled J^T J above which the errors are infinite
ROUNDING = 1e-10  # prefix variance of x below this fraction of its sum of squares is rounding, not spread


def hyperbola(t, a, b, c):
    return a / (t + b) + c


@dataclass
class DilutionFit(ResultIO):
    """One curve's fit: a / (t + b) + c with 1-sigma errors and RMSE, the end of the decay phase, the plateau."""

    a: float
    b: float
    c: float
    errors: list  # 1-sigma errors of (a, b, c)
    rmse: float
    break_t: int  # end of the decay phase (T if the curve never plateaus, 0 for a pure plateau, -1 no fit)
    plateau: float  # mean level after the break


@dataclass
class DilutionReport(ResultIO):
    """Every layer's fit (`dilution_report`), and the layer profile of mean visual mass."""

    params: np.ndarray  # [L, 3] (a, b, c) per layer
    errors: np.ndarray  # [L, 3] 1-sigma errors
    rmse: np.ndarray  # [L]
    break_t: np.ndarray  # [L] int
    plateau: np.ndarray  # [L]
    profile: np.ndarray  # [L] mean mass per layer (over finite positions)
    layers: list = field(default_factory=list)

    def top_layers(self, k: int = 3) -> list[int]:
        """The k layers that carry the most visual mass."""
        return [self.layers[i] for i in np.argsort(-self.profile)[:k]]


# ---------------------------------------------------------------------------------------------- b grid


def _log_grid(t_min: float) -> np.ndarray:
    """Initial grid of log u, u = b + min(t). [GRID]"""
    return np.linspace(np.log(U_MIN), np.log(B_MAX + t_min), GRID)


def _zoom(log_u: np.ndarray, best: int) -> np.ndarray:
    """A finer grid spanning the cells on either side of log_u[best]. [ZOOM]"""
    lo, hi = log_u[max(best - 1, 0)], log_u[min(best + 1, len(log_u) - 1)]
    return np.linspace(lo, hi, ZOOM)


def _x(t: np.ndarray, log_u: np.ndarray, t_min: float) -> np.ndarray:
    """x = 1 / (t + b) for every grid b. t [N], log_u [G] -> [G, N]"""
    return 1.0 / (t[None, :] - t_min + np.exp(log_u)[:, None])


# ----------------------------------------------------------------------------------- full-curve fit


def _line_sse(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares y ~ a x + c for every row of x [G, N]; y [N] -> a [G], c [G], SSE [G] (from residuals)."""
    xc = x - x.mean(1, keepdims=True)  # [G, N]
    yc = y - y.mean()  # [N]
    vxx = (xc * xc).sum(1)  # [G]
    a = np.divide(xc @ yc, vxx, out=np.zeros_like(vxx), where=vxx > 0)  # [G]
    c = y.mean() - a * x.mean(1)  # [G]
    residual = yc[None, :] - a[:, None] * xc  # [G, N]
    return a, c, (residual * residual).sum(1)


def _fit_at(t: np.ndarray, y: np.ndarray, b: float) -> tuple[float, float, float]:
    """(a, c, SSE) of the least-squares a/(t+b)+c at a fixed b; t, y [N]."""
    a, c, sse = _line_sse(_x(t, np.log([b + t.min()]), float(t.min())), y)
    return float(a[0]), float(c[0]), float(sse[0])


def _const_sse(y: np.ndarray) -> float:
    return float(((y - y.mean()) ** 2).sum()) if len(y) else 0.0


def _best_b(t: np.ndarray, y: np.ndarray) -> float:
    """The b minimising SSE(b) with (a, c) profiled out: grid search, then FIT_ROUNDS zooms."""
    t_min = float(t.min())
    log_u = _log_grid(t_min)  # [G]
    for round_ in range(FIT_ROUNDS + 1):
        best = int(np.argmin(_line_sse(_x(t, log_u, t_min), y)[2]))
        if round_ < FIT_ROUNDS:
            log_u = _zoom(log_u, best)
    return float(np.exp(log_u[best]) - t_min)


def _errors(t: np.ndarray, y: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """1-sigma errors of (a, b, c) from the Jacobian at the optimum; inf where J^T J is singular. [3]"""
    n = len(t)
    if n <= 3:
        return np.full(3, np.inf)
    x = 1.0 / (t + b)  # [N]
    jac = np.stack([x, -a * x * x, np.ones_like(x)], axis=1)  # [N, 3]
    jtj = jac.T @ jac  # [3, 3]
    scale = np.sqrt(np.diag(jtj))  # [3]
    if np.any(scale == 0) or not np.all(np.isfinite(jtj)):
        return np.full(3, np.inf)
    scaled = jtj / np.outer(scale, scale)  # [3, 3]
    if np.linalg.cond(scaled) > SINGULAR:
        return np.full(3, np.inf)
    s2 = float(((y - hyperbola(t, a, b, c)) ** 2).sum()) / (n - 3)
    cov = s2 * np.linalg.inv(scaled) / np.outer(scale, scale)  # [3, 3]
    return np.sqrt(np.clip(np.diag(cov), 0, None))


def _finite(y) -> tuple[np.ndarray, np.ndarray]:
    """The finite entries of a curve y [T] and their positions t: (t [N], y [N])."""
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(y)
    return np.arange(len(y), dtype=float)[keep], y[keep]


def fit_hyperbola(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares a/(t+b)+c with -min(t) < b <= B_MAX on the finite entries of y [N] at positions t [N];
    returns params [3], 1-sigma errors [3], rmse. Fewer than MIN_POINTS finite points: all NaN."""
    t, y = np.asarray(t, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(y) & np.isfinite(t)
    t, y = t[keep], y[keep]
    if len(y) < MIN_POINTS:
        return np.full(3, np.nan), np.full(3, np.nan), float("nan")
    b = _best_b(t, y)
    a, c, _ = _fit_at(t, y, b)
    params = np.array([a, b, c])
    rmse = float(np.sqrt(np.mean((hyperbola(t, *params) - y) ** 2)))
    return params, _errors(t, y, *params), rmse


# ------------------------------------------------------------------------------------- break search


def _prefix(v: np.ndarray) -> np.ndarray:
    """Sums over the first k entries along the last axis, k = 0..N. [..., N] -> [..., N + 1]"""
    out = np.zeros(v.shape[:-1] + (v.shape[-1] + 1,))
    np.cumsum(v, axis=-1, out=out[..., 1:])
    return out


def _split_costs(t: np.ndarray, y: np.ndarray, log_u: np.ndarray, t_min: float) -> np.ndarray:
    """cost[g, k] = SSE of the best a x + c on the first k points (x = 1/(t + b_g)) + SSE of a constant on
    the rest, for every grid b and every split k = 0..N. t, y [N] -> [G, N + 1] (y centred for accuracy)."""
    n = len(y)
    x = _x(t, log_u, t_min)  # [G, N]
    x = x - x.mean(1, keepdims=True)  # shift (fits are invariant to it), for accuracy of the sums
    y = y - y.mean()  # [N]
    k = np.arange(n + 1, dtype=float)  # [N + 1] points in the prefix
    sy, syy = _prefix(y), _prefix(y * y)  # [N + 1]
    sx, sxx, sxy = _prefix(x), _prefix(x * x), _prefix(x * y[None, :])  # [G, N + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        vxx = sxx - sx * sx / k  # [G, N + 1]
        vxy = sxy - sx * sy / k  # [G, N + 1]
        vyy = syy - sy * sy / k  # [N + 1]
        fit = np.where(vxx > ROUNDING * sxx, vxy * vxy / vxx, 0.0)  # [G, N + 1] x ~ constant: no slope
        decay = np.clip(vyy[None, :] - fit, 0, None)  # [G, N + 1]
        m = n - k  # [N + 1] points in the suffix
        rest_y, rest_yy = sy[-1] - sy, syy[-1] - syy  # [N + 1]
        flat = np.where(m > 0, np.clip(rest_yy - rest_y * rest_y / m, 0, None), 0.0)  # [N + 1]
    return decay + flat[None, :]


def _best_split(t: np.ndarray, y: np.ndarray, min_plateau: int) -> tuple[int, float]:
    """The split k in [MIN_POINTS, N - min_plateau] with the least two-phase cost, zooming b around the
    best (b, k) for BREAK_ROUNDS rounds, then refining b fully at the chosen split; returns (k, cost), or
    (0, inf) when no split is allowed."""
    n = len(y)
    lo, hi = MIN_POINTS, n - min_plateau
    if hi < lo:
        return 0, float("inf")
    t_min = float(t.min())
    log_u = _log_grid(t_min)  # [G]
    best_cost = np.full(hi - lo + 1, np.inf)  # [K] best cost per allowed split over every b tried
    for _ in range(BREAK_ROUNDS + 1):
        cost = _split_costs(t, y, log_u, t_min)[:, lo:hi + 1]  # [G, K]
        best_cost = np.minimum(best_cost, cost.min(0))
        k = int(np.argmin(best_cost))
        log_u = _zoom(log_u, int(np.argmin(cost[:, k])))
    refined = _fit_at(t[:lo + k], y[:lo + k], _best_b(t[:lo + k], y[:lo + k]))[2] + _const_sse(y[lo + k:])
    return lo + k, min(float(best_cost[k]), refined)


def _noise(y: np.ndarray) -> float:
    """The margin a richer model must win by: median |diff y|^2 * N."""
    return float(np.median(np.abs(np.diff(y))) ** 2 * len(y)) if len(y) > 1 else 0.0


def _decide_break(t: np.ndarray, y: np.ndarray, length: int, rmse: float, min_plateau: int) -> tuple[int, float]:
    """Choose among flat (0), decay to the end (length) and a two-phase break (the t where the plateau starts)
    for the finite entries y [N] at positions t [N] of a curve of `length`; rmse: of the decay-only fit."""
    if len(y) < MIN_POINTS:
        return -1, float(y.mean()) if len(y) else float("nan")
    decay_sse = rmse**2 * len(y)
    flat = _const_sse(y)
    noise = _noise(y)
    k, split = _best_split(t, y, min_plateau)
    if split < min(flat, decay_sse) - noise:
        return int(t[k]), float(y[k:].mean())
    if decay_sse < flat - noise:
        return length, float(y[-1])
    return 0, float(y.mean())


def find_break(y: np.ndarray, min_plateau: int = 4) -> tuple[int, float]:
    """Two-phase split of a curve y [T]: the t* minimising the squared error of [a/(t+b)+c on t < t*] +
    [constant on t >= t*], over every t*. Returns (t*, plateau = mean of y on t >= t*). A flat curve gives
    t* = 0; a curve decaying to the end gives t* = T. NaN entries are left out; fewer than MIN_POINTS finite
    values give t* = -1 and their mean."""
    y = np.asarray(y, dtype=float)
    t, yf = _finite(y)
    return _decide_break(t, yf, len(y), fit_hyperbola(t, yf)[2], min_plateau)


def fit_dilution(y: np.ndarray) -> DilutionFit:
    """Fit one curve y [T] (visual mass at generated positions t = 0..T-1; NaN where nothing was measured)."""
    y = np.asarray(y, dtype=float)
    t, yf = _finite(y)
    params, errors, rmse = fit_hyperbola(t, yf)
    break_t, plateau = _decide_break(t, yf, len(y), rmse, min_plateau=4)
    return DilutionFit(*map(float, params), errors=errors.tolist(), rmse=rmse, break_t=int(break_t), plateau=plateau)


def dilution_report(by_layer: np.ndarray, layers=None, progress: bool = False) -> DilutionReport:
    """by_layer [L, T] (e.g. AttentionMassResult.by_layer(); NaN where unmeasured) -> per-layer fits and profile."""
    by_layer = np.asarray(by_layer, dtype=float)  # [L, T]
    fits = [fit_dilution(row) for row in tqdm(by_layer, desc="dilution fit", disable=not progress)]
    finite = np.isfinite(by_layer)  # [L, T]
    counts = finite.sum(1)  # [L]
    profile = np.where(finite, by_layer, 0).sum(1) / np.where(counts > 0, counts, np.nan)  # [L]
    return DilutionReport(
        params=np.array([[f.a, f.b, f.c] for f in fits]).reshape(-1, 3),
        errors=np.array([f.errors for f in fits]).reshape(-1, 3),
        rmse=np.array([f.rmse for f in fits]), break_t=np.array([f.break_t for f in fits], dtype=int),
        plateau=np.array([f.plateau for f in fits]), profile=profile,
        layers=list(range(len(by_layer))) if layers is None else list(layers))
