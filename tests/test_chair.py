"""CHAIR: the parser against the reference algorithm's own outputs on real LVLM captions, its quirks and
the fixed variant by hand, character spans, the COCO reader and `pvm-probe score` against hand counts."""

from __future__ import annotations

import json
import lzma
import subprocess
import sys
from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest

from pvm_probe.benchmarks import nlp
from pvm_probe.benchmarks.chair import ChairParser, Mention, Parse
from pvm_probe.benchmarks.coco import load_coco
from pvm_probe.benchmarks.metrics import chair_metrics, score_caption
from pvm_probe.benchmarks.mini_coco import write_mini_coco
from pvm_probe.benchmarks.score import score_captions
from pvm_probe.cli import main
from pvm_probe.errors import InputError

DATA = Path(__file__).parent / "data"


@cache
def reference_rows() -> tuple[dict, ...]:
    """Our run of the reference script (tests/data/README.md)."""
    text = lzma.decompress((DATA / "chair_reference.jsonl.xz").read_bytes()).decode()
    return tuple(json.loads(line) for line in text.splitlines())


@cache
def released_runs() -> dict:
    """Another lab's own runs of the reference (DeCo's released chair outputs, with COCO ground truth)."""
    return json.loads(lzma.decompress((DATA / "chair_released_deco.json.xz").read_bytes()))


def agreement(rows) -> tuple[float, list]:
    parser = ChairParser()
    differ = [(r["caption"], parser.objects(r["caption"]), r["objects"]) for r in rows
              if set(parser.objects(r["caption"])) != set(r["objects"])]
    return 1 - len(differ) / len(rows), differ


# ---- agreement with the reference ------------------------------------------------------------------------
def test_the_fixture_is_real_captions_of_four_models():
    rows = reference_rows()
    sources = {r["source"] for r in rows}
    assert len(rows) == 6025 and {s.split("-")[0] for s in sources} >= {"llava", "instructblip", "minigpt4", "shikra"}
    assert sum(len(r["objects"]) for r in rows) > 30000  # enough mentions to mean something


def test_object_sets_equal_the_reference_on_a_sample_of_real_captions():
    rows = reference_rows()[::15] + tuple(r for r in reference_rows() if r["source"] == "edge-cases")
    rate, differ = agreement(rows)
    assert rate >= 0.99, differ[:10]


@pytest.mark.slow
def test_object_lists_and_lengths_equal_the_reference_on_all_real_captions():
    parser = ChairParser()
    rows = reference_rows()
    parses = [parser.parse(r["caption"]) for r in rows]
    same_set = sum({m.object for m in p.mentions} == set(r["objects"]) for p, r in zip(parses, rows, strict=True))
    same_list = sum([m.object for m in p.mentions] == r["objects"] for p, r in zip(parses, rows, strict=True))
    same_length = sum(p.tokens == r["length"] for p, r in zip(parses, rows, strict=True))
    print(f"identical object sets {same_set}/{len(rows)}, lists {same_list}, lengths {same_length}")
    assert same_set / len(rows) >= 0.99
    assert same_list / len(rows) >= 0.99 and same_length / len(rows) >= 0.99


def test_object_lists_equal_another_labs_released_reference_outputs_on_a_sample():
    rows = [s for run in released_runs()["runs"].values() for s in run["sentences"]][::10]
    parser = ChairParser()
    same = sum(parser.objects(s["caption"]) == s["objects"] for s in rows)
    assert same / len(rows) >= 0.99, [s["caption"] for s in rows if parser.objects(s["caption"]) != s["objects"]][:5]


def released_parse(sentence: dict) -> Parse:
    return Parse([Mention(o, o, 0, 0) for o in sentence["objects"]], sentence["length"])


def test_metrics_reproduce_the_released_overall_metrics_from_the_released_objects():
    runs = released_runs()
    truth = {int(k): frozenset(v) for k, v in runs["ground_truth"].items()}
    for name, run in runs["runs"].items():
        m = chair_metrics(score_caption(s["caption"], released_parse(s), truth[s["image_id"]]) for s in run["sentences"])
        published = run["overall_metrics"]
        assert (m["CHAIR_s"], m["CHAIR_i"], m["recall"]) == pytest.approx(
            (published["CHAIRs"], published["CHAIRi"], published["Recall"]), abs=1e-12), name
        assert m["length"] / 100 == pytest.approx(published["Len"], abs=1e-12), name  # the script's Len is 0.01 x


