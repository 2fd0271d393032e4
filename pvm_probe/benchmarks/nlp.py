"""The reference CHAIR's text processing, offline: nltk's word tokenizer, its averaged perceptron POS tagger
and WordNet's lemmatiser, with character spans.

The reference (shikiw/OPERA chair.py, vendored by the remedy papers) runs `nltk.word_tokenize` (Punkt
sentences, then the Treebank-style word tokenizer), `nltk.pos_tag` and `WordNetLemmatizer.lemmatize(word,
pos)`. nltk's code is used as is, with one exception: the published CHAIR numbers and released logs were
scored with nltk <= 3.8, whose word tokenizer differs from today's in three regular-expression lists (3.9
split em and en dashes off words, changed the opening-apostrophe rule and folds whitespace), so those
three lists are nltk 3.8.1's (`_PaperEraWordTokenizer`). nltk 3.10 runs each of its own regular expressions under
a 5 s wall-clock limit; the reference (plain `re`) has none, and a long caption (a megabyte) is no attack, so
nltk's fixed patterns run here without it (`_untimed`, nltk's advice for a trusted pattern). The data nltk would download is shipped in
`data/` (built by tools/build_chair_data.py, provenance and licenses in data/README.md):

- Punkt's English parameters and the tagger's weights, loaded into nltk's own classes;
- of WordNet 3.0, only what morphy reads: the lemma names per part of speech and the exception lists.
  `lemmatize` below is `WordNetLemmatizer.lemmatize` over those tables: the shortest of the candidate
  lemmas found in WordNet (see `candidates`), else the word.
"""

from __future__ import annotations

import json
import lzma
import re
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources

