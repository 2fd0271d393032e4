"""What the remedies share: hooks that always come off, and a check for a request's image.

A remedy is a context manager on a loaded model. `__enter__` installs its hooks (removing
what was installed if installation fails), `__exit__` removes every one of them and undoes any
setting it changed, whether or not the body raised. Bad settings raise a one-line `InputError`
in `__init__`, before anything touches the model.

Options written as text (`--remedy vcd:alpha=2,noise_step=999`) are converted by `Remedy.parse_options` to
the type `__init__` annotates (or its default's type): numbers (finite), integers, true / false, a list of
layer indices (`[2,3]`, or one index), one of a Literal's words (DoLa's `low` / `high`), `none` where None
is allowed.
"""

from __future__ import annotations

import inspect
import itertools
import math
import re
import types
from typing import Literal, Union, get_args, get_origin, get_type_hints

import torch
from torch import nn
from transformers import LogitsProcessor, LogitsProcessorList

from ..backbones import hook_sites, visual_token_ids
from ..errors import InputError


class Remedy:
    """Base class: subclasses implement `_install()` (calling `self._hook(...)`); `_restore()` undoes
    anything else `_install` changed. The class attributes are what the command line, the report, the
    figure script and the benchmark say about it; `__init__`'s keyword defaults are the official defaults."""

    name = ""  # the registry name (registry.REMEDIES) and a variant's kind, e.g. "vcd"
    title = "remedy"  # as people write it, e.g. "VCD"
    changes = ""  # what it acts on: logits | attention | residual | ffn | decoding
    summary = ""  # one line: what it does
    cost = ""  # one line: the extra work per decode step, and the published per-token figure
    sweep: dict = {}  # option -> values tried on training-split requests (analyses/fig_remedies.py)

    @classmethod
    def defaults(cls, num_layers: int) -> dict:
        """The options at their official defaults, on a model of `num_layers` decoder layers."""
        return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}

    @classmethod
    def grid(cls, num_layers: int) -> list[dict]:
        """The sweep: the defaults, then every combination of `sweep`'s values over them (no repeats)."""
        base = cls.defaults(num_layers)
        options = [base] + [{**base, **dict(zip(cls.sweep, values, strict=True))}
                            for values in itertools.product(*cls.sweep.values())]
        return [o for i, o in enumerate(options) if o not in options[:i]]

    @classmethod
    def option_types(cls) -> dict:
        """Each option (a keyword of `__init__` other than the model) and its type: the annotation, else the type
        of its default, else text."""
        try:
            hints = get_type_hints(cls.__init__)
        except Exception:  # a plug-in's annotation that does not resolve: fall back to the defaults
            hints = {}
        params = list(inspect.signature(cls.__init__).parameters.values())[2:]  # after self and the model
        return {p.name: hints.get(p.name, str if p.default in (None, inspect.Parameter.empty) else type(p.default))
                for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

    @classmethod
    def parse_options(cls, text: str) -> dict:
        """`alpha=2,layers=[2,3]` -> {"alpha": 2.0, "layers": [2, 3]}: each option converted to its type
        (`option_types`); a one-line InputError names the option and what it expects."""
        kinds = cls.option_types()
        options = {}
        for item in filter(None, (part.strip() for part in re.split(r",(?![^\[]*\])", text))):
            key, equals, value = (part.strip() for part in item.partition("="))
            if not equals or key not in kinds:
                raise InputError(f"expected {cls.name}:option=value,... with options from {', '.join(kinds)}")
            try:
                options[key] = option_value(value, kinds[key])
            except ValueError:
                raise InputError(f"{key} expects {describe(kinds[key])}, got {value!r}") from None
        return options

    def __init__(self, model: nn.Module):
        self.model = model
        self.sites = hook_sites(model)
        self._handles: list = []
        self.active = False

    def _hook(self, handle) -> None:
        self._handles.append(handle)

    def _install(self) -> None:
        raise NotImplementedError

    def _restore(self) -> None:
        """Undo settings changed by `_install` (hooks are removed separately)."""

    def remove(self) -> None:
        try:
            for handle in self._handles:
                handle.remove()
            self._handles.clear()
        finally:
            self._restore()
            self.active = False

    def __enter__(self):
        if self.active:
            raise RuntimeError(f"this {self.title} is already active")
        try:
            self.active = True
            self._install()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def decode(self, inputs: dict, max_new_tokens: int) -> torch.LongTensor | None:
        """The remedy's own decoding, [B, P + N], or None: the runner calls `model.generate` inside the
        context. A remedy that decodes itself has its answer replayed under the probes (`replay`)."""
        return None


class ForcedTokens(LogitsProcessor):
    """Makes `generate` emit `sequences[:, P + t]` at step t: every other token gets -inf."""

    def __init__(self, sequences: torch.Tensor, prompt_len: int):
        self.sequences, self.prompt_len = sequences, prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.prompt_len
        forced = self.sequences[:, self.prompt_len + step].to(scores.device)  # [B]
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, forced[:, None], 0.0)


