"""Pinned CHAIR protocols: which COCO images, which prompt, how many new tokens (package data, `protocols/`).

Each `protocols/<name>.json` holds `image_ids` (in the order the published logs list them), `prompt`,
`max_new_tokens`, the COCO `split`, and `source`: the repository, commit and file each part was read from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from ..errors import InputError


@dataclass(frozen=True)
class Protocol:
    name: str
    image_ids: tuple[int, ...]
    prompt: str
    max_new_tokens: int
    split: str
    description: str
    source: dict


def protocol_names() -> list[str]:
    return sorted(p.name.removesuffix(".json") for p in _folder().iterdir() if p.name.endswith(".json"))


def load_protocol(name: str) -> Protocol:
    if name not in protocol_names():
        raise InputError(f"unknown CHAIR protocol {name!r}; known: {', '.join(protocol_names())}")
    doc = json.loads(_folder().joinpath(f"{name}.json").read_text(encoding="utf-8"))
    return Protocol(doc["name"], tuple(doc["image_ids"]), doc["prompt"], doc["max_new_tokens"], doc["split"],
                    doc["description"], doc["source"])


def _folder():
    return resources.files("pvm_probe.benchmarks").joinpath("protocols")
