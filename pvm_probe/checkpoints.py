"""The adapter file format: `pvm_config.json` + `pvm_model.safetensors` in one directory.

This module reads, writes and validates those files and fingerprints base models; it knows nothing
of hooks (attaching a saved adapter is `inject.load_pvm`). Weights are safetensors only: no pickle.

pvm_config.json (format 2):

    format_version  2 (format 1 files still load; a newer one is refused)
    pvm             PVMConfig.to_dict(): every field, checked by PVMConfig's rules
    base            the base fingerprint: architecture, hidden_size, num_layers, vocab_size,
                    attention_window, and `tensors`: for every backbone parameter (PVM's own excluded)
                    {shape, dtype, sum, abs_sum}, the sums over SAMPLE_SIZE evenly spaced elements of
                    the flattened tensor (null for meta tensors). Format 1 had `embedding_checksum`
                    (the abs-sum of the first 64 embedding rows) instead of `tensors`.
    num_parameters  total elements of the weights
    provenance      a JSON object (free-form: stage, command, training config, ...)

Loading compares architecture, sizes, window and every tensor's shape strictly, and the sample sums
within CHECKSUM_RTOL of the sample's abs-sum (bf16 rounding moves them by at most 2**-9 of it, so a
base trained in fp32 and loaded in bf16, or the reverse, still fits). Every error is one line.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import nn

from .backbones import attention_window, decoder_layers, text_config
from .config import PVMConfig, is_int, is_json_object, is_number, is_positive_int, read_json
from .errors import (
    AdapterError,
    AdapterMismatchError,
    ConfigError,
    InputError,
    LegacyFingerprintWarning,
    show,
)
from .io import atomic_dir, atomic_write_text
from .memory import BLOCK_ATTR, build_block

CONFIG_FILE = "pvm_config.json"
WEIGHTS_FILE = "pvm_model.safetensors"
FORMAT_VERSION = 2
SHIPPED_ADAPTERS = Path(__file__).parent / "assets" / "adapters"
SAMPLE_SIZE = 64  # elements sampled from every base tensor for its checksum
CHECKSUM_RTOL = 1e-2  # of the sample's abs-sum; bf16 rounding moves a sum by at most 2**-9 of it
CHECKSUM_ATOL = 1e-6  # per sampled element: fp16 flushes values below 6e-8 to zero
_FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")

__all__ = [
    "CONFIG_FILE", "FORMAT_VERSION", "SHIPPED_ADAPTERS", "WEIGHTS_FILE", "AdapterMismatchError",
    "base_fingerprint", "check_fingerprint", "describe_adapter", "expected_shapes", "read_adapter_meta", "read_adapter_weights",
    "resolve_adapter", "save_adapter", "upgrade_fingerprint",
]


# ---- the base fingerprint ---------------------------------------------------------------------------
def _backbone_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every parameter of the model except those of attached PVM blocks (submodules named `pvm`)."""
    for name, param in model.named_parameters():
        if BLOCK_ATTR not in name.split("."):
            yield name, param


def _sample(tensor: torch.Tensor) -> torch.Tensor:
    """SAMPLE_SIZE evenly spaced elements of the flattened tensor (all of a smaller one) -> [k] float64."""
    n = tensor.numel()
    k = min(SAMPLE_SIZE, n)
    index = torch.arange(k, dtype=torch.int64) * (n - 1) // max(k - 1, 1)  # [k], first and last included
    flat = tensor.detach().reshape(-1)  # [n], a view of a contiguous tensor
    return flat[index.to(flat.device)].cpu().double()  # [k]


