"""Causal interventions with nnsight on the default world (teacher-forced reference answers, claim tokens
scored by quarter): (1) activation patching: PVM reads another scene's image, and one block at a time gets
back its clean-run injection; (2) the image zeroed at the input of each decoder layer, with and without PVM.

    python analyses/fig_interventions.py [--smoke] [--scenes N] [--adapter pvm-stage1]
writes figures/interventions.json and figures/{patching,image_zeroing}.{png,svg}.
"""

from __future__ import annotations

import argparse

from figure_common import save_figure

from pvm_probe import load_base, load_pvm
from pvm_probe.io import atomic_write_json
from pvm_probe.plots.report import by_quarter
from pvm_probe.probes import patching_study, zeroing_study
from pvm_probe.suites import WorldSuite
from pvm_probe.suites.inputs import chat_inputs
from pvm_probe.suites.world.suite import forced_claims


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=16)
    parser.add_argument("--adapter", default="pvm-stage1")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", help="default: figures/ (a --smoke run: out/smoke/)")
    args = parser.parse_args(argv)
    args.out = args.out or ("out/smoke" if args.smoke else "figures")
    scenes = 2 if args.smoke else args.scenes
    model, processor = load_base()
    handle = load_pvm(model, args.adapter)
    suite = WorldSuite(scenes=scenes)
    forced = forced_claims(suite, processor, range(scenes))
    partners = chat_inputs(processor, [suite.request((i + 1) % scenes) for i in range(scenes)], model.device)
    result = {"patching": patching_study(handle, forced, partners), "zeroing": zeroing_study(handle, forced),
              "adapter": args.adapter, "scenes": scenes}
    save_figure(by_quarter(result["patching"], "claim tokens correct (%)", f"{args.adapter}: activation patching")
                .static(), args.out, "patching")
    save_figure(by_quarter(result["zeroing"], "claim tokens correct (%)", "the image zeroed from one layer on").static(),
                args.out, "image_zeroing")
    atomic_write_json(f"{args.out}/interventions.json", result)
    for name, table in (("patching", result["patching"]), ("zeroing", result["zeroing"])):
        print(f"\n{name}")
        for row, values in table.items():
            print(f"  {row:52s} " + " ".join(f"{100 * v:5.1f}" for v in values))
    return result


if __name__ == "__main__":
    main()
