"""POPE: question building (sampling strategies, seeding), the official files, answer reading and scores."""

from collections import Counter

import pytest

from pvm_probe.benchmarks import pope
from pvm_probe.errors import InputError

OBJECTS = {  # image -> distinct objects in annotation order
    "i1.jpg": ["person", "dog", "cat"],
    "i2.jpg": ["person", "dog", "car"],
    "i3.jpg": ["person", "car", "umbrella"],
    "i4.jpg": ["person", "dog", "kite", "bench"],
    "i5.jpg": ["bus", "truck", "kite", "umbrella"],
    "i6.jpg": ["apple", "banana"],  # fewer than 3 objects: never chosen
}


def _by_image(questions):
    out = {}
    for q in questions:
        out.setdefault(q.image, []).append(q)
    return out


@pytest.mark.parametrize("split", pope.SPLITS)
def test_questions_alternate_positives_and_absent_negatives(split):
    questions = pope.build_questions(OBJECTS, split, images=5, seed=3)
    assert [q.question_id for q in questions] == list(range(1, 31))
    by_image = _by_image(questions)
    assert set(by_image) == set(OBJECTS) - {"i6.jpg"}
    for image, qs in by_image.items():
        assert [q.label for q in qs] == ["yes", "no"] * 3
        assert [q.object for q in qs[::2]] == OBJECTS[image][:3]  # the first three, in order
        negatives = [q.object for q in qs[1::2]]
        assert not set(negatives) & set(OBJECTS[image])  # never in the image
        assert len(set(negatives)) == 3  # never asked twice
    assert all(q.split == split for q in questions)


def _frequency(images):
    return Counter(o for i in images for o in OBJECTS[i])


def test_popular_negatives_are_the_most_frequent_left():
    questions = pope.build_questions(OBJECTS, "popular", images=5, seed=0)
    frequency = _frequency(set(OBJECTS) - {"i6.jpg"})
    for image, qs in _by_image(questions).items():
        asked = []
        for positive, negative in zip(qs[::2], qs[1::2], strict=True):
            asked.append(positive.object)
            left = [o for o in frequency if o not in asked and o not in OBJECTS[image]]
            assert frequency[negative.object] == max(frequency[o] for o in left)
            asked.append(negative.object)


def test_adversarial_negatives_co_occur_most_with_the_positive():
    questions = pope.build_questions(OBJECTS, "adversarial", images=5, seed=0)
    chosen = set(OBJECTS) - {"i6.jpg"}
    together = Counter((a, b) for i in chosen for a in OBJECTS[i] for b in OBJECTS[i] if a != b)
    for image, qs in _by_image(questions).items():
        asked = []
        for positive, negative in zip(qs[::2], qs[1::2], strict=True):
            asked.append(positive.object)
            left = [o for o in _frequency(chosen) if o not in asked and o not in OBJECTS[image]]
            best = max(together[positive.object, o] for o in left)
            if best:  # a co-occurring object was left: the most co-occurring one is asked
                assert together[positive.object, negative.object] == best
            asked.append(negative.object)
    # i1's first positive is person: it co-occurs most with dog (i2, i4), which i1 has; then with car (i2, i3)
    first = _by_image(questions)["i1.jpg"]
    assert first[1].object == "car"


def test_seeded_and_same_images_in_every_split():
    a = pope.build_questions(OBJECTS, "random", images=3, seed=7)
    assert a == pope.build_questions(OBJECTS, "random", images=3, seed=7)
    images = {q.image for q in a}
    assert {q.image for q in pope.build_questions(OBJECTS, "adversarial", images=3, seed=7)} == images
    draws = {tuple(q.object for q in pope.build_questions(OBJECTS, "random", images=5, seed=s)) for s in range(8)}
    assert len(draws) > 1  # the seed matters


def test_question_text_and_bad_requests():
    assert pope.question_text("umbrella") == "Is there an umbrella in the image?"
    assert pope.question_text("dog") == "Is there a dog in the image?"
    with pytest.raises(InputError, match="only 5 images"):
        pope.build_questions(OBJECTS, "random", images=6)
    with pytest.raises(InputError, match="unknown POPE split"):
        pope.build_questions(OBJECTS, "hard")


def test_official_question_file(tmp_path):
    path = tmp_path / "coco_pope_adversarial.json"
    path.write_text('{"question_id": 1, "image": "COCO_val2014_000000310196.jpg", "text": "Is there an umbrella '
                    'in the image?", "label": "yes"}\n\n{"question_id": 2, "image": "x.jpg", "text": "Is there a '
                    'car in the image?", "label": "no"}\n')
    questions = pope.read_question_file(path)
    assert [(q.split, q.object, q.label) for q in questions] == [("adversarial", "umbrella", "yes"),
                                                                 ("adversarial", "car", "no")]
    path.write_text('{"question_id": 1, "image": "x.jpg", "text": "Is there a car in the image?", "label": "maybe"}\n')
    with pytest.raises(InputError, match=r":1: 'label'"):
        pope.read_question_file(path)
    path.write_text("not json\n")
    with pytest.raises(InputError, match="not valid JSON"):
        pope.read_question_file(path)
    with pytest.raises(InputError, match="no such file"):
        pope.read_question_file(tmp_path / "missing.json")


@pytest.mark.parametrize("text, reading, char", [
    ("Yes, there is a dog in the image.", "yes", 0),
    ("No, there is no dog.", "no", 0),
    ("  There is no dog in the image.", "no", 11),
    ("There is not a dog.", "no", 9),
    ("Yes. No other dog is there.", "yes", 0),  # only the first sentence counts
    ("No\nthere is none", "yes", 0),  # POPE splits on spaces only: "No\nthere" is one word
    ("I don't see one", "yes", 0),  # POPE reads no "n't"
    ("", "yes", None),
])
def test_answers_are_read_as_pope_reads_them(text, reading, char):
    assert pope.read_answer(text) == (reading, char)


def test_scores_by_hand():
    out = pope.scores(["yes", "yes", "yes", "no", "yes"], ["yes", "no", "no", "yes", "yes"])
    assert (out["tp"], out["fp"], out["tn"], out["fn"]) == (2, 2, 0, 1)
    assert out["accuracy"] == pytest.approx(2 / 5) and out["yes_ratio"] == pytest.approx(4 / 5)
    assert out["precision"] == pytest.approx(2 / 4) and out["recall"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3))
    none = pope.scores(["no", "no"], ["no", "no"])
    assert none["precision"] is None and none["recall"] is None and none["accuracy"] == 1.0
