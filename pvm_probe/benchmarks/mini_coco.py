"""A synthetic mini-COCO in COCO's layout and JSON format, for tests: a few small images of drawn shapes,
instance annotations (real COCO category ids and names, boxes) and human captions. Deterministic."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

# COCO 2014's ids of the categories used here
CATEGORIES = {1: "person", 3: "car", 10: "traffic light", 17: "cat", 18: "dog", 44: "bottle", 47: "cup",
              49: "knife", 59: "pizza", 62: "chair", 63: "couch", 67: "dining table"}
_IDS = {name: cid for cid, name in CATEGORIES.items()}
# image id -> (background colour, [(category, box x, y, w, h)], human captions)
IMAGES = {
    101: ((200, 180, 150), [("dog", 4, 20, 24, 16), ("cat", 34, 22, 20, 14), ("couch", 0, 30, 64, 18)],
          ["A dog and a cat sleeping on a sofa.", "Two pets rest on a couch together.",
           "A brown dog lies next to a gray cat."]),
    102: ((230, 230, 220), [("person", 6, 4, 14, 40), ("dining table", 20, 28, 40, 16), ("cup", 26, 20, 6, 8),
                            ("bottle", 40, 14, 5, 14)],
          ["A woman sits at a table with a cup of coffee.", "A person next to a bottle on the kitchen table."]),
    103: ((120, 130, 140), [("car", 4, 28, 26, 12), ("car", 34, 30, 24, 10), ("traffic light", 50, 2, 6, 16),
                            ("person", 22, 8, 6, 18)],
          ["Cars wait at a traffic light on a city street.", "A man crosses the road in front of two cars."]),
    104: ((160, 110, 80), [("pizza", 14, 12, 30, 24), ("dining table", 0, 0, 64, 48), ("knife", 46, 20, 14, 3)],
          ["A pizza on a wooden table next to a knife.", "A cheese pizza is ready to be sliced, a fork beside it."]),
}
_COLOURS = [(220, 40, 40), (40, 160, 60), (40, 80, 220), (230, 200, 40), (160, 60, 200), (30, 30, 30)]
SIZE = (64, 48)


def write_mini_coco(directory, split: str = "val2014") -> Path:
    """Write the mini-COCO under `directory` (created) and return it."""
    root = Path(directory)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(parents=True, exist_ok=True)
    images, instances, captions = [], [], []
    for image_id, (background, objects, texts) in IMAGES.items():
        name = f"COCO_{split}_{image_id:012d}.jpg"
        images.append({"id": image_id, "file_name": name, "width": SIZE[0], "height": SIZE[1]})
        _draw(objects, background).save(root / split / name, quality=95)
        for category, x, y, w, h in objects:
            instances.append({"id": len(instances) + 1, "image_id": image_id, "category_id": _IDS[category],
                              "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
                              "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
        captions += [{"id": 1000 * image_id + k, "image_id": image_id, "caption": text}
                     for k, text in enumerate(texts)]
    info = {"description": "pvm_probe synthetic mini-COCO", "version": "1.0"}
    categories = [{"id": cid, "name": name, "supercategory": "thing"} for cid, name in CATEGORIES.items()]
    _dump(root / "annotations" / f"instances_{split}.json",
          {"info": info, "licenses": [], "images": images, "annotations": instances, "categories": categories})
    _dump(root / "annotations" / f"captions_{split}.json",
          {"info": info, "licenses": [], "images": images, "annotations": captions})
    return root


def _draw(objects, background) -> Image.Image:
    image = Image.new("RGB", SIZE, background)
    draw = ImageDraw.Draw(image)
    for k, (_, x, y, w, h) in enumerate(objects):
        shape = draw.ellipse if k % 2 else draw.rectangle
        shape([x, y, x + w - 1, y + h - 1], fill=_COLOURS[k % len(_COLOURS)])
    return image


def _dump(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
