"""Dilution fit on synthetic curves with known parameters (the reference is the generating formula), and
the fast closed-form fit against an independent reference: scipy's curve_fit, run here."""

import numpy as np
import pytest
from scipy.optimize import curve_fit

from pvm_probe.probes import DilutionFit, DilutionReport, dilution_report, find_break, fit_dilution, hyperbola
from pvm_probe.probes.dilution import B_MAX, _best_split, fit_hyperbola


@pytest.mark.parametrize("a,b,c", [(2.0, 3.0, 0.05), (0.5, 1.0, 0.2), (10.0, 20.0, 0.01)])
def test_recovers_parameters_without_noise(a, b, c):
    t = np.arange(400.0)
    fit = fit_dilution(hyperbola(t, a, b, c))
    np.testing.assert_allclose([fit.a, fit.b, fit.c], [a, b, c], rtol=1e-6, atol=1e-8)
    assert fit.rmse < 1e-8


def test_recovers_parameters_with_noise_within_errors():
    rng = np.random.default_rng(0)
    a, b, c = 2.0, 3.0, 0.05
    t = np.arange(1000.0)
    fit = fit_dilution(hyperbola(t, a, b, c) + rng.normal(0, 0.002, t.shape))
    for value, true, err in zip([fit.a, fit.b, fit.c], [a, b, c], fit.errors, strict=False):
        assert abs(value - true) < 4 * err + 1e-3
    assert abs(fit.rmse - 0.002) < 3e-4


def test_pure_plateau_has_no_decay_phase():
    rng = np.random.default_rng(1)
    fit = fit_dilution(0.3 + rng.normal(0, 0.001, 300))
    assert fit.break_t == 0
    assert abs(fit.plateau - 0.3) < 1e-3
    assert abs(fit.a / (fit.b + 1)) < 0.01  # no decay amplitude worth speaking of


def test_two_phase_break_is_found():
    """Decay a/(t+b)+c until t = 120, then a flat plateau at the level reached there."""
    t = np.arange(400.0)
    decay = hyperbola(t, 4.0, 2.0, 0.05)
    y = np.where(t < 120, decay, decay[119] * 0.6)
    fit = fit_dilution(y + np.random.default_rng(2).normal(0, 1e-4, t.shape))
    assert abs(fit.break_t - 120) <= 2
    assert abs(fit.plateau - decay[119] * 0.6) < 1e-4


def test_report_profile_and_round_trip(tmp_path):
    t = np.arange(200.0)
    by_layer = np.stack([hyperbola(t, a, 2.0, c) for a, c in [(0.1, 0.01), (3.0, 0.2), (1.0, 0.05)]])
    report = dilution_report(by_layer, layers=[4, 8, 12])
    np.testing.assert_allclose(report.profile, by_layer.mean(1))
    assert report.top_layers(1) == [8]
    np.testing.assert_allclose(report.params[:, 0], [0.1, 3.0, 1.0], rtol=1e-6)
    report.save(tmp_path / "d")
    np.testing.assert_array_equal(DilutionReport.load(tmp_path / "d").params, report.params)
    fit = fit_dilution(by_layer[1])
    fit.save(tmp_path / "f")
    assert DilutionFit.load(tmp_path / "f") == fit


# ------------------------------------------------------------------ against scipy's curve_fit


def _curve_fit(t, y, p0):
    """The reference: scipy's bounded trust-region least squares from a start near the answer."""
    lower, upper = (-np.inf, -float(t.min()) + 1e-9, -np.inf), (np.inf, B_MAX, np.inf)
    params, _ = curve_fit(hyperbola, t, y, p0=p0, bounds=(lower, upper), xtol=1e-15, ftol=1e-15, gtol=1e-15,
                          max_nfev=20000)
    return params


@pytest.mark.parametrize("a,b,c,t0", [
    (2.0, 3.0, 0.05, 0),
    (-1.0, 5.0, 0.5, 0),  # rising curve
    (0.5, 0.02, 0.1, 0),  # b near -min(t) = 0
    (1.0, -9.5, 0.2, 10),  # b near -min(t) = -10 (the first ten positions unmeasured)
    (1500.0, 3000.0, 0.01, 0),  # b large: a slow, almost linear decay
])
def test_matches_curve_fit_on_clean_curves(a, b, c, t0):
    t = np.arange(float(t0), 1024.0)
    y = hyperbola(t, a, b, c)
    reference = _curve_fit(t, y, p0=(1.1 * a, b + 0.1 * abs(b + t0), c))
    params, errors, rmse = fit_hyperbola(t, y)
    np.testing.assert_allclose(params, reference, rtol=1e-2)
    np.testing.assert_allclose(reference, [a, b, c], rtol=1e-2)
    np.testing.assert_allclose(params, [a, b, c], rtol=1e-6, atol=1e-9)
    assert rmse < 1e-8 and np.all(np.isfinite(errors))


