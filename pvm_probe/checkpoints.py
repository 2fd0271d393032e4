"""Adapter checkpoints: `pvm_config.json` + `pvm_model.safetensors`, written atomically, checked on load.

The config records a fingerprint of the base model (architecture, hidden size, layer count, vocab
size and an embedding checksum); `load_pvm` refuses an adapter whose base does not fit, with a
one-line error, before it touches the model. Weights are read with safetensors only: no pickle.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .backbones import attention_window, decoder_layers, text_config
from .config import PVMConfig
from .inject import PVMHandle, attach_pvm
from .io import atomic_write, atomic_write_json
from .memory import build_block

CONFIG_FILE = "pvm_config.json"
WEIGHTS_FILE = "pvm_model.safetensors"
FORMAT_VERSION = 1
ASSETS = Path(__file__).parent / "assets"
SHIPPED_ADAPTERS = ASSETS / "adapters"


class AdapterMismatchError(ValueError):
    """The adapter was trained on a different base model."""


def base_fingerprint(model: nn.Module) -> dict:
    cfg = text_config(model)
    weight = model.get_input_embeddings().weight
    checksum = None if weight.is_meta else float(weight[:64].detach().float().abs().sum())
    return {
        "architecture": type(model).__name__,
        "hidden_size": cfg.hidden_size,
        "num_layers": len(decoder_layers(model)),
        "vocab_size": cfg.vocab_size,
        "attention_window": attention_window(model),
        "embedding_checksum": checksum,
    }


def check_fingerprint(saved: dict, model: nn.Module, allow_other_weights: bool = False) -> None:
    current = base_fingerprint(model)
    for key in ("architecture", "hidden_size", "num_layers", "vocab_size", "attention_window"):
        if saved.get(key) != current[key]:
            raise AdapterMismatchError(
                f"adapter was trained on a base with {key}={saved.get(key)}, this model has {current[key]}"
            )
    a, b = saved.get("embedding_checksum"), current["embedding_checksum"]
    if not allow_other_weights and a is not None and b is not None and not math.isclose(a, b, rel_tol=1e-2):
        raise AdapterMismatchError(
            f"adapter was trained on other base weights (embedding checksum {a:.4g} vs {b:.4g}); "
            "pass allow_other_weights=True to load it anyway"
        )


def save_adapter(handle: PVMHandle, directory, provenance: dict | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in handle.state_dict().items()}
    meta = {
        "format_version": FORMAT_VERSION,
        "pvm": handle.config.to_dict(),
        "base": base_fingerprint(handle.model),
        "num_parameters": handle.num_parameters(),
        "provenance": {**handle.provenance, **(provenance or {})},
    }
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write_json(directory / CONFIG_FILE, meta)
    return directory


def resolve_adapter(name_or_path) -> Path:
    """A shipped adapter's name (e.g. 'pvm-stage1') or a local directory."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    shipped = SHIPPED_ADAPTERS / str(name_or_path)
    if shipped.is_dir():
        return shipped
    known = sorted(p.name for p in SHIPPED_ADAPTERS.iterdir()) if SHIPPED_ADAPTERS.is_dir() else []
    raise FileNotFoundError(f"no adapter directory or shipped adapter named {name_or_path!r} (shipped: {known})")


def read_adapter_meta(directory) -> dict:
    path = resolve_adapter(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: not a PVM adapter directory")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"corrupted adapter config {path}: {err}") from None


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the adapter has no weights")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"corrupted adapter weights {path}: {err}") from None


def _expected_shapes(config: PVMConfig, hidden_size: int) -> dict[str, torch.Size]:
    with torch.device("meta"):
        block = build_block(config, hidden_size)
    return {
        f"layers.{layer}.{name}": p.shape for layer in config.layers for name, p in block.named_parameters()
    }


def load_pvm(model: nn.Module, directory, allow_other_weights: bool = False) -> PVMHandle:
    """Attach the adapter saved in `directory` (or a shipped adapter's name) to `model`."""
    directory = resolve_adapter(directory)
    meta = read_adapter_meta(directory)
    config = PVMConfig.from_dict(meta["pvm"])
    check_fingerprint(meta["base"], model, allow_other_weights)
    weights = _read_weights(directory / WEIGHTS_FILE)
    expected = _expected_shapes(config, text_config(model).hidden_size)
    if set(weights) != set(expected):
        missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
        raise ValueError(f"adapter weights do not match its config: missing {missing[:3]}, unexpected {extra[:3]}")
    for name, shape in expected.items():
        if weights[name].shape != shape:
            raise ValueError(f"adapter tensor {name} has shape {tuple(weights[name].shape)}, expected {tuple(shape)}")
    handle = attach_pvm(model, config)
    with torch.no_grad():
        for name, param in handle.named_parameters():
            param.copy_(weights[name])
    handle.provenance = meta.get("provenance", {})
    return handle


def count_pvm_params(config: PVMConfig, model_config) -> int:
    """PVM parameters for a backbone config, counted on the meta device (no memory, any size)."""
    hidden = model_config.get_text_config().hidden_size
    n_layers = model_config.get_text_config().num_hidden_layers
    bad = [i for i in config.layers if not 0 <= i < n_layers]
    if bad:
        raise ValueError(f"layer index {bad[0]} out of range: the model has {n_layers} decoder layers")
    with torch.device("meta"):
        block = build_block(config, hidden)
    return len(config.layers) * sum(p.numel() for p in block.parameters())
