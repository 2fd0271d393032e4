"""Records: one JSON line per (variant, request), streamed as the runner goes, resumable and mergeable.

A run directory holds `run.json` (what was run: base, suite settings, generation settings, variants) and
`records.jsonl`. Each record is appended as one whole line and flushed; a line torn by an interruption is
cut off when the file is opened again, so the file is always a valid prefix and a rerun resumes after the
last complete record. Under several processes each writes its own shard (`records.rank<k>.jsonl`) and
process 0 merges them into `records.jsonl`, in variant order, then request order.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from .errors import InputError
from .io import atomic_write_json, atomic_write_text

RECORDS, RUN = "records.jsonl", "run.json"


def key(record: dict) -> tuple[str, int]:
    return record["variant"], record["request"]


def read_records(path) -> list[dict]:
    """The complete lines of a records file (a torn last line is left out)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # torn by an interruption: everything before it is whole
    return records


def rounded(values, digits: int = 5):
    """Nested lists of floats rounded to `digits` decimals, NaN/inf -> None (plain JSON)."""
    array = np.asarray(values, dtype=float)
    if array.ndim == 0:
        value = float(array)
        return round(value, digits) if math.isfinite(value) else None
    return [rounded(v, digits) for v in array] if array.ndim > 1 else [
        round(v, digits) if math.isfinite(v) else None for v in array.tolist()]


def rounded_kl(values, digits: int = 4):
    """KL divergences as `rounded` writes them, clamped at 0: a KL is never negative, but float error leaves
    values such as -1e-9 that round to -0.0."""
    return rounded(np.maximum(np.asarray(values, dtype=float), 0.0) + 0.0, digits)


def mean_of(values) -> float | None:
    """The mean of the values that are not None (None when there are none)."""
    values = [float(v) for v in values if v is not None]
    return float(np.mean(values)) if values else None


class RecordStore:
    """The records of one run directory, for one process of `world_size`."""

    def __init__(self, directory, run: dict, rank: int = 0, world_size: int = 1):
        self.directory, self.rank, self.world_size = Path(directory), rank, world_size
        self.directory.mkdir(parents=True, exist_ok=True)
        self.run = _compatible_run(self.directory / RUN, run)
        self.path = self.directory / (RECORDS if world_size == 1 else f"records.rank{rank}.jsonl")
        _cut_torn_line(self.path)
        self._done = {key(r) for p in self._all_files() for r in read_records(p)}

    def write_run(self) -> None:
        atomic_write_json(self.directory / RUN, self.run)

    def done(self, variant: str, request: int) -> bool:
        return (variant, request) in self._done

    def count(self, variant: str, requests: range) -> int:
        """How many of `requests` (a range, possibly huge) the variant has done."""
        return sum(1 for name, i in self._done if name == variant and i in requests)

    def append(self, record: dict) -> None:
        line = json.dumps(record, allow_nan=False) + "\n"
        with self.path.open("a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self._done.add(key(record))

    def merge(self, variant_order: list[str]) -> list[dict]:
        """Process 0: every shard and the main file into `records.jsonl`, deduplicated and ordered."""
        merged = {key(r): r for p in self._all_files() for r in read_records(p)}
        rank = {name: i for i, name in enumerate(variant_order)}
        records = sorted(merged.values(), key=lambda r: (rank.get(r["variant"], len(rank)), r["variant"], r["request"]))
        atomic_write_text(self.directory / RECORDS, "".join(json.dumps(r, allow_nan=False) + "\n" for r in records))
        for shard in self.directory.glob("records.rank*.jsonl"):
            shard.unlink()
        return records

    def _all_files(self) -> list[Path]:
        return [self.directory / RECORDS, *sorted(self.directory.glob("records.rank*.jsonl"))]


def _cut_torn_line(path: Path) -> None:
    """Truncate a file whose last line was torn (no newline) back to its last complete line."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def compatible(path, run: dict) -> bool:
    """Whether the records described by `path` (a run.json) can be resumed by `run`."""
    try:
        _compatible_run(Path(path), run)
    except InputError:
        return False
    return True


def _compatible_run(path: Path, run: dict) -> dict:
    """The run description to keep: `run` itself, or the stored one extended by new variants. Records of
    another base, suite or generation setting, or a variant redefined under the same name, are refused."""
    if not path.is_file():
        return run
    stored = json.loads(path.read_text())
    for field in ("base", "suite", "generation"):
        if stored.get(field) != run.get(field):
            raise InputError(f"{path.parent} holds records of another run ({field} differs: "
                             f"{stored.get(field)} vs {run.get(field)}); use another output directory or remove it")
    variants = dict(stored.get("variants", {}))
    for name, spec in run.get("variants", {}).items():
        if name in variants and variants[name] != spec:
            raise InputError(f"{path.parent} holds records of a different variant named {name!r}; "
                             "use another output directory or remove it")
        variants[name] = spec
    return {**run, "variants": variants}
