"""PVMConfig: where the memory blocks go and how wide they are, with presets and a JSON round trip.

Every field carries its rule (exact type and range) in a table beside its declaration; `__post_init__`
checks each rule, then the relations between fields, so a PVMConfig that exists is valid and, being
frozen, stays so. A violation is a one-line `ConfigError`:
`PVMConfig.latent_dim must be a positive integer, got '64' (str)`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from .errors import ConfigError, InputError, show
from .io import atomic_write_json

BLOCK_KINDS = ("pvm", "mlp")
ALPHA_LIMIT = 1e3  # |alpha_init| beyond this overflows the residual stream of a bf16 model
EPS_RANGE = (1e-12, 1.0)  # rms_norm_eps: fp32-representable, and small beside a unit RMS
_HIDDEN = re.compile(r"hidden:([0-9]+)")


# ---- rules: one predicate and one phrase per kind of value --------------------------------------
def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_positive_int(value) -> bool:
    return is_int(value) and value >= 1


def _layer_list(value) -> bool:
    if not isinstance(value, (list, tuple)) or not value:
        return False
    return all(is_int(i) and i >= 0 for i in value) and len(set(value)) == len(value)


def _eps(value) -> bool:
    return is_number(value) and math.isfinite(value) and EPS_RANGE[0] <= value <= EPS_RANGE[1]


def _alpha(value) -> bool:
    return is_number(value) and math.isfinite(value) and abs(value) <= ALPHA_LIMIT


def _visual_source(value) -> bool:
    return isinstance(value, str) and (value == "embeddings" or _HIDDEN.fullmatch(value) is not None)


def is_json_object(value) -> bool:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        return False
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _rule(check: Callable[[object], bool], expected: str, **kwargs):
    """A dataclass field whose metadata holds its rule: `check(value)` and the phrase for `expected`."""
    return field(metadata={"check": check, "expected": expected}, **kwargs)


_POSITIVE = "a positive integer"


@dataclass(frozen=True)
class PVMConfig:
    """Shape and placement of the Persistent Visual Memory branch (the block is memory.py).

    layers:        decoder-layer indices that get a block (distinct, >= 0)
    latent_dim:    bottleneck width d' (512 at 8B); must equal num_heads * head_dim
    head_dim:      cross-attention head width (128 at 8B)
    num_heads:     query heads; num_kv_heads key/value heads (GQA), a divisor of num_heads
    ffn_dim:       hidden width of the latent SwiGLU (1536 at 8B)
    rms_norm_eps:  epsilon of the block's RMSNorms, in [1e-12, 1]
    alpha_init:    initial gate, |alpha_init| <= 1000 (0: the model's outputs are unchanged)
    visual_source: "embeddings" (raw LLM-space visual tokens, the paper's PVM) or "hidden:<k>"
                   (hidden states of decoder layer k at the image positions: the paper's
                   "processed states" control; k must precede every PVM layer)
    block:         "pvm" (the memory) or "mlp" (the iso-parameter control without image access)
    extra:         free-form JSON object (notes); the block does not read it
    """

    layers: tuple[int, ...] = _rule(_layer_list, "a non-empty list of distinct integers >= 0")
    latent_dim: int = _rule(is_positive_int, _POSITIVE, default=512)
    head_dim: int = _rule(is_positive_int, _POSITIVE, default=128)
    num_heads: int = _rule(is_positive_int, _POSITIVE, default=4)
    num_kv_heads: int = _rule(is_positive_int, _POSITIVE, default=1)
    ffn_dim: int = _rule(is_positive_int, _POSITIVE, default=1536)
    rms_norm_eps: float = _rule(_eps, f"a finite number in [{EPS_RANGE[0]:g}, {EPS_RANGE[1]:g}]", default=1e-6)
    alpha_init: float = _rule(_alpha, f"a finite number in [-{ALPHA_LIMIT:g}, {ALPHA_LIMIT:g}]", default=0.0)
    visual_source: str = _rule(_visual_source, "'embeddings' or 'hidden:<layer>'", default="embeddings")
    block: str = _rule(lambda v: isinstance(v, str) and v in BLOCK_KINDS,
                       "one of " + ", ".join(map(repr, BLOCK_KINDS)), default="pvm")
    extra: dict = _rule(is_json_object, "a JSON object", default_factory=dict)

    def __post_init__(self) -> None:
        try:
            _check({f.name: getattr(self, f.name) for f in fields(self)})
        except ConfigError as err:
            raise err.within("PVMConfig") from None
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "rms_norm_eps", float(self.rms_norm_eps))
        object.__setattr__(self, "alpha_init", float(self.alpha_init))

    @property
    def source_layer(self) -> int | None:
        """Decoder layer whose hidden states feed the memory, or None for raw embeddings."""
        return _source_layer(self.visual_source)

    # ---- JSON round trip -------------------------------------------------------------------
    def to_dict(self) -> dict:
        data = asdict(self)
        data["layers"] = list(self.layers)
        return data

    @classmethod
    def from_dict(cls, data, source: str | None = None, prefix: str = "PVMConfig") -> PVMConfig:
        """A PVMConfig from a JSON object: unknown keys and every rule checked; errors name
        `source` (a file) and `prefix.field`."""
        try:
            if not isinstance(data, dict):
                raise ConfigError("", f"must be an object, got {show(data)}")
            _check_known(data)
            if "layers" not in data:
                raise ConfigError("layers", "is missing")
            _check({**_defaults(), **data})
        except ConfigError as err:
            raise err.within(prefix, source) from None
        return cls(**data)

    def to_json(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_json(cls, path: str | Path) -> PVMConfig:
        return cls.from_dict(read_json(path), source=str(path), prefix="")

    # ---- presets ---------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides) -> PVMConfig:
        if name not in PRESETS:
            raise InputError(f"unknown PVM preset {name!r}; known: {', '.join(sorted(PRESETS))}")
        return cls.from_dict({**PRESETS[name], **overrides})

    @classmethod
    def for_model(cls, text_hidden_size: int, num_layers: int, n_blocks: int = 3, **overrides) -> PVMConfig:
        """Scale the 8B preset to any backbone.

        latent = hidden/8 clamped to [64, 512] (4096 -> 512), 4 query heads and 1 kv head,
        SwiGLU width 3 x latent, layers strided over depth (36 layers, 3 blocks -> 8, 16, 24).
        """
        if not is_positive_int(text_hidden_size):
            raise InputError(f"text_hidden_size must be a positive integer, got {show(text_hidden_size)}")
        latent = min(512, max(64, (text_hidden_size // 8) // 16 * 16))
        layers = overrides.pop("layers", None)
        shape = dict(
            layers=strided_layers(num_layers, n_blocks) if layers is None else layers,
            latent_dim=latent,
            head_dim=latent // 4,
            num_heads=4,
            num_kv_heads=1,
            ffn_dim=3 * latent,
        )
        return cls.from_dict({**shape, **overrides})


def _check_known(data: dict) -> None:
    known = [f.name for f in fields(PVMConfig)]
    unknown = [key for key in data if key not in known]
    if unknown:
        raise ConfigError(str(unknown[0]), f"is not a known field; known: {', '.join(known)}")


def _defaults() -> dict:
    return {f.name: f.default_factory() if f.default_factory is not MISSING else f.default
            for f in fields(PVMConfig) if f.default is not MISSING or f.default_factory is not MISSING}


def _check(values: dict) -> None:
    """Every field's value against its rule in the table (the metadata of its declaration), then
    what no single field can say: the head arithmetic and the source layer before every PVM layer."""
    for f in fields(PVMConfig):
        if not f.metadata["check"](values[f.name]):
            raise ConfigError(f.name, f"must be {f.metadata['expected']}, got {show(values[f.name])}")
    heads, head_dim, kv_heads = values["num_heads"], values["head_dim"], values["num_kv_heads"]
    if values["latent_dim"] != heads * head_dim:
        raise ConfigError("latent_dim", f"must equal num_heads x head_dim ({heads} x {head_dim} = "
                                        f"{heads * head_dim}), got {values['latent_dim']}")
    if heads % kv_heads:
        raise ConfigError("num_kv_heads", f"must divide num_heads ({heads}), got {kv_heads}")
    source = _source_layer(values["visual_source"])
    if source is not None and source >= min(values["layers"]):
        raise ConfigError("visual_source", f"layer {source} must precede every PVM layer "
                                           f"{list(values['layers'])}, got {values['visual_source']!r}")


def _source_layer(visual_source: str) -> int | None:
    match = _HIDDEN.fullmatch(visual_source)
    return int(match.group(1)) if match else None


def read_json(path: str | Path):
    """A JSON document from a file; bad bytes, bad syntax and repeated keys are one-line `ConfigError`s."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"), object_pairs_hook=_no_repeated_keys)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, _RepeatedKey) as err:
        raise ConfigError("", f"is not valid JSON ({err})", source=str(path)) from None


