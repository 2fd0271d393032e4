"""The chair suite on a synthetic mini-COCO: pinned protocols, seeded samples, claims with their tokens, the
benchmark under both parsers by hand, and bad input before any model."""

import json

import pytest

from pvm_probe.benchmarks.mini_coco import write_mini_coco
from pvm_probe.benchmarks.protocol import load_protocol, protocol_names
from pvm_probe.errors import InputError
from pvm_probe.suites.base import Answer
from pvm_probe.suites.chair import ChairSuite


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return write_mini_coco(tmp_path_factory.mktemp("coco"))


def _answer(pieces):
    return Answer(list(range(len(pieces))), [], pieces, "".join(pieces))


# 13 tokens: dog at token 1 (quarter 0), cat 4 (1), couch 7 (2), person 11 (3)
FIRST = ["A", " dog", " and", " a", " cat", " on", " a", " couch", " next", " to", " a", " person", "."]
SECOND = ["No", " dog", " here", "."]  # 4 tokens: dog at token 1 (quarter 1)


def test_shipped_protocols():
    assert set(protocol_names()) >= {"opera-500", "pai-500", "memvr-500"}
    opera, pai, memvr = (load_protocol(n) for n in ("opera-500", "pai-500", "memvr-500"))
    assert len(opera.image_ids) == len(set(opera.image_ids)) == 500 and opera.split == "val2014"
    assert opera.image_ids[:3] == (226988, 337443, 112022)  # the first lines of OPERA's released logs
    assert pai.image_ids == memvr.image_ids == opera.image_ids
    assert (opera.prompt, opera.max_new_tokens) == ("Please describe this image in detail.", 512)
    assert (pai.prompt, pai.max_new_tokens) == ("Please help me describe the image in detail.", 512)
    assert (memvr.prompt, memvr.max_new_tokens) == ("Please describe this image in detail.", 1024)
    assert opera.source["images"]["repository"] == "shikiw/OPERA" and len(opera.source["images"]["commit"]) == 40


def test_seeded_sample_and_its_settings(coco):
    suite = ChairSuite(coco, sample=2, seed=3)
    assert len(suite) == 2 and suite.image_ids == ChairSuite(coco, sample=2, seed=3).image_ids
    assert {tuple(ChairSuite(coco, sample=2, seed=s).image_ids) for s in range(6)} != {tuple(suite.image_ids)}
    settings = suite.settings()
    assert (settings["sample"], settings["seed"], settings["max_new_tokens"]) == (2, 3, 512)
    assert settings["prompt"] == "Please describe this image in detail." and settings["split"] == "val2014"
    request = suite.request(0)
    assert request.meta == {"image_id": suite.image_ids[0]} and request.images[0].size == (64, 48)


def test_calibration_avoids_the_evaluated_images(coco):
    suite = ChairSuite(coco, sample=2, seed=5)
    calibration = suite.calibration(8)
    assert sorted(r.meta["image_id"] for r in calibration) == sorted(set(suite.coco.image_ids) - set(suite.image_ids))
    everything = ChairSuite(coco, sample=4)
    assert [r.meta["image_id"] for r in everything.calibration(2)] == everything.image_ids[:2]  # nothing else


def test_claims_carry_their_tokens(coco):
    suite = ChairSuite(coco, sample=4)
    request = suite.request(suite.image_ids.index(101))
    claims = suite.score(request, _answer(FIRST))
    assert [(c.text, c.token, c.correct, c.quarter, c.detail["object"]) for c in claims] == [
        ("dog", 1, True, 0, "dog"), ("cat", 4, True, 1, "cat"), ("couch", 7, True, 2, "couch"),
        ("person", 11, False, 3, "person")]


def _record(image_id, pieces):
    return {"meta": {"image_id": image_id}, "answer": "".join(pieces), "token_ids": list(range(len(pieces))),
            "pieces": pieces, "n_tokens": len(pieces), "claims": []}


def test_benchmark_by_hand_under_both_parsers(coco):
    suite = ChairSuite(coco, sample=4)
    assert suite.coco.ground_truth(101) == {"dog", "cat", "couch"}
    assert suite.coco.ground_truth(103) == {"car", "traffic light", "person"}
    out = suite.benchmark([_record(101, FIRST), _record(103, SECOND)])
    ref, fixed = out["reference"], out["fixed"]
    # reference: dog cat couch person(!) | dog(!) -- CHAIR reads "no dog" as a dog
    assert (ref["CHAIR_s"], ref["CHAIR_i"], ref["recall"]) == (1.0, pytest.approx(2 / 5), 0.5)
    assert ref["mentions_by_quarter"] == [1, 2, 1, 1] and ref["CHAIR_i_by_quarter"] == [0.0, 0.5, 0.0, 1.0]
    assert ref["length"] == (13 + 4) / 2 and ref["words"] == (12 + 3) / 2 and ref["answer_tokens"] == (13 + 4) / 2
    # fixed: the negated dog is no mention
    assert (fixed["CHAIR_s"], fixed["CHAIR_i"], fixed["recall"]) == (0.5, 0.25, 0.5)
    assert fixed["mentions_by_quarter"] == [1, 1, 1, 1] and fixed["CHAIR_i_by_quarter"] == [0.0, 0.0, 0.0, 1.0]
    json.dumps(out, allow_nan=False)


def test_bad_input(coco, tmp_path):
    with pytest.raises(InputError, match="500 of its 500 image ids are not in COCO"):
        ChairSuite(coco)  # the default protocol needs COCO val2014
    with pytest.raises(InputError, match="unknown CHAIR protocol 'opera-5000'; known: memvr-500"):
        ChairSuite(coco, protocol="opera-5000")
    with pytest.raises(InputError, match="either a CHAIR protocol or --sample"):
        ChairSuite(coco, protocol="opera-500", sample=2)
    with pytest.raises(InputError, match="pins its prompt and max_new_tokens"):
        ChairSuite(coco, protocol="pai-500", max_new_tokens=64)
    with pytest.raises(InputError, match="500 of its 500 image ids"):  # the protocol's own values are no conflict
        ChairSuite(coco, protocol="pai-500", max_new_tokens=512, prompt="Please help me describe the image in detail.")
    with pytest.raises(InputError, match="--sample 5: COCO .* has only 4 images"):
        ChairSuite(coco, sample=5)
    with pytest.raises(InputError, match="does not exist"):
        ChairSuite(tmp_path / "nowhere", sample=1)
    broken = write_mini_coco(tmp_path / "broken")
    (broken / "annotations" / "captions_val2014.json").unlink()
    with pytest.raises(InputError, match="missing annotations/captions_val2014.json"):
        ChairSuite(broken, sample=1)
    broken = write_mini_coco(tmp_path / "broken2")
    for image in (broken / "val2014").iterdir():
        image.unlink()
    with pytest.raises(InputError, match="is missing"):
        ChairSuite(broken, sample=4)
