"""A training run as data: dataclasses that say what `train-pvm` does and serialise into the adapter's provenance.

    TrainJob       one run: base, output folder, adapter, data, and a StageIConfig or a StageIIConfig
    AdapterSpec    the adapter to train: a new one (shape, placement) or a saved one (`init`)
    DataSpec       where the examples come from (a data file or a suite) and the guard rails on them
    StageIConfig   Stage I (SFT) optimisation
    StageIIConfig  Stage II (GRPO) optimisation, with its rewards (RewardSpec: a name and a weight)

`to_dict()` gives a JSON object, `TrainJob.from_dict()` reads one back (unknown keys refused), so a run's
recipe is read from an adapter's provenance (`provenance["job"]`) and rerun with changes through
`dataclasses.replace` and `pvm_probe.train.run.train`. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from .. import cli_types as t
from ..errors import InputError
from ..names import PLACEMENTS
from ..specs import flag

FORMAT_REWARDS = ("format", "world-format")  # default weight 0.1; every other reward 0.9 (the paper's split)
REWARD_NAMES = ("format", "exact", "numeric", "scenes", "world-format", "world-accuracy")
FORMAT_WEIGHT, ACCURACY_WEIGHT = 0.1, 0.9
TRAIN_SOURCES = ("world", "scenes")  # the suites that can make training examples (train/run.py)


def default_weight(name: str) -> float:
    """The paper's split: 0.1 for a format reward, 0.9 for every other (accuracy-like) reward."""
    return FORMAT_WEIGHT if name in FORMAT_REWARDS else ACCURACY_WEIGHT


@dataclass(frozen=True)
class RewardSpec:
    """One Stage II reward: a shipped name (REWARD_NAMES) or `module:function`, and its weight in the total."""

    name: str
    weight: float


@dataclass
class AdapterSpec:
    """The adapter to train. With `init` a saved adapter is loaded and the shape fields must stay unset.

    preset:     a PVMConfig preset (qwen3-vl-8b, qwen3-vl-4b); default: scaled to the base (PVMConfig.for_model)
    layers:     decoder layers; or `placement` (strided, peak, decay) with `blocks` layers from the base's own
                measured visual-attention profile (pvm_probe.placement)
    block:      pvm, or mlp (the iso-parameter control without the image)
    visual_source / alpha_init: as in PVMConfig (None: its default)
    """

    init: str | None = field(default=None, metadata=flag("start from this adapter (directory or shipped name)"))
    preset: str | None = field(default=None, metadata=flag(
        "PVM preset (qwen3-vl-8b, qwen3-vl-4b); default: scaled to the base"))
    layers: tuple[int, ...] | None = field(default=None, metadata=flag(
        "decoder layers, e.g. 8,16,24", type=t.layer_list))
    placement: str | None = field(default=None, metadata=flag(
        "layers by the paper's strategy from the base's measured attention profile", choices=PLACEMENTS))
    blocks: int = field(default=2, metadata=flag("PVM layers without --layers (default 2)", type=t.positive_int))
    block: str | None = field(default=None, metadata=flag(
        "mlp: the iso-parameter control without the image", choices=["pvm", "mlp"]))
    visual_source: str | None = field(default=None, metadata=flag(
        "embeddings (default) | hidden:<layer>", type=t.visual_source))
    alpha_init: float | None = field(default=None, metadata=flag(
        "initial gate (default 0: outputs unchanged)", type=t.finite_float))

    def shape_fields(self) -> list[str]:
        """The shape fields given (those `init` excludes)."""
        names = ("preset", "layers", "placement", "block", "visual_source", "alpha_init")
        return [name for name in names if getattr(self, name) is not None]