def replay(model: nn.Module, inputs: dict, sequences: torch.Tensor, **generate_kwargs):
    """Teacher-forced greedy `generate` of the answers in `sequences` ([B, P + N], as a remedy's `decode`
    returns them): hooks and probes riding on `generate` see exactly those tokens, row by row.
    Returns what `generate` returns (its sequences equal `sequences` up to where every row stopped)."""
    prompt_len = inputs["input_ids"].shape[1]
    new = sequences.shape[1] - prompt_len
    if new < 1:
        raise InputError(f"replay needs answer tokens: sequences have {sequences.shape[1]} columns, the prompt "
                         f"{prompt_len}")
    for fixed in ("max_new_tokens", "min_new_tokens", "do_sample", "num_beams"):  # set here
        generate_kwargs.pop(fixed, None)
    processors = LogitsProcessorList([*generate_kwargs.pop("logits_processor", []),
                                      ForcedTokens(sequences, prompt_len)])
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=new, do_sample=False, num_beams=1,
                              logits_processor=processors, **generate_kwargs)


def option_value(text: str, kind):
    """`text` as a value of `kind` (see the module's docstring); ValueError if it is none."""
    args = get_args(kind)
    if get_origin(kind) in (Union, types.UnionType):
        if type(None) in args and text.lower() in ("none", "null"):
            return None
        for k in (a for a in args if a is not type(None)):
            try:
                return option_value(text, k)
            except ValueError:
                pass
        raise ValueError(text)
    if get_origin(kind) is Literal:
        if text not in args:
            raise ValueError(text)
        return text
    if get_origin(kind) is list:  # layer indices
        return [int(i) for i in text.removeprefix("[").removesuffix("]").split(",")]
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise ValueError(text)
        return text.lower() == "true"
    if kind is int:
        return int(text)
    if kind is float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(text)
        return value
    return text


def describe(kind) -> str:
    """What an option of `kind` expects, for error messages."""
    args = get_args(kind)
    if get_origin(kind) in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if get_origin(kind) is Literal:
        return " or ".join(map(str, args))
    if get_origin(kind) is list:
        return "a list of layer indices such as [2,3]"
    return {bool: "true or false", int: "an integer", float: "a finite number", type(None): "none"}.get(kind, "text")


def check_strength(name: str, value: float) -> float:
    if not value >= 0:  # also rejects NaN
        raise InputError(f"{name} must be >= 0, got {value}")
    return float(value)


def cache_length(kwargs: dict) -> int:
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    return 0 if cache is None else cache.get_seq_length()


def request_has_image(model: nn.Module, kwargs: dict) -> bool:
    """Whether a request's first forward carries an image: raw pixels, pre-encoded features, or
    visual placeholder tokens."""
    if kwargs.get("pixel_values") is not None or kwargs.get("mm_encoder_outputs"):
        return True
    ids = kwargs.get("input_ids")
    if ids is None:
        return False
    return bool(torch.isin(ids, torch.tensor(visual_token_ids(model), device=ids.device)).any())


def require_image(name: str, model: nn.Module, kwargs: dict) -> None:
    if not request_has_image(model, kwargs):
        raise InputError(f"{name} needs an image: the request's first forward has no pixel_values "
                         "or image tokens")