def _tensor_record(tensor: torch.Tensor) -> dict:
    record = {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch.")}
    if tensor.is_meta or tensor.numel() == 0:
        return {**record, "sum": None, "abs_sum": None}
    sample = _sample(tensor)  # [k]
    return {**record, "sum": _round(sample.sum()), "abs_sum": _round(sample.abs().sum())}


def _round(value: torch.Tensor) -> float:
    return float(f"{float(value):.8g}")


def base_fingerprint(model: nn.Module) -> dict:
    """Sizes, attention window, and shape, dtype and sample checksum of every backbone tensor.

    Cheap at any size: SAMPLE_SIZE elements per tensor are read; PVM blocks are skipped, so the
    fingerprint is the same with or without an adapter attached."""
    cfg = text_config(model)
    return {
        "architecture": type(model).__name__,
        "hidden_size": cfg.hidden_size,
        "num_layers": len(decoder_layers(model)),
        "vocab_size": cfg.vocab_size,
        "attention_window": attention_window(model),
        "tensors": {name: _tensor_record(param) for name, param in _backbone_tensors(model)},
    }


def _legacy_embedding_checksum(model: nn.Module) -> float | None:
    """Format 1's checksum: the abs-sum of the first 64 rows of the input embeddings."""
    weight = model.get_input_embeddings().weight
    return None if weight.is_meta else float(weight[:64].detach().float().abs().sum())


def check_fingerprint(saved: dict, model: nn.Module, allow_other_weights: bool = False,
                      source: str | None = None) -> None:
    """Refuse `model` unless it is the base `saved` (an adapter's `base` section) was recorded on.

    `saved` is validated first (a `ConfigError` naming `source`, the file it came from). Sizes and
    window must be equal, every tensor present with the same shape; with `allow_other_weights=False`
    every tensor's sample checksum must also agree within tolerance. A format-1 fingerprint
    (embedding checksum only) is checked as it was, with a `LegacyFingerprintWarning`."""
    try:
        _check_base(saved, "tensors" if isinstance(saved, dict) and "tensors" in saved else "embedding_checksum")
    except ConfigError as err:
        raise err.within("", source) from None
    current = base_fingerprint(model)
    for key in ("architecture", "hidden_size", "num_layers", "vocab_size", "attention_window"):
        if saved[key] != current[key]:
            raise AdapterMismatchError(
                f"adapter was trained on a base with {key}={saved[key]}, this model has {current[key]}")
    if "tensors" in saved:
        _compare_tensors(saved["tensors"], current["tensors"], allow_other_weights)
    else:
        _compare_legacy(saved["embedding_checksum"], model, allow_other_weights)


def _compare_tensors(saved: dict, current: dict, allow_other_weights: bool) -> None:
    for name, now in current.items():
        if name not in saved:
            raise AdapterMismatchError(f"this model has a tensor {name} that the adapter's base did not have")
        if saved[name]["shape"] != now["shape"]:
            raise AdapterMismatchError(f"adapter was trained on a base with {name} of shape "
                                       f"{saved[name]['shape']}, this model has {now['shape']}")
    missing = [name for name in saved if name not in current]
    if missing:
        raise AdapterMismatchError(f"adapter was trained on a base with a tensor {missing[0]}, this model has none")
    if allow_other_weights:
        return
    for name, now in current.items():
        if not _checksums_agree(saved[name], now):
            raise AdapterMismatchError(
                f"adapter was trained on other base weights: {name} differs (sample sum {saved[name]['sum']:.6g}, "
                f"this model {now['sum']:.6g}); pass allow_other_weights=True to load it anyway")


def _checksums_agree(a: dict, b: dict) -> bool:
    if a["sum"] is None or b["sum"] is None:
        return True  # a meta tensor: nothing to compare
    tolerance = CHECKSUM_RTOL * max(a["abs_sum"], b["abs_sum"]) + CHECKSUM_ATOL * SAMPLE_SIZE
    return abs(a["sum"] - b["sum"]) <= tolerance and abs(a["abs_sum"] - b["abs_sum"]) <= tolerance


def _compare_legacy(saved_checksum: float | None, model: nn.Module, allow_other_weights: bool) -> None:
    warnings.warn("adapter records the old, weaker base fingerprint (format 1: an embedding checksum only); "
                  "checkpoints.upgrade_fingerprint(adapter, base) records the new one",
                  LegacyFingerprintWarning, stacklevel=3)
    now = _legacy_embedding_checksum(model)
    if allow_other_weights or saved_checksum is None or now is None:
        return
    if not math.isclose(saved_checksum, now, rel_tol=1e-2):
        raise AdapterMismatchError(
            f"adapter was trained on other base weights (embedding checksum {saved_checksum:.4g} vs {now:.4g}); "
            "pass allow_other_weights=True to load it anyway")


# ---- the rules of pvm_config.json -------------------------------------------------------------------
def _finite_or_none(value) -> bool:
    return value is None or (is_number(value) and math.isfinite(value))


def _shape(value) -> bool:
    return isinstance(value, list) and all(is_int(i) and i >= 0 for i in value)


Rules = dict[str, tuple[Callable[[object], bool], str]]
_OBJECT = (lambda v: isinstance(v, dict), "an object")
_TOP: Rules = {
    "format_version": (is_positive_int, "a positive integer"),
    "pvm": _OBJECT,
    "base": _OBJECT,
    "num_parameters": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "provenance": (is_json_object, "a JSON object"),
}
_BASE: Rules = {
    "architecture": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "hidden_size": (is_positive_int, "a positive integer"),
    "num_layers": (is_positive_int, "a positive integer"),
    "vocab_size": (is_positive_int, "a positive integer"),
    "attention_window": (lambda v: v is None or is_positive_int(v), "a positive integer or null"),
}
_FINGERPRINT: dict[str, Rules] = {  # the base section's last key, by kind of fingerprint
    "tensors": {**_BASE, "tensors": (lambda v: isinstance(v, dict) and v != {}, "a non-empty object")},
    "embedding_checksum": {**_BASE, "embedding_checksum": (_finite_or_none, "a finite number or null")},
}
_TENSOR: Rules = {
    "shape": (_shape, "a list of integers >= 0"),
    "dtype": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "sum": (_finite_or_none, "a finite number or null"),
    "abs_sum": (lambda v: v is None or (_finite_or_none(v) and v >= 0), "a finite number >= 0 or null"),
}


def _check_section(data, rules: Rules, path: str) -> None:
    """`data` is an object with exactly the keys of `rules`, each value passing its rule."""
    if not isinstance(data, dict):
        raise ConfigError(path, f"must be an object, got {show(data)}")
    for key, (check, expected) in rules.items():
        where = f"{path}.{key}" if path else key
        if key not in data:
            raise ConfigError(where, "is missing")
        if not check(data[key]):
            raise ConfigError(where, f"must be {expected}, got {show(data[key])}")
    unknown = [key for key in data if key not in rules]
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(where, f"is not a known key; known: {', '.join(rules)}")


def _check_base(base, fingerprint: str) -> None:
    _check_section(base, _FINGERPRINT[fingerprint], "base")
    for name, record in base.get("tensors", {}).items():
        _check_section(record, _TENSOR, f"base.tensors.{name}")
        if (record["sum"] is None) != (record["abs_sum"] is None):
            raise ConfigError(f"base.tensors.{name}", "must give both sums or neither")


def _check_format_version(meta: dict, source: str) -> int:
    version = meta.get("format_version")
    if version is None:
        raise ConfigError("format_version", "is missing", source)
    if not is_positive_int(version):
        raise ConfigError("format_version", f"must be a positive integer, got {show(version)}", source)
    if version > FORMAT_VERSION:
        raise AdapterError(f"{source}: written by a newer pvm_probe (format {version}, this reads "
                           f"<= {FORMAT_VERSION}); upgrade pvm_probe to load it")
    return version


def _check_meta(meta, source: str) -> PVMConfig:
    """Every section of a pvm_config.json, and how they fit together; returns the PVMConfig."""
    if not isinstance(meta, dict):
        raise ConfigError("", f"must hold a JSON object, got {show(meta)}", source)
    version = _check_format_version(meta, source)
    try:
        _check_section(meta, _TOP, "")
        missing = [f.name for f in fields(PVMConfig) if f.name not in meta["pvm"]]
        if missing:
            raise ConfigError(f"pvm.{missing[0]}", "is missing")
        _check_base(meta["base"], "tensors" if version >= 2 else "embedding_checksum")
    except ConfigError as err:
        raise err.within("", source) from None
    config = PVMConfig.from_dict(meta["pvm"], source=source, prefix="pvm")
    _check_consistency(meta, config, source)
    return config


def _check_consistency(meta: dict, config: PVMConfig, source: str) -> None:
    num_layers = meta["base"]["num_layers"]
    if max(config.layers) >= num_layers:
        raise ConfigError("pvm.layers", f"must name layers of the base (0..{num_layers - 1}), "
                                        f"got {list(config.layers)}", source)
    count = sum(math.prod(s) for s in expected_shapes(config, meta["base"]["hidden_size"]).values())
    if meta["num_parameters"] != count:
        raise ConfigError("num_parameters", f"must be {count} for this pvm config and base width, "
                                            f"got {meta['num_parameters']}", source)


# ---- reading ------------------------------------------------------------------------------------------
def shipped_adapter_names() -> list[str]:
    return sorted(p.name for p in SHIPPED_ADAPTERS.iterdir() if p.is_dir()) if SHIPPED_ADAPTERS.is_dir() else []


def resolve_adapter(name_or_path) -> Path:
    """A local adapter directory, or the directory of a shipped adapter's name (e.g. 'pvm-stage1')."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise InputError(f"an adapter is a directory or a shipped adapter's name, got {show(name_or_path)}")
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"{path} is not a directory: an adapter is a directory holding {CONFIG_FILE} "
                                 f"and {WEIGHTS_FILE}")
    if str(name_or_path) in shipped_adapter_names():
        return SHIPPED_ADAPTERS / str(name_or_path)
    raise FileNotFoundError(f"no adapter directory or shipped adapter named {str(name_or_path)!r} "
                            f"(shipped: {', '.join(shipped_adapter_names())})")


def read_adapter_meta(adapter, check_weights: bool = True) -> dict:
    """The validated contents of an adapter's pvm_config.json (a directory or a shipped name).

    Every section is checked (types, ranges, unknown keys, format version, layer range, parameter
    count). With `check_weights` (the default) the weights file's header is checked too: tensor
    names, shapes and dtypes against the config, without reading any tensor data."""
    directory = resolve_adapter(adapter)
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: not a PVM adapter directory")
    meta = read_json(path)
    config = _check_meta(meta, str(path))
    if check_weights:
        _check_weights_header(directory / WEIGHTS_FILE, config, meta["base"]["hidden_size"])
    return meta


def expected_shapes(config: PVMConfig, hidden_size: int) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of an adapter's weights, from its config (blocks built on the meta device)."""
    with torch.device("meta"):
        block = build_block(config, hidden_size)
    return {f"layers.{layer}.{name}": tuple(p.shape) for layer in config.layers for name, p in block.named_parameters()}


def _check_shapes(found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], source: str) -> None:
    missing, extra = [n for n in expected if n not in found], [n for n in found if n not in expected]
    if missing or extra:
        raise AdapterError(f"{source}: weights do not match the config: missing {missing[:3]}, unexpected {extra[:3]}")
    for name, shape in expected.items():
        if tuple(found[name]) != shape:
            raise AdapterError(f"{source}: tensor {name} has shape {list(found[name])}, the config needs {list(shape)}")


