"""The paper's insertion study on the default: PVM placed by Strided / Peak Attention / Max Decay (layers
derived from the baseline's measured attention profile, `pvm_probe.placement`), and the raw-vs-processed
visual input ablation, each trained with the shipped PVM's Stage I recipe (`RECIPE`: the Makefile's
STAGE1 as data), then the Blind Painter by quarter in the two settings of `fig_controls.py`, each adapter
also with PVM reading another scene's image (the control that tells an image-borne gain from a text-side
one) and with its gates off.

    python analyses/fig_placement.py [--smoke] [--scenes N] [--work DIR]
writes figures/placement.json and figures/placement.{png,svg}. Strategies that land on the same layers
are trained once; a row that is exactly a shipped adapter's run (same recipe, layers, visual source)
reuses it.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from figure_common import PAINT_SETTINGS, paint_metrics, save_figure

from pvm_probe.io import atomic_write_json
from pvm_probe.jobs import Job, open_job
from pvm_probe.placement import all_placements, layer_scores, measure_mass
from pvm_probe.plots.report import claims_by_quarter
from pvm_probe.suites import WorldSuite
from pvm_probe.train.config import AdapterSpec, DataSpec, StageIConfig, TrainJob
from pvm_probe.train.run import train
from pvm_probe.variants import adapter_name

# The shipped adapters' Stage I recipe (Makefile STAGE1); tests/test_train_cli.py checks the Makefile says so.
RECIPE = TrainJob(out="", optim=StageIConfig(steps=3000, batch_size=8, lr=3e-3, warmup_steps=20, seed=0,
                                               logging_steps=10, backbone_visual_dropout=0.5),
                  adapter=AdapterSpec(alpha_init=1.0), data=DataSpec(fillers=("said",), loss_on="answer"))
SMOKE = replace(RECIPE, optim=replace(RECIPE.optim, steps=2, batch_size=2, warmup_steps=0),
                data=replace(RECIPE.data, examples=16))
SHIPPED = {((1, 2), "embeddings"): "pvm-stage1", ((1, 2), "hidden:0"): "processed-control"}


def rows(placements: dict[str, tuple[int, ...]]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Row name -> (layers, visual source)."""
    out = {f"{name} {list(v)}": (v, "embeddings") for name, v in placements.items()}
    out[f"strided {list(placements['strided'])}, processed (hidden:0)"] = (placements["strided"], "hidden:0")
    return out


def adapter_for(layers: tuple[int, ...], source: str, work: Path, smoke: bool) -> str:
    """The shipped adapter that is exactly this run, or one trained here (once) with the recipe."""
    if not smoke and (layers, source) in SHIPPED:
        return SHIPPED[layers, source]
    out = work / f"layers{'_'.join(map(str, layers))}-{source.replace(':', '')}"
    if not (out / "pvm_model.safetensors").is_file():
        recipe = SMOKE if smoke else RECIPE
        train(replace(recipe, out=str(out), adapter=replace(recipe.adapter, layers=layers, visual_source=source)))
    return str(out)


def by_row(metrics: dict, adapters: dict[str, str]) -> dict:
    """The study's rows (strategies that land on the same layers share an adapter), each with its controls."""
    def summary(m: dict) -> dict:
        return {"accuracy": m["primary"], "accuracy_by_quartile": m["primary_by_quarter"]}

    table = {"baseline": summary(metrics["variants"]["baseline"])}
    for row, adapter in adapters.items():
        for variant, m in metrics["variants"].items():
            root, _, control = variant.partition(" | ")
            if root == adapter_name(adapter):
                table[row + (f" | {control}" if control else "")] = summary(m)
    return table


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", help="default: figures/ (a --smoke run: out/smoke/)")
    parser.add_argument("--work", default="out/placement", help="where the trained adapters go")
    args = parser.parse_args(argv)
    args.out = args.out or ("out/smoke" if args.smoke else "figures")
    args.scenes = 2 if args.smoke else args.scenes
    work = Path(args.out) / "adapters" if args.smoke else Path(args.work)
    model, processor, _, _ = open_job(Job(adapters=[]))
    mass = measure_mass(model, processor, WorldSuite(scenes=2 if args.smoke else 16, seed=2))  # [L, T]
    placements = all_placements(mass, args.blocks)
    adapters = {name: adapter_for(layers, source, work, args.smoke) for name, (layers, source) in
                rows(placements).items()}
    table = {}
    for setting, length in PAINT_SETTINGS.items():
        metrics = paint_metrics(args, list(dict.fromkeys(adapters.values())), length,
                                name=f"placement-{setting.split()[0]}")
        table[setting] = by_row(metrics, adapters)
        fig = claims_by_quarter(metrics).static()
        fig.suptitle(f"Where to put PVM ({setting}): " + ", ".join(f"{k} {list(v)}" for k, v in placements.items()),
                     fontsize=9)
        save_figure(fig, args.out, "placement" if length is None else "placement_short")
    result = {"placements": {k: list(v) for k, v in placements.items()}, "profile": layer_scores(mass),
              "recipe": (SMOKE if args.smoke else RECIPE).to_dict(), "adapters": adapters, "scenes": args.scenes,
              "table": table}
    atomic_write_json(Path(args.out) / "placement.json", result)
    for setting, variants in table.items():
        print(f"\n{setting}")
        for name, r in variants.items():
            quarters = " ".join(f"{100 * q:5.1f}" for q in r["accuracy_by_quartile"])
            print(f"  {name:42s} {100 * r['accuracy']:5.1f}   Q1-Q4 {quarters}")
    return result


if __name__ == "__main__":
    main()
