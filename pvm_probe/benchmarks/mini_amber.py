"""A synthetic mini-AMBER in AMBER's layout and JSON format, for tests and demos: `data/` (annotations, the
generative queries, relation.json, safe_words.txt) and `image/`. Deterministic."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

RELATION = {"dog": ["puppy"], "person": ["man", "woman"], "grass": ["ground"], "ground": ["floor"], "cat": [],
            "light": [], "ship": [], "sky": [], "tree": []}
SAFE_WORDS = ("light",)
ITEMS = (  # (truth, hallu) per generative query
    (("dog", "grass", "ship", "ship"), ("cat", "ground")),
    (("person", "sky"), ("dog", "tree")),
)


def write_mini_amber(directory, items=ITEMS, relation=None, safe_words=SAFE_WORDS) -> Path:
    """Write the mini-AMBER under `directory` (created); returns its data directory."""
    root = Path(directory)
    data, images = root / "data", root / "image"
    (data / "query").mkdir(parents=True, exist_ok=True)
    images.mkdir(parents=True, exist_ok=True)
    _dump(data / "relation.json", RELATION if relation is None else relation)
    (data / "safe_words.txt").write_text("".join(f"{w}\n" for w in safe_words), encoding="utf-8")
    _dump(data / "annotations.json", [{"id": k + 1, "type": "generative", "truth": list(truth), "hallu": list(hallu)}
                                      for k, (truth, hallu) in enumerate(items)])
    _dump(data / "query" / "query_generative.json",
          [{"id": k + 1, "image": f"AMBER_{k + 1}.jpg", "query": "Describe this image."} for k in range(len(items))])
    for k in range(len(items)):
        image = Image.new("RGB", (64, 48), (60 + 50 * k, 140, 200))
        ImageDraw.Draw(image).ellipse([8 + 6 * k, 10, 40, 38], fill=(200, 60, 40))
        image.save(images / f"AMBER_{k + 1}.jpg", quality=95)
    return data


def _dump(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
