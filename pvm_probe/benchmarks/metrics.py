"""CHAIR's metrics, defined as the reference computes them (shikiw/OPERA chair.py `compute_chair`).

Over captions c with mentions m(c) (repeats kept) and ground-truth objects G(c):
- CHAIR_s = share of captions with at least one mention whose object is not in G(c);
- CHAIR_i = mentions not in G / all mentions (repeats counted, in both);
- recall  = sum_c |{objects of m(c)} & G(c)| / sum_c |G(c)|;
- length  = mean caption length in the reference's sense (its `Len`): nltk tokens, punctuation included, a
  double word counted once. `words` is the mean number of whitespace-separated words.
A rate with an empty denominator is None.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .chair import Parse


@dataclass(frozen=True)
class CaptionScore:
    mentions: int
    hallucinated: list[tuple[str, str]]  # (caption's word, object) of each hallucinated mention
    recalled: int                         # distinct ground-truth objects mentioned
    truth: int                            # ground-truth objects of the image
    tokens: int
    words: int


def score_caption(caption: str, parse: Parse, truth: frozenset[str]) -> CaptionScore:
    hallucinated = [(m.word, m.object) for m in parse.mentions if m.object not in truth]
    recalled = {m.object for m in parse.mentions} & truth
    return CaptionScore(len(parse.mentions), hallucinated, len(recalled), len(truth), parse.tokens,
                        len(caption.split()))


def chair_metrics(scores: Iterable[CaptionScore]) -> dict:
    scores = list(scores)
    mentions = sum(s.mentions for s in scores)
    hallucinated = sum(len(s.hallucinated) for s in scores)
    truth = sum(s.truth for s in scores)
    n = len(scores)
    return {
        "CHAIR_s": _rate(sum(bool(s.hallucinated) for s in scores), n),
        "CHAIR_i": _rate(hallucinated, mentions),
        "recall": _rate(sum(s.recalled for s in scores), truth),
        "length": _rate(sum(s.tokens for s in scores), n),
        "words": _rate(sum(s.words for s in scores), n),
        "captions": n, "mentions": mentions, "hallucinated": hallucinated,
    }


def _rate(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None
