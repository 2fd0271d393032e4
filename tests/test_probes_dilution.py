"""Dilution fit on synthetic curves with known parameters (the reference is the generating formula)."""

import numpy as np
import pytest

from pvm_probe.probes import DilutionFit, DilutionReport, dilution_report, fit_dilution, hyperbola


@pytest.mark.parametrize("a,b,c", [(2.0, 3.0, 0.05), (0.5, 1.0, 0.2), (10.0, 20.0, 0.01)])
def test_recovers_parameters_without_noise(a, b, c):
    t = np.arange(400.0)
    fit = fit_dilution(hyperbola(t, a, b, c))
    np.testing.assert_allclose([fit.a, fit.b, fit.c], [a, b, c], rtol=1e-3, atol=1e-5)
    assert fit.rmse < 1e-6


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
    assert abs(fit.break_t - 120) <= 8
    assert abs(fit.plateau - decay[119] * 0.6) < 1e-3


def test_report_profile_and_round_trip(tmp_path):
    t = np.arange(200.0)
    by_layer = np.stack([hyperbola(t, a, 2.0, c) for a, c in [(0.1, 0.01), (3.0, 0.2), (1.0, 0.05)]])
    report = dilution_report(by_layer, layers=[4, 8, 12])
    np.testing.assert_allclose(report.profile, by_layer.mean(1))
    assert report.top_layers(1) == [8]
    np.testing.assert_allclose(report.params[:, 0], [0.1, 3.0, 1.0], rtol=1e-3)
    report.save(tmp_path / "d")
    np.testing.assert_array_equal(DilutionReport.load(tmp_path / "d").params, report.params)
    fit = fit_dilution(by_layer[1])
    fit.save(tmp_path / "f")
    assert DilutionFit.load(tmp_path / "f") == fit
