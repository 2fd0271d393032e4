"""Everything a training run can check before a single weight loads, gathered into a `Plan`.

`make_plan(job)` reads only small files (the base's config.json and train_info.json, an --init adapter's
pvm_config.json, the data file) and raises a one-line InputError (or FileNotFoundError) for:
  - the base directory, the output folder (a non-empty folder that is not an adapter is never replaced);
  - the adapter: --init with shape flags, --layers with --placement, layers outside the base, a PVMConfig
    rule, an --init adapter trained on a base of another architecture or size;
  - the source: --data with --suite or with painter-world options, a base without painter-world training
    and no --data, --suite scenes for Stage I, --loss-on claims outside the world;
  - the data file: every record (pvm_probe.train.data.scan_data), the answers the rewards need, an image in
    every Stage II record;
  - the rewards: unknown names, user rewards that cannot be imported, rewards for another source;
  - the numbers: an eval split that leaves nothing on one side, a Stage II batch that is not whole groups;
  - the launcher: FSDP (refused: use DeepSpeed ZeRO-2 or DDP).
It also decides what was left to it: warm-up clipped when it is not below the steps (a note), default
rewards, world distribution, processes (WORLD_SIZE, as `accelerate launch` sets it), --bf16 when the
accelerate config asks for bf16 mixed precision.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..checkpoints import CONFIG_FILE, read_adapter_meta
from ..config import PVMConfig, strided_layers
from ..errors import InputError
from ..loading import BASELINE_DIR, check_model_dir
from .config import StageIConfig, StageIIConfig, TrainJob
from .data import DataFile, scan_data
from .rewards import Reward, check_sources, default_rewards, resolve_reward
from .world_data import TRAIN_INFO, world_distribution


@dataclass
class Plan:
    job: TrainJob  # with what was decided here filled in (clipped warm-up, default rewards)
    base_dir: Path
    model_config: object  # the base's config.json (no weights)
    source: str  # data, world or scenes
    processes: int
    data: DataFile | None = None
    distribution: dict | None = None  # world: gaps, fillers, passes
    rewards: list[Reward] = field(default_factory=list)
    pvm: PVMConfig | None = None  # None: loaded from init, or placed by a measured profile after loading
    init_meta: dict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def text_config(self):
        return self.model_config.get_text_config()

    @property
    def examples(self) -> int:
        """Stage I examples (data records, or world examples to draw)."""
        if self.data is not None:
            return len(self.data)
        optim = self.job.optim
        return self.job.data.examples or optim.steps * optim.batch_size * optim.grad_accum * self.processes


def make_plan(job: TrainJob) -> Plan:
    from transformers import AutoConfig  # light: no model code runs, no weights load

    base_dir = check_model_dir(job.base or BASELINE_DIR)
    check_output(job.out)
    config = AutoConfig.from_pretrained(base_dir, local_files_only=True)
    plan = Plan(job, base_dir, config, _source(job, base_dir), int(os.environ.get("WORLD_SIZE", "1")))
    _check_launcher(plan)
    _check_optim(plan)
    if plan.source == "world":
        plan.distribution = world_distribution(base_dir, job.data.max_gap, job.data.fillers)
    if job.stage == 2:
        _resolve_rewards(plan)
    _plan_adapter(plan)
    if plan.source == "data":  # last: the one check that reads a whole file
        plan.data = _scan(plan)
    if job.stage == 1:
        eval_split_sizes(plan.examples, job.data.eval_split)
    return plan


def check_output(out) -> None:
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {path} is an existing file; expected a folder")
    if path.is_dir() and any(path.iterdir()) and not (path / CONFIG_FILE).is_file():
        raise InputError(f"--out {path} is a non-empty folder without {CONFIG_FILE}: refusing to replace it")


# ---- the source ---------------------------------------------------------------------------------------
def _source(job: TrainJob, base_dir: Path) -> str:
    spec = job.data
    if spec.path and spec.suite:
        raise InputError("give --data FILE or --suite, not both")
    source = "data" if spec.path else spec.suite or ("world" if (base_dir / TRAIN_INFO).is_file() else None)
    if source is None:
        extra = " or --suite scenes" if job.stage == 2 else ""
        raise InputError(f"{base_dir} was not trained on the painter world: pass --data FILE{extra}")
    if source == "scenes" and job.stage == 1:
        raise InputError("--suite scenes has no reference answers, only rewards: it is a Stage II source; "
                         "Stage I needs --data FILE (or the painter world)")
    world_only = [n for n, v in (("--fillers", spec.fillers), ("--max-gap", spec.max_gap)) if v is not None]
    if world_only and source != "world":
        raise InputError(f"{world_only[0]} is a painter-world option; this run's prompts come from {source}")
    if spec.image_size is not None and (source != "scenes" or not 28 <= spec.image_size <= 4096):
        raise InputError(f"--image-size {spec.image_size}: a scenes-suite option, from 28 to 4096 pixels")
    if spec.examples is not None and source == "data":
        raise InputError("--examples sets how many examples a suite generates; a data file has its own")
    if spec.loss_on == "claims" and source != "world":
        raise InputError("--loss-on claims needs the painter world's claim format: use --loss-on answer")
    return source


def _check_launcher(plan: Plan) -> None:
    """What `accelerate launch` set: FSDP is refused; its mixed precision bf16 turns --bf16 on; bf16 weights
    without DeepSpeed's fp32 masters get a note."""
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        raise InputError("FSDP is not supported by train-pvm (the adapter save reads whole tensors): use "
                         "configs/accelerate/deepspeed_zero2.yaml or multi_gpu.yaml")
    optim = plan.job.optim
    if os.environ.get("ACCELERATE_MIXED_PRECISION") == "bf16" and not optim.bf16:
        plan.job = replace(plan.job, optim=replace(optim, bf16=True))
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true")
    if plan.job.dtype in ("bfloat16", "float16") and not deepspeed:
        plan.notes.append(f"--dtype {plan.job.dtype} trains {plan.job.dtype} weights in place: updates below their "
                          "precision are lost (alpha may not move); the default float32 with --bf16 keeps fp32 weights")