class _RepeatedKey(ValueError):
    pass


def _no_repeated_keys(pairs: list) -> dict:
    data = {}
    for key, value in pairs:
        if key in data:
            raise _RepeatedKey(f"key {key!r} appears twice in one object")
        data[key] = value
    return data


def strided_layers(num_layers: int, n_blocks: int) -> tuple[int, ...]:
    """The paper's Strided strategy: evenly spaced, depth-spanning (36 layers, 3 blocks -> 8, 16, 24)."""
    if not (is_int(num_layers) and is_int(n_blocks)):
        raise InputError(f"num_layers and n_blocks must be integers, got {show(num_layers)} and {show(n_blocks)}")
    if not 0 < n_blocks < num_layers:
        raise InputError(f"cannot place {n_blocks} blocks in a {num_layers}-layer model: need 0 < blocks < layers")
    stride = num_layers / (n_blocks + 1.5)
    return tuple(sorted({min(num_layers - 1, max(1, round((i + 1) * stride))) for i in range(n_blocks)}))


_WIDTH_8B = dict(latent_dim=512, head_dim=128, num_heads=4, num_kv_heads=1, ffn_dim=1536)
PRESETS: dict[str, dict] = {
    "qwen3-vl-8b": dict(layers=(8, 16, 24), **_WIDTH_8B),
    "qwen3-vl-4b": dict(layers=(5, 11, 17), **_WIDTH_8B),
}
