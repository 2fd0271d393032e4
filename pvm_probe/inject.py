"""Attach PVM blocks to a Hugging Face VLM through hooks (a new config, or a saved adapter), and take
them off again.

Per forward pass:
  1. a pre-hook on the multimodal model reads `input_ids` and the cache; when a new request starts
     (empty cache, or new pixel values) it marks the visual positions and forgets the old memory;
  2. a pre-hook on the language model reads the merged `inputs_embeds` and keeps the visual tokens
     (or a hook on layer k keeps its hidden states, for the processed-states control);
  3. in each PVM layer a pre-hook on the pre-FFN norm keeps x, and a hook on the FFN adds the
     block's injection to the FFN output: y = x + FFN(norm2(x)) + alpha * h_pvm * M_txt.
The blocks live as a `pvm` submodule of their decoder layer, so `.to()`, `.parameters()`,
optimizers and accelerate see them; `remove()` deletes them and every hook.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from .backbones import (
    HookSites,
    check_layers,
    decoder_layers,
    forward_start,
    get_module,
    hook_sites,
    text_config,
)
from .checkpoints import (
    check_fingerprint,
    read_adapter_meta,
    read_adapter_weights,
    resolve_adapter,
    save_adapter,
)
from .config import PVMConfig, is_int
from .errors import InputError, show
from .memory import BLOCK_ATTR, BLOCKS, VisualKV, build_block


@dataclass
class VisualMemory:
    """What the blocks read during one request: its visual set and the current text mask."""

    visual_mask: torch.Tensor | None = None  # [B, T] visual positions of the current forward
    tokens: torch.Tensor | None = None  # [B, N, d] visual set, padded per row
    key_mask: torch.Tensor | None = None  # [B, N] False at padded slots
    kv: dict[int, VisualKV] = field(default_factory=dict)  # per layer, computed once per request
    capturing: bool = False  # this forward starts a request: collect the visual set
    override: Callable | None = None  # (tokens, key_mask) -> (tokens, key_mask): what PVM reads instead

    def reset(self, visual_mask: torch.Tensor) -> None:
        self.visual_mask, self.capturing = visual_mask, True
        self.tokens = self.key_mask = None
        self.kv = {}

    def capture(self, hidden: torch.Tensor) -> None:
        """hidden [B, T, d] at the request's first forward -> padded visual set [B, N, d]."""
        self.capturing = False
        if not self.visual_mask.any():
            return  # text-only request: PVM stays a no-op
        rows = [h[m] for h, m in zip(hidden, self.visual_mask, strict=True)]  # B x [N_b, d]
        self.tokens = pad_sequence(rows, batch_first=True)  # [B, N, d]
        if not torch.isfinite(self.tokens).all():  # e.g. NaN pixel_values: every answer would be noise
            bad = [b for b, row in enumerate(rows) if not torch.isfinite(row).all()]
            raise InputError(f"non-finite visual tokens (NaN or inf) in request row(s) {bad}: check their "
                             "pixel_values; PVM reads the visual tokens and refuses them")
        lengths = torch.tensor([len(r) for r in rows], device=hidden.device)  # [B]
        self.key_mask = torch.arange(self.tokens.shape[1], device=hidden.device) < lengths[:, None]  # [B, N]
        if self.override is not None:
            tokens, key_mask = self.override(self.tokens, self.key_mask)
            if tokens.shape[0] != len(rows):
                raise RuntimeError(f"replacement visual memory has {tokens.shape[0]} requests, this batch {len(rows)}")
            self.tokens, self.key_mask = tokens, key_mask

    @property
    def text_mask(self) -> torch.Tensor:
        return ~self.visual_mask  # [B, T]


class _VisualCaptured(Exception):
    """Raised by the capture hook to end a forward that only encodes the image."""


def is_pvm_block(module: nn.Module) -> bool:
    return isinstance(module, tuple(BLOCKS.values()))


