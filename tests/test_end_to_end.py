"""A researcher's whole path on a saved tiny checkpoint of every family, with torchvision absent: Stage I on
their own JSONL, Stage II with the exact-answer reward, `info`, then `report` (scenes suite and their own
images suite) with the baseline and the trained adapter side by side, `probe` and `paint`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from plotly.offline import get_plotlyjs

from pvm_probe.zoo import ARCHS, save_tiny_checkpoint

pytestmark = pytest.mark.slow  # fresh interpreters, three families: `make test-all`
SECTIONS = ("claims_by_quarter", "mass_vs_position", "claim_mass_by_quarter", "accuracy_vs_mass", "logit_lens",
            "pvm_gates", "retrieval_overlay", "training_curves")


def cli(*argv: str) -> str:
    """`pvm-probe ARGV` in a fresh process where torchvision cannot be imported; its stdout."""
    code = ("import sys; sys.modules['torchvision'] = None; from pvm_probe.cli import main; "
            f"sys.exit(main({list(argv)!r}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Images with questions and answers (training data), and the same images as an images-suite JSONL."""
    from pvm_probe.suites.scenes import make_shape_scene, render_shapes
    from pvm_probe.suites.scenes.words import SCENE_WORDS

    root = tmp_path_factory.mktemp("e2e")
    train, mine = [], []
    for i in range(4):
        scene = make_shape_scene(i)  # training seeds (< 1,000,000)
        render_shapes(scene, 64).save(root / f"img{i}.png")
        shape = scene.objects[0].shape
        train.append({"image": f"img{i}.png", "question": "how many shapes are there",
                      "answer": f"there are {len(scene.objects)} shapes"})
        mine.append({"image": f"img{i}.png", "prompt": "Describe the image.", "objects": [shape, "person"]})
    Image.new("RGB", (40, 30), (200, 30, 30)).save(root / "odd.png")  # another size and aspect
    mine.append({"image": "odd.png", "prompt": "What is here?"})
    for name, rows in (("train.jsonl", train), ("mine.jsonl", mine)):
        (root / name).write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    words = [*SCENE_WORDS, "how", "many", "shapes", "there", "person", "describe", "what", "here"]
    return root, words


@pytest.mark.parametrize("arch", ARCHS)
def test_train_on_your_data_then_report_on_your_model(arch, workspace, tmp_path):
    root, words = workspace
    base = save_tiny_checkpoint(arch, tmp_path / arch, words)
    stage1, stage2 = tmp_path / "pvm-s1", tmp_path / "pvm-s2"
    out = cli("train-pvm", "--base", str(base), "--data", str(root / "train.jsonl"), "--out", str(stage1),
              "--steps", "3", "--batch-size", "2", "--layers", "1,3", "--lr", "1e-2", "--warmup", "0")
    assert f"wrote adapter to {stage1}" in out
    cli("train-pvm", "--stage", "2", "--base", str(base), "--init", str(stage1), "--data", str(root / "train.jsonl"),
        "--reward", "exact", "--out", str(stage2), "--steps", "1", "--batch-size", "4", "--num-generations", "4",
        "--max-completion-length", "4")
    info = cli("info", str(stage2))
    assert "alpha        layer 1: " in info and "layer 3: " in info and "\n  job.optim.rewards: " in info

    scenes = ["--scenes", "3", "--max-new-tokens", "16", "--image-size", "64", "--batch-size", "2"]
    cli("report", "--base", str(base), "--suite", "scenes", "--pvm", str(stage1), *scenes, "--out", str(tmp_path / "r"))
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["schema_version"] == 2 and metrics["suite"] == "scenes"
    assert list(metrics["variants"]) == ["baseline", "pvm-s1", "pvm-s1 | gates off", "pvm-s1 | swapped image"]
    assert metrics["variants"]["pvm-s1 | gates off"]["claims_by_quarter"] == metrics["variants"]["baseline"][
        "claims_by_quarter"]  # alpha = 0 is the backbone
    for name in SECTIONS:
        assert (tmp_path / "r" / f"{name}.png").is_file(), name
    page = (tmp_path / "r" / "report.html").read_text().replace(get_plotlyjs(), "")  # its own text, not plotly.js's
    assert "explorer-data" in page and "tuned lens" in page.lower()
    assert not any(word in page for word in ("painter", "Blind Painter", "r0c0", "window of recent tokens"))

    cli("report", "--base", str(base), "--data", str(root / "mine.jsonl"), "--pvm", str(stage2), "--max-new-tokens",
        "12", "--out", str(tmp_path / "mine"))
    mine = json.loads((tmp_path / "mine" / "metrics.json").read_text())
    assert mine["suite"] == "images" and mine["variants"]["baseline"]["requests"] == 5
    assert mine["metric"]["name"] == "hallucination rate"
    assert "pvm-s2 | swapped image" in mine["variants"]

    assert "scenes suite, error rate (%)" in cli("probe", "--base", str(base), "--pvm", str(stage1), *scenes)
    assert "pvm-s1" in cli("paint", "--base", str(base), "--pvm", str(stage1), *scenes, "--gates-off")
