"""The variants a run compares on one base: the baseline, adapters, their controls, training-free remedies.

    baseline                          the base as it is
    <adapter>                         a PVM (or control) adapter attached
    <adapter> | gates off             the same with alpha = 0 in every block: must equal the baseline
    <adapter> | swapped image         PVM reads another request's image while the backbone sees the right one
                                      (request i reads request i + 1's): a gain that flows from the image vanishes
    <arm>                             a training-free remedy (VCD, PAI, MemVR) on the baseline

A variant is plain data (it goes into `run.json`); `applied(variant, model)` puts it on a loaded model and
always takes it off again. The swapped image needs the partner requests' inputs, so the runner applies it
per batch (`PVMHandle.swapped_visual`).
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .checkpoints import SHIPPED_ADAPTERS, read_adapter_meta, resolve_adapter
from .errors import InputError

CONTROLS = {"gates_off": "gates off", "swapped_image": "swapped image"}


@dataclass(frozen=True)
class Variant:
    name: str
    adapter: str | None = None  # adapter directory, or a shipped adapter's name
    control: str | None = None  # one of CONTROLS
    arm: str | None = None  # a training-free remedy (pvm_probe.remedies.ARMS)
    options: dict = field(default_factory=dict)  # the arm's settings

    @property
    def kind(self) -> str:
        return self.control or self.arm or ("adapter" if self.adapter else "baseline")

    def to_dict(self) -> dict:
        return asdict(self)


BASELINE = Variant("baseline")


def adapter_name(adapter) -> str:
    """A shipped adapter's name, or the directory's own name."""
    path = resolve_adapter(adapter)
    return path.name if path.parent == SHIPPED_ADAPTERS else Path(str(adapter)).name or str(path)


def adapter_variants(adapter, controls: bool = True) -> list[Variant]:
    """The adapter, and for a memory block (PVM, or PVM on processed states) its gates-off and swapped-image
    controls; the MLP control has no image to swap."""
    path = str(resolve_adapter(adapter))
    name = adapter_name(adapter)
    variants = [Variant(name, adapter=path)]
    if controls and read_adapter_meta(path)["pvm"]["block"] == "pvm":
        variants += [Variant(f"{name} | {label}", adapter=path, control=c) for c, label in CONTROLS.items()]
    return variants


def plan(adapters=(), controls: bool = True, arms=(), baseline: bool = True) -> list[Variant]:
    """The variants of a comparison, in report order; duplicate names are refused."""
    variants = [BASELINE] if baseline else []
    for adapter in adapters:
        variants += adapter_variants(adapter, controls)
    variants += [arm if isinstance(arm, Variant) else Variant(arm, arm=arm) for arm in arms]
    names = [v.name for v in variants]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"two variants would be named {duplicates[0]!r}: give adapters distinct directory names")
    return variants


@contextmanager
def applied(variant: Variant, model):
    """Put `variant` on `model` (yields the PVM handle or None); everything comes off on exit, also on error."""
    from .inject import load_pvm

    with ExitStack() as stack:
        handle = None
        if variant.adapter:
            handle = load_pvm(model, variant.adapter)
            stack.callback(handle.remove)
        if variant.control == "gates_off":
            stack.enter_context(handle.gates_off())
        if variant.arm:
            from .remedies import ARMS

            if variant.arm not in ARMS:
                raise InputError(f"unknown remedy {variant.arm!r}; known: {', '.join(sorted(ARMS))}")
            stack.enter_context(ARMS[variant.arm](model, **variant.options))
        yield handle
