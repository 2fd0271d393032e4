"""Score captions generated elsewhere with CHAIR against a local COCO directory, no model.

The captions file is what the remedy papers release: JSON lines (or one JSON list) of
`{"image_id": 42, "caption": "..."}`. Other common key names are accepted: `imgid` / `image` for the image
(an integer, or a COCO file name such as COCO_val2014_000000000042.jpg), `answer` / `text` / `output` /
`response` for the caption. Every line is checked, and every image looked up in the COCO annotations,
before any scoring.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import InputError
from ..io import STDIN, read_text
from .chair import VARIANTS, ChairParser
from .coco import load_coco
from .metrics import chair_metrics, score_caption

IMAGE_KEYS = ("image_id", "imgid", "image")
CAPTION_KEYS = ("caption", "answer", "text", "output", "response")
_COCO_FILE = re.compile(r"(?:^|_)0*(\d+)\.(?:jpg|jpeg|png)$", re.IGNORECASE)


def score_captions(captions_path, coco_dir, split: str | None = None, variants=VARIANTS,
                   per_caption: bool = True) -> dict:
    """CHAIR of every caption in `captions_path` (`-`: standard input), per variant:
    {"variants": {name: metrics}, ...}."""
    for variant in variants:
        if variant not in VARIANTS:
            raise InputError(f"CHAIR variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    rows = read_captions(captions_path)
    coco = load_coco(coco_dir, split)
    source = _source(captions_path)
    for line, image_id, _ in rows:
        if image_id not in coco.files:
            raise InputError(f"{source}:{line}: image {image_id} is not in {coco.root} split {coco.split}")
    result = {"captions_file": source, "coco": str(coco.root.resolve()),
              "split": coco.split, "captions": len(rows), "variants": {}}
    details = [{"image_id": image_id} for _, image_id, _ in rows]
    for variant in variants:
        parser = ChairParser(variant)
        scores = [score_caption(caption, parser.parse(caption), coco.ground_truth(image_id, variant))
                  for _, image_id, caption in rows]
        result["variants"][variant] = chair_metrics(scores)
        for row, s in zip(details, scores, strict=True):
            row[variant] = {"mentions": s.mentions, "hallucinated": [list(h) for h in s.hallucinated]}
    if per_caption:
        result["per_caption"] = details
    return result


def _source(path) -> str:
    """How results and messages name the captions: `<stdin>`, a regular file's absolute path, or the path as
    given (a pipe such as /dev/fd/63 resolves to no file)."""
    if str(path) == STDIN:
        return "<stdin>"
    return str(Path(path).resolve()) if Path(path).is_file() else str(path)


def read_captions(path) -> list[tuple[int, int, str]]:
    """(line, image id, caption) of each caption; InputError naming the line on anything malformed. `-` reads
    standard input; any readable file will do (a pipe, a FIFO)."""
    if str(path) != STDIN and not Path(path).exists():
        raise InputError(f"captions file {path} does not exist")
    text = read_text(path)
    path = _source(path)
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            items = list(enumerate(json.loads(text), start=1))
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    else:
        items = [(n, _json_line(raw, path, n)) for n, raw in enumerate(text.splitlines(), start=1) if raw.strip()]
    if not items:
        raise InputError(f"{path}: no captions (expected JSON lines of {{\"image_id\", \"caption\"}})")
    return [(n, *_image_and_caption(item, path, n)) for n, item in items]


def _json_line(raw: str, path: str, line: int):
    try:
        return json.loads(raw)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}:{line}: not valid JSON ({err.msg})") from None


def _image_and_caption(item, path: str, line: int) -> tuple[int, str]:
    where = f"{path}:{line}"
    if not isinstance(item, dict):
        raise InputError(f"{where}: expected a JSON object with image_id and caption")
    image_key = next((k for k in IMAGE_KEYS if k in item), None)
    caption_key = next((k for k in CAPTION_KEYS if k in item), None)
    if image_key is None or caption_key is None:
        missing = "image id (" + "/".join(IMAGE_KEYS) + ")" if image_key is None else \
            "caption (" + "/".join(CAPTION_KEYS) + ")"
        raise InputError(f"{where}: no {missing}")
    if not isinstance(item[caption_key], str):
        raise InputError(f"{where}: '{caption_key}' must be a string")
    return _image_id(item[image_key], f"{where}: '{image_key}'"), item[caption_key]


def _image_id(value, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value.strip().isdigit():
            return int(value)
        match = _COCO_FILE.search(value.strip())
        if match:
            return int(match.group(1))
    raise InputError(f"{where} must be a COCO image id (an integer or a COCO file name), got {value!r}")


def table(result: dict) -> str:
    """The metrics of each variant side by side, as the papers print them (percent; length in tokens)."""
    variants = result["variants"]
    rows = [("CHAIR_s", "CHAIR_s", 100), ("CHAIR_i", "CHAIR_i", 100), ("recall", "recall", 100),
            ("length (tokens)", "length", 1), ("length (words)", "words", 1), ("mentions", "mentions", 1)]
    lines = [f"CHAIR of {result['captions']} captions against {result['coco']} ({result['split']})",
             f"{'':<18}" + "".join(f"{name:>12}" for name in variants)]
    for label, key, scale in rows:
        cells = "".join(f"{'-' if m[key] is None else f'{scale * m[key]:.1f}':>12}" for m in variants.values())
        lines.append(f"{label:<18}{cells}")
    return "\n".join(lines)
