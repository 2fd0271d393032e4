"""A local COCO directory, and CHAIR's ground truth from it.

The standard layout (COCO 2014 or 2017, any split name):

    <dir>/annotations/instances_<split>.json   object annotations (images, annotations, categories)
    <dir>/annotations/captions_<split>.json    five human captions per image
    <dir>/<split>/<file_name>                  the images (only needed to run a model)

Annotation files may also lie in <dir> itself. As the reference CHAIR's `get_annotations` does, an image's
ground-truth objects are the categories of its instance annotations (through CHAIR's synonym table) together
with the objects CHAIR's parser finds in its human captions. `write_mini_coco` writes a small synthetic
directory in that layout for tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..io import read_text
from .chair import ChairParser, canonical


@dataclass
class Coco:
    root: Path
    split: str
    files: dict[int, str]                          # image id -> file name
    categories: dict[int, list[str]]               # image id -> category names of its instances (repeats kept)
    captions: dict[int, list[str]]                 # image id -> human captions
    _truth: dict = field(default_factory=dict, repr=False)

    @property
    def image_ids(self) -> list[int]:
        return sorted(self.files)

    def image_path(self, image_id: int) -> Path:
        """The image's file; InputError when the id or the file is missing."""
        if image_id not in self.files:
            raise InputError(f"{self.root}: no image {image_id} in split {self.split}")
        path = self.root / self.split / self.files[image_id]
        if not path.is_file():
            raise InputError(f"{self.root}: image {image_id} is missing: {path} does not exist")
        return path

    def ground_truth(self, image_id: int, variant: str = "reference") -> frozenset[str]:
        """The reference's objects of an image: instance categories plus the objects that CHAIR's parser (of
        `variant`, the same that reads the generated captions) finds in its human captions."""
        key = (image_id, variant)
        if key not in self._truth:
            if image_id not in self.files:
                raise InputError(f"{self.root}: no image {image_id} in split {self.split}")
            parser = ChairParser(variant)
            objects = {canonical(name) for name in self.categories.get(image_id, [])}
            for caption in self.captions.get(image_id, []):
                objects.update(parser.objects(caption))
            self._truth[key] = frozenset(objects)
        return self._truth[key]


def load_coco(directory, split: str | None = None) -> Coco:
    """Read a COCO directory's instance and caption annotations (of `split`, or its only split)."""
    root = Path(directory)
    if not root.is_dir():
        raise InputError(f"COCO directory {root} does not exist")
    split = split or _only_split(root)
    instances = _read(_annotation_file(root, "instances", split), ("images", "annotations", "categories"))
    captions = _read(_annotation_file(root, "captions", split), ("images", "annotations"))
    names = {_field(instances, "categories", i, "id", int): _field(instances, "categories", i, "name", str)
             for i in range(len(instances["categories"]))}
    files = {_field(instances, "images", i, "id", int): _field(instances, "images", i, "file_name", str)
             for i in range(len(instances["images"]))}
    categories: dict[int, list[str]] = {}
    for i in range(len(instances["annotations"])):
        category = _field(instances, "annotations", i, "category_id", int)
        if category not in names:
            raise InputError(f"{instances['_path']}: annotations[{i}] has category_id {category}, not in 'categories'")
        if canonical(names[category]) is None:
            raise InputError(f"{instances['_path']}: category {names[category]!r} is not one of CHAIR's COCO "
                             f"categories")
        categories.setdefault(_field(instances, "annotations", i, "image_id", int), []).append(names[category])
    texts: dict[int, list[str]] = {}
    for i in range(len(captions["annotations"])):
        texts.setdefault(_field(captions, "annotations", i, "image_id", int), []).append(
            _field(captions, "annotations", i, "caption", str))
    return Coco(root, split, files, categories, texts)


def _only_split(root: Path) -> str:
    found = sorted({p.name[len("instances_"):-len(".json")] for d in (root / "annotations", root)
                    for p in d.glob("instances_*.json")})
    if len(found) != 1:
        what = f"several splits ({', '.join(found)}); name one" if found else \
            "no annotations/instances_<split>.json (COCO's instance annotations, e.g. instances_val2014.json)"
        raise InputError(f"COCO directory {root}: {what}")
    return found[0]


def _annotation_file(root: Path, kind: str, split: str) -> Path:
    for folder in (root / "annotations", root):
        path = folder / f"{kind}_{split}.json"
        if path.is_file():
            return path
    raise InputError(f"COCO directory {root}: missing annotations/{kind}_{split}.json")


def _read(path: Path, keys: tuple[str, ...]) -> dict:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object with {', '.join(keys)}")
    for key in keys:
        if not isinstance(data.get(key), list):
            raise InputError(f"{path}: missing the list '{key}'")
    data["_path"] = path
    return data


def _field(data: dict, where: str, index: int, key: str, kind: type):
    """data[where][index][key], checked to be a `kind` (one-line InputError naming file and field if not)."""
    item = data[where][index]
    value = item.get(key) if isinstance(item, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InputError(f"{data['_path']}: {where}[{index}] needs '{key}' ({kind.__name__})")
    return value
