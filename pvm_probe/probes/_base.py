"""What every probe shares: hook bookkeeping that always cleans up, and the request tracker.

A probe is a context manager. `__enter__` installs its hooks (removing any already installed if
installation fails), `__exit__` removes every one of them whether or not the body raised, then
turns what it recorded into a result dataclass. Probes call sub-modules through `.forward(...)`,
which bypasses hooks, so several probes (and PVM, and nnsight) compose without seeing each
other's extra computations.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..backbones import forward_start, get_module, hook_sites, stop_token_ids

# Key segments of the attention-mass split; -1 marks padding (never attended).
SEGMENTS = ("image", "prompt", "generated", "first")
IMAGE, PROMPT, GENERATED, FIRST, PAD = 0, 1, 2, 3, -1


class HookProbe:
    """Base class: subclasses implement `_install()` (calling `self._hook(...)`) and `_finish()`."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.sites = hook_sites(model)
        self._handles: list = []
        self.results: list = []  # one result per request (generate call) seen inside the context

    def _hook(self, handle) -> None:
        self._handles.append(handle)

    def _install(self) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        """Close the request being recorded (if any) and append its result to self.results."""
        raise NotImplementedError

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def result(self):
        if not self.results:
            raise RuntimeError(f"{type(self).__name__} recorded no request (run the model inside the `with`)")
        return self.results[-1]

    def __enter__(self):
        if self._handles:
            raise RuntimeError(f"this {type(self).__name__} is already recording: use a new probe object")
        try:
            self._install()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.remove()
        if exc_type is None:
            self._finish()
            return
        try:  # keep what was recorded, but never mask the body's exception
            self._finish()
        except Exception:
            pass


class RequestTracker:
    """Pre-hook on the multimodal model: knows when a request starts, what each cached key is, and where
    each row's answer ended.

    `segment` [B, S] (int8) labels every key in the KV cache: IMAGE / PROMPT / GENERATED / FIRST
    (first attended token, the attention sink) / PAD. IMAGE marks the prompt's image placeholders only: one the
    model generates is GENERATED (as `image_key_weights` has it: not a patch). `onehot(S)` gives its first S columns as float32
    one-hot rows [B, S, 4] (zero rows at padding). `step` counts forwards within the request (0 = prefill).
    `lengths()` [B]: rows (forwards) that belong to each answer: up to and including the forward that
    produced its first stop token (`stop_token_ids` of the model's generation config); the steps `generate`
    keeps running for a finished row while others go on are padding, not answer.
    """

    def __init__(self, probe: HookProbe, on_new_request=None):
        self.model, self.on_new_request = probe.model, on_new_request
        self.segment: torch.Tensor | None = None  # [B, S]
        self.prompt_length = 0
        self.step = -1
        self._ended: torch.Tensor | None = None  # [B] rows counted so far (-1: still going)
        self._stop = torch.tensor(stop_token_ids(probe.model) or [-1])
        module = get_module(probe.model, probe.sites.multimodal)
        probe._hook(module.register_forward_pre_hook(self._pre_forward, with_kwargs=True))

    def _pre_forward(self, module, args, kwargs) -> None:
        start = forward_start(self.model, module, args, kwargs)
        if start.past == 0 or self.segment is None:
            self._start(start.visual, start.real)
        else:
            self._extend(start)

    def _start(self, visual: torch.Tensor, real: torch.Tensor) -> None:
        seg = torch.full(visual.shape, PROMPT, dtype=torch.int8, device=visual.device)  # [B, P]
        first = real.int().argmax(dim=1)  # [B] first attended position (left padding)
        seg[torch.arange(len(seg)), first] = FIRST
        seg[visual] = IMAGE  # an image token stays an image token even in first place
        seg[~real] = PAD
        if self.on_new_request is not None and self.segment is not None:
            self.on_new_request()
        self.segment, self.prompt_length, self.step = seg, seg.shape[1], 0
        self._ended = torch.full((len(seg),), -1)

    def _extend(self, start) -> None:
        # a generated image placeholder is text the model wrote, not a patch: image keys are the prompt's only
        seg = torch.full(start.visual.shape, GENERATED, dtype=torch.int8, device=start.visual.device)  # [B, n]
        seg[~start.real] = PAD
        self.segment = torch.cat([self.segment, seg], dim=1)
        self.step += 1
        if start.input_ids is not None:  # the token fed back is the one the previous forward produced
            stopped = torch.isin(start.input_ids[:, -1].cpu(), self._stop) & (self._ended < 0)  # [B]
            self._ended[stopped] = self.step

    def lengths(self) -> list[int]:
        """[B] forwards (rows of a result) that belong to each row's answer."""
        steps = self.step + 1
        return [steps if e < 0 else int(e) for e in self._ended.tolist()]

    def onehot(self, length: int) -> torch.Tensor:
        """[B, length, 4] float32 one-hot segment rows of the first `length` keys, zero rows at PAD."""
        seg = self.segment[:, :length, None]  # [B, S, 1]
        return (seg == torch.arange(len(SEGMENTS), device=seg.device, dtype=seg.dtype)).float()


def nanmean(x: np.ndarray, axis) -> np.ndarray:
    """Mean over `axis` ignoring NaN; NaN (no warning) where every entry is NaN."""
    count = np.sum(~np.isnan(x), axis=axis)
    return np.where(count > 0, np.nansum(x, axis=axis) / np.maximum(count, 1), np.nan)


def valid_rows(lengths, steps: int) -> np.ndarray:
    """[B, T] True where row t of a result belongs to that request's answer."""
    return np.arange(steps)[None, :] < np.asarray(lengths)[:, None]


def last_hidden(output) -> torch.Tensor:
    """A decoder layer / module output (tensor or tuple) -> the hidden-state tensor."""
    return output[0] if isinstance(output, (tuple, list)) else output