def _check_weights_header(path: Path, config: PVMConfig, hidden_size: int) -> None:
    """Names, shapes and dtypes in the safetensors header against the config; no tensor is read."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the adapter has no weights")
    try:
        with safe_open(path, "pt") as f:
            header = {name: f.get_slice(name) for name in f.keys()}
            found = {name: tuple(s.get_shape()) for name, s in header.items()}
            dtypes = {name: s.get_dtype() for name, s in header.items()}
    except SafetensorError as err:
        raise AdapterError(f"corrupted adapter weights {path}: {err}") from None
    _check_shapes(found, expected_shapes(config, hidden_size), str(path))
    odd = [name for name, dtype in dtypes.items() if dtype not in _FLOAT_DTYPES]
    if odd:
        raise AdapterError(f"{path}: tensor {odd[0]} has dtype {dtypes[odd[0]]}, expected one of {_FLOAT_DTYPES}")


def read_adapter_weights(adapter, meta: dict) -> dict[str, torch.Tensor]:
    """The adapter's tensors (header checked against `meta` first), each checked to be finite."""
    path = resolve_adapter(adapter) / WEIGHTS_FILE
    config = PVMConfig.from_dict(meta["pvm"], prefix="pvm")
    _check_weights_header(path, config, meta["base"]["hidden_size"])
    try:
        tensors = load_file(path)
    except SafetensorError as err:
        raise AdapterError(f"corrupted adapter weights {path}: {err}") from None
    for name, tensor in tensors.items():
        if not torch.isfinite(tensor).all():
            raise AdapterError(f"{path}: tensor {name} holds non-finite values (NaN or inf)")
    return tensors


