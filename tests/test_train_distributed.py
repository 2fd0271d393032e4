"""Stage I under `accelerate launch` with 2 CPU processes (gloo) matches a 1-process run."""

import json
import subprocess
import sys

import pytest

from pvm_probe.world import build_processor, make_scene, render
from pvm_probe.world.model import build_model

ANSWERS = ["p0 r0c0 red circle n1", "p0 r0c0 red circle n1 n2 n3", "p0 r0c0 red circle",
           "p0 r0c0 red circle n1 n2 n3 n4 n5"]  # different lengths: token-weighting must be global


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    processor = build_processor()
    model = build_model(processor, hidden=64, layers=2)
    model.save_pretrained(root / "base")
    processor.save_pretrained(root / "base")
    rows = []
    for i, answer in enumerate(ANSWERS):
        render(make_scene(i)).save(root / f"s{i}.png")
        rows.append({"image": f"s{i}.png", "question": "paint o0 g1 fcount x1", "answer": answer})
    (root / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return root


def _train(root, out, batch_size, launcher):
    args = ["-m", "pvm_probe.cli", "train-pvm", "--base", str(root / "base"), "--data", str(root / "d.jsonl"),
            "--out", str(root / out), "--steps", "4", "--batch-size", str(batch_size), "--layers", "1",
            "--lr", "1e-2", "--warmup", "0", "--log-every", "1"]
    subprocess.run([sys.executable, *launcher, *args], check=True, capture_output=True, timeout=300)
    log = json.loads((root / out / "train_log.json").read_text())
    return [entry["loss"] for entry in log if "loss" in entry]


@pytest.mark.slow
def test_two_cpu_processes_match_one(fixture_dir):
    single = _train(fixture_dir, "one", 4, [])
    # accelerate's --cpu multi-process path needs MPI; --multi_gpu on a machine without GPUs starts
    # torch elastic processes that the Trainer joins with the gloo backend on the CPU.
    launch = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"]
    double = _train(fixture_dir, "two", 2, launch)
    assert len(single) == len(double) == 4
    assert single == pytest.approx(double, abs=1e-5)
    assert single[0] != pytest.approx(single[-1], abs=1e-3)  # it really trained
