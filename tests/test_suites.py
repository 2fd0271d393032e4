"""The three suites: requests, claims with their tokens, scoring against hand-written answers, bad input."""

import json

import pytest
from PIL import Image

from pvm_probe.errors import InputError
from pvm_probe.suites import Answer, ImagesSuite, ScenesSuite, WorldSuite
from pvm_probe.suites.scenes import make_shape_scene, score_description
from pvm_probe.suites.world import PaintSpec, answer_tokens, build_processor, make_grid_scene, score_painting
from pvm_probe.zoo import save_tiny_checkpoint


class WordTokenizer:
    """A stand-in tokenizer: one token per whitespace-separated word, decoded with single spaces."""

    def __init__(self, words):
        self.words = list(words)

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(self.words[i] for i in ids)

    def convert_ids_to_tokens(self, ids):
        return [self.words[i] for i in ids]


def answer_of(text: str) -> Answer:
    words = text.split(" ")
    return Answer.decode(WordTokenizer(words), list(range(len(words))))


# ---- answers ------------------------------------------------------------------------------------------
def test_answer_pieces_join_to_the_text_and_map_characters_to_tokens():
    tokenizer = build_processor().tokenizer  # word-level: "p0", "r0c0", ... decoded with spaces
    ids = tokenizer.convert_tokens_to_ids(["p0", "r0c0", "red", "circle", "n1"])
    answer = Answer.decode(tokenizer, ids)
    assert "".join(answer.pieces) == answer.text == "p0 r0c0 red circle n1"
    assert answer.tokens == ["p0", "r0c0", "red", "circle", "n1"]
    assert [answer.token_at(answer.text.index(w)) for w in ("p0", "r0c0", "red", "circle", "n1")] == [0, 1, 2, 3, 4]
    assert answer.token_at(len(answer.text)) is None


# ---- world ----------------------------------------------------------------------------------------------
def test_world_requests_are_held_out_deterministic_and_lazy():
    suite = WorldSuite(scenes=10 ** 9, seed=2, length=1, filler="count")
    request = suite.request(123_456_789)  # a billion scenes cost nothing until one is asked for
    assert request.meta["scene_seed"] == 1_000_000 + 200_000 + 123_456_789
    assert request.prompt == f"paint o{request.meta['order']} g1 fcount x1"
    again = suite.request(123_456_789)
    assert again.images[0].tobytes() == request.images[0].tobytes() and again.meta == request.meta
    with pytest.raises(InputError, match="out of range"):
        suite.request(10 ** 9)


