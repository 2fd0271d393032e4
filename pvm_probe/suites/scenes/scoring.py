"""Score every grounded claim of a scene description, by the quarter of the answer it sits in.

Parsing (lower case; "n't" -> "not"; hyphens split words; sentences end at . ! ? ; : or a newline; every
claim keeps the character offset of its first word, `char`, so the runner can find its token):
  * object mention: a shape word or synonym, singular or plural (`words.SHAPE_WORDS`), a shape that
    is never drawn or an everyday object noun (`words.FOREIGN_WORDS`: always a hallucination), or a
    generic noun ("shape", "objects": not an object claim, but it carries the claims below);
  * attribute claim: each colour word among the ATTRIBUTE_WINDOW words before a mention, in its
    sentence and after the previous mention ("a large red star"); wrong if no object of that shape
    (any shape, for a generic noun) has that colour;
  * count claim: a number word right before the mention or before "colour mention" ("three stars",
    "two red hearts", "a pair of blue squares"); compared with the true count of that (colour,) shape.
    "a"/"an" are articles, not counts;
  * position claim: a position phrase ("top left", "upper right corner", "middle"; one word names a
    row, a column or the centre) attaches to the nearest mention of its sentence (ties: the earlier
    one); wrong if no object of that (colour,) shape lies in the named region(s).
Not parsed: colours after the noun ("a star that is red"), counts with words in between ("two large
stars"), relations ("left of the star"), coreference ("another one"), "right"/"top" used as other than
positions ("right next to", "on top of": read as positions). A mention with a negation among the
NEGATION_WINDOW words before it ("no stars", "not a single heart"), or listed right after a negated one
("no stars or hearts"), makes no claim at all; claims about a foreign object stop at its object claim.
Colour words before a foreign noun ("a green tree") are not attribute claims. A position phrase with
a colour-less or multi-colour mention is checked against every colour of that shape.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from .layout import ShapeScene
from .words import (
    COLOUR_WORDS,
    FOREIGN_WORDS,
    GENERIC_WORDS,
    NEGATIONS,
    NUMBER_WORDS,
    POSITION_PHRASES,
    SENTENCE_ENDS,
    SHAPE_WORDS,
)

ATTRIBUTE_WINDOW = 3
NEGATION_WINDOW = 4
KINDS = ("object", "attribute", "count", "position")
# "isn't" -> "is" "not"; hyphens and other punctuation split words
_TOKEN = re.compile(r"[a-z]+?(?=n['’]t)|n['’]t|[a-z]+|\d+|[.!?;:\n]", re.IGNORECASE)
_LONGEST_PHRASE = max(map(len, POSITION_PHRASES))
_LIST_WORDS = frozenset(("or", "and", "nor", "any", "a", "an"))


@dataclass
class Claim:
    kind: str  # one of KINDS
    word: int  # index of the claim's first word in the answer
    text: str
    correct: bool
    quarter: int = 0  # 0..3: which quarter of the answer's words
    char: int = 0  # where that word starts in the answer text
    objects: list[int] = field(default_factory=list)  # indices of the scene objects that make it true


@dataclass
class Mention:
    word: int
    sentence: int
    shape: str | None  # canonical shape; None for a generic or foreign noun
    foreign: bool = False
    negated: bool = False
    colour_words: list[str] = field(default_factory=list)  # as written ("crimson")

    @property
    def colours(self) -> list[str]:
        """Canonical colours ("red")."""
        return [COLOUR_WORDS[w] for w in self.colour_words]


def split_words(text: str) -> tuple[list[str], list[int], list[int]]:
    """Words of the answer (lower case), the sentence index of each, and where each starts in `text`."""
    words, sentences, starts, sentence = [], [], [], 0
    for match in _TOKEN.finditer(text):
        token = match.group().lower()
        if token in SENTENCE_ENDS:
            sentence += 1
            continue
        words.append("not" if token in ("n't", "n’t") else token)
        sentences.append(sentence)
        starts.append(match.start())
    return words, sentences, starts


def find_mentions(words: list[str], sentences: list[int]) -> list[Mention]:
    mentions: list[Mention] = []
    for i, word in enumerate(words):
        if word not in SHAPE_WORDS and word not in FOREIGN_WORDS and word not in GENERIC_WORDS:
            continue
        start = _clause_start(i, sentences, mentions)
        before = words[max(start, i - NEGATION_WINDOW):i]
        colour_words = [w for w in words[max(start, i - ATTRIBUTE_WINDOW):i] if w in COLOUR_WORDS]
        negated = any(w in NEGATIONS for w in before) or _continues_negation(words, sentences, mentions, i)
        mentions.append(Mention(i, sentences[i], SHAPE_WORDS.get(word), foreign=word in FOREIGN_WORDS,
                                negated=negated, colour_words=colour_words))
    return mentions


def _continues_negation(words: list[str], sentences: list[int], mentions: list[Mention], i: int) -> bool:
    """True for the later items of a negated list: "no stars or hearts", "no red or blue circles and squares"."""
    if not mentions or not mentions[-1].negated or mentions[-1].sentence != sentences[i]:
        return False
    return all(w in _LIST_WORDS or w in COLOUR_WORDS for w in words[mentions[-1].word + 1:i])


def _clause_start(i: int, sentences: list[int], mentions: list[Mention]) -> int:
    """First word that may belong to the mention at i: after the previous mention, in i's sentence."""
    start = sentences.index(sentences[i])
    return max(start, mentions[-1].word + 1) if mentions else start