class PVMHandle:
    """The attached memory: its blocks, its hooks, and how to save or remove them."""

    def __init__(self, model: nn.Module, config: PVMConfig):
        self.model, self.config = model, config
        self.sites: HookSites = hook_sites(model)
        self.memory = VisualMemory()
        self.blocks: dict[int, nn.Module] = {}
        self._hooks: list = []
        self._stop_after_capture = False
        self.provenance: dict = {}

    # ---- parameters ----------------------------------------------------------------------------
    def parameters(self) -> Iterator[nn.Parameter]:
        for block in self.blocks.values():
            yield from block.parameters()

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        for layer, block in sorted(self.blocks.items()):
            for name, param in block.named_parameters():
                yield f"layers.{layer}.{name}", param

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: param.detach() for name, param in self.named_parameters()}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def alphas(self) -> dict[int, float]:
        return {layer: block.alpha.detach().item() for layer, block in sorted(self.blocks.items())}

    @contextmanager
    def gates_off(self, layers: Iterable[int] | int | None = None):
        """Causal ablation: alpha = 0 in the given PVM layers (all by default), restored afterwards."""
        chosen = self._pvm_layers(layers)
        saved = {i: self.blocks[i].alpha.detach().clone() for i in chosen}
        try:
            with torch.no_grad():
                for i in chosen:
                    self.blocks[i].alpha.zero_()
            yield self
        finally:
            with torch.no_grad():
                for i, value in saved.items():
                    self.blocks[i].alpha.copy_(value)

    def _pvm_layers(self, layers: Iterable[int] | int | None) -> list[int]:
        """`layers` as a list, each checked to carry a block (None: every PVM layer)."""
        if layers is None:
            return list(self.blocks)
        chosen = [layers] if is_int(layers) else list(layers) if isinstance(layers, Iterable) else None
        if chosen is None or not all(map(is_int, chosen)):
            raise InputError(f"layers must be PVM layer indices, got {show(layers)}")
        bad = [i for i in chosen if i not in self.blocks]
        if bad:
            raise InputError(f"layer {bad[0]} has no PVM block; PVM layers are {sorted(self.blocks)}")
        return chosen

    # ---- the swapped-image control ------------------------------------------------------------
    def encode_visual(self, **inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """The visual set PVM would read for `inputs` (padded [B, N, d] and key mask [B, N]).

        Runs the model only as far as the capture, so the language model does no work."""
        self._stop_after_capture = True
        try:
            with torch.no_grad():
                self.model(**inputs)
        except _VisualCaptured:
            pass
        finally:
            self._stop_after_capture = False
        if self.memory.tokens is None:
            raise ValueError("these inputs hold no image tokens: nothing to encode")
        return self.memory.tokens, self.memory.key_mask

    @contextmanager
    def visual_override(self, replace: Callable):
        """PVM reads `replace(tokens [B, N, d], key_mask [B, N])` while the backbone sees the real image."""
        self.memory.override = replace
        try:
            yield self
        finally:
            self.memory.override = None

    def swapped_visual(self, tokens: torch.Tensor, key_mask: torch.Tensor):
        """PVM reads these visual tokens (e.g. from `encode_visual` on another image)."""
        return self.visual_override(lambda *_: (tokens, key_mask))

    # ---- life cycle ----------------------------------------------------------------------------
    def save(self, directory, provenance: dict | None = None) -> Path:
        """Write the adapter (`checkpoints` format) with this handle's provenance updated by `provenance`."""
        return save_adapter(directory, self.config, self.state_dict(), self.model,
                            {**self.provenance, **(provenance or {})})

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        layers = decoder_layers(self.model)
        for i in self.blocks:
            if hasattr(layers[i], BLOCK_ATTR):
                delattr(layers[i], BLOCK_ATTR)
        self.blocks.clear()
        self.memory = VisualMemory()

    def __enter__(self) -> PVMHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    # ---- hooks ---------------------------------------------------------------------------------
    def _install(self) -> None:
        sites, model = self.sites, self.model
        hook = self._hooks.append
        hook(get_module(model, sites.multimodal).register_forward_pre_hook(self._start_forward, with_kwargs=True))
        if self.config.source_layer is None:
            target = get_module(model, sites.language_model)
            hook(target.register_forward_pre_hook(self._capture_embeddings, with_kwargs=True))
        else:
            target = decoder_layers(model)[self.config.source_layer]
            hook(target.register_forward_hook(self._capture_hidden))
        layers = decoder_layers(model)
        for i in self.blocks:
            slot: dict = {}
            norm = get_module(layers[i], sites.pre_ffn_norm)
            hook(norm.register_forward_pre_hook(lambda _m, args, slot=slot: slot.__setitem__("x", args[0])))
            ffn = get_module(layers[i], sites.ffn)
            hook(ffn.register_forward_hook(lambda _m, _a, out, i=i, slot=slot: self._inject(i, slot, out)))

    def _start_forward(self, module, args, kwargs) -> None:
        start = forward_start(self.model, module, args, kwargs)
        if start.new_request:
            self._check_gates()
            self.memory.reset(start.visual)
        else:
            self.memory.visual_mask = start.visual

    def _check_gates(self) -> None:
        """A NaN or infinite alpha would turn every answer into noise: refuse it before the request runs."""
        bad = [layer for layer, block in self.blocks.items() if not torch.isfinite(block.alpha).all()]
        if bad:
            raise InputError(f"PVM gate alpha is not finite in layer(s) {bad}: the adapter's weights are broken")

    def _capture_embeddings(self, _module, _args, kwargs) -> None:
        if self.memory.capturing:
            self._capture(kwargs["inputs_embeds"])

    def _capture_hidden(self, _module, _args, output) -> None:
        if self.memory.capturing:
            self._capture(output[0] if isinstance(output, tuple) else output)

    def _capture(self, hidden: torch.Tensor) -> None:
        self.memory.capture(hidden)
        if self._stop_after_capture:
            raise _VisualCaptured

    def _inject(self, layer: int, slot: dict, ffn_out: torch.Tensor):
        memory, x = self.memory, slot.pop("x")
        if memory.tokens is None:
            return None  # no image in this request: the backbone runs untouched
        if memory.tokens.shape[0] != x.shape[0]:
            raise RuntimeError(
                f"PVM visual memory holds {memory.tokens.shape[0]} requests but this forward has "
                f"{x.shape[0]}; start each request with its image (empty cache or pixel_values)"
            )
        if memory.visual_mask.shape != x.shape[:2]:
            raise RuntimeError(
                f"PVM text mask {tuple(memory.visual_mask.shape)} does not fit hidden states {tuple(x.shape[:2])}; "
                "call the model (not a single decoder layer) so PVM sees each forward start"
            )
        block = self.blocks[layer]
        if torch.is_grad_enabled():  # training: rebuild inside the layer, so checkpointed recompute matches
            kv = block.visual_kv(memory.tokens.to(x.dtype), memory.key_mask)
        else:  # inference: once per request, reused by every decode step
            if layer not in memory.kv:
                memory.kv[layer] = block.visual_kv(memory.tokens.to(x.dtype), memory.key_mask)
            kv = memory.kv[layer]
        return ffn_out + block(x, kv, memory.text_mask)  # [B, T, d]


def _check_model(model: nn.Module, layers=()) -> None:
    """The model is of a supported architecture and has these decoder layers (else `InputError`)."""
    try:
        hook_sites(model)
        check_layers(model, layers)
    except ValueError as err:
        raise InputError(str(err)) from None


def attach_pvm(model: nn.Module, config: PVMConfig) -> PVMHandle:
    """Add PVM blocks (alpha = 0: the model's outputs are unchanged) and return their handle."""
    if not isinstance(config, PVMConfig):
        raise InputError(f"config must be a PVMConfig, got {show(config)}")
    _check_model(model, config.layers)
    sites = hook_sites(model)
    if any(is_pvm_block(m) for m in model.modules()):
        raise RuntimeError("PVM is already attached to this model; call handle.remove() first")
    hidden = text_config(model).hidden_size
    handle = PVMHandle(model, config)
    layers = decoder_layers(model)
    try:
        for i in config.layers:
            reference = next(get_module(layers[i], sites.ffn).parameters())
            block = build_block(config, hidden).to(device=reference.device, dtype=reference.dtype)
            setattr(layers[i], BLOCK_ATTR, block)
            handle.blocks[i] = block
        handle._install()
    except BaseException:
        handle.remove()
        raise
    return handle


def load_pvm(model: nn.Module, adapter, allow_other_weights: bool = False) -> PVMHandle:
    """Attach the adapter saved in `adapter` (a directory or a shipped adapter's name) to `model`.

    Everything is checked before the model is touched: the config file, the base fingerprint against
    `model`, the weights' header, shapes and finiteness. Errors are one line (`InputError`, or
    `FileNotFoundError` for missing files)."""
    directory = resolve_adapter(adapter)
    meta = read_adapter_meta(directory, check_weights=False)
    config = PVMConfig.from_dict(meta["pvm"], prefix="pvm")
    _check_model(model)
    check_fingerprint(meta["base"], model, allow_other_weights)
    weights = read_adapter_weights(directory, meta)
    handle = attach_pvm(model, config)
    with torch.no_grad():
        for name, param in handle.named_parameters():
            param.copy_(weights[name])
    handle.provenance = meta["provenance"]
    return handle


def freeze_backbone(model: nn.Module, handle: PVMHandle) -> None:
    """Stage I: only PVM parameters train."""
    model.requires_grad_(False)
    for param in handle.parameters():
        param.requires_grad_(True)