def _check_optim(plan: Plan) -> None:
    optim = plan.job.optim
    if optim.warmup_steps >= optim.steps and optim.warmup_steps > 0:
        clipped = optim.steps // 10
        plan.notes.append(f"--warmup {optim.warmup_steps} is not below --steps {optim.steps}: the learning rate "
                          f"would never reach {optim.lr:g}; warm-up clipped to {clipped} steps (a tenth of the run)")
        plan.job = replace(plan.job, optim=replace(optim, warmup_steps=clipped))
    if isinstance(optim, StageIIConfig) and optim.beta != 0:
        raise InputError(f"beta {optim.beta:g}: a KL term needs a reference policy with the adapter attached, which "
                         "train-pvm does not build (TRL would load the bare base); use beta 0")
    if isinstance(optim, StageIIConfig) and (optim.batch_size * plan.processes) % optim.num_generations:
        raise InputError(f"--batch-size {optim.batch_size} x {plan.processes} process(es) = "
                         f"{optim.batch_size * plan.processes} completions per step is not a whole number of "
                         f"groups of --num-generations {optim.num_generations}")


def _resolve_rewards(plan: Plan) -> None:
    optim: StageIIConfig = plan.job.optim
    specs = optim.rewards or default_rewards(plan.source)
    plan.rewards = [resolve_reward(spec) for spec in specs]
    check_sources(plan.rewards, plan.source)
    plan.job = replace(plan.job, optim=replace(optim, rewards=tuple(specs)))


def _scan(plan: Plan) -> DataFile:
    stage1 = isinstance(plan.job.optim, StageIConfig)
    checks = [] if stage1 else [_has_image]
    for reward in plan.rewards:
        if reward.check is not None:
            checks.append(lambda record, check=reward.check: check(record.answer))
    need_answer = stage1 or any(r.needs_answer for r in plan.rewards)
    return scan_data(plan.job.data.path, need_answer, tuple(checks))


def _has_image(record) -> str | None:
    return None if record.images else "no image: Stage II prompts need one (PVM reads it)"


def eval_split_sizes(n: int, fraction: float) -> tuple[int, int]:
    """(train, eval) example counts for a held-out share; InputError when a side would be empty."""
    if not fraction:
        return n, 0
    held_out = round(fraction * n)
    if not 1 <= held_out <= n - 1:
        raise InputError(f"--eval-split {fraction:g} of {n} examples holds out {held_out}: need at least one "
                         "example held out and one to train on")
    return n - held_out, held_out


# ---- the adapter --------------------------------------------------------------------------------------
def _plan_adapter(plan: Plan) -> None:
    spec = plan.job.adapter
    if spec.init:
        given = spec.shape_fields()
        if given:
            raise InputError(f"--init loads a saved adapter with its own shape: drop --{given[0].replace('_', '-')}")
        plan.init_meta = read_adapter_meta(spec.init)
        _check_init_base(plan.init_meta["base"], plan, spec.init)
        return
    if spec.layers and spec.placement:
        raise InputError("give --layers or --placement, not both")
    n_layers = plan.text_config.num_hidden_layers
    if spec.placement in ("peak", "decay"):  # decided from the loaded base's measured profile
        if not 0 < spec.blocks < n_layers:
            raise InputError(f"cannot place {spec.blocks} blocks in a {n_layers}-layer model")
        return
    layers = strided_layers(n_layers, spec.blocks) if spec.placement == "strided" else spec.layers
    plan.pvm = pvm_config(spec, plan.text_config, layers)


def pvm_config(spec, text_config, layers) -> PVMConfig:
    """The new adapter's PVMConfig: a preset or scaled to the base, with the spec's overrides."""
    overrides = {k: v for k, v in (("block", spec.block), ("visual_source", spec.visual_source),
                                   ("alpha_init", spec.alpha_init), ("layers", layers)) if v is not None}
    n_layers = text_config.num_hidden_layers
    if spec.preset:
        config = PVMConfig.preset(spec.preset, **overrides)
    else:
        config = PVMConfig.for_model(text_config.hidden_size, n_layers, n_blocks=spec.blocks, **overrides)
    bad = [i for i in config.layers if i >= n_layers]
    if bad:
        raise InputError(f"layer {bad[0]} is outside the base: it has {n_layers} decoder layers (0..{n_layers - 1})")
    return config


def _check_init_base(saved: dict, plan: Plan, init: str) -> None:
    """The --init adapter's base has this base's architecture and sizes (the weights are checked on load)."""
    now = {"architecture": (plan.model_config.architectures or ["?"])[0], "hidden_size": plan.text_config.hidden_size,
           "num_layers": plan.text_config.num_hidden_layers}
    for key, value in now.items():
        if saved.get(key) != value:
            raise InputError(f"--init {init} was trained on a base with {key} {saved.get(key)}; "
                             f"{plan.base_dir} has {value}")
