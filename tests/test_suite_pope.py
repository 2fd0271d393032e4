"""The pope suite on a synthetic mini-COCO: requests, claims at the answer token, per-split benchmark by hand,
bad input before any model, and a run on a tiny checkpoint."""

import json

import pytest

from pvm_probe.benchmarks.mini_coco import write_mini_coco
from pvm_probe.errors import InputError
from pvm_probe.suites.base import Answer
from pvm_probe.suites.pope import PopeSuite


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return write_mini_coco(tmp_path_factory.mktemp("coco"))


def test_built_questions_come_from_the_instance_annotations(coco):
    suite = PopeSuite(coco, splits=("popular",), image_count=4, seed=0)
    assert len(suite) == 4 * 6 and suite.splits == ["popular"]
    truth = {"COCO_val2014_000000000101.jpg": ["dog", "cat", "couch"],
             "COCO_val2014_000000000103.jpg": ["car", "traffic light", "person"]}  # distinct, annotation order
    requests = list(suite.requests())
    for image, objects in truth.items():
        asked = [r for r in requests if r.meta["image"] == image]
        assert [r.meta["object"] for r in asked[::2]] == objects
        assert all(r.meta["object"] not in objects for r in asked[1::2])
    first = requests[0]
    assert first.prompt == f"Is there a {first.meta['object']} in the image?" and first.images[0].size == (64, 48)
    assert suite.settings()["seed"] == 0 and suite.settings()["requests"] == 24


def test_claim_is_the_token_that_decides(coco):
    suite = PopeSuite(coco, splits=("random",), image_count=2, per_image=1)
    yes, no = suite.request(0), suite.request(1)
    answer = Answer([5, 6, 7, 8], [], ["There", " is", " not", " one."], "There is not one.")
    (claim,) = suite.score(no, answer)
    assert (claim.token, claim.text, claim.correct, claim.detail["predicted"]) == (2, "not", True, "no")
    (claim,) = suite.score(yes, answer)
    assert claim.correct is False and claim.quarter == 2
    (claim,) = suite.score(yes, Answer([5, 6], [], ["Yes", "."], "Yes."))
    assert (claim.token, claim.correct, claim.quarter) == (0, True, 0)


def _record(split, label, answer, mass=None):
    return {"answer": answer, "meta": {"split": split, "label": label},
            "claims": [{"mass": mass}] if mass is not None else [{}]}


def test_benchmark_by_hand(coco):
    suite = PopeSuite(coco, splits=("random",), image_count=2, per_image=1)
    records = [_record("random", "yes", "Yes, there is.", [0.2, 0.4]),  # TP
               _record("random", "no", "Yes.", [0.1, 0.1]),  # FP
               _record("random", "no", "No.", [0.0, 0.2]),  # TN
               _record("random", "yes", "There is no such thing.", [0.5, None]),  # FN
               _record("adversarial", "no", "no", None)]  # TN, no probes
    out = suite.benchmark(records)
    assert list(out) == ["random", "adversarial"]
    r = out["random"]
    assert (r["tp"], r["fp"], r["tn"], r["fn"]) == (1, 1, 1, 1)
    assert r["accuracy"] == 0.5 and r["precision"] == 0.5 and r["recall"] == 0.5 and r["f1"] == 0.5
    assert r["yes_ratio"] == 0.5
    assert r["image_share_at_answer"] == pytest.approx((0.3 + 0.1 + 0.1 + 0.5) / 4)
    assert out["adversarial"]["accuracy"] == 1.0 and out["adversarial"]["image_share_at_answer"] is None
    json.dumps(out, allow_nan=False)


def test_official_question_files(coco, tmp_path):
    path = tmp_path / "coco_pope_adversarial.json"
    rows = [{"question_id": 1, "image": "COCO_val2014_000000000104.jpg", "text": "Is there a pizza in the image?",
             "label": "yes"},
            {"question_id": 2, "image": "COCO_val2014_000000000104.jpg", "text": "Is there a dog in the image?",
             "label": "no"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    suite = PopeSuite(coco, questions=str(path))
    assert len(suite) == 2 and suite.splits == ["adversarial"]
    assert suite.request(1).meta["object"] == "dog" and suite.settings()["questions"] == [str(path)]
    rows[1]["image"] = "COCO_val2014_000000999999.jpg"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match="not in its annotations, e.g. COCO_val2014_000000999999.jpg"):
        PopeSuite(coco, questions=str(path))


def test_bad_input(coco, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        PopeSuite(tmp_path / "nowhere")
    with pytest.raises(InputError, match="only 4 images"):
        PopeSuite(coco, image_count=5)
    with pytest.raises(InputError, match="unknown POPE split 'hard'"):
        PopeSuite(coco, splits=("hard",))
    broken = write_mini_coco(tmp_path / "broken")
    (broken / "val2014" / "COCO_val2014_000000000102.jpg").unlink()
    with pytest.raises(InputError, match="image 102 is missing"):
        PopeSuite(broken, image_count=4)


def test_building_settings_do_not_apply_to_official_files(coco, tmp_path):
    path = tmp_path / "coco_pope_random.json"
    path.write_text('{"question_id": 1, "image": "COCO_val2014_000000000104.jpg", "text": "Is there a pizza in the '
                    'image?", "label": "yes"}\n')
    with pytest.raises(InputError, match="--splits, --seed build POPE questions"):
        PopeSuite(coco, questions=[str(path)], splits=["random"], seed=2)
