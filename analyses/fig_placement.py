"""The paper's insertion study on the default: PVM placed by Strided / Peak Attention / Max Decay (layers
derived from the baseline's measured attention profile, `pvm_probe.placement`), and the raw-vs-processed
visual input ablation, each trained with the shipped PVM's Stage I recipe (same layers count, data and
budget), then the Blind Painter by quarter in the two settings of `fig_controls.py`, each adapter also with
PVM reading another scene's image (the control that tells an image-borne gain from a text-side one).

    python analyses/fig_placement.py [--smoke] [--scenes N] [--work DIR]
writes figures/placement.json and figures/placement.{png,svg}. Strategies that land on the same layers
are trained once and reported under each name.
"""

from __future__ import annotations

import argparse
import shlex
from contextlib import nullcontext
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from figure_common import PAINT_SETTINGS, save_figure
from tqdm.auto import tqdm

from pvm_probe.checkpoints import load_pvm, read_adapter_meta
from pvm_probe.cli import main as cli
from pvm_probe.io import atomic_write_json
from pvm_probe.loading import load_base
from pvm_probe.painter import paint_with_controls
from pvm_probe.placement import all_placements, layer_scores, world_mass

RECIPE_FROM = "pvm-stage1"  # every run repeats this adapter's Stage I command, with its own layers
SHIPPED = ("pvm-stage1", "processed-control")  # reused when a row is exactly their run
PLACE_ARGS = {"--out", "--layers", "--placement", "--visual-source"}


def _training_args(adapter: str) -> list[str]:
    """An adapter's train-pvm arguments (from its provenance), minus output, placement and visual source."""
    words = shlex.split(read_adapter_meta(adapter)["provenance"]["command"])[2:]  # drop "pvm-probe train-pvm"
    keep = []
    while words:
        word = words.pop(0)
        if word in PLACE_ARGS:
            words.pop(0)
        else:
            keep.append(word)
    return keep


def recipe(smoke: bool) -> list[str]:
    return _training_args(RECIPE_FROM) + (["--steps", "2", "--examples", "16", "--batch-size", "2"] if smoke else [])


def shipped_twin(layers: tuple[int, ...], source: str) -> str | None:
    """The shipped adapter trained by exactly this row's command (same recipe, layers, visual source)."""
    for name in SHIPPED:
        meta = read_adapter_meta(name)
        if (tuple(meta["pvm"]["layers"]) == tuple(layers) and meta["pvm"]["visual_source"] == source
                and _training_args(name) == recipe(smoke=False)):
            return name
    return None


def runs(placements: dict[str, tuple[int, ...]]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Row name -> (layers, visual source)."""
    rows = {f"{name} {list(v)}": (v, "embeddings") for name, v in placements.items()}
    rows[f"strided {list(placements['strided'])}, processed (hidden:0)"] = (placements["strided"], "hidden:0")
    return rows


def train(layers: tuple[int, ...], source: str, work: Path, smoke: bool) -> Path | str:
    """The adapter for one row: the shipped one when it is exactly this run, else trained here (once)."""
    twin = None if smoke else shipped_twin(layers, source)
    if twin:
        return twin
    out = work / f"layers{'_'.join(map(str, layers))}-{source.replace(':', '')}"
    if not (out / "pvm_model.safetensors").is_file():
        extra = ["--layers", ",".join(map(str, layers)), "--visual-source", source]
        if cli(["train-pvm", "--out", str(out), *recipe(smoke), *extra]):
            raise RuntimeError(f"training PVM in layers {list(layers)} ({source}) failed")
    return out


def paint_all(model, processor, adapters: dict, scenes: int) -> dict:
    table = {}
    for setting, length in PAINT_SETTINGS.items():
        for name, adapter in tqdm(adapters.items(), desc=setting):
            with load_pvm(model, adapter) if adapter else nullcontext() as handle:
                row = {k: v for k, v in paint_with_controls(model, processor, handle, scenes=scenes,
                                                            length=length).items()
                       if k in ("accuracy", "accuracy_by_quartile")}
                if handle:  # the image control: PVM reads another scene's image
                    row["accuracy_by_quartile_swapped"] = paint_with_controls(
                        model, processor, handle, scenes=scenes, length=length, swap_pvm_image=True)["accuracy_by_quartile"]
            table.setdefault(setting, {})[name] = row
    return table


def plot(table: dict, placements: dict):
    fig, axes = plt.subplots(1, len(table), figsize=(12, 3.8), sharey=True)
    for ax, (setting, rows) in zip(axes, table.items(), strict=True):
        width = 0.8 / len(rows)
        for i, (name, r) in enumerate(rows.items()):
            ax.bar(np.arange(4) + (i - (len(rows) - 1) / 2) * width, [100 * q for q in r["accuracy_by_quartile"]],
                   width, label=name)
        ax.set_xticks(range(4), ["Q1", "Q2", "Q3", "Q4"])
        ax.set_title(setting, fontsize=9)
    axes[0].set_ylabel("claims correct (%)")
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle("Where to put PVM: " + ", ".join(f"{k} {list(v)}" for k, v in placements.items()), fontsize=9)
    fig.tight_layout()
    return fig


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default="figures")
    parser.add_argument("--work", default="out/placement", help="where the trained adapters go")
    args = parser.parse_args(argv)
    scenes = 4 if args.smoke else args.scenes
    work = Path(args.out) / "adapters" if args.smoke else Path(args.work)
    model, processor = load_base()
    mass = world_mass(model, processor, 4 if args.smoke else 16)  # [L, T]
    placements = all_placements(mass, args.blocks)
    adapters = {"baseline": None} | {name: train(layers, source, work, args.smoke)
                                      for name, (layers, source) in runs(placements).items()}
    table = paint_all(model, processor, adapters, scenes)
    result = {"placements": {k: list(v) for k, v in placements.items()}, "profile": layer_scores(mass),
              "recipe": recipe(args.smoke), "adapters": {k: str(v) for k, v in adapters.items()}, "scenes": scenes,
              "table": table}
    atomic_write_json(Path(args.out) / "placement.json", result)
    for setting, rows in table.items():
        print(f"\n{setting}")
        for name, r in rows.items():
            quarters = " ".join(f"{100 * q:5.1f}" for q in r["accuracy_by_quartile"])
            swapped = " ".join(f"{100 * q:5.1f}" for q in r.get("accuracy_by_quartile_swapped", []))
            print(f"  {name:40s} {100 * r['accuracy']:5.1f}   Q1-Q4 {quarters}" + (f"   swapped {swapped}" if swapped else ""))
    save_figure(plot(table, placements), args.out, "placement")
    return result


if __name__ == "__main__":
    main()
