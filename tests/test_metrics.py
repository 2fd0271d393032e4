"""Records -> metrics, checked against hand tallies on records written by hand."""

import numpy as np
import pytest

from pvm_probe.probes.builtin.mass import MASS_BINS, mass_curve
from pvm_probe.report.metrics import build_metrics, variant_metrics

ABOUT = {"num_parameters": 7, "block": "pvm", "visual_source": "embeddings"}
RUN = {"base": "b", "architecture": "A", "suite": {"suite": "world"}, "generation": {"attention_window": None},
       "variants": {"baseline": {"name": "baseline"}, "pvm": {"name": "pvm", "adapter": "a", "about": ABOUT},
                    "pvm | swapped image": {"name": "pvm | swapped image", "adapter": "a", "control": "swapped_image"},
                    "pvm | gates off": {"name": "pvm | gates off", "adapter": "a", "control": "gates_off"}}}


def claim(quarter, correct, token=None, mass=None, kind="cell"):
    return {"kind": kind, "token": token, "text": "", "correct": correct, "quarter": quarter, "boxes": [],
            "detail": {}, "mass": mass}


def record(variant, request, claims, n=4, image=None):
    r = {"variant": variant, "request": request, "claims": claims, "n_tokens": n, "stopped": True}
    if image is not None:
        r["mass"] = {"layers": [0, 1], "image": image, "split": {s: [0.1, 0.2] for s in
                                                                    ("image", "prompt", "generated", "first")}}
        r["lens"] = {"layers": [0, 1], "kl": [1.0, 0.0], "kl_by_quarter": [[1, 1, 1, 1], [0, 0, 0, 0]],
                     "convergence": [0, 1, -1, 1][:n]}
    return r


def test_claims_by_quarter_and_the_primary_metric_are_hand_tallies():
    records = [record("pvm", 0, [claim(0, True), claim(0, False), claim(3, True)]),
               record("pvm", 1, [claim(0, True), claim(2, False)])]
    m = variant_metrics(records, ["cell"], higher_is_better=True)
    table = m["claims_by_quarter"]["all"]
    assert table["n"] == [3, 0, 1, 1] and table["correct"] == [2, 0, 0, 1]
    assert m["primary_by_quarter"] == [pytest.approx(2 / 3), None, 0.0, 1.0] and m["primary"] == 3 / 5
    errors = variant_metrics(records, ["cell"], higher_is_better=False)
    assert errors["primary_by_quarter"] == [pytest.approx(1 / 3), None, 1.0, 0.0] and errors["primary"] == 2 / 5


def test_chair_counts_answers_with_any_hallucinated_object():
    records = [record("b", 0, [claim(0, True, kind="object"), claim(1, False, kind="object")]),
               record("b", 1, [claim(0, True, kind="object"), claim(1, False, kind="attribute")]),
               record("b", 2, [claim(0, False, kind="count")])]  # no object claim: not in CHAIR_s
    m = variant_metrics(records, ["object", "attribute", "count", "position"], higher_is_better=False)
    assert m["chair_s"] == 0.5 and m["chair_i"] == pytest.approx(1 / 3)
    assert m["chair_i_by_quarter"] == [0.0, 1.0, None, None]


def test_mass_curve_averages_only_the_requests_still_answering():
    records = [record("b", 0, [], n=3, image=[[0.3, 0.2, 0.1], [0.6, 0.5, 0.4]]),
               record("b", 1, [], n=1, image=[[0.1], [0.2]])]
    curve = mass_curve(records)
    np.testing.assert_allclose(curve, [[0.2, 0.2, 0.1], [0.4, 0.5, 0.4]])


def test_accuracy_against_mass_bins_each_claim_by_its_mean_mass():
    claims = [claim(0, True, 0, [0.5, 0.3]), claim(0, True, 1, [0.2, 0.0]), claim(0, False, 2, [0.0, 0.0]),
              claim(0, False, 3, [0.0005, 0.0005])]
    m = variant_metrics([record("b", 0, claims, image=[[0.5, 0.2, 0, 0.0005], [0.3, 0, 0, 0.0005]])], ["cell"], True)
    table = m["accuracy_vs_mass"]
    first, point_one, point_four = 0, MASS_BINS.index(0.1), MASS_BINS.index(0.3)
    assert table["n"][first] == 2 and table["correct_rate"][first] == 0.0  # 0 and 0.0005
    assert table["n"][point_one] == 1 and table["n"][point_four] == 1 and sum(table["n"]) == 4
    assert m["lens"]["convergence_layer_mean"] == pytest.approx(2 / 3)  # -1 (never) is left out


def test_headline_gains_and_what_the_controls_say():
    def answers(variant, right_late):
        return [record(variant, i, [claim(0, True), claim(3, right_late)]) for i in range(2)]

    records = answers("baseline", False) + answers("pvm", True) + answers("pvm | swapped image", False)
    metrics = build_metrics(RUN, records, ["cell"], True)
    head = metrics["headline"]
    assert head["variants"]["pvm"]["gain_q4"] == 100.0 and head["variants"]["pvm"]["q1"] == 1.0
    assert head["variants"]["pvm | swapped image"]["gain_q4"] == 0.0
    assert any("removes 100 % of its last-quarter gain" in line for line in head["controls"])
    assert "gates off for pvm" in head["missing_controls"]
    assert any("MLP control" in m for m in head["missing_controls"])
    assert metrics["variants"]["pvm"]["num_parameters"] == 7 and metrics["schema_version"] == 2


def test_the_window_exit_is_where_every_layer_stays_at_zero():
    image = [[0.3, 0.0, 0.2, 0.0, 0.0], [0.1, 0.1, 0.1, 0.0, 0.0]]
    records = [record("baseline", 0, [], n=5, image=image)]
    metrics = build_metrics({**RUN, "variants": {"baseline": {}}}, records, ["cell"], True)
    assert metrics["image_leaves_window_at"] == 3