def test_world_scoring_matches_the_exact_scorer_and_names_the_colour_token():
    suite = WorldSuite(scenes=2, length=2, filler="said")
    request = suite.request(1)
    scene, spec = make_grid_scene(request.meta["scene_seed"]), suite.spec(1)
    reference = answer_tokens(scene, spec)
    wrong = list(reference)
    wrong[2] = next(c for c in ("red", "blue") if c != reference[2])  # the first claim's colour
    for tokens in (reference, wrong, reference[: len(reference) // 2]):
        claims = suite.score(request, answer_of(" ".join(tokens)))
        exact = score_painting(scene, spec, tokens)["claims"]
        assert [c.correct for c in claims] == [r["correct"] for r in exact]
        assert [c.quarter for c in claims] == [r["quartile"] for r in exact]
        for claim in claims:
            if claim.token is not None:  # the claim's token is its colour word
                assert tokens[claim.token] == claim.text.split()[2] == claim.detail["colour"]
    claims = suite.score(request, answer_of(" ".join(reference)))
    row, col = divmod(["r0c0", "r0c1", "r0c2", "r0c3", "r1c0"].index("r1c0"), 4)
    box = next(c.boxes[0] for c in claims if c.detail["cell"] == "r1c0")
    assert box == [col / 4, row / 4, (col + 1) / 4, (row + 1) / 4]


@pytest.mark.parametrize("bad", [dict(scenes=0), dict(seed=-1), dict(length=-1), dict(filler="bogus"),
                                 dict(passes=3), dict(scenes=2.5)])
def test_world_settings_are_checked(bad):
    with pytest.raises(InputError):
        WorldSuite(**bad)


def test_world_refuses_a_tokenizer_without_its_vocabulary(tmp_path):
    from pvm_probe.processors import load_processor

    processor = load_processor(save_tiny_checkpoint("qwen3_vl", tmp_path / "q", words=["red", "circle"]))
    with pytest.raises(InputError, match="needs its own vocabulary"):
        WorldSuite().check_processor(processor)
    WorldSuite().check_processor(build_processor())  # the world's own tokenizer passes


# ---- scenes ---------------------------------------------------------------------------------------------
def test_scenes_claims_point_at_the_tokens_of_their_words():
    suite = ScenesSuite(scenes=3)
    request = suite.request(2)
    scene = make_shape_scene(request.meta["scene_seed"])
    first, other = scene.objects[0], next(s for s in ("star", "heart", "hexagon", "cross") if not scene.count(s))
    text = f"There is a {first.colour} {first.shape} . Next to it a purple {other} and a dog ."
    answer = answer_of(text)
    claims = suite.score(request, answer)
    expected = score_description(scene, text)["claims"]
    assert [(c.kind, c.correct) for c in claims] == [(c["kind"], c["correct"]) for c in expected]
    words = text.split(" ")
    for claim in claims:
        word = claim.text.split()[-1]
        assert words[claim.token] in (word, claim.text.split()[0])  # the token holds the claim's first word
    true_object = next(c for c in claims if c.kind == "object" and c.correct)
    (x0, y0, x1, y1), (cx, cy) = true_object.boxes[0], first.centre
    assert x0 < cx < x1 and y0 < cy < y1  # the box is around the object the claim is about
    assert all(not c.boxes for c in claims if not c.correct)


# ---- images ---------------------------------------------------------------------------------------------
def write_jsonl(tmp_path, rows, images=("a.png",)):
    for name in images:
        Image.new("RGB", (32, 24), (200, 10, 10)).save(tmp_path / name)
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_images_suite_reads_requests_and_scores_objects_chair_style(tmp_path):
    path = write_jsonl(tmp_path, [{"image": "a.png", "prompt": "Describe.", "objects": ["person", "easel"]},
                                  {"images": ["a.png"], "prompt": "What is here?", "id": "second"}])
    suite = ImagesSuite(path)
    assert len(suite) == 2 and suite.request(1).id == "second" and suite.request(0).images[0].size == (32, 24)
    text = "A man stands by an easel . There are no dogs . Two cats and an orange cat sleep ."
    claims = suite.score(suite.request(0), answer_of(text))
    # CHAIR's reference parser: man -> person; "easel" is the line's own object; no negation handling, and
    # "orange" is the fruit, as in the reference
    assert [(c.text, c.correct) for c in claims] == [("man", True), ("easel", True), ("dogs", False),
                                                      ("cats", False), ("orange", False), ("cat", False)]
    assert [c.quarter for c in claims] == [0, 1, 2, 2, 3, 3]  # words 1, 5, 9, 11, 14, 15 of 17
    assert [text.split(" ")[c.token] for c in claims] == [c.text for c in claims]  # answer_of: a token a word
    fixed = ImagesSuite(path, chair="fixed").score(suite.request(0), answer_of(text))
    assert [c.text for c in fixed] == ["man", "easel", "cats", "orange", "cat"]  # "no dogs" claims nothing
    assert suite.score(suite.request(1), answer_of(text)) == []  # no objects given: probes only


@pytest.mark.parametrize("row,message", [
    ("{not json", "data.jsonl:2: not valid JSON"),
    ('["a list"]', "data.jsonl:2: expected a JSON object"),
    ('{"image": "a.png"}', "data.jsonl:2: 'prompt' must be a non-empty string"),
    ('{"image": "missing.png", "prompt": "x"}', "missing.png does not exist"),
    ('{"prompt": "x"}', "data.jsonl:2: needs 'image'"),
    ('{"image": "a.png", "prompt": "x", "objects": "cat"}', "'objects' must be a list"),
])
def test_images_suite_checks_every_line_before_any_work(tmp_path, row, message):
    path = write_jsonl(tmp_path, [{"image": "a.png", "prompt": "fine"}, row])
    with pytest.raises(InputError, match=message.replace("(", r"\(")) as error:
        ImagesSuite(path)
    assert "\n" not in str(error.value)


def test_images_suite_reports_an_unreadable_image(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    path = write_jsonl(tmp_path, [{"image": "bad.png", "prompt": "x"}], images=())
    with pytest.raises(InputError, match="cannot read image"):
        ImagesSuite(path).request(0)


def test_paint_spec_round_trip_through_the_world_suite():
    suite = WorldSuite(scenes=3, length=0, filler="count")
    spec = suite.spec(2)
    assert isinstance(spec, PaintSpec) and spec.gap == 0 and suite.max_new_tokens(suite.request(2)) == 16 * 4 + 1 + 8
