"""argparse types: each value is checked where it is parsed, with a one-line message naming what was expected.

Nothing here imports torch or transformers, so `--help` and argument errors come back at once.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path

from .io import unwritable
from .names import FILLERS
from .registry import REMEDIES

_VISUAL_SOURCE = re.compile(r"embeddings|hidden:[0-9]+")


def _int_at_least(low: int, expected: str):
    def parse(text: str) -> int:
        value = _int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


positive_int = _int_at_least(1, "a positive integer")
non_negative_int = _int_at_least(0, "an integer >= 0")
# Held-out scene sets are numbered from 0 (seeds below 0 would reach the training scenes).
held_out_seed = _int_at_least(0, "a held-out set number >= 0 (scene seeds >= 1,000,000)")


def probability(text: str) -> float:
    value = finite_float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1), got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def layer_list(text: str) -> tuple[int, ...]:
    """`2,3` -> (2, 3): decoder-layer indices, >= 0, no duplicates."""
    try:
        layers = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer indices like 8,16,24, got {text!r}") from None
    if not layers or min(layers) < 0 or len(set(layers)) != len(layers):
        raise argparse.ArgumentTypeError(f"expected distinct layer indices >= 0, got {text!r}")
    return layers


def existing_file(text: str) -> str:
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return text


def readable_file(text: str) -> str:
    """A file read once, whole: '-' (standard input), a regular file, or any other file that can be read (a
    pipe from `<(...)`, a FIFO, /dev/fd/N)."""
    if text == "-":
        return text
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; expected a file")
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text}: cannot read it (permission denied)")
    return text


def existing_dir(text: str) -> str:
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such directory")
    return text


def output_file(text: str) -> str:
    """A file we may write: '-' (stdout), or a path that is not a directory, in a writable folder."""
    if text == "-":
        return text
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; expected a file path")
    _check_writable_parent(path, text)
    return text


def output_dir(text: str) -> str:
    """A folder we may create or replace: not an existing file, inside a writable folder."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is an existing file; expected a folder")
    _check_writable_parent(path, text)
    return text


def _check_writable_parent(path: Path, text: str) -> None:
    problem = unwritable(path)
    if problem:
        raise argparse.ArgumentTypeError(f"{text}: {problem}")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def remedy(text: str) -> str:
    """A registered remedy's name, optionally with options (`vcd:alpha=2`). The options are converted to their
    types by the job, first of all (`variants.remedy_variant`): that needs the remedy's class, and with it torch."""
    if text.partition(":")[0].strip() not in REMEDIES:
        raise argparse.ArgumentTypeError(f"unknown remedy {text.partition(':')[0]!r}; known: {', '.join(REMEDIES.names())}")
    return text


def visual_source(text: str) -> str:
    if not _VISUAL_SOURCE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected embeddings or hidden:<layer>, got {text!r}")
    return text


def fillers(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in FILLERS]
    if not kinds or bad:
        raise argparse.ArgumentTypeError(f"expected filler kinds from {', '.join(FILLERS)} (e.g. said,count), "
                                         f"got {text!r}")
    return kinds


def fraction(text: str) -> float:
    value = finite_float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text!r}")
    return value