def describe_adapter(adapter) -> dict:
    """What `pvm-probe info` shows, from the validated files: {"raw": the pvm_config.json contents plus
    "alphas" (layer -> trained gate, read alone from the weights), "text": the same for people}."""
    directory = resolve_adapter(adapter)
    meta = read_adapter_meta(directory)  # the weights' header too
    with safe_open(directory / WEIGHTS_FILE, "pt") as f:
        alphas = {str(i): float(f.get_tensor(f"layers.{i}.alpha")) for i in meta["pvm"]["layers"]}
    pvm, base = meta["pvm"], meta["base"]
    fingerprint = (f"{len(base['tensors'])} tensors fingerprinted" if "tensors" in base
                   else "format 1: embedding checksum only (weaker)")
    result = meta["provenance"].get("result")
    start = (result.get("alphas_initial") if isinstance(result, dict) else None) or {
        str(i): pvm["alpha_init"] for i in pvm["layers"]}  # adapters from before train-pvm recorded it
    text = "\n".join([
        f"adapter      {directory}",
        f"block        {pvm['block']} (visual source: {pvm['visual_source']})",
        f"layers       {', '.join(map(str, pvm['layers']))}  latent {pvm['latent_dim']}  heads {pvm['num_heads']}/"
        f"{pvm['num_kv_heads']} x {pvm['head_dim']}  ffn {pvm['ffn_dim']}",
        "alpha        " + "  ".join(f"layer {layer}: {value:.4g} (from {_number(start.get(layer, '?'))})"
                                    for layer, value in alphas.items()),
        f"parameters   {meta['num_parameters']:,}",
        f"base         {base['architecture']}  hidden {base['hidden_size']}  layers {base['num_layers']}"
        f"  vocab {base['vocab_size']}  window {base['attention_window']}  ({fingerprint})",
        "provenance", *readable(meta["provenance"], indent="  "),
    ])
    return {"raw": {**meta, "alphas": alphas}, "text": text}


