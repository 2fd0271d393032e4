"""Stage I and Stage II under `accelerate launch` with 2 CPU processes (gloo) match a 1-process run: the same
Stage I losses (token-weighted over the global batch), the same Stage II completions, rewards and losses (one
group of 4 completions split over the two processes), the same adapters."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train_stage2 import WORDS

from pvm_probe.zoo import save_tiny_checkpoint

TESTS = Path(__file__).resolve().parent
ANSWERS = ["2", "the answer is 3", "1", "the answer is red 2 3 1"]  # different lengths: weighting must be global
DRIVER = """
import sys
from pvm_probe.cli import main
stage1, stage2 = sys.argv[1].split(" "), sys.argv[2].split(" ")
sys.exit(main(stage1) or main(stage2))
"""


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("dist")
    save_tiny_checkpoint("qwen3_vl", root / "base", WORDS)
    rows = []
    for i, answer in enumerate(ANSWERS):
        Image.new("RGB", (64, 48 + 8 * i), (50 * i, 120, 200 - 40 * i)).save(root / f"s{i}.png")
        rows.append({"image": f"s{i}.png", "question": "how many shapes are there", "answer": answer})
    (root / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (root / "driver.py").write_text(DRIVER)
    return root


def _train(root: Path, out: str, processes: int) -> tuple[list[dict], list[dict], dict]:
    common = f"--base {root / 'base'} --data {root / 'd.jsonl'} --steps 3 --log-every 1"
    stage1 = (f"train-pvm {common} --out {root / out / 's1'} --batch-size {4 // processes} --layers 1 --lr 1e-2 "
              "--warmup 0")
    stage2 = (f"train-pvm {common} --out {root / out / 's2'} --stage 2 --init {root / out / 's1'} --batch-size "
              f"{4 // processes} --num-generations 4 --reward test_train_stage2:variety --max-completion-length 8 "
              "--lr 1e-2")
    # accelerate's --cpu multi-process path needs MPI; --multi_gpu on a machine without GPUs starts torch
    # elastic processes that the Trainers join with the gloo backend on the CPU.
    launch = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"] if processes > 1 else []
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, *launch, str(root / "driver.py"), stage1, stage2], capture_output=True,
                          text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    logs = [json.loads((root / out / s / "train_log.json").read_text()) for s in ("s1", "s2")]
    return *[[e for e in log if "loss" in e] for log in logs], load_file(root / out / "s2" / "pvm_model.safetensors")


@pytest.mark.slow
def test_two_cpu_processes_match_one(fixture_dir):
    sft1, grpo1, adapter1 = _train(fixture_dir, "one", 1)
    sft2, grpo2, adapter2 = _train(fixture_dir, "two", 2)
    assert len(sft1) == len(sft2) == 3 and len(grpo1) == len(grpo2) == 3
    assert [e["loss"] for e in sft1] == pytest.approx([e["loss"] for e in sft2], abs=1e-5)
    assert sft1[0]["loss"] != pytest.approx(sft1[-1]["loss"], abs=1e-3)  # it really trained
    for key in ("reward", "rewards/variety/mean", "rewards/variety/std", "loss", "grad_norm",
                "completions/mean_length"):
        assert [e[key] for e in grpo1] == pytest.approx([e[key] for e in grpo2], rel=1e-4, abs=1e-5), key
    assert all(e["rewards/variety/std"] > 0 for e in grpo1)  # every step had an advantage to follow
    # Adam divides by sqrt(v): an element whose gradient is ~0 can move by up to lr (1e-2) on float noise from the
    # all-reduce, so the weights are compared to a tenth of one step
    for name, tensor in adapter1.items():
        torch.testing.assert_close(adapter2[name], tensor, atol=1e-3, rtol=0)
