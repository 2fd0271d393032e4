"""AMBER's generative metrics on synthetic AMBER-format data, computed by hand."""

import pytest

from pvm_probe.benchmarks import amber
from pvm_probe.benchmarks.mini_amber import write_mini_amber
from pvm_probe.errors import InputError


def test_judge_and_metrics_by_hand(tmp_path):
    data = amber.AmberData(write_mini_amber(tmp_path))
    item = data.items[0]
    nouns = [("dog", 0), ("man", 10), ("ground", 20), ("cat", 30), ("light", 40), ("floor", 50), ("stone", 60)]
    found, covered, cognised = amber.judge(nouns, item.truth, item.hallu, data)
    # dog: truth. man: no truth object, no hallu object -> hallucinated. ground: related to grass (truth),
    # checked before the hallu list -> truth. cat: hallu object -> hallucinated, cognised. light: safe word.
    # floor: related to ground (hallu) -> hallucinated, cognised. stone: not an AMBER word -> left out.
    assert [(n.word, n.verdict) for n in found] == [("dog", "truth"), ("man", "hallucinated"), ("ground", "truth"),
                                                    ("cat", "hallucinated"), ("light", "safe"),
                                                    ("floor", "hallucinated")]
    assert [n.start for n in found] == [0, 10, 20, 30, 40, 50]
    assert covered == [True, True, False, False]  # dog, grass; the two ships are not mentioned
    assert cognised == [True, True]
    empty = amber.judge([], item.truth, item.hallu, data)
    out = amber.metrics([(found, covered, cognised), empty])
    assert out["nouns"] == 6 and out["descriptions"] == 2
    assert out["chair"] == pytest.approx(3 / 6)
    assert out["cover"] == pytest.approx(2 / 8)
    assert out["hal"] == pytest.approx(1 / 2)
    assert out["cog"] == pytest.approx(2 / 4)


def test_repeated_truth_object_covers_its_first_slot(tmp_path):
    data = amber.AmberData(write_mini_amber(tmp_path))
    item = data.items[0]
    _, covered, _ = amber.judge([("ship", 0), ("ship", 5)], item.truth, item.hallu, data)
    assert covered == [False, False, True, False]  # AMBER marks the first "ship" only


def test_nouns_are_read_as_amber_reads_them():
    text = "Two dogs sit on the grass near a man. Trees grow."
    assert amber.nouns(text) == [("dog", text.index("dogs")), ("grass", text.index("grass")),
                                 ("man", text.index("man")), ("Trees", text.index("Trees"))]
    # "Trees" is capitalised: WordNet has no such lemma, so AMBER keeps the word as written (and then finds
    # no AMBER object in it); "sit" and "grow" are verbs


def test_bad_amber_data(tmp_path):
    with pytest.raises(InputError, match="no such AMBER data directory"):
        amber.AmberData(tmp_path / "nowhere")
    data = write_mini_amber(tmp_path / "a")
    (data / "safe_words.txt").unlink()
    with pytest.raises(InputError, match="safe_words.txt is missing"):
        amber.AmberData(data)
    data = write_mini_amber(tmp_path / "b", items=[(("unicorn",), ())])
    with pytest.raises(InputError, match="'unicorn' is not a key of relation.json"):
        amber.AmberData(data)
    data = write_mini_amber(tmp_path / "c")
    (data / "annotations.json").write_text("[{")
    with pytest.raises(InputError, match="annotations.json: not valid JSON"):
        amber.AmberData(data)
