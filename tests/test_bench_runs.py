"""The chair, pope and amber suites run end to end on a tiny checkpoint of each family (baseline and a remedy,
probes on), with synthetic COCO and AMBER data: records carry claims at their tokens, and each suite's
benchmark() reduces a variant's records to plain JSON that agrees with the claims."""

import json

import pytest

from pvm_probe.benchmarks.mini_amber import write_mini_amber
from pvm_probe.benchmarks.mini_coco import write_mini_coco
from pvm_probe.benchmarks.score import score_captions
from pvm_probe.errors import InputError
from pvm_probe.loading import load_base
from pvm_probe.report.benchmarks import variant_benchmarks
from pvm_probe.runner import RunConfig, run
from pvm_probe.suites import AmberSuite, ChairSuite, PopeSuite
from pvm_probe.variants import BASELINE, Variant
from pvm_probe.zoo import ARCHS, save_tiny_checkpoint

WORDS = ["a", "the", "dog", "cat", "couch", "person", "car", "pizza", "table", "grass", "man", "sky", "tree", "yes",
         "no", "not", "there", "is", "on", "and", ".", ","]
VARIANTS = [BASELINE, Variant("pai", remedy="pai")]


@pytest.fixture(scope="module", params=ARCHS)
def model(request, tmp_path_factory):
    arch = request.param
    return load_base(save_tiny_checkpoint(arch, tmp_path_factory.mktemp("tiny") / arch, WORDS))


def _run(model, suite, directory):
    records = run(*model, suite, VARIANTS, directory, RunConfig(batch_size=4, max_new_tokens=12, progress=False))
    assert {(r["variant"], r["request"]) for r in records} == {(v.name, i) for v in VARIANTS for i in range(len(suite))}
    for r in records:
        for c in r["claims"]:
            assert c["token"] is not None and c["mass"] is not None and len(c["mass"]) == len(r["mass"]["layers"])
    out = variant_benchmarks(suite, records)
    assert list(out) == [v.name for v in VARIANTS]
    return out


def _error_rate(records_claims):
    return sum(not c["correct"] for c in records_claims) / len(records_claims) if records_claims else None


def test_chair_run(model, tmp_path):
    coco = write_mini_coco(tmp_path / "coco")
    suite = ChairSuite(coco, sample=3, seed=1, max_new_tokens=12)
    out = _run(model, suite, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    for name, metrics in out.items():
        mine = [r for r in records if r["variant"] == name]
        logged = tmp_path / f"{name}.jsonl"  # the answers as a published caption log, scored with no model
        logged.write_text("".join(json.dumps({"image_id": r["meta"]["image_id"], "caption": r["answer"]}) + "\n"
                                  for r in mine))
        scored = score_captions(logged, coco, per_caption=False)["variants"]
        for parser in ("reference", "fixed"):
            assert {k: metrics[parser][k] for k in scored[parser]} == scored[parser]
        claims = [c for r in mine for c in r["claims"]]
        assert metrics["reference"]["CHAIR_i"] == _error_rate(claims)  # the claims are the reference's mentions
        assert metrics["reference"]["mentions_by_quarter"] == [sum(c["quarter"] == q for c in claims) for q in range(4)]
        assert metrics["reference"]["answer_tokens"] == sum(r["n_tokens"] for r in mine) / 3
    json.dumps(out, allow_nan=False)


def test_pope_run(model, tmp_path):
    suite = PopeSuite(write_mini_coco(tmp_path / "coco"), splits="adversarial", image_count=2, per_image=1,
                      max_new_tokens=6)
    out = _run(model, suite, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert all(len(r["claims"]) == 1 for r in records)  # every answer is one claim, at its deciding token
    for metrics in out.values():
        row = metrics["adversarial"]
        assert row["n"] == 4 and row["tp"] + row["fp"] + row["tn"] + row["fn"] == 4
        assert 0 <= row["image_share_at_answer"] <= 1
    json.dumps(out, allow_nan=False)


def test_amber_run(model, tmp_path):
    suite = AmberSuite(write_mini_amber(tmp_path / "amber"), max_new_tokens=12)
    out = _run(model, suite, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    for name, metrics in out.items():
        claims = [c for r in records if r["variant"] == name for c in r["claims"]]
        assert metrics["nouns"] == len(claims) and metrics["chair"] == _error_rate(claims)
    json.dumps(out, allow_nan=False)


def test_suite_specs_make_the_suites(tmp_path):
    from pvm_probe.jobs import make_suite
    from pvm_probe.specs import SuiteSpec

    coco, amber = write_mini_coco(tmp_path / "coco"), write_mini_amber(tmp_path / "amber")
    chair = make_suite(SuiteSpec(name="chair", coco=str(coco), sample=2, seed=4))
    assert isinstance(chair, ChairSuite) and chair.settings()["sample"] == 2 and chair.settings()["seed"] == 4
    pope = make_suite(SuiteSpec(name="pope", coco=str(coco), splits=["random"], image_count=2, per_image=1))
    assert isinstance(pope, PopeSuite) and len(pope) == 4
    assert isinstance(make_suite(SuiteSpec(name="amber", amber=str(amber))), AmberSuite)
    with pytest.raises(InputError, match="--coco does not apply to --suite amber"):
        make_suite(SuiteSpec(name="amber", amber=str(amber), coco=str(coco)))
    with pytest.raises(InputError, match="--suite pope needs --coco DIR"):
        make_suite(SuiteSpec(name="pope"))


def test_suites_come_back_from_their_settings(tmp_path):
    """run.json keeps a suite's settings; the report can rebuild the suite from them to call benchmark()."""
    coco, amber = write_mini_coco(tmp_path / "coco"), write_mini_amber(tmp_path / "amber")
    questions = tmp_path / "coco_pope_random.json"
    questions.write_text('{"question_id": 1, "image": "COCO_val2014_000000000104.jpg", "text": "Is there a pizza in '
                         'the image?", "label": "yes"}\n')
    for suite in (ChairSuite(coco, sample=3, seed=2, prompt="Describe.", max_new_tokens=7),
                  PopeSuite(coco, splits=["popular", "random"], image_count=2, per_image=1, seed=3),
                  PopeSuite(coco, questions=[str(questions)], max_new_tokens=5),
                  AmberSuite(amber, max_new_tokens=9)):
        settings = json.loads(json.dumps(suite.settings()))
        again = type(suite).from_settings(settings)
        assert again.settings() == suite.settings()
        assert [r.id for r in again.requests()] == [r.id for r in suite.requests()]
