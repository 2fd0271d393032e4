"""The amber suite on synthetic AMBER-format data: requests, claims with their tokens, the benchmark by hand, and
bad input before any model."""

import json

import pytest

from pvm_probe.benchmarks.mini_amber import write_mini_amber
from pvm_probe.errors import InputError
from pvm_probe.suites.amber import AmberSuite
from pvm_probe.suites.base import Answer


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return AmberSuite(write_mini_amber(tmp_path_factory.mktemp("amber")))


def _answer(pieces):
    return Answer(list(range(len(pieces))), [], pieces, "".join(pieces))


FIRST = ["A", " dog", " on", " the", " grass", " with", " a", " cat", "."]  # 9 tokens
SECOND = ["A", " man", " under", " the", " sky", "."]  # 6 tokens


def test_requests(suite):
    assert len(suite) == 2
    request = suite.request(1)
    assert request.prompt == "Describe this image." and request.images[0].size == (64, 48)
    assert request.meta == {"amber_id": 2, "image": "AMBER_2.jpg", "truth": ["person", "sky"], "hallu": ["dog", "tree"]}


def test_claims_carry_their_tokens(suite):
    claims = suite.score(suite.request(0), _answer(FIRST))
    # dog and grass are truth objects of AMBER_1, cat is one of its hallu objects
    assert [(c.text, c.token, c.correct, c.quarter) for c in claims] == [
        ("dog", 1, True, 0), ("grass", 4, True, 1), ("cat", 7, False, 3)]


def test_benchmark_by_hand(suite):
    records = []
    for index, pieces in ((0, FIRST), (1, SECOND)):
        request, answer = suite.request(index), _answer(pieces)
        records.append({"answer": answer.text, "meta": request.meta,
                        "claims": [c.to_dict() for c in suite.score(request, answer)]})
    out = suite.benchmark(records)
    # nouns: dog grass cat | man sky -> 1 of 5 hallucinated; truth slots: dog grass (of dog grass ship ship),
    # person sky (of person sky) -> 4 of 6; one description of two hallucinates; hallu slots: cat (of cat ground),
    # none (of dog tree) -> 1 of 4. By quarter: dog man | grass | sky | cat.
    assert out["nouns"] == 5 and out["descriptions"] == 2
    assert out["chair"] == pytest.approx(1 / 5) and out["cover"] == pytest.approx(4 / 6)
    assert out["hal"] == pytest.approx(1 / 2) and out["cog"] == pytest.approx(1 / 4)
    assert out["chair_by_quarter"] == [0.0, 0.0, 0.0, 1.0]
    json.dumps(out, allow_nan=False)


def test_bad_input(tmp_path):
    data = write_mini_amber(tmp_path / "a")
    (data.parent / "image" / "AMBER_2.jpg").unlink()
    with pytest.raises(InputError, match="1 of 2 images are missing, e.g. AMBER_2.jpg"):
        AmberSuite(data)
    data = write_mini_amber(tmp_path / "b")
    (data / "query" / "query_generative.json").write_text(json.dumps([{"id": 9, "image": "x.jpg", "query": "q"}]))
    with pytest.raises(InputError, match="no annotation for query id 9"):
        AmberSuite(data)
    with pytest.raises(InputError, match="max_new_tokens must be an integer"):
        AmberSuite(write_mini_amber(tmp_path / "c"), max_new_tokens=0)
