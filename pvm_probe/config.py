"""PVMConfig: where the memory blocks go and how wide they are, with presets and a JSON round trip."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

BLOCK_KINDS = ("pvm", "mlp")


@dataclass
class PVMConfig:
    """Shape and placement of the Persistent Visual Memory branch (DESIGN §2).

    layers:        decoder-layer indices that get a block
    latent_dim:    bottleneck width d' (512 at 8B)
    head_dim:      cross-attention head width (128 at 8B); latent_dim = num_heads * head_dim
    num_heads:     query heads; num_kv_heads key/value heads (GQA)
    ffn_dim:       hidden width of the latent SwiGLU (1536 at 8B)
    visual_source: "embeddings" (raw LLM-space visual tokens, the paper's PVM) or "hidden:<k>"
                   (hidden states of decoder layer k at the image positions: the paper's
                   "processed states" control; k must precede every PVM layer)
    block:         "pvm" (the memory) or "mlp" (the iso-parameter control without image access)
    """

    layers: tuple[int, ...]
    latent_dim: int = 512
    head_dim: int = 128
    num_heads: int = 4
    num_kv_heads: int = 1
    ffn_dim: int = 1536
    rms_norm_eps: float = 1e-6
    alpha_init: float = 0.0
    visual_source: str = "embeddings"
    block: str = "pvm"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.layers = tuple(int(i) for i in self.layers)
        self.validate()

    def validate(self) -> None:
        if not self.layers:
            raise ValueError("PVMConfig.layers is empty: name at least one decoder layer")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"PVMConfig.layers has duplicates: {self.layers}")
        if self.latent_dim % self.head_dim:
            raise ValueError(
                f"latent_dim {self.latent_dim} is not divisible by head_dim {self.head_dim}"
            )
        if self.latent_dim != self.num_heads * self.head_dim:
            raise ValueError(
                f"latent_dim {self.latent_dim} != num_heads {self.num_heads} x head_dim {self.head_dim}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        if self.block not in BLOCK_KINDS:
            raise ValueError(f"unknown block kind {self.block!r}; expected one of {BLOCK_KINDS}")
        source_layer = self.source_layer
        if source_layer is not None and source_layer >= min(self.layers):
            raise ValueError(
                f"visual_source layer {source_layer} must precede every PVM layer {self.layers}"
            )

    @property
    def source_layer(self) -> int | None:
        """Decoder layer whose hidden states feed the memory, or None for raw embeddings."""
        if self.visual_source == "embeddings":
            return None
        prefix, _, index = self.visual_source.partition(":")
        if prefix != "hidden" or not index.isdigit():
            raise ValueError(
                f"visual_source must be 'embeddings' or 'hidden:<layer>', got {self.visual_source!r}"
            )
        return int(index)

    # ---- JSON round trip -------------------------------------------------------------------
    def to_dict(self) -> dict:
        data = asdict(self)
        data["layers"] = list(self.layers)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> PVMConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown PVMConfig keys: {sorted(unknown)}")
        return cls(**data)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_json(cls, path: str | Path) -> PVMConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    # ---- presets ---------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides) -> PVMConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown PVM preset {name!r}; known: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def for_model(cls, text_hidden_size: int, num_layers: int, n_blocks: int = 3, **overrides) -> PVMConfig:
        """Scale the 8B preset to any backbone.

        latent = hidden/8 clamped to [64, 512] (4096 -> 512), 4 query heads and 1 kv head,
        SwiGLU width 3 x latent, layers strided over depth (36 layers, 3 blocks -> 8, 16, 24).
        """
        latent = min(512, max(64, (text_hidden_size // 8) // 16 * 16))
        shape = dict(
            layers=overrides.pop("layers", None) or strided_layers(num_layers, n_blocks),
            latent_dim=latent,
            head_dim=latent // 4,
            num_heads=4,
            num_kv_heads=1,
            ffn_dim=3 * latent,
        )
        return cls(**{**shape, **overrides})


def strided_layers(num_layers: int, n_blocks: int) -> tuple[int, ...]:
    """The paper's Strided strategy: evenly spaced, depth-spanning (36 layers, 3 blocks -> 8, 16, 24)."""
    if not 0 < n_blocks < num_layers:
        raise ValueError(f"cannot place {n_blocks} blocks in a {num_layers}-layer model")
    stride = num_layers / (n_blocks + 1.5)
    return tuple(sorted({min(num_layers - 1, max(1, round((i + 1) * stride))) for i in range(n_blocks)}))


_WIDTH_8B = dict(latent_dim=512, head_dim=128, num_heads=4, num_kv_heads=1, ffn_dim=1536)
PRESETS: dict[str, dict] = {
    "qwen3-vl-8b": dict(layers=(8, 16, 24), **_WIDTH_8B),
    "qwen3-vl-4b": dict(layers=(5, 11, 17), **_WIDTH_8B),
}
