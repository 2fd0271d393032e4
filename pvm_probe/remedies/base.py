"""What the remedies share: hooks that always come off, and a check for a request's image.

A remedy is a context manager on a loaded model. `__enter__` installs its hooks (removing
what was installed if installation fails), `__exit__` removes every one of them and undoes any
setting it changed, whether or not the body raised. Bad settings raise a one-line `InputError`
in `__init__`, before anything touches the model.
"""

from __future__ import annotations

import torch
from torch import nn

from ..backbones import hook_sites, visual_token_ids
from ..errors import InputError


class Remedy:
    """Base class: subclasses implement `_install()` (calling `self._hook(...)`); `_restore()` undoes
    anything else `_install` changed."""

    name = "remedy"

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
            raise RuntimeError(f"this {self.name} is already active")
        try:
            self.active = True
            self._install()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


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