@pytest.mark.slow
def test_parser_and_metrics_reproduce_another_labs_released_runs():
    runs = released_runs()
    truth = {int(k): frozenset(v) for k, v in runs["ground_truth"].items()}
    parser = ChairParser()
    for name, run in runs["runs"].items():
        parses = [parser.parse(s["caption"]) for s in run["sentences"]]
        assert [[m.object for m in p.mentions] for p in parses] == [s["objects"] for s in run["sentences"]], name
        m = chair_metrics(score_caption(s["caption"], p, truth[s["image_id"]])
                          for s, p in zip(run["sentences"], parses, strict=True))
        published = run["overall_metrics"]
        assert (m["CHAIR_s"], m["CHAIR_i"], m["recall"], m["length"] / 100) == pytest.approx(
            (published["CHAIRs"], published["CHAIRi"], published["Recall"], published["Len"]), abs=1e-12), name


# ---- the reference's quirks, by hand (each also checked against the reference script itself) ---------------
@pytest.mark.parametrize("caption,objects", [
    ("A man is seated at a table.", ["person", "chair", "dining table"]),      # seated -> seat -> chair
    ("A cat wearing a bow, tied with string.", ["cat", "tie", "tie"]),         # bow and tied -> tie
    ("Two men and women near vases.", ["person"]),                              # men stays men; vases -> vas
    ("A baby bird and a passenger jet.", ["bird", "airplane"]),                # not person
    ("The toilet seat is up. A seat nearby.", ["toilet"]),                      # no seat once a toilet is named
    ("Cups, bowls, and bottles on the counter.", ["cup", "bowl", "bottle"]),    # every item of a list
    ("There is no dog in the image.", ["dog"]),                                 # no negation handling
    ("A motor bike and a scooter.", ["motorcycle"]),                            # " motor bike" never matches
    ("He holds an iPhone and a cheesecake.", []),                               # "iPhone", " cheesecake" never match
    ("A train track near home plate.", []),                                     # double words that are no object
    ("wine glasses and traffic lights, a hot dog.", ["wine glass", "traffic light", "hot dog"]),
    ("Skiers skiing with skis.", ["person", "skis", "skis"]),                   # skiing -> ski (verb)
    ("A woman—holding an umbrella—walks by.", []),                              # nltk 3.8 kept "woman—holding"
    ("A 'dog' and a \"cat\".", ["cat"]),                                       # and "'dog"
])
def test_reference_quirks(caption, objects):
    assert ChairParser("reference").objects(caption) == objects


@pytest.mark.parametrize("caption,objects", [
    ("There is no dog in the image.", []),
    ("There are no people or cars, but a bus.", ["bus"]),
    ("A man is seated at a table.", ["person", "dining table"]),
    ("A cat wearing a bow, tied with string. A bow tie.", ["cat", "tie"]),
    ("Two men and women near vases.", ["person", "person", "vase"]),
    ("A motor bike, a cheesecake and an iPhone.", ["motorcycle", "cake", "cell phone"]),
    ("A dog and a cat on a couch.", ["dog", "cat", "couch"]),                   # "couch" is tagged JJ: still counts
    ("Skiers skiing with skis.", ["person", "skis"]),
    ("A woman—holding an umbrella—walks by.", ["person", "umbrella"]),
    ("A 'dog' and a \"cat\".", ["dog", "cat"]),
])
def test_fixed_variant(caption, objects):
    assert ChairParser("fixed").objects(caption) == objects


def test_length_counts_a_double_word_once_and_punctuation_too():
    # two | traffic light | and | a | baby bird | , | too | .
    assert ChairParser().parse("Two traffic lights and a baby bird, too.").tokens == 8


@pytest.mark.parametrize("word,pos,lemma", [  # each as nltk 3.8.1's WordNetLemmatizer gives it
    ("men", "n", "men"), ("vases", "n", "vas"), ("seated", "v", "seat"), ("glasses", "n", "glass"),
    ("us", "n", "u"), ("catss", "n", "cat"), ("stove", "v", "stave"), ("skiing", "v", "ski"), ("aardwolves", "n", "aardwolf"),
])
def test_lemmas(word, pos, lemma):
    assert nlp.lemmatize(word, pos) == lemma


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="CHAIR variant 'loose'"):
        ChairParser("loose")


# ---- character spans ---------------------------------------------------------------------------------------
def test_token_spans_cover_the_token_text_on_real_captions():
    for row in reference_rows()[::40] + tuple(r for r in reference_rows() if r["source"] == "edge-cases"):
        caption = row["caption"]
        for tok in nlp.tokens(caption) + nlp.tokens(caption, modern=True):
            if tok.text in ("``", "''"):
                assert caption[tok.start:tok.end] in ('"', "``", "''")
            else:
                assert caption[tok.start:tok.end].lower() == tok.text, (caption, tok)


