"""What a job runs on: the model and the suite, as dataclasses whose fields are also the command line.

A field with `metadata={"help": ...}` is a flag (`--field-name`, or `metadata["flag"]`), as TRL's parser
derives its flags from its config dataclasses: `add_fields(parser, SuiteSpec)` declares them and
`from_fields(SuiteSpec, args)` builds the spec back by keyword, so reordering fields can never swap two
flags. Every flag defaults to None, so a field not given keeps its dataclass default. Nothing here imports
torch: `--help` stays instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from . import cli_types as t
from .benchmarks.pope import SPLITS as POPE_SPLITS
from .benchmarks.protocol import protocol_names
from .registry import SUITES


def flag(help: str, **argparse_options):
    """A dataclass field's metadata that makes it a command-line flag."""
    return {"help": help, **argparse_options}


def add_fields(parser, cls, title: str | None = None, exclude=()) -> None:
    """Declare a flag for every field of `cls` that has help text (in a group named `title`)."""
    group = parser.add_argument_group(title) if title else parser
    for f in fields(cls):
        if "help" not in f.metadata or f.name in exclude:
            continue
        options = dict(f.metadata)
        name = options.pop("flag", "--" + f.name.replace("_", "-"))
        if callable(options.get("choices")):
            options["choices"] = options["choices"]()
        group.add_argument(name, dest=f.name, default=None, **options)


def from_fields(cls, args, **given):
    """An instance of `cls` from the parsed flags (by keyword), plus `given`; flags left out keep defaults."""
    values = {f.name: getattr(args, f.name) for f in fields(cls)
              if "help" in f.metadata and getattr(args, f.name, None) is not None}
    return cls(**values, **given)


@dataclass
class ModelSpec:
    """The base: a local checkpoint directory (None: the embedded base), device, dtype, attention."""

    base: str | None = field(default=None, metadata=flag(
        "local checkpoint directory (default: the embedded base)", type=t.existing_dir))
    device: str | None = field(default=None, metadata=flag("cuda, cuda:1, cpu (default: cuda when available)"))
    dtype: str = field(default="auto", metadata=flag(
        "default auto: bfloat16 on a GPU, float32 on the CPU", choices=["auto", "float32", "bfloat16", "float16"]))
    attn_implementation: str = field(default="sdpa", metadata=flag(
        "attention implementation", flag="--attn", choices=["sdpa", "eager"]))


@dataclass
class SuiteSpec:
    """The suite and its settings; each suite class says which settings it takes (`Suite.options`)."""

    name: str | None = field(default=None, metadata=flag(
        "the suite (registry.SUITES); default: world for the embedded base, images with --data, scenes otherwise",
        flag="--suite", choices=SUITES.names))
    scenes: int | None = field(default=None, metadata=flag(
        "world / scenes: held-out scenes (default 64)", type=t.positive_int))
    seed: int | None = field(default=None, metadata=flag(
        "world / scenes: held-out scene set (default 0); chair --sample / pope: the draw (default 0)",
        type=t.held_out_seed))
    length: int | None = field(default=None, metadata=flag(
        "world: filler units per step (default 3)", type=t.non_negative_int))
    filler: str | None = field(default=None, metadata=flag(
        "world: said (decoys, default) or count", choices=["count", "said"]))
    image_size: int | None = field(default=None, metadata=flag(
        "scenes: image side in px (default 448)", type=t.positive_int))
    max_new_tokens: int | None = field(default=None, metadata=flag(
        "scenes / images / chair --sample / pope / amber: answer budget", type=t.positive_int))
    data: str | None = field(default=None, metadata=flag(
        "images: JSONL of {image, prompt, objects?}", type=t.existing_file))
    coco: str | None = field(default=None, metadata=flag(
        "chair / pope: COCO directory (annotations/instances_*.json, captions_*.json, <split>/ images)",
        type=t.existing_dir))
    protocol: str | None = field(default=None, metadata=flag(
        "chair: a pinned protocol (image ids, prompt, max_new_tokens; default opera-500)",
        choices=protocol_names))
    sample: int | None = field(default=None, metadata=flag(
        "chair: a seeded sample of N of the directory's images instead of a protocol", type=t.positive_int))
    prompt: str | None = field(default=None, metadata=flag(
        "chair --sample: the prompt (default OPERA's \"Please describe this image in detail.\")"))
    questions: list | None = field(default=None, metadata=flag(
        "pope: official POPE question files (JSON lines) instead of building questions", nargs="+",
        type=t.existing_file))
    splits: list | None = field(default=None, metadata=flag(
        "pope: which negative sampling (default all three)", nargs="+",
        choices=POPE_SPLITS))
    image_count: int | None = field(default=None, metadata=flag(
        "pope: images to build questions on (default 500)", type=t.positive_int))
    per_image: int | None = field(default=None, metadata=flag(
        "pope: objects asked about per image, each with one absent object (default 3)", type=t.positive_int))
    amber: str | None = field(default=None, metadata=flag(
        "amber: AMBER's data directory (annotations.json, query/query_generative.json, relation.json, "
        "safe_words.txt)", type=t.existing_dir))
    image_dir: str | None = field(default=None, metadata=flag(
        "amber: AMBER's images (default: the data directory's sibling image/)", type=t.existing_dir))

    def resolved_name(self, base) -> str:
        return self.name or ("images" if self.data else "scenes" if base else "world")

    def given(self) -> dict:
        """The settings that were set (name aside)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "name" and getattr(self, f.name) is not None}