@pytest.mark.parametrize("seed,a,b,c,sigma", [
    (0, 2.0, 3.0, 0.05, 0.002), (1, 0.5, 0.3, 0.1, 0.01), (2, 20.0, 200.0, 0.02, 0.001), (3, 1.0, 40.0, 0.0, 0.003),
])
def test_sse_no_worse_than_curve_fit_on_noisy_curve(seed, a, b, c, sigma):
    t = np.arange(1024.0)
    y = hyperbola(t, a, b, c) + np.random.default_rng(seed).normal(0, sigma, t.shape)
    reference = _curve_fit(t, y, p0=(a, b, c))
    params, errors, rmse = fit_hyperbola(t, y)
    sse, sse_reference = ((hyperbola(t, *params) - y) ** 2).sum(), ((hyperbola(t, *reference) - y) ** 2).sum()
    assert sse <= sse_reference * (1 + 1e-9)
    assert rmse**2 * len(t) == pytest.approx(sse, rel=1e-12)
    np.testing.assert_allclose(params, reference, rtol=1e-3, atol=1e-6)
    # the Jacobian errors match curve_fit's covariance at (nearly) the same optimum
    _, cov = curve_fit(hyperbola, t, y, p0=params)
    np.testing.assert_allclose(errors, np.sqrt(np.diag(cov)), rtol=1e-3)


# ------------------------------------------------------------------ break search


def _exhaustive_split(y, min_plateau=4):
    """Every split k fitted with fit_hyperbola on the prefix and a constant on the rest: (k, cost)."""
    t = np.arange(len(y), dtype=float)
    cost = [fit_hyperbola(t[:k], y[:k])[2] ** 2 * k + ((y[k:] - y[k:].mean()) ** 2).sum()
            for k in range(4, len(y) - min_plateau + 1)]
    return 4 + int(np.argmin(cost)), min(cost)