@pytest.mark.parametrize("caption,word,at", [
    ("İstanbul: a dog.", "dog", 12),                 # 'İ'.lower() is two characters
    ('A "dog" sits.', "dog", 3),
    ("Look at the\ttraffic  lights!", "traffic  lights", 12),
    ("Café’s cat, and a hot-dog? No: hot dogs.", "cat", 7),
    ("1. A dog\n2. A horse", "horse", 14),
])
def test_mention_spans_point_into_the_caption(caption, word, at):
    mention = next(m for m in ChairParser().mentions(caption) if m.word == word)
    assert (mention.start, mention.end) == (at, at + len(word)) and caption[mention.start:mention.end] == word


# ---- long captions ---------------------------------------------------------------------------------------
SENTENCES = 'The man said "look at the dog, the cat and the pizza" -- then he sat on the couch (a red one). '
QUOTES = 'a "dog" and a "cat" , '  # repeated: one long sentence full of quotes


def thirds(items, unit: str, copies: int = 3) -> list[list]:
    """Items with a character span (tokens, mentions) of `unit * copies`, grouped by the copy they start in."""
    return [[i for i in items if k * len(unit) <= i.start < (k + 1) * len(unit)] for k in range(copies)]


def repeated(items_of, unit: str, copies: int) -> list:
    """What `items_of(unit * copies)` must be, built from `items_of(unit * 3)`: every copy but the first and the
    last has the same context (sentence breaks fall between copies; the tagger reads two words and two tags
    either side), so the middle copy repeats, shifted."""
    first, middle, last = thirds(items_of(unit * 3), unit)
    shift = lambda items, by: [replace(i, start=i.start + by, end=i.end + by) for i in items]  # noqa: E731
    return [*first, *(i for k in range(copies - 2) for i in shift(middle, k * len(unit))),
            *shift(last, (copies - 3) * len(unit))]


@pytest.mark.parametrize("modern", [False, True])
def test_nltk_runs_without_its_regex_time_limit(modern, monkeypatch):
    """nltk 3.10 stops any of its patterns after 5 s of wall clock (a megabyte caption tripped it); the reference
    has no limit and neither have we: with the limit at a microsecond, a 40 kB caption still tokenizes, token
    for token as its copies do."""
    from nltk import redos

    monkeypatch.setattr(redos, "DEFAULT_TIMEOUT", 1e-6)
    nlp.tokens.cache_clear()
    copies = 40_000 // len(SENTENCES)
    tokens = lambda text: list(nlp.tokens(text, modern))  # noqa: E731
    assert tokens(SENTENCES * copies) == repeated(tokens, SENTENCES, copies)


@pytest.mark.slow
def test_a_megabyte_caption_is_scored(mini_coco, tmp_path):
    """A megabyte-long sentence full of quotes (nltk's limit stopped it; the quotes' spans took time quadratic
    in the sentence): `score` counts every copy's mentions, as the short caption's copies say."""
    copies = 1_000_000 // len(QUOTES) + 1
    path = write_captions(tmp_path / "long.jsonl", [{"image_id": 101, "caption": QUOTES * copies}])
    assert main(["score", str(path), "--coco", str(mini_coco), "--json", str(tmp_path / "m.json")]) == 0
    scored = json.loads((tmp_path / "m.json").read_text())["per_caption"][0]
    for variant in ("reference", "fixed"):
        expected = repeated(ChairParser(variant).mentions, QUOTES, copies)
        assert scored[variant]["mentions"] == len(expected) == 2 * copies  # a dog and a cat in every copy
        assert scored[variant]["hallucinated"] == []  # 101 shows a dog and a cat


# ---- COCO and score -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mini_coco(tmp_path_factory):
    return write_mini_coco(tmp_path_factory.mktemp("coco"))


def test_ground_truth_is_instances_and_human_captions(mini_coco):
    coco = load_coco(mini_coco)
    assert coco.split == "val2014" and coco.image_ids == [101, 102, 103, 104]
    assert coco.ground_truth(104) == {"pizza", "dining table", "knife", "fork"}  # fork: only in a caption
    assert coco.ground_truth(103) == {"car", "traffic light", "person"}
    assert coco.image_path(101).name == "COCO_val2014_000000000101.jpg"


def write_captions(path: Path, rows) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


CAPTIONS = [
    {"image_id": 101, "caption": "A dog and a cat. There is no chair."},
    {"image_id": 102, "caption": "A man is seated at a table with cups, bowls, and bottles, and more bowls."},
    {"image_id": "COCO_val2014_000000000104.jpg", "answer": "A pizza with a fork and a knife on a table."},
]


