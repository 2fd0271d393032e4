"""What every suite shares: a request to send, an answer to read, the claims found in it.

A suite turns into requests (images, a prompt, metadata) and scores a generated answer into grounded
claims, each with the generated token that carries it and a verdict. The runner does the rest: chat
template, batching, generation, probes, records. Requests are made on demand from their index, so a
suite of a billion scenes costs nothing until a scene is asked for.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import cached_property

from PIL import Image

from ..errors import InputError


@dataclass(frozen=True)
class Request:
    """One request of a suite: its images, the prompt that follows them, and what its scorer needs (`meta`)."""

    index: int  # position in the suite: the records' key, and the swapped-image partner rule
    id: str  # stable readable name, e.g. "scene-1000003"
    images: tuple  # PIL images, in prompt order
    prompt: str  # the user turn's text, after the image(s)
    meta: dict = field(default_factory=dict)  # JSON-able: what the scorer needs, what a reader wants

    def messages(self) -> list[dict]:
        """One chat turn: the images, then the prompt (the processor's chat template does the rest)."""
        content = [{"type": "image", "image": image} for image in self.images]
        return [{"role": "user", "content": [*content, {"type": "text", "text": self.prompt}]}]


@dataclass
class Answer:
    """One generated answer: ids up to (not including) the first stop token, and how text maps to tokens."""

    token_ids: list[int]
    tokens: list[str]  # the tokenizer's own token strings
    pieces: list[str]  # pieces[t]: the text token t adds to the decoded answer ("".join(pieces) == text)
    text: str

    @classmethod
    def decode(cls, tokenizer, token_ids: list[int]) -> Answer:
        """Decode with per-token text pieces: prefix decoding, so merged and multi-byte tokens come out right."""
        token_ids = [int(i) for i in token_ids]
        text, ends = "", []
        for t in range(len(token_ids)):
            text = tokenizer.decode(token_ids[: t + 1], skip_special_tokens=True)
            ends.append(max(len(text), ends[-1] if ends else 0))
        ends = [min(e, len(text)) for e in ends]
        pieces = [text[s:e] for s, e in zip([0, *ends][: len(ends)], ends, strict=True)]
        return cls(token_ids, tokenizer.convert_ids_to_tokens(token_ids), pieces, text)

    @cached_property
    def _ends(self) -> list[int]:
        """[T] where each token's piece ends in the text."""
        return list(itertools.accumulate(map(len, self.pieces)))

    def token_at(self, char: int) -> int | None:
        """The generated token whose piece holds character `char` of the text (None if out of range)."""
        if not 0 <= char < len(self.text):
            return None
        return bisect.bisect_right(self._ends, char)


@dataclass
class Claim:
    """One grounded statement of an answer and its verdict."""

    kind: str  # one of the suite's claim_kinds
    token: int | None  # generated token that carries it (the probes' row t made token t); None: missing
    text: str
    correct: bool
    quarter: int  # 0..3: where it sits in the answer, by the suite's rule
    boxes: list = field(default_factory=list)  # image regions it is about, [x0, y0, x1, y1] fractions of the image
    detail: dict = field(default_factory=dict)  # suite-specific fields (JSON-able)

    def to_dict(self) -> dict:
        return asdict(self)


class Suite:
    """The interface every suite implements (see the module docstring)."""

    name: str = ""
    claim_kinds: tuple[str, ...] = ()
    higher_is_better: bool = True  # world: claims correct; scenes/images: error rates (lower is better)
    words: dict = {}  # how the report words things: {"metric": ..., "claims": ...}
    options: tuple[str, ...] = ()  # the settings (specs.SuiteSpec fields) the constructor takes, by keyword
    benchmark_layout: dict = {}  # with a benchmark() method: how the report shows it (report/benchmarks.py)
    positional: bool = True  # False: each answer is one word (POPE's yes / no), so where a claim sits in the
    # answer means nothing: the report drops its by-quarter headline and panel and leads with the benchmark

    def __len__(self) -> int:
        """The number of requests."""
        raise NotImplementedError

    def request(self, index: int) -> Request:
        """Request `index`, made on demand."""
        raise NotImplementedError

    def requests(self, indices=None) -> Iterator[Request]:
        for i in range(len(self)) if indices is None else indices:
            yield self.request(i)

    def max_new_tokens(self, request: Request) -> int:
        """The answer budget of one request."""
        raise NotImplementedError

    def calibration(self, count: int) -> list[Request]:
        """Requests to fit something on (a tuned lens) without touching the evaluated ones, when the suite
        can make them; the images suite has only the user's requests and returns its first ones."""
        return list(self.requests(range(min(count, len(self)))))

    def score(self, request: Request, answer: Answer) -> list[Claim]:
        """The grounded claims of one answer, each with the token that carries it and its verdict."""
        raise NotImplementedError

    def settings(self) -> dict:
        """JSON-able description of what was asked (records, metrics.json's `setting`)."""
        raise NotImplementedError

    @classmethod
    def from_settings(cls, settings: dict):
        """The suite again from its `settings()` (as run.json keeps them): its options that are there."""
        return cls(**{k: settings[k] for k in cls.options if k in settings})

    def check_processor(self, processor) -> None:
        """Raise InputError if this suite cannot run with the base's processor (called before the weights load)."""

    def check_request(self, index: int) -> None:
        if not 0 <= index < len(self):
            raise InputError(f"request {index} is out of range: the {self.name} suite has {len(self)}")


def check_int(name: str, value, low: int, high: int | None = None) -> None:
    """A suite setting must be an integer in range (not a bool, not a float): else a one-line InputError."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        span = f">= {low}" if high is None else f"in {low}..{high}"
        raise InputError(f"{name} must be an integer {span}, got {value!r}")


def quarter_of(position: int, length: int) -> int:
    """0..3: the quarter of a sequence of `length` items that `position` falls in."""
    return min(3, 4 * position // max(length, 1))


def open_rgb(path) -> Image.Image:
    """An image file as RGB; a one-line InputError naming the file when it cannot be read."""
    try:
        with Image.open(path) as opened:
            return opened.convert("RGB")
    except OSError as err:
        raise InputError(f"cannot read image {path}: {err}") from None