# nltk's WordNet suffix rules (nltk/corpus/reader/wordnet.py MORPHOLOGICAL_SUBSTITUTIONS), in nltk's order
_SUFFIX_RULES = {
    "n": (("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
          ("men", "man"), ("ies", "y")),
    "v": (("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "r": (),
}


@dataclass(frozen=True)
class Token:
    text: str   # the token as nltk writes it (lower case; an opening '"' becomes '``')
    tag: str    # Penn Treebank tag
    start: int  # character span in the original text
    end: int


def load_table(name: str) -> dict:
    data = resources.files("pvm_probe.benchmarks").joinpath("data", name).read_bytes()
    return json.loads(lzma.decompress(data))


@cache
def _wordnet() -> tuple[dict, dict]:
    table = load_table("wordnet_morphy.json.xz")
    return {pos: frozenset(words) for pos, words in table["lemmas"].items()}, table["exceptions"]


def candidates(word: str, pos: str) -> list[str]:
    """nltk 3.8.1's `wordnet._morphy`, the papers' lemmatiser: the word and its exception-list lemmas, or
    else the word and its one-rule reductions, that WordNet lists under `pos` (in order, without repeats);
    when none is listed, the rules are applied again and again until one is. (nltk 3.9 stopped after one
    round; on the test captions the two never differ.)"""
    lemmas, exceptions = _wordnet()
    known = lemmas[pos]

    def listed(forms):
        return [f for f in dict.fromkeys(forms) if f in known]

    def reduce(forms):
        return [f[: -len(old)] + new for f in forms for old, new in _SUFFIX_RULES[pos] if f.endswith(old)]

    if word in exceptions[pos]:
        return listed([word, *exceptions[pos][word]])
    forms = reduce([word])
    found = listed([word, *forms])
    while not found and forms:
        forms = reduce(forms)
        found = listed(forms)
    return found


def lemmatize(word: str, pos: str) -> str:
    """`WordNetLemmatizer().lemmatize(word, pos)`: the shortest candidate (the first of equals), else the word."""
    found = candidates(word, pos)
    return min(found, key=len) if found else word


def wordnet_pos(tag: str) -> str:
    """The reference's get_wordnet_pos, with its fallback to noun."""
    return {"J": "a", "V": "v", "N": "n", "R": "r"}.get(tag[:1], "n")


def _untimed(pattern):
    """One of nltk's own patterns (a `redos.TimedPattern`) without its wall-clock limit."""
    from nltk import redos

    return redos.compile(pattern, timeout=None)


@cache
def _sentence_splitter():
    from nltk.tokenize.punkt import PunktLanguageVars, PunktParameters, PunktSentenceTokenizer, PunktToken

    class _UntimedLanguageVars(PunktLanguageVars):
        re_boundary_realignment = _untimed(PunktLanguageVars.re_boundary_realignment)

        def __init__(self):
            super().__init__()
            self._period_context = _untimed(super().period_context_re())
            self._words = _untimed(super()._word_tokenizer_re())

        def period_context_re(self):
            return self._period_context

        def _word_tokenizer_re(self):
            return self._words

    class _UntimedToken(PunktToken):
        _RE_ELLIPSIS, _RE_NUMERIC, _RE_INITIAL, _RE_ALPHA, _RE_NON_PUNCT = (_untimed(p) for p in (
            PunktToken._RE_ELLIPSIS, PunktToken._RE_NUMERIC, PunktToken._RE_INITIAL, PunktToken._RE_ALPHA,
            r"[^\W\d]"))

        @property
        def is_non_punct(self):  # nltk reads a module-level pattern here
            return self._RE_NON_PUNCT.search(self.type)

    table = load_table("punkt_english.json.xz")
    params = PunktParameters()
    params.abbrev_types = set(table["abbrev_types"])
    params.collocations = {tuple(pair) for pair in table["collocations"]}
    params.sent_starters = set(table["sent_starters"])
    for word, flags in table["ortho_context"].items():
        params.ortho_context[word] = flags
    return PunktSentenceTokenizer(params, lang_vars=_UntimedLanguageVars(), token_cls=_UntimedToken)


@cache
def _word_tokenizer(modern: bool = False):
    """nltk's NLTKWordTokenizer: as installed (`modern`), or with nltk 3.8.1's quote and punctuation rules
    (nltk/tokenize/destructive.py of nltk 3.8.1; its tokenize method is unchanged since)."""
    from nltk.tokenize.destructive import NLTKWordTokenizer

    class _UntimedWordTokenizer(NLTKWordTokenizer):
        STARTING_QUOTES = [(_untimed(p), s) for p, s in NLTKWordTokenizer.STARTING_QUOTES]
        ENDING_QUOTES = [(_untimed(p), s) for p, s in NLTKWordTokenizer.ENDING_QUOTES]
        PUNCTUATION = [(_untimed(p), s) for p, s in NLTKWordTokenizer.PUNCTUATION]
        PARENS_BRACKETS = (_untimed(NLTKWordTokenizer.PARENS_BRACKETS[0]), NLTKWordTokenizer.PARENS_BRACKETS[1])
        DOUBLE_DASHES = (_untimed(NLTKWordTokenizer.DOUBLE_DASHES[0]), NLTKWordTokenizer.DOUBLE_DASHES[1])

    if modern:
        return _UntimedWordTokenizer()

    class _PaperEraWordTokenizer(_UntimedWordTokenizer):
        STARTING_QUOTES = [
            (re.compile("([«“‘„]|[`]+)", re.U), r" \1 "),
            (re.compile(r"^\""), r"``"),
            (re.compile(r"(``)"), r" \1 "),
            (re.compile(r"([ \(\[{<])(\"|\'{2})"), r"\1 `` "),
            (re.compile(r"(?i)(\')(?!re|ve|ll|m|t|s|d|n)(\w)\b", re.U), r"\1 \2"),
        ]
        ENDING_QUOTES = [
            (re.compile("([»”’])", re.U), r" \1 "),
            (re.compile(r"''"), " '' "),
            (re.compile(r'"'), " '' "),
            (re.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
            (re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
        ]
        PUNCTUATION = [
            (re.compile(r'([^\.])(\.)([\]\)}>"\'' "»”’ " r"]*)\s*$", re.U), r"\1 \2 \3 "),
            (re.compile(r"([:,])([^\d])"), r" \1 \2"),
            (re.compile(r"([:,])$"), r" \1 "),
            (re.compile(r"\.{2,}", re.U), r" \g<0> "),
            (re.compile(r"[;@#$%&]"), r" \g<0> "),
            (re.compile(r'([^\.])(\.)([\]\)}>"\']*)\s*$'), r"\1 \2\3 "),
            (re.compile(r"[?!]"), r" \g<0> "),
            (re.compile(r"([^'])' "), r"\1 ' "),
            (re.compile(r"[*]", re.U), r" \g<0> "),
        ]

    return _PaperEraWordTokenizer()


@cache
def _tagger():
    from nltk.tag.perceptron import PerceptronTagger

    table = load_table("perceptron_tagger.json.xz")
    classes = table["classes"]
    weights = {feature: {classes[flat[i]]: flat[i + 1] / 1000 for i in range(0, len(flat), 2)}
               for feature, flat in table["weights_milli"].items()}
    tagger = PerceptronTagger(load=False)
    tagger.decode_json_params((weights, table["tagdict"], classes))
    return tagger


@lru_cache(maxsize=8192)  # captions are parsed again for the other variant, and for the ground truth
def tokens(text: str, modern: bool = False, lowercase: bool = True) -> tuple[Token, ...]:
    """`nltk.pos_tag(nltk.word_tokenize(text.lower()))` with each token's span in `text`: words split as
    nltk 3.8.1 split them, or as the installed nltk does (`modern`: dashes and opening quotes split off);
    `lowercase=False`: of the text as written, as AMBER reads it."""
    lower, where = _lowered(text) if lowercase else (text, list(range(len(text))))
    words, spans = [], []
    for start, end in _sentence_splitter().span_tokenize(lower):
        sentence = lower[start:end]
        pieces = _word_tokenizer(modern).tokenize(sentence)
        words += pieces
        spans += [(start + a, start + b) for a, b in _align(pieces, sentence)]
    tags = [tag for _, tag in _tagger().tag(words)] if words else []
    return tuple(Token(w, t, where[a], where[b - 1] + 1) for w, t, (a, b) in zip(words, tags, spans, strict=True))


def _lowered(text: str) -> tuple[str, list[int]]:
    """`text.lower()` and, for each of its characters, the index of the character of `text` it came from
    (lower-casing can lengthen a character: 'İ' -> 'i̇')."""
    pieces = [c.lower() for c in text]
    lower = "".join(pieces)
    if len(lower) == len(text) and lower == text.lower():
        return lower, list(range(len(text)))
    where = [i for i, piece in enumerate(pieces) for _ in piece]
    if lower != text.lower():  # context-dependent lowering (final sigma): same length, so spans still map
        lower = text.lower()
    return lower, where


_QUOTES = {"``", "''", '"'}


def _align(pieces: list[str], sentence: str) -> list[tuple[int, int]]:
    """Each token's span in the sentence. The tokenizer writes quotes as `` and ''; those are matched to
    the quote characters of the text, in order, as nltk's own span_tokenize does."""
    spans, point = [], 0
    for piece in pieces:
        if piece in _QUOTES:
            at, length = _next_quote(sentence, point)
        else:
            at, length = sentence.find(piece, point), len(piece)
        if at < 0:
            raise ValueError(f"token {piece!r} not found in {sentence!r}")
        spans.append((at, at + length))
        point = at + length
    return spans


_QUOTE_TEXT = re.compile(r"``|''|\"")  # what the tokenizer writes as `` or '' (one search: linear in the sentence)


def _next_quote(sentence: str, point: int) -> tuple[int, int]:
    found = _QUOTE_TEXT.search(sentence, point)
    return (-1, 0) if found is None else (found.start(), found.end() - found.start())
