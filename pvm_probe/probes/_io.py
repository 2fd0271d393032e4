"""Save and load result dataclasses: JSON for metadata, NPZ for arrays, each written atomically.

`result.save("out/mass")` writes `out/mass.json` and `out/mass.npz`; numpy-array fields go to the
NPZ, everything else (ints, floats, strings, lists, dicts) to the JSON, which also names the class.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import fields
from pathlib import Path

import numpy as np


def _stem(path) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".json", ".npz") else path


def _atomic_write(target: Path, write) -> None:
    """write(file_object) into a temporary file beside `target`, then os.replace it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ResultIO:
    """Mixin for result dataclasses: `.save(path)` / `cls.load(path)`."""

    def save(self, path) -> tuple[Path, Path]:
        stem = _stem(path)
        arrays = {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), np.ndarray)}
        meta = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in arrays}
        doc = {"class": type(self).__name__, "arrays": sorted(arrays), "meta": meta}
        json_path, npz_path = stem.with_suffix(".json"), stem.with_suffix(".npz")
        _atomic_write(npz_path, lambda f: np.savez(f, **arrays))
        _atomic_write(json_path, lambda f: f.write(json.dumps(doc, indent=1, default=_jsonable).encode()))
        return json_path, npz_path

    @classmethod
    def load(cls, path):
        stem = _stem(path)
        doc = json.loads(stem.with_suffix(".json").read_text())
        if doc["class"] != cls.__name__:
            raise ValueError(f"{stem}.json holds a {doc['class']}, not a {cls.__name__}")
        with np.load(stem.with_suffix(".npz")) as npz:
            arrays = {name: npz[name] for name in doc["arrays"]}
        return cls(**doc["meta"], **arrays)


def _jsonable(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