def _number(value):
    """A float to 4 significant digits for people (`info`); anything else as it is."""
    return float(f"{value:.4g}") if isinstance(value, float) else value


def _rounded(value):
    return [_number(v) for v in value] if isinstance(value, list) else _number(value)


def readable(data, indent: str = "", prefix: str = "") -> list[str]:
    """A nested dict as `key.subkey: value` lines (lists of plain values on one line)."""
    lines = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            lines += readable(value, indent, f"{name}.")
        else:
            shown = value if isinstance(value, str) else json.dumps(_rounded(value))
            lines.append(f"{indent}{name}: {shown}")
    return lines


# ---- writing ------------------------------------------------------------------------------------------
def save_adapter(directory, config: PVMConfig, weights: dict[str, torch.Tensor], base: nn.Module,
                 provenance: dict | None = None) -> Path:
    """Write an adapter directory whole or not at all (through `io.atomic_dir`).

    weights: tensor name -> tensor, named as `expected_shapes` names them; base: the model they were
    trained on (fingerprinted). Files other than the two adapter files in an existing adapter
    directory (a training log, notes) are kept; a non-empty directory that is not an adapter is refused."""
    directory = Path(directory)
    if provenance is not None and not isinstance(provenance, dict):
        raise InputError(f"provenance must be a dict, got {show(provenance)}")
    _check_replaceable(directory)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in weights.items()}
    _check_shapes({n: tuple(t.shape) for n, t in tensors.items()},
                  expected_shapes(config, text_config(base).hidden_size), "weights to save")
    meta = {
        "format_version": FORMAT_VERSION,
        "pvm": config.to_dict(),
        "base": base_fingerprint(base),
        "num_parameters": sum(t.numel() for t in tensors.values()),
        "provenance": dict(provenance or {}),
    }
    with atomic_dir(directory) as tmp:
        # serialised in memory and written with open(), which gives the umask's mode (save_file gives 0600)
        (tmp / WEIGHTS_FILE).write_bytes(save(tensors, metadata={"format": "pt"}))
        (tmp / CONFIG_FILE).write_text(json_text(meta), encoding="utf-8")
        _carry_over(directory, tmp)
    return directory