def test_score_matches_hand_counts(mini_coco, tmp_path):
    result = score_captions(write_captions(tmp_path / "c.jsonl", CAPTIONS), mini_coco)
    ref, fixed = result["variants"]["reference"], result["variants"]["fixed"]
    # reference: 101 dog cat chair(H) (the couch not named); 102 person chair(H: seated) dining-table cup
    # bowl(H) bottle bowl(H); 104 pizza fork knife dining-table: 14 mentions, 4 hallucinated (a repeat counts
    # again), in 2 of 3 captions
    assert (ref["mentions"], ref["hallucinated"]) == (14, 4)
    assert ref["CHAIR_s"] == pytest.approx(2 / 3) and ref["CHAIR_i"] == pytest.approx(4 / 14)
    assert ref["recall"] == pytest.approx((2 + 4 + 4) / (3 + 4 + 4))  # pooled over captions, not averaged
    assert ref["words"] == pytest.approx((9 + 15 + 11) / 3)
    assert ref["length"] == pytest.approx((11 + 19 + 12) / 3)  # nltk tokens, commas and full stops included
    # fixed: "no chair" and "seated" make no mention: 12 mentions, the two bowls the hallucinations
    assert (fixed["mentions"], fixed["hallucinated"], fixed["CHAIR_s"]) == (12, 2, pytest.approx(1 / 3))
    assert result["per_caption"][1]["reference"]["hallucinated"] == [["seated", "chair"], ["bowls", "bowl"],
                                                                     ["bowls", "bowl"]]


def test_score_reads_a_json_list_and_the_cli_prints_both_variants(mini_coco, tmp_path, capsys):
    captions = tmp_path / "c.json"
    captions.write_text(json.dumps(CAPTIONS))
    assert main(["score", str(captions), "--coco", str(mini_coco), "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "reference" in out and "fixed" in out and "CHAIR_i" in out and "28.6" in out  # 4 / 14
    assert json.loads((tmp_path / "m.json").read_text())["variants"]["reference"]["hallucinated"] == 4


@pytest.mark.parametrize("line,message", [
    ("{not json", "c.jsonl:2: not valid JSON"),
    ('{"image_id": 101}', "c.jsonl:2: no caption"),
    ('{"caption": "a dog"}', "c.jsonl:2: no image id"),
    ('{"image_id": 999, "caption": "a dog"}', "c.jsonl:2: image 999 is not in"),
    ('{"image_id": 1.5, "caption": "a dog"}', "'image_id' must be a COCO image id"),
])
def test_score_names_the_bad_line(mini_coco, tmp_path, line, message):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(CAPTIONS[0]) + "\n" + line + "\n")
    with pytest.raises(InputError, match=message) as error:
        score_captions(path, mini_coco)
    assert "\n" not in str(error.value)


def test_coco_errors_are_one_line(tmp_path, mini_coco):
    with pytest.raises(InputError, match="does not exist"):
        load_coco(tmp_path / "nowhere")
    with pytest.raises(InputError, match="no annotations/instances_<split>.json"):
        load_coco(tmp_path)
    with pytest.raises(InputError, match="missing annotations/instances_val2017.json"):
        load_coco(mini_coco, "val2014x".replace("2014x", "2017"))
    broken = write_mini_coco(tmp_path / "broken")
    data = json.loads((broken / "annotations" / "instances_val2014.json").read_text())
    del data["annotations"][2]["category_id"]
    (broken / "annotations" / "instances_val2014.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"instances_val2014.json: annotations\[2\] needs 'category_id'"):
        load_coco(broken)
    (broken / "annotations" / "captions_val2014.json").unlink()
    with pytest.raises(InputError, match="missing annotations/captions_val2014.json"):
        load_coco(broken)


def test_score_help_loads_neither_torch_nor_nltk():
    code = ("import sys; from pvm_probe.cli import main; main(['score', '--help']); "
            "assert 'torch' not in sys.modules and 'nltk' not in sys.modules, sorted(sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--coco" in done.stdout, done.stderr


def test_nothing_is_looked_up_in_nltk_data(monkeypatch):
    import nltk.data

    def refuse(*args, **kwargs):
        raise AssertionError(f"nltk data lookup {args}")

    monkeypatch.setattr(nltk.data, "find", refuse)
    monkeypatch.setattr(nltk.data, "load", refuse)
    for cached in (nlp._tagger, nlp._sentence_splitter, nlp._word_tokenizer, nlp._wordnet, nlp.tokens):
        cached.cache_clear()
    assert ChairParser().objects("Dr. Smith is seated. Two vases.") == ["chair"]
    assert ChairParser("fixed").objects("Dr. Smith is seated. Two vases.") == ["vase"]
