"""What every probe shares: hook bookkeeping that always cleans up, and the request tracker.

A probe is a context manager. `__enter__` installs its hooks (removing any already installed if
installation fails), `__exit__` removes every one of them whether or not the body raised, then
turns what it recorded into a result dataclass. Probes call sub-modules through `.forward(...)`,
which bypasses hooks, so several probes (and PVM, and nnsight) compose without seeing each
other's extra computations.
"""

from __future__ import annotations

import torch
from torch import nn

from ..backbones import get_module, hook_sites, visual_token_ids

# Key segments of the attention-mass split; -1 marks padding (never attended).
SEGMENTS = ("image", "prompt", "generated", "first")
IMAGE, PROMPT, GENERATED, FIRST, PAD = 0, 1, 2, 3, -1


class Probe:
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
    """Pre-hook on the multimodal model: knows when a request starts and what each cached key is.

    `segment` [B, S] (int8) labels every key in the KV cache: IMAGE / PROMPT / GENERATED / FIRST
    (first attended token, the attention sink) / PAD. `onehot(S)` gives its first S columns as float32
    one-hot rows [B, S, 4] (zero rows at padding). `step` counts forwards within the request (0 = prefill).
    """

    def __init__(self, probe: Probe, on_new_request=None):
        self.model, self.on_new_request = probe.model, on_new_request
        self.segment: torch.Tensor | None = None  # [B, S]
        self.prompt_length = 0
        self.step = -1
        module = get_module(probe.model, probe.sites.multimodal)
        probe._hook(module.register_forward_pre_hook(self._pre_forward, with_kwargs=True))

    def _pre_forward(self, module, args, kwargs) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = cache.get_seq_length() if cache is not None else 0
        new = _new_tokens(module, self.model, input_ids, embeds)  # [B, n] bool: visual token
        n = new.shape[1]
        mask = kwargs.get("attention_mask")
        real = mask[:, -n:].bool() if isinstance(mask, torch.Tensor) and mask.dim() == 2 else torch.ones_like(new)
        if past == 0 or self.segment is None:
            self._start(new, real)
        else:
            self._extend(new, real)

    def _start(self, visual: torch.Tensor, real: torch.Tensor) -> None:
        seg = torch.full(visual.shape, PROMPT, dtype=torch.int8, device=visual.device)  # [B, P]
        first = real.int().argmax(dim=1)  # [B] first attended position (left padding)
        seg[torch.arange(len(seg)), first] = FIRST
        seg[visual] = IMAGE  # an image token stays an image token even in first place
        seg[~real] = PAD
        if self.on_new_request is not None and self.segment is not None:
            self.on_new_request()
        self.segment, self.prompt_length, self.step = seg, seg.shape[1], 0

    def _extend(self, visual: torch.Tensor, real: torch.Tensor) -> None:
        seg = torch.full(visual.shape, GENERATED, dtype=torch.int8, device=visual.device)  # [B, n]
        seg[visual] = IMAGE
        seg[~real] = PAD
        self.segment = torch.cat([self.segment, seg], dim=1)
        self.step += 1

    def onehot(self, length: int) -> torch.Tensor:
        """[B, length, 4] float32 one-hot segment rows of the first `length` keys, zero rows at PAD."""
        seg = self.segment[:, :length, None]  # [B, S, 1]
        return (seg == torch.arange(len(SEGMENTS), device=seg.device, dtype=seg.dtype)).float()


def _new_tokens(module, model, input_ids, embeds) -> torch.Tensor:
    """[B, n] True at the visual placeholder tokens of this forward's new tokens."""
    ids = torch.tensor(visual_token_ids(model))
    if input_ids is not None:
        return torch.isin(input_ids, ids.to(input_ids.device))
    table = module.get_input_embeddings()(ids.to(embeds.device))  # [K, d]
    return (embeds[:, :, None, :] == table).all(-1).any(-1)


def last_hidden(output) -> torch.Tensor:
    """A decoder layer / module output (tensor or tuple) -> the hidden-state tensor."""
    return output[0] if isinstance(output, (tuple, list)) else output
