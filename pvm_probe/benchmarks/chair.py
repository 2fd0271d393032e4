"""CHAIR (Rohrbach et al. 2018) as the remedy papers compute it, and a variant with its known faults fixed.

`ChairParser("reference")` is the reference algorithm of shikiw/OPERA chair.py (the copy PAI, VCD, MemVR and
HALC vendor, from LisaAnne/Hallucination utils/chair.py): nltk tokens, POS tags and WordNet lemmas (see
`nlp`), then its double words, its "toilet seat" rule and its synonym table, quirks included:
- "seated" is tagged as a verb, lemmatised to "seat", a synonym of chair; "bow" and "tied" count as tie;
- "men" stays "men" (WordNet lists both "men" and "man"; the shortest, first, wins), which is no object,
  and "vases" becomes "vas";
- two synonyms written with a leading space (" motor bike", " cheesecake") never match, nor does "iPhone"
  (captions are lower-cased);
- "train track" and "home plate" are double words that are no object, so they hide "train" and "plate";
- negation is ignored: "there is no dog" mentions a dog;
- a word glued to an em dash or an opening apostrophe is no word of the table ("a woman—holding",
  "a 'dog'"), as nltk <= 3.8 tokenised them.

`ChairParser("fixed")` changes exactly these, to be reported beside the reference, never instead of it:
- a mention after a negation in its sentence ("no dogs", "there is no cat", "without a chair") is dropped;
- every word is lemmatised as a noun, whatever its tag: objects are nouns, and a verb's lemma is no object
  ("seated", "seating", "tied", "skiing", "grooming" mention nothing), while a noun mis-tagged as a verb
  or adjective on lower-cased text ("an oven", "a couch") still counts;
- "seat" is not a chair and "bow" is not a tie ("bow tie" still is);
- a lemma that is a COCO word wins over a shorter one that is not ("men" -> man -> person, "vases" -> vase);
- the synonyms with a leading space match, and so does "iphone";
- words are split as today's nltk splits them: "people—two men" and "a 'dog'" are no longer single tokens
  that hide their objects (the reference splits as nltk <= 3.8 did; see `nlp`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

from . import nlp

VARIANTS = ("reference", "fixed")

# The reference's hard-coded double words (shikiw/OPERA chair.py CHAIR.__init__), mapped to the word they
# stand for. "stove top oven" has three words and so never matches, as in the reference.
_DOUBLE_WORDS = ("motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal",
                 "stop light", "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball",
                 "baseball bat", "baseball glove", "tennis racket", "wine glass", "hot dog", "cell phone",
                 "mobile phone", "teddy bear", "hair drier", "potted plant", "bow tie", "laptop computer",
                 "stove top oven", "home plate", "train track")
_ANIMALS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub")
_VEHICLES = ("jet", "train")
DOUBLE_WORDS = {
    **{w: w for w in _DOUBLE_WORDS},
    **{f"{age} {animal}": animal for animal in _ANIMALS for age in ("baby", "adult")},
    **{f"passenger {vehicle}": vehicle for vehicle in _VEHICLES},
    "bow tie": "tie", "toilet seat": "toilet", "wine glas": "wine glass",
}
NEGATIONS = frozenset(("no", "not", "n't", "without", "neither", "nor", "never", "none"))
CLAUSE_BREAKS = frozenset((",", ";", ":", "and", "but", "while", "whereas"))  # a negation does not reach past
_FIXED_NOT_OBJECTS = frozenset(("seat", "bow"))


@dataclass(frozen=True)
class Mention:
    word: str    # the caption's own word(s) as matched, e.g. "traffic lights", "seated"
    object: str  # the COCO category, e.g. "traffic light", "chair"
    start: int   # character span in the caption text
    end: int


@cache
def synonym_table() -> tuple[tuple[str, ...], ...]:
    """The reference's synonyms.txt, one tuple per category (its name first), parsed as the reference
    parses it: `line.strip().split(', ')`, so a synonym after a double space keeps its leading space."""
    text = resources.files("pvm_probe.benchmarks").joinpath("data", "chair_synonyms.txt").read_text("utf-8")
    return tuple(tuple(line.strip().split(", ")) for line in text.splitlines())


@cache
def _vocabulary(variant: str) -> dict[str, str]:
    """Word -> COCO category; a word listed under two categories keeps the later one, as in the reference."""
    words = {}
    for line in synonym_table():
        for word in line:
            if variant == "fixed":
                word = word.strip().lower()
                if word in _FIXED_NOT_OBJECTS:
                    continue
            words[word] = line[0]
    return words


def categories() -> tuple[str, ...]:
    """The 80 COCO category names, in the table's order."""
    return tuple(line[0] for line in synonym_table())