def find_positions(words: list[str]) -> list[tuple[int, tuple[str, ...]]]:
    """(start, phrase) of every position phrase, longest match first, non-overlapping."""
    found, i = [], 0
    while i < len(words):
        for n in range(_LONGEST_PHRASE, 0, -1):
            phrase = tuple(words[i:i + n])
            if len(phrase) == n and phrase in POSITION_PHRASES:
                found.append((i, phrase))
                i += n
                break
        else:
            i += 1
    return found


def _count_claim(words: list[str], sentences: list[int], m: Mention) -> tuple[int, int] | None:
    """(word index, number) of the count in front of "[colour] mention", if any, in its sentence."""
    j = m.word - 1
    if j >= 0 and words[j] in COLOUR_WORDS:
        j -= 1
    if j < 0 or sentences[j] != m.sentence:
        return None
    if words[j] in NUMBER_WORDS:
        return j, NUMBER_WORDS[words[j]]
    if j >= 1 and words[j] == "of" and words[j - 1] in ("pair", "couple"):
        return j - 1, 2
    return None


def _evidence(scene: ShapeScene, shape: str | None, colour: str | None = None, regions=None) -> list[int]:
    """Indices of the scene's objects of this (shape, colour) [in these regions]."""
    return [i for i, o in enumerate(scene.objects) if shape in (None, o.shape) and colour in (None, o.colour)
            and (regions is None or o.region in regions)]


def _mention_claims(scene: ShapeScene, words: list[str], sentences: list[int], m: Mention) -> list[Claim]:
    word = words[m.word]
    if m.foreign:
        return [Claim("object", m.word, word, correct=False)]
    claims = [] if m.shape is None else [_claim("object", m.word, word, _evidence(scene, m.shape))]
    for colour_word, colour in zip(m.colour_words, m.colours, strict=True):
        claims.append(_claim("attribute", m.word, f"{colour_word} {word}", _evidence(scene, m.shape, colour)))
    count = _count_claim(words, sentences, m) if len(m.colours) <= 1 else None
    if count is not None:
        evidence = _evidence(scene, m.shape, m.colours[0] if m.colours else None)
        correct = len(evidence) == count[1]
        claims.append(Claim("count", count[0], " ".join(words[count[0]:m.word + 1]), correct,
                            objects=evidence if correct else []))
    return claims


def _claim(kind: str, word: int, text: str, evidence: list[int]) -> Claim:
    """A claim that is true when some object supports it."""
    return Claim(kind, word, text, correct=bool(evidence), objects=evidence)


def _position_claim(scene: ShapeScene, words: list[str], start: int, phrase: tuple[str, ...],
                    mentions: list[Mention], sentences: list[int]) -> Claim | None:
    same = [m for m in mentions if m.sentence == sentences[start]]
    if not same:
        return None
    nearest = min(same, key=lambda m: (abs(m.word - start), m.word))
    if nearest.negated or nearest.foreign:
        return None
    colour = nearest.colours[0] if len(nearest.colours) == 1 else None
    evidence = _evidence(scene, nearest.shape, colour, POSITION_PHRASES[phrase])
    return _claim("position", start, f"{words[nearest.word]} {' '.join(phrase)}", evidence)


def score_description(scene: ShapeScene, text: str) -> dict:
    """Every claim of `text` about `scene` (JSON-able), with the answer's word count."""
    words, sentences, starts = split_words(text)
    mentions = find_mentions(words, sentences)
    claims = [c for m in mentions if not m.negated for c in _mention_claims(scene, words, sentences, m)]
    for start, phrase in find_positions(words):
        claim = _position_claim(scene, words, start, phrase, mentions, sentences)
        if claim is not None:
            claims.append(claim)
    for claim in claims:
        claim.quarter = min(3, 4 * claim.word // len(words))
        claim.char = starts[claim.word]
    claims.sort(key=lambda c: (c.word, KINDS.index(c.kind)))
    return {"words": len(words), "claims": [asdict(c) for c in claims]}
