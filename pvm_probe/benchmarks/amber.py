"""AMBER's generative task (Wang et al. 2023, junyangwang0410/AMBER inference.py): data and metrics.

AMBER's data directory holds `annotations.json` (per id: type, `truth` objects, `hallu` objects the image
lacks), `query/query_generative.json` (id, image, query), `relation.json` (object -> words that name it too)
and `safe_words.txt` (words never counted). A description is read as AMBER reads it:

- its nouns (Penn tags NN*, lemmatised), kept when they are AMBER object words (a key or value of
  relation.json);
- a noun in safe_words is ignored but still counted among the nouns;
- a noun that is a truth object, or a word related to one, covers that object;
- any other noun is a hallucination; if it is a `hallu` object or related to one, it covers that one.

Metrics over a set of descriptions: CHAIR = hallucinated nouns / nouns; Cover = truth objects covered /
truth objects; Hal = share of descriptions with a hallucination; Cog = `hallu` objects covered / `hallu`
objects. Object lists keep their repeats ("ship", "ship"): a word covers the first slot it matches.

One step is not reproduced: AMBER also matches a noun to the object lists by spaCy word-vector similarity
(en_core_web_lg, > 0.8), a 500 MB model outside any package index. Here matching is exact after
lemmatisation, so a noun AMBER would have saved by similarity counts as a hallucination: CHAIR and Hal can
only be higher, Cover and Cog only lower, than AMBER's own script on the same text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..io import read_text

ANNOTATIONS, QUERIES, RELATION, SAFE_WORDS = ("annotations.json", "query/query_generative.json", "relation.json",
                                              "safe_words.txt")


@dataclass(frozen=True)
class Item:
    id: int
    image: str
    query: str
    truth: tuple[str, ...]
    hallu: tuple[str, ...]


@dataclass(frozen=True)
class Noun:
    word: str  # the lemma
    start: int  # where the word starts in the text
    verdict: str  # "safe" (ignored), "truth" or "hallucinated"


class AmberData:
    """AMBER's files under `directory`, checked whole."""

    def __init__(self, directory):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise InputError(f"--amber {self.directory}: no such AMBER data directory")
        self.relation = _relation(self._read_json(RELATION))
        self.words = set(self.relation) | {w for related in self.relation.values() for w in related}
        self.safe = {line.strip() for line in read_text(self._path(SAFE_WORDS)).splitlines()
                     if line.strip()}
        annotations = self._read_json(ANNOTATIONS)
        self.items = [self._item(q, annotations) for q in self._queries()]

    def _path(self, name: str) -> Path:
        path = self.directory / name
        if not path.is_file():
            raise InputError(f"AMBER data {self.directory}: {name} is missing")
        return path

    def _read_json(self, name: str):
        try:
            return json.loads(read_text(self._path(name)))
        except json.JSONDecodeError as err:
            raise InputError(f"AMBER data {self.directory / name}: not valid JSON ({err})") from None

    def _queries(self) -> list[dict]:
        queries = self._read_json(QUERIES)
        if not isinstance(queries, list) or not queries:
            raise InputError(f"AMBER data {self.directory / QUERIES}: expected a non-empty list of queries")
        for k, q in enumerate(queries):
            if not (isinstance(q, dict) and isinstance(q.get("id"), int) and isinstance(q.get("image"), str)
                    and isinstance(q.get("query"), str)):
                raise InputError(f"AMBER data {self.directory / QUERIES}: entry {k} needs id (integer), "
                                 "image and query (strings)")
        return queries

    def _item(self, query: dict, annotations) -> Item:
        """The query and its annotation (AMBER's annotations are a list; id i is entry i - 1)."""
        where = f"AMBER data {self.directory / ANNOTATIONS}"
        k = query["id"] - 1
        if not isinstance(annotations, list) or not 0 <= k < len(annotations):
            raise InputError(f"{where}: no annotation for query id {query['id']}")
        entry = annotations[k]
        if not isinstance(entry, dict) or entry.get("type") != "generative":
            raise InputError(f"{where}: entry {k + 1} is not a generative annotation")
        for field in ("truth", "hallu"):
            names = entry.get(field)
            if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
                raise InputError(f"{where}: entry {k + 1}: '{field}' must be a list of words")
            unknown = [n for n in names if n not in self.relation]
            if unknown:
                raise InputError(f"{where}: entry {k + 1}: {unknown[0]!r} is not a key of {RELATION}")
        return Item(query["id"], query["image"], query["query"], tuple(entry["truth"]), tuple(entry["hallu"]))


def _relation(relation) -> dict[str, list[str]]:
    if not (isinstance(relation, dict) and all(isinstance(v, list) and all(isinstance(w, str) for w in v)
                                               for v in relation.values())):
        raise InputError(f"AMBER {RELATION}: expected an object of word -> list of words")
    return relation


def judge(nouns: list[tuple[str, int]], truth, hallu, data: AmberData) -> tuple[list[Noun], list[bool], list[bool]]:
    """AMBER's reading of one description's nouns [(lemma, start)]: the object nouns with their verdicts, and
    which truth and which hallu slots they cover."""
    safe_words, safe_slots = _slots(truth, data.relation)
    hallu_words, hallu_slots = _slots(hallu, data.relation)
    covered, cognised = [False] * len(truth), [False] * len(hallu)
    judged = []
    for word, start in nouns:
        if word not in data.words:
            continue
        if word in data.safe:
            judged.append(Noun(word, start, "safe"))
        elif word in safe_words:
            covered[safe_slots[safe_words.index(word)]] = True
            judged.append(Noun(word, start, "truth"))
        else:
            if word in hallu_words:
                cognised[hallu_slots[hallu_words.index(word)]] = True
            judged.append(Noun(word, start, "hallucinated"))
    return judged, covered, cognised


def _slots(objects, relation) -> tuple[list[str], list[int]]:
    """AMBER's search list: every object's related words (in object order), then the objects themselves; and
    for each entry the object slot it marks."""
    words = [w for obj in objects for w in relation[obj]] + list(objects)
    slots = [k for k, obj in enumerate(objects) for _ in relation[obj]] + list(range(len(objects)))
    return words, slots


def metrics(judged: list[tuple[list[Noun], list[bool], list[bool]]]) -> dict:
    """AMBER's generative metrics over descriptions (fractions; None where a denominator is empty)."""
    nouns = [n for found, _, _ in judged for n in found]
    covered = [c for _, slots, _ in judged for c in slots]
    cognised = [c for _, _, slots in judged for c in slots]
    hallucinated = [any(n.verdict == "hallucinated" for n in found) for found, _, _ in judged]
    return {"descriptions": len(judged), "nouns": len(nouns),
            "chair": share([n.verdict == "hallucinated" for n in nouns]), "cover": share(covered),
            "hal": share(hallucinated), "cog": share(cognised)}


def share(flags: list[bool]) -> float | None:
    """The share of true flags (None for none)."""
    return sum(flags) / len(flags) if flags else None


def nouns(text: str) -> list[tuple[str, int]]:
    """AMBER's extract_nouns with positions: nltk's tokens of the text as written (not lower-cased), those
    tagged NN*, lemmatised as nouns (WordNet; a capitalised word is not in WordNet and stays as it is)."""
    from . import nlp

    return [(nlp.lemmatize(t.text, "n"), t.start) for t in nlp.tokens(text, lowercase=False) if t.tag.startswith("NN")]