def _check_replaceable(directory: Path) -> None:
    if directory.is_dir() and any(directory.iterdir()) and not (directory / CONFIG_FILE).is_file():
        raise InputError(f"refusing to save an adapter over {directory}: a non-empty directory without {CONFIG_FILE}")


def _carry_over(old: Path, new: Path) -> None:
    """Hard-link (or copy) what else an old adapter directory held into its replacement."""
    if not old.is_dir():
        return
    for entry in old.iterdir():
        if entry.name in (CONFIG_FILE, WEIGHTS_FILE):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, new / entry.name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, new / entry.name)


def _link_or_copy(source, target) -> None:
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, target, follow_symlinks=False)


def upgrade_fingerprint(adapter, base: nn.Module, allow_other_weights: bool = False) -> Path:
    """Record `base`'s fingerprint (format 2) in an adapter trained on it; nothing else changes.

    The adapter's old fingerprint is checked against `base` first, so only its own base can upgrade it."""
    directory = resolve_adapter(adapter)
    meta = read_adapter_meta(directory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LegacyFingerprintWarning)
        check_fingerprint(meta["base"], base, allow_other_weights)
    meta = {**meta, "format_version": FORMAT_VERSION, "base": base_fingerprint(base)}
    atomic_write_text(directory / CONFIG_FILE, json_text(meta))
    return directory


def json_text(data, width: int = 120) -> str:
    """JSON indented by 2, with lists of scalars and small flat objects (one tensor record) on one line."""

    def scalar(v) -> bool:
        return not isinstance(v, (dict, list))

    def flat(v) -> bool:
        items = v.values() if isinstance(v, dict) else v
        return all(scalar(i) or (isinstance(i, list) and all(map(scalar, i))) for i in items)

    def render(value, pad: str) -> str:
        compact = json.dumps(value)
        if scalar(value) or (isinstance(value, list) and all(map(scalar, value))):
            return compact
        if not value or (flat(value) and len(compact) <= width):
            return compact
        inner = pad + "  "
        if isinstance(value, dict):
            rows = [f"{inner}{json.dumps(k)}: {render(v, inner)}" for k, v in value.items()]
            return "{\n" + ",\n".join(rows) + f"\n{pad}}}"
        return "[\n" + ",\n".join(inner + render(v, inner) for v in value) + f"\n{pad}]"

    return render(data, "") + "\n"
