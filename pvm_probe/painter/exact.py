"""`pvm-probe paint`: the Blind Painter on held-out painter-world scenes, with the paper's controls.

Loads the base (shipped baseline by default) and optionally an adapter; `gates_off` zeroes every
alpha (the causal check) and `swap_pvm_image` gives PVM another held-out scene's image (its batch
neighbour's) while the backbone sees the right one: if the gain flows from the image, it must vanish.
`forced` writes the text-only stretches for the model (teacher forcing) and scores its claims, so
lengths beyond what the model would write itself can be tested."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from ..checkpoints import load_pvm, resolve_adapter
from ..loading import BASELINE_DIR, load_base
from ..world.forced import paint_forced
from ..world.paint import DEFAULT_FILLER, DEFAULT_LONG, paint


def paint_with_controls(model, processor, handle, *, scenes: int, seed: int = 0, length: int | None = None,
                        filler: str | None = None, batch_size: int = 32, forced: bool = False,
                        gates_off: bool = False, swap_pvm_image: bool = False) -> dict:
    """Paint with an already loaded model (and adapter handle), under the chosen controls."""
    if (gates_off or swap_pvm_image) and handle is None:
        raise ValueError("--gates-off and --swap-pvm-image need an adapter (--pvm)")
    if swap_pvm_image and batch_size < 2:
        raise ValueError("--swap-pvm-image takes each scene's neighbour in the batch: use --batch-size >= 2")
    run = paint_forced if forced else paint
    with ExitStack() as controls:
        if gates_off:
            controls.enter_context(handle.gates_off())
        if swap_pvm_image:
            controls.enter_context(handle.rolled_visual())
        result = run(model, processor, scenes=scenes, seed=seed, length=DEFAULT_LONG if length is None else length,
                     filler=filler or DEFAULT_FILLER, batch_size=batch_size)
    result.update(gates_off=gates_off, swap_pvm_image=swap_pvm_image, forced=forced)
    return result


def run_paint(args) -> dict:
    base_dir = Path(args.base) if args.base else BASELINE_DIR
    model, processor = load_base(base_dir)
    handle = load_pvm(model, args.pvm) if args.pvm else None
    result = paint_with_controls(model, processor, handle, scenes=args.scenes, seed=args.seed, length=args.length,
                                 filler=args.filler, batch_size=args.batch_size, forced=args.forced,
                                 gates_off=args.gates_off, swap_pvm_image=args.swap_pvm_image)
    result.update(base=str(base_dir), pvm=str(resolve_adapter(args.pvm)) if args.pvm else None)
    return result
