"""The `images` suite: the user's own images and prompts, from a JSONL file.

One request per line:

    {"image": "photos/kitchen.jpg", "prompt": "Describe this image in detail.", "objects": ["oven", "person"]}

`image` (one path) or `images` (a list) is relative to the JSONL file; `prompt` is the user turn; `objects`
(optional) names the objects truly present, and `id` (optional) names the request. Answers are scored
CHAIR-style where `objects` is given: every mention of an object noun (the 80 COCO categories and their
common synonyms, plus the line's own objects) is an object claim, correct when that object is present,
a hallucination when not; a noun after a negation ("no dogs") makes no claim. Lines without `objects`
give the probes only. The file is checked whole (line numbers in the errors, missing or unreadable images by
path) before any model loads; requests are read back one at a time, so memory does not grow with the file.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from ..errors import InputError, one_line
from .base import Answer, Claim, Request, Suite, check_int, quarter_of
from .scenes.scoring import NEGATION_WINDOW, split_words
from .scenes.words import NEGATIONS, plurals

# COCO's 80 categories -> one-word synonyms (CHAIR-style, singular; plurals are added). A category's own
# name counts too, two-word names ("traffic light") as a phrase.
COCO = {
    "person": "person man woman boy girl child kid people guy lady baby player skier surfer rider",
    "bicycle": "bicycle bike", "car": "car automobile sedan taxi", "motorcycle": "motorcycle motorbike scooter",
    "airplane": "airplane plane jet aircraft airliner", "bus": "bus", "train": "train locomotive",
    "truck": "truck lorry pickup", "boat": "boat ship canoe kayak sailboat yacht", "traffic light": "",
    "fire hydrant": "hydrant", "stop sign": "", "parking meter": "",
    "bench": "bench", "bird": "bird pigeon seagull duck goose parrot", "cat": "cat kitten kitty",
    "dog": "dog puppy pup", "horse": "horse pony", "sheep": "sheep lamb", "cow": "cow cattle calf bull",
    "elephant": "elephant", "bear": "bear", "zebra": "zebra", "giraffe": "giraffe", "backpack": "backpack",
    "umbrella": "umbrella parasol", "handbag": "handbag purse", "tie": "tie necktie", "suitcase": "suitcase luggage",
    "frisbee": "frisbee", "skis": "ski skis", "snowboard": "snowboard", "sports ball": "ball football",
    "kite": "kite", "baseball bat": "", "baseball glove": "glove mitt",
    "skateboard": "skateboard", "surfboard": "surfboard", "tennis racket": "racket racquet",
    "bottle": "bottle", "wine glass": "", "cup": "cup mug", "fork": "fork", "knife": "knife",
    "spoon": "spoon", "bowl": "bowl", "banana": "banana", "apple": "apple", "sandwich": "sandwich burger",
    "orange": "orange", "broccoli": "broccoli", "carrot": "carrot", "hot dog": "", "pizza": "pizza",
    "donut": "donut doughnut", "cake": "cake cupcake", "chair": "chair stool", "couch": "couch sofa",
    "potted plant": "houseplant plant", "bed": "bed", "dining table": "table desk",
    "toilet": "toilet", "tv": "tv television monitor screen", "laptop": "laptop notebook computer",
    "mouse": "mouse", "remote": "remote", "keyboard": "keyboard", "cell phone": "phone smartphone",
    "microwave": "microwave", "oven": "oven stove", "toaster": "toaster", "sink": "sink", "refrigerator":
    "refrigerator fridge", "book": "book novel", "clock": "clock", "vase": "vase", "scissors": "scissors",
    "teddy bear": "teddy", "hair drier": "hairdryer", "toothbrush": "toothbrush",
}
_SURFACE = {(*word.split()[:-1], form): category for category, words in COCO.items()
            for word in (category, *words.split()) for form in plurals(word.split()[-1])}


class ImagesSuite(Suite):
    name = "images"
    options = ("data", "max_new_tokens")
    claim_kinds = ("object",)
    higher_is_better = False
    words = {"metric": "hallucination rate", "claims": "object mentions"}

    def __init__(self, data=None, max_new_tokens: int = 512):
        if data is None:
            raise InputError("--suite images needs --data FILE.jsonl (one image + prompt per line)")
        check_int("max_new_tokens", max_new_tokens, 1)
        self.path, self.budget = Path(data), max_new_tokens
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
        return object_claims(answer, {_canonical(o) for o in present}, _own_vocabulary(present))

    def settings(self) -> dict:
        return {"suite": self.name, "data": str(self.path.resolve()), "requests": len(self),
                "max_new_tokens": self.budget}


def object_claims(answer: Answer, present: set[str], extra: dict) -> list[Claim]:
    """Every non-negated mention of a known object noun: correct when present."""
    words, sentences, starts = split_words(answer.text)
    vocabulary = {**_SURFACE, **extra}
    claims, i = [], 0
    while i < len(words):
        span = next((n for n in (2, 1) if tuple(words[i:i + n]) in vocabulary), 0)
        if not span or (span == 1 and (words[i + 1],) in vocabulary if i + 1 < len(words) else False):
            i += 1  # not an object noun, or a modifier of the next one ("orange cat", "dog bed")
            continue
        category = vocabulary[tuple(words[i:i + span])]
        before = [w for w, s in zip(words[max(0, i - NEGATION_WINDOW):i], sentences[max(0, i - NEGATION_WINDOW):i],
                                    strict=True) if s == sentences[i]]
        if not any(w in NEGATIONS for w in before):
            claims.append(Claim("object", answer.token_at(starts[i]), " ".join(words[i:i + span]),
                                category in present, quarter_of(i, len(words))))
        i += span
    return claims


def _canonical(name: str) -> str:
    words = tuple(name.lower().split())
    return _SURFACE.get(words, " ".join(words))


def _own_vocabulary(objects: list[str]) -> dict:
    """The line's own object names (and plurals) that COCO does not know, as categories of their own."""
    out = {}
    for name in objects:
        *head, last = name.lower().split()
        for form in plurals(last):
            out.setdefault((*head, form), _canonical(name))
    return {k: v for k, v in out.items() if k not in _SURFACE}


def _index_lines(path: Path) -> list[tuple[int, int]]:
    """Check every line (JSON object, fields and types, images present) and return (line, byte offset) of each."""
    if not path.is_file():
        raise InputError(f"--data {path}: no such file")
    offsets, offset = [], 0
    with path.open("rb") as f:
        for line, raw in enumerate(f, start=1):
            if raw.strip():
                _check_row(raw, path, line)
                offsets.append((line, offset))
            offset += len(raw)
    if not offsets:
        raise InputError(f"{path}: no requests (one JSON object per line)")
    return offsets


def _check_row(raw: bytes, path: Path, line: int) -> None:
    where = f"{path}:{line}"
    try:
        row = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{where}: not valid JSON ({err.msg if hasattr(err, 'msg') else err})") from None
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
