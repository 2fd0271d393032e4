"""The variants a run compares on one base: the baseline, adapters, their controls, training-free remedies.

    baseline                          the base as it is
    <adapter>                         a PVM (or control) adapter attached
    <adapter> | gates off             the same with alpha = 0 in every block: must equal the baseline
    <adapter> | swapped image         PVM reads another request's image while the backbone sees the right one
                                      (request i reads request i + 1's): a gain that flows from the image vanishes
    <remedy>                          a training-free remedy (registry.REMEDIES: VCD, PAI, MemVR, ...) on the baseline

A variant is plain data (it goes into `run.json`); `applied(variant, model)` puts it on a loaded model and
always takes it off again. The swapped image needs the partner requests' inputs, so the runner applies it
per batch (`PVMHandle.swapped_visual`).
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .checkpoints import SHIPPED_ADAPTERS, read_adapter_meta, resolve_adapter
from .config import read_json
from .errors import InputError
from .inject import load_pvm
from .registry import REMEDIES

CONTROLS = {"gates_off": "gates off", "swapped_image": "swapped image"}


@dataclass(frozen=True)
class Variant:
    name: str
    adapter: str | None = None  # adapter directory, or a shipped adapter's name
    control: str | None = None  # one of CONTROLS
    remedy: str | None = None  # a training-free remedy's registry name (registry.REMEDIES)
    options: dict = field(default_factory=dict)  # the remedy's settings
    about: dict = field(default_factory=dict)  # an adapter's block, size and training, for the report (adapter_about)

    @property
    def kind(self) -> str:
        return self.control or self.remedy or ("adapter" if self.adapter else "baseline")

    def to_dict(self) -> dict:
        return asdict(self)


BASELINE = Variant("baseline")


def adapter_name(adapter) -> str:
    """A shipped adapter's name, or the directory's own name."""
    path = resolve_adapter(adapter)
    return path.name if path.parent == SHIPPED_ADAPTERS else Path(str(adapter)).name or str(path)


# The training-log keys the report draws: the loss and (Stage II) the rewards.
CURVE_KEYS = ("step", "loss")


def adapter_about(adapter) -> dict:
    """What the report needs to know of an adapter, kept in run.json so that the report never reads the
    adapter's folder again: its block, visual source, layers, size, training summary and curves."""
    path = resolve_adapter(adapter)
    meta = read_adapter_meta(path, check_weights=False)
    provenance = meta.get("provenance") or {}
    log = path / "train_log.json"
    history = read_json(log) if log.is_file() else []
    curves = [{k: v for k, v in entry.items() if k in CURVE_KEYS or k.startswith("reward")}
              for entry in history if isinstance(entry, dict) and "step" in entry]
    return {"block": meta["pvm"]["block"], "visual_source": meta["pvm"]["visual_source"],
            "layers": meta["pvm"]["layers"], "num_parameters": meta["num_parameters"],
            "training": {k: provenance.get(k) for k in ("stage", "trainer", "init", "train_seconds")},
            "curves": curves}


def adapter_variants(adapter, controls: bool = True) -> list[Variant]:
    """The adapter, and for a memory block (PVM, or PVM on processed states) its gates-off and swapped-image
    controls; the MLP control has no image to swap."""
    path = str(resolve_adapter(adapter))
    name, about = adapter_name(adapter), adapter_about(adapter)
    variants = [Variant(name, adapter=path, about=about)]
    if controls and about["block"] == "pvm":
        variants += [Variant(f"{name} | {label}", adapter=path, control=c, about=about) for c, label in CONTROLS.items()]
    return variants


def plan(adapters=(), controls: bool = True, remedies=(), baseline: bool = True) -> list[Variant]:
    """The variants of a comparison, in report order; duplicate names are refused."""
    variants = [BASELINE] if baseline else []
    for adapter in adapters:
        variants += adapter_variants(adapter, controls)
    variants += [r if isinstance(r, Variant) else remedy_variant(r) for r in remedies]
    names = [v.name for v in variants]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"two variants would be named {duplicates[0]!r}: give adapters distinct directory names")
    return variants


def remedy_variant(text: str) -> Variant:
    """`vcd` (the official defaults) or `vcd:alpha=2,noise_step=999` -> a variant named as written. Each option
    is converted to its type now (`Remedy.parse_options`), before any model loads."""
    name, _, given = text.partition(":")
    try:
        options = REMEDIES.get(name.strip()).parse_options(given)
    except InputError as err:
        raise InputError(f"--remedy {text}: {err}") from None
    return Variant(text, remedy=name.strip(), options=options)


@dataclass
class Applied:
    handle: object = None  # the PVM handle (None: no adapter)
    remedy: object = None  # the active remedy (None: none)


@contextmanager
def applied(variant: Variant, model):
    """Put `variant` on `model` (yields what is on: `Applied`); everything comes off on exit, also on error."""
    with ExitStack() as stack:
        on = Applied()
        if variant.adapter:
            on.handle = load_pvm(model, variant.adapter)
            stack.callback(on.handle.remove)
        if variant.control == "gates_off":
            stack.enter_context(on.handle.gates_off())
        if variant.remedy:
            on.remedy = stack.enter_context(REMEDIES.get(variant.remedy)(model, **variant.options))
        yield on