@pytest.mark.parametrize("seed", range(6))
def test_split_is_the_exhaustive_optimum(seed):
    """The prefix-sum search over (b grid, every k) finds the split and cost of fitting every k separately."""
    rng = np.random.default_rng(seed)
    t = np.arange(120.0)
    k0 = int(rng.integers(20, 100))
    decay = hyperbola(t, rng.uniform(0.5, 5), np.exp(rng.uniform(-3, 5)), rng.uniform(0, 0.1))
    y = np.where(t < k0, decay, decay[k0 - 1] * rng.uniform(0.5, 1.0)) + rng.normal(0, 10 ** rng.uniform(-4, -2), t.shape)
    k, cost = _best_split(t, y, min_plateau=4)
    k_ref, cost_ref = _exhaustive_split(y)
    assert k == k_ref and cost == pytest.approx(cost_ref, rel=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_break_found_on_short_curves(seed):
    rng = np.random.default_rng(seed)
    t = np.arange(120.0)
    k0 = int(rng.integers(20, 100))
    decay = hyperbola(t, rng.uniform(0.5, 5), rng.uniform(0.1, 30), rng.uniform(0, 0.1))
    y = np.where(t < k0, decay, decay[k0 - 1] * rng.uniform(0.3, 0.6)) + rng.normal(0, 1e-3, t.shape)
    assert abs(find_break(y)[0] - k0) <= 2


@pytest.mark.parametrize("seed", range(3))
def test_two_phase_break_with_noise_at_1024_tokens(seed):
    t = np.arange(1024.0)
    decay = hyperbola(t, 2.0, 5.0, 0.03)
    y = np.where(t < 300, decay, decay[299] * 0.8) + np.random.default_rng(seed).normal(0, 5e-4, t.shape)
    fit = fit_dilution(y)
    assert fit.break_t == 300
    assert abs(fit.plateau - decay[299] * 0.8) < 1e-4
    assert find_break(y) == (fit.break_t, fit.plateau)


def test_curve_decaying_to_the_end_has_break_at_T():
    t = np.arange(400.0)
    for noise in (0.0, 0.002):
        y = hyperbola(t, 2.0, 3.0, 0.05) + np.random.default_rng(3).normal(0, noise, t.shape)
        break_t, plateau = find_break(y)
        assert break_t == 400 and plateau == y[-1]


def test_exactly_flat_curve_is_a_plateau_with_singular_errors():
    fit = fit_dilution(np.full(100, 0.3))
    assert (fit.a, fit.c, fit.break_t, fit.plateau) == (0.0, pytest.approx(0.3), 0, pytest.approx(0.3))
    assert fit.errors == [np.inf] * 3


# ------------------------------------------------------------------ NaN (answers of different lengths)


def test_nan_tail_fits_the_finite_part():
    t = np.arange(1024.0)
    y = hyperbola(t, 2.0, 3.0, 0.05) + np.random.default_rng(4).normal(0, 0.002, t.shape)
    tailed = y.copy()
    tailed[600:] = np.nan
    fit, head = fit_dilution(tailed), fit_dilution(y[:600])
    np.testing.assert_allclose([fit.a, fit.b, fit.c, fit.rmse], [head.a, head.b, head.c, head.rmse], rtol=1e-12)
    np.testing.assert_allclose(fit.errors, head.errors, rtol=1e-9)
    assert fit.break_t == 1024 and head.break_t == 600  # decays to the end of the curve, whatever is measured


def test_nan_gaps_keep_their_true_positions():
    t = np.arange(1024.0)
    decay = hyperbola(t, 2.0, 5.0, 0.03)
    y = np.where(t < 300, decay, decay[299] * 0.8)
    y[50:80] = np.nan  # a gap inside the decay
    y[290:310] = np.nan  # a gap across the break: the plateau starts at the first measured t after it
    y[800:] = np.nan
    fit = fit_dilution(y)
    assert fit.break_t == 310 and fit.plateau == pytest.approx(decay[299] * 0.8)
    measured = np.isfinite(y)
    params, _, rmse = fit_hyperbola(t[measured], y[measured])
    np.testing.assert_allclose([fit.a, fit.b, fit.c, fit.rmse], [*params, rmse], rtol=1e-12)
    decay_gapped = np.where(measured, decay, np.nan)
    fit = fit_dilution(decay_gapped)
    np.testing.assert_allclose([fit.a, fit.b, fit.c], [2.0, 5.0, 0.03], rtol=1e-6)
    assert fit.break_t == 1024


def test_too_few_finite_points_give_nan_not_an_exception():
    y = np.full(50, np.nan)
    y[:3] = [0.5, 0.4, 0.35]
    fit = fit_dilution(y)
    assert np.isnan([fit.a, fit.b, fit.c, fit.rmse, *fit.errors]).all()
    assert fit.break_t == -1 and fit.plateau == pytest.approx(np.mean(y[:3]))
    empty = fit_dilution(np.full(50, np.nan))
    assert np.isnan([empty.a, empty.plateau]).all() and empty.break_t == -1
    params, errors, rmse = fit_hyperbola(np.arange(3.0), np.ones(3))
    assert np.isnan(params).all() and np.isnan(errors).all() and np.isnan(rmse)


def test_report_with_ragged_layers():
    t = np.arange(256.0)
    by_layer = np.stack([hyperbola(t, a, 4.0, 0.02) for a in (0.5, 1.0, 2.0, 3.0)])
    by_layer[1, 200:] = np.nan
    by_layer[2, 3:] = np.nan
    by_layer[3] = np.nan
    report = dilution_report(by_layer)
    np.testing.assert_allclose(report.params[:2], [[0.5, 4.0, 0.02], [1.0, 4.0, 0.02]], rtol=1e-6)
    assert np.isnan(report.params[2:]).all() and list(report.break_t) == [256, 256, -1, -1]
    np.testing.assert_allclose(report.profile[:3], np.nanmean(by_layer[:3], 1))
    assert np.isnan(report.profile[3]) and report.top_layers(1) == [2]


# ------------------------------------------------------------------ real scale


def test_report_36_layers_by_1024_tokens():
    """Layers alternate: two-phase (decay, then a plateau from a known t) and decaying to the end."""
    rng = np.random.default_rng(5)
    t = np.arange(1024.0)
    rows, truth = [], []
    for layer in range(36):
        a, b, c = rng.uniform(0.5, 3.0), rng.uniform(1.0, 50.0), rng.uniform(0.0, 0.05)
        decay = hyperbola(t, a, b, c)
        k0 = int(rng.integers(100, 900)) if layer % 2 else 1024
        rows.append(np.where(t < k0, decay, decay[k0 - 1] * 0.7) + rng.normal(0, 2e-4, t.shape))
        truth.append((a, b, c, k0, decay[k0 - 1] * 0.7))
    report = dilution_report(np.stack(rows), progress=False)
    assert report.params.shape == (36, 3) and report.errors.shape == (36, 3)
    for layer, (a, b, c, k0, level) in enumerate(truth):
        assert abs(report.break_t[layer] - k0) <= 2, (layer, report.break_t[layer], k0)
        if k0 == 1024:  # decay-only layers: the parameters within a few sigma
            assert np.all(np.abs(report.params[layer] - [a, b, c]) < 5 * report.errors[layer] + 1e-4)
            assert report.rmse[layer] == pytest.approx(2e-4, rel=0.1)
        else:
            assert report.plateau[layer] == pytest.approx(level, abs=1e-4)
