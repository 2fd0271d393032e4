"""The `images` suite: the user's own images and prompts, from a JSONL file.

One request per line:

    {"image": "photos/kitchen.jpg", "prompt": "Describe this image in detail.", "objects": ["oven", "person"]}

`image` (one path) or `images` (a list) is relative to the JSONL file; `prompt` is the user turn; `objects`
(optional) names the objects truly present, and `id` (optional) names the request. Answers are scored
with CHAIR's own parser where `objects` is given (`pvm_probe.benchmarks.chair`, the reference variant by
default: its synonym table, double words and lemmas): every mention of a COCO object is an object claim,
correct when that object is present (the line's `objects` go through the same synonym table), a
hallucination when not. A line's object names that COCO does not know ("easel") are matched literally,
plurals included. Lines without `objects` give the probes only. The file is checked whole (line numbers
in the errors, missing or unreadable images by path) before any model loads; requests are read back one at
a time, so memory does not grow with the file.
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path

from PIL import Image

from ..benchmarks.chair import VARIANTS, ChairParser, canonical
from ..errors import InputError, one_line
from ..io import decode_utf8
from .base import Answer, Claim, Request, Suite, check_int, quarter_of
from .scenes.scoring import split_words
from .scenes.words import plurals


class ImagesSuite(Suite):
    name = "images"
    options = ("data", "max_new_tokens")
    claim_kinds = ("object",)
    higher_is_better = False
    words = {"metric": "hallucination rate", "claims": "object mentions"}

    def __init__(self, data=None, max_new_tokens: int = 512, chair: str = "reference"):
        if data is None:
            raise InputError("--suite images needs --data FILE.jsonl (one image + prompt per line)")
        check_int("max_new_tokens", max_new_tokens, 1)
        if chair not in VARIANTS:
            raise InputError(f"images suite: chair variant {chair!r}, expected one of {', '.join(VARIANTS)}")
        self.path, self.budget, self.chair = Path(data), max_new_tokens, chair
        self._offsets = _index_lines(self.path)

    def __len__(self) -> int:
        return len(self._offsets)

    def request(self, index: int) -> Request:
        self.check_request(index)
        line, offset = self._offsets[index]
        with self.path.open("rb") as f:
            f.seek(offset)
            row = json.loads(f.readline())
        paths = _image_paths(row, self.path, line)
        images = tuple(_open(p, self.path, line) for p in paths)
        meta = {"line": line, "images": [str(p) for p in paths], "objects": row.get("objects")}
        return Request(index, str(row.get("id", f"line-{line}")), images, row["prompt"], meta)

    def max_new_tokens(self, request: Request) -> int:
        return self.budget

    def score(self, request: Request, answer: Answer) -> list[Claim]:
        present = request.meta["objects"]
        if present is None:
            return []
        return object_claims(answer, {_canonical(o) for o in present}, _own_vocabulary(present), self.chair)

    def settings(self) -> dict:
        return {"suite": self.name, "data": str(self.path.resolve()), "requests": len(self),
                "max_new_tokens": self.budget, "chair": self.chair}


def object_claims(answer: Answer, present: set[str], extra: dict, variant: str = "reference") -> list[Claim]:
    """Every object mention CHAIR's parser finds, plus literal mentions of the `extra` names, in answer
    order: correct when its object is in `present`."""
    words, _, starts = split_words(answer.text)
    found = [(m.start, m.word, m.object) for m in ChairParser(variant).mentions(answer.text)]
    taken = {c for start, word, _ in found for c in range(start, start + len(word))}
    found += [(s, w, o) for s, w, o in _literal_mentions(answer.text, words, starts, extra) if s not in taken]
    return [Claim("object", answer.token_at(start), word, category in present,
                  quarter_of(bisect.bisect_right(starts, start) - 1, len(words)))
            for start, word, category in sorted(found)]


def _literal_mentions(text: str, words: list[str], starts: list[int], extra: dict) -> list[tuple[int, str, str]]:
    """(start, text, name) of each mention of a line's own object names (one or two words, plurals)."""
    found, i = [], 0
    while i < len(words):
        span = next((n for n in (2, 1) if tuple(words[i:i + n]) in extra), 0)
        if span:
            end = starts[i + span - 1] + len(words[i + span - 1])
            found.append((starts[i], text[starts[i]:end], extra[tuple(words[i:i + span])]))
        i += span or 1
    return found


def _canonical(name: str) -> str:
    name = " ".join(name.lower().split())
    return canonical(name) or name


def _own_vocabulary(objects: list[str]) -> dict:
    """The line's own object names (and plurals) that CHAIR's table does not know, as categories of their own."""
    out = {}
    for name in objects:
        if canonical(" ".join(name.lower().split())) is None:
            *head, last = name.lower().split()
            for form in plurals(last):
                out.setdefault((*head, form), _canonical(name))
    return out


def _index_lines(path: Path) -> list[tuple[int, int]]:
    """Check every line (JSON object, fields and types, images present) and return (line, byte offset) of each."""
    if not path.is_file():
        raise InputError(f"--data {path}: no such file")
    offsets, offset = [], 0
    with path.open("rb") as f:
        for line, raw in enumerate(f, start=1):
            if raw.strip():
                _check_row(decode_utf8(raw, path, offset, line), path, line)
                offsets.append((line, offset))
            offset += len(raw)
    if not offsets:
        raise InputError(f"{path}: no requests (one JSON object per line)")
    return offsets


def _check_row(raw: str, path: Path, line: int) -> None:
    where = f"{path}:{line}"
    try:
        row = json.loads(raw)
    except json.JSONDecodeError as err:
        raise InputError(f"{where}: not valid JSON ({err.msg})") from None
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
        raise InputError(f"{where}: 'prompt' must be a non-empty string")
    objects = row.get("objects")
    if objects is not None and not (isinstance(objects, list) and all(isinstance(o, str) and o.strip()
                                                                        for o in objects)):
        raise InputError(f"{where}: 'objects' must be a list of object names (strings)")
    for image in _image_paths(row, path, line):
        if not image.is_file():
            raise InputError(f"{where}: image {image} does not exist")
        _check_readable(image, where)


def _check_readable(image: Path, where: str) -> None:
    """The image's header parses and its data passes PIL's `verify` (no pixels decoded)."""
    try:
        with Image.open(image) as opened:
            opened.verify()
    except (OSError, SyntaxError, ValueError) as err:  # PIL's verify raises SyntaxError for a bad PNG chunk
        raise InputError(f"{where}: cannot read image {image}: {one_line(err)}") from None


def _image_paths(row: dict, path: Path, line: int) -> list[Path]:
    names = row.get("images", row.get("image"))
    names = [names] if isinstance(names, str) else names
    if not names or not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise InputError(f"{path}:{line}: needs 'image' (a path) or 'images' (a list of paths)")
    return [path.parent / n for n in names]


def _open(image: Path, path: Path, line: int) -> Image.Image:
    try:
        with Image.open(image) as opened:
            return opened.convert("RGB")
    except OSError as err:
        raise InputError(f"{path}:{line}: cannot read image {image}: {err}") from None