@dataclass
class DataSpec:
    """Where the examples come from, and the guard rails on them.

    path:        a data file (JSON, JSONL, parquet: pvm_probe.train.data); else `suite`
    suite:       world (the painter world: the embedded base's own) or scenes (Stage II only: generated shape
                 scenes with training seeds < 1,000,000, scored by the scenes suite)
    examples:    world / scenes: how many examples (default: steps x batch x accumulation)
    fillers, max_gap: world: filler kinds and 0..max_gap filler tokens per step (default: the base's own)
    image_size:  scenes: image side in pixels (28..4096; default 448)
    loss_on:     Stage I: answer (every answer token) or claims (the world's grounded claims only)
    max_length:  Stage I: prompt + answer tokens at most; the answer is cut, never the prompt
    max_pixels:  the image processor's pixel budget per image (Qwen: size["longest_edge"])
    eval_split:  Stage I: the share of examples held out for an eval loss
    """

    path: str | None = field(default=None, metadata=flag(
        "JSON / JSONL / parquet records (image, question, answer)", flag="--data", type=t.existing_file))
    suite: str | None = field(default=None, metadata=flag(
        "without --data: world (the embedded base's own, default) or scenes (Stage II)", choices=TRAIN_SOURCES))
    examples: int | None = field(default=None, metadata=flag(
        "world / scenes examples (default: steps x batch)", type=t.positive_int))
    fillers: tuple[str, ...] | None = field(default=None, metadata=flag(
        "world filler kinds, e.g. said or said,count", type=t.fillers))
    max_gap: int | None = field(default=None, metadata=flag(
        "world: 0..N filler tokens per step", type=t.non_negative_int))
    image_size: int | None = field(default=None, metadata=flag(
        "scenes: image side in pixels (default 448)", type=t.positive_int))
    loss_on: str | None = field(default=None, metadata=flag(
        "stage 1: world claims (world default) or answer", choices=["claims", "answer"]))
    max_length: int | None = field(default=None, metadata=flag(
        "stage 1: prompt + answer tokens at most (the answer is cut, never the prompt)", type=t.positive_int))
    max_pixels: int | None = field(default=None, metadata=flag(
        "pixels per image (Qwen processors; LLaVA: fixed)", type=t.positive_int))
    eval_split: float = field(default=0.0, metadata=flag(
        "stage 1: share of examples held out for an eval loss", type=t.fraction))


@dataclass
class StageIConfig:
    """Stage I, Visual Memory Alignment (SFT). batch_size is per process: the global batch is
    batch_size x grad_accum x processes. eval_steps: evaluate every N steps too (the end always)."""

    steps: int = 300
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-4
    schedule: str = "cosine"
    warmup_steps: int = 20
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    logging_steps: int = 10
    eval_steps: int | None = None
    train_backbone: bool = False  # True: the language model trains too (the vision tower stays frozen)
    backbone_visual_dropout: float = 0.0  # share of training requests whose image only PVM sees
    gradient_checkpointing: bool = False
    bf16: bool = False  # bf16 autocast with fp32 master weights

    stage = "I"


@dataclass
class StageIIConfig:
    """Stage II, Policy Refinement (GRPO). batch_size: completions per process and step; the global batch
    (batch_size x processes) holds whole groups of num_generations completions, a group may span processes.
    max_completion_length None: the source's default (world: its longest answer; else 1024)."""

    steps: int = 50
    batch_size: int = 16
    num_generations: int = 8
    max_completion_length: int | None = None
    lr: float = 1e-6
    warmup_steps: int = 0
    temperature: float = 1.0
    beta: float = 0.0  # KL to a reference policy: only 0 (no reference model) is supported
    seed: int = 0
    logging_steps: int = 5
    train_backbone: bool = False
    gradient_checkpointing: bool = False
    bf16: bool = False
    rewards: tuple[RewardSpec, ...] = ()  # empty: the source's default

    stage = "II"


@dataclass
class TrainJob:
    """One `train-pvm` run. base None: the embedded painter-world baseline."""

    out: str
    optim: StageIConfig | StageIIConfig
    base: str | None = None
    adapter: AdapterSpec = field(default_factory=AdapterSpec)
    data: DataSpec = field(default_factory=DataSpec)
    device: str | None = None
    dtype: str = "float32"
    attn: str = "sdpa"

    @property
    def stage(self) -> int:
        return 1 if isinstance(self.optim, StageIConfig) else 2

    def to_dict(self) -> dict:
        data = asdict(self)
        data["stage"] = self.stage
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainJob:
        """The job `to_dict` wrote (e.g. `provenance["job"]` of an adapter); unknown keys are an InputError."""
        data = dict(_expect_object(data, "job"))
        stage = data.pop("stage", None)
        if stage not in (1, 2):
            raise InputError(f"job.stage must be 1 or 2, got {stage!r}")
        optim_data = dict(_expect_object(data.pop("optim", {}), "job.optim"))
        if stage == 2:
            optim_data["rewards"] = [_build(RewardSpec, r, "job.optim.rewards") for r in optim_data.get("rewards", [])]
        optim = _build(StageIConfig if stage == 1 else StageIIConfig, optim_data, "job.optim")
        adapter = _build(AdapterSpec, data.pop("adapter", {}), "job.adapter")
        spec = _build(DataSpec, data.pop("data", {}), "job.data")
        return _build(cls, {**data, "optim": optim, "adapter": adapter, "data": spec}, "job")


def _expect_object(data, path: str) -> dict:
    if not isinstance(data, dict):
        raise InputError(f"{path} must be a JSON object, got {type(data).__name__}")
    return data


def _build(cls, data, path: str):
    """cls(**data) with unknown keys refused and JSON lists turned into tuples."""
    data = _expect_object(data, path)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"{path}.{unknown[0]} is not a known field; known: {', '.join(sorted(known))}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