def canonical(name: str) -> str | None:
    """A category name or synonym (as in COCO's instance annotations) -> its category, as the reference maps
    annotation names; None when the table does not know it."""
    return _vocabulary("reference").get(name)


@dataclass(frozen=True)
class Parse:
    mentions: list[Mention]
    tokens: int  # the reference's caption length: nltk tokens (punctuation included), a double word as one


class ChairParser:
    def __init__(self, variant: str = "reference"):
        if variant not in VARIANTS:
            raise ValueError(f"CHAIR variant {variant!r}: expected one of {', '.join(VARIANTS)}")
        self.variant = variant
        self._words = _vocabulary(variant)
        self._coco_words = frozenset(w for word in self._words for w in word.split())

    def mentions(self, caption: str) -> list[Mention]:
        """Every object mention, in caption order, repeats kept (as the reference counts them)."""
        return self.parse(caption).mentions

    def objects(self, caption: str) -> list[str]:
        """The reference's per-caption object list (its `node_words`)."""
        return [m.object for m in self.mentions(caption)]

    def parse(self, caption: str) -> Parse:
        toks = nlp.tokens(caption, modern=self.variant == "fixed")
        words = self._merge_double_words([self._lemma(t) for t in toks])
        length = len(words)
        if any(w == "toilet" for w, _, _ in words):
            words = [item for item in words if item[0] != "seat"]  # the seat of the toilet is no chair
        found = []
        for word, first, last in words:
            if word in self._words and self._counts(toks, first):
                start, end = toks[first].start, toks[last].end
                found.append(Mention(caption[start:end], self._words[word], start, end))
        return Parse(found, length)

    def _lemma(self, token: nlp.Token) -> str:
        if self.variant == "fixed":
            coco = [c for c in nlp.candidates(token.text, "n") if c in self._coco_words]
            return min(coco, key=len) if coco else nlp.lemmatize(token.text, "n")
        return nlp.lemmatize(token.text, nlp.wordnet_pos(token.tag))

    @staticmethod
    def _merge_double_words(lemmas: list[str]) -> list[tuple[str, int, int]]:
        """(word, first token, last token), two lemmas joined where they form a double word, left to right."""
        merged, i = [], 0
        while i < len(lemmas):
            pair = " ".join(lemmas[i:i + 2])
            if pair in DOUBLE_WORDS:
                merged.append((DOUBLE_WORDS[pair], i, i + 1))
                i += 2
            else:
                merged.append((lemmas[i], i, i))
                i += 1
        return merged

    def _counts(self, toks: tuple[nlp.Token, ...], first: int) -> bool:
        return self.variant == "reference" or not _negated(toks, first)


def _negated(toks: tuple[nlp.Token, ...], index: int) -> bool:
    """A negation word earlier in the token's sentence with no clause break between: "there is no dog",
    "no cats or dogs", but not "no cats, and a dog"."""
    for i in range(index - 1, -1, -1):  # backwards, without copying the tokens before (a caption may be long)
        if toks[i].text in NEGATIONS:
            return True
        if toks[i].tag == "." or toks[i].text in CLAUSE_BREAKS:
            return False
    return False
