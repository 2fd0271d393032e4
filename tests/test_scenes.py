"""The scenes suite: claim scoring and scene rendering; tiny checkpoints of the three real classes end to end
through `paint`, batching with PVM, the torchvision-free processor and one-line errors."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from pvm_probe import processors as processor_module
from pvm_probe.cli import main
from pvm_probe.loading import load_base
from pvm_probe.processors import ImageOnlyQwenProcessor, load_processor
from pvm_probe.runner import RunConfig, run
from pvm_probe.suites.scenes import (
    ScenesSuite,
    ShapeObject,
    ShapeScene,
    make_shape_scene,
    render_shapes,
    score_description,
)
from pvm_probe.suites.scenes.words import PALETTE, REGIONS
from pvm_probe.variants import plan
from pvm_probe.zoo import ARCHS


def obj(shape, colour, region):
    index = REGIONS.index(region)
    row, col = divmod(index, 3)
    return ShapeObject(shape, colour, index, ((col + 0.5) / 3, (row + 0.5) / 3), 0.1)


SCENE = ShapeScene(seed=0, objects=(obj("star", "red", "top left"), obj("triangle", "green", "top right"),
                               obj("star", "red", "center"), obj("circle", "blue", "bottom right")))
CORRECT = ("There are two red stars, one in the top left corner and one in the center. A blue circle sits in "
           "the bottom right. There is a green triangle at the top right. There are no hearts, and there "
           "isn't a single cross. Altogether the image holds four shapes on a white background.")


def summarize(scores):
    """Per-quarter error counts of object and attribute claims, CHAIR_s and CHAIR_i (a hand tally)."""
    table = {k: [0] * 4 for k in ("object", "attribute")}
    for score in scores:
        for c in score["claims"]:
            if c["kind"] in table and not c["correct"]:
                table[c["kind"]][c["quarter"]] += 1
    objects = [c for s in scores for c in s["claims"] if c["kind"] == "object"]
    return {"object": table["object"], "attribute": table["attribute"],
            "chair_s": sum(any(c["kind"] == "object" and not c["correct"] for c in s["claims"]) for s in scores)
            / len(scores), "chair_i": sum(not c["correct"] for c in objects) / max(1, len(objects))}


def claims(text, kind=None):
    found = score_description(SCENE, text)["claims"]
    return [c for c in found if kind in (None, c["kind"])]


def errors(text, kind=None):
    return [c["text"] for c in claims(text, kind) if not c["correct"]]


# ---- scoring ---------------------------------------------------------------------------------------
def test_a_fully_correct_answer_has_claims_of_every_kind_and_no_errors():
    found = claims(CORRECT)
    assert {c["kind"] for c in found} == {"object", "attribute", "count", "position"}
    assert errors(CORRECT) == []
    summary = summarize([score_description(SCENE, CORRECT)])
    assert summary["chair_s"] == 0 and summary["chair_i"] == 0 and summary["attribute"] == [0] * 4


def test_a_hallucination_at_the_end_shows_up_only_in_the_last_quarter():
    summary = summarize([score_description(SCENE, CORRECT + " Finally, a purple heart.")])
    assert summary["object"] == [0, 0, 0, 1] and summary["attribute"] == [0, 0, 0, 1] and summary["chair_s"] == 1


def test_each_kind_of_error_is_caught():
    assert errors("A blue star.", "attribute") == ["blue star"]
    assert errors("Three red stars and one star.", "count") == ["three red stars", "one star"]
    assert errors("A blue circle is in the top left.", "position") == ["circle top left"]
    assert errors("Next to a dog stand two trees and a pentagon.", "object") == ["dog", "trees", "pentagon"]
    assert errors("Five shapes.", "count") == ["five shapes"] and errors("Four objects.", "count") == []
    assert errors("A green circle at the top.") == ["green circle", "circle top"]  # "top": the whole top row
    assert errors("A green triangle at the top.") == []


def test_synonyms_plurals_and_spellings():
    text = ("A pair of crimson stars. A navy disc in the lower-right corner. An emerald pyramid in the upper "
            "right. 2 scarlet stars.")
    assert errors(text) == [] and len(claims(text, "count")) == 2 and len(claims(text, "position")) == 2
    assert errors("A scarlet disc and three rhombi.") == ["scarlet disc", "three rhombi", "rhombi"]


def test_negations_make_no_claims_and_scoring_is_deterministic():
    assert claims("There are no hearts. There isn't a single cross. Not one dog. No hexagons or blue hearts.") == []
    assert errors("There are no hearts, but there is a dog.") == ["dog"]
    assert score_description(SCENE, CORRECT) == score_description(SCENE, CORRECT)


# ---- scenes ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [1_000_000, 1_000_001, 1_000_002, 1_000_003, 1_000_004])
def test_the_pixel_at_each_object_centre_has_its_colour(seed):
    scene, size = make_shape_scene(seed), 448
    image = render_shapes(scene, size)
    for o in scene.objects:
        assert image.getpixel((int(o.centre[0] * size), int(o.centre[1] * size))) == PALETTE[o.colour], o


def test_scenes_are_deterministic_per_seed_and_have_repeated_kinds():
    assert make_shape_scene(1_000_000) == make_shape_scene(1_000_000) and make_shape_scene(1_000_000) != make_shape_scene(1_000_001)
    assert render_shapes(make_shape_scene(1_000_007)).tobytes() == render_shapes(make_shape_scene(1_000_007)).tobytes()
    scenes = [make_shape_scene(1_000_000 + i) for i in range(20)]
    assert any(s.count(o.shape, o.colour) > 1 for s in scenes for o in s.objects)
    assert all(len({o.region for o in s.objects}) == len(s.objects) for s in scenes)


# ---- tiny checkpoints end to end -------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_paint_on_a_tiny_checkpoint_prints_and_writes_rates_by_quarter(arch, tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "scenes.json"
    argv = ["paint", "--base", str(tiny_checkpoints[arch]), "--scenes", "2", "--max-new-tokens", "12",
            "--batch-size", "2", "--image-size", "64", "--json", str(out), "--records", str(tmp_path / "rec")]
    extra = {"qwen3_vl": ["--probe"], "llava": ["--dtype", "bfloat16"]}.get(arch, [])
    assert main(argv + extra) == 0
    assert "scenes suite, error rate (%) by quarter" in capsys.readouterr().out
    metrics = json.loads(out.read_text())
    baseline = metrics["variants"]["baseline"]
    assert metrics["suite"] == "scenes" and baseline["requests"] == 2 and metrics["schema_version"] == 2
    assert set(baseline["claims_by_quarter"]) == {"all", "object", "attribute", "count", "position"}
    assert 0 < baseline["answer_tokens_mean"] <= 12 and len(baseline["primary_by_quarter"]) == 4
    records = [json.loads(line) for line in (tmp_path / "rec" / "records.jsonl").read_text().splitlines()]
    assert [r["meta"]["scene_seed"] for r in records] == [1_000_000, 1_000_001]
    assert ("mass" in records[0]) == (arch == "qwen3_vl")


def test_batched_generation_with_pvm_matches_one_at_a_time(tiny_checkpoints, open_adapter, tmp_path):
    model, processor = load_base(tiny_checkpoints["qwen3_vl"])
    suite = ScenesSuite(scenes=3, image_size=64, max_new_tokens=10)
    answers = {}
    for batch in (3, 1):
        records = run(model, processor, suite, plan([str(open_adapter)], controls=False), tmp_path / f"b{batch}",
                      RunConfig(batch_size=batch, probes=False, progress=False))
        answers[batch] = {(r["variant"], r["request"]): r["answer"] for r in records}
    assert answers[3] == answers[1]
    assert any(answers[3][("adapter", i)] != answers[3][("baseline", i)] for i in range(3))  # open gates act


@pytest.mark.parametrize("arch", ["qwen3_vl", "qwen2_5_vl"])
def test_without_torchvision_qwen_processors_fall_back_to_the_pil_image_processor(arch, tiny_checkpoints,
                                                                                  monkeypatch):
    directory = tiny_checkpoints[arch]
    reference = load_processor(directory)

    def no_torchvision(*args, **kwargs):
        raise ImportError("Qwen2VLVideoProcessor requires the Torchvision library but it was not found")
    monkeypatch.setattr(processor_module.AutoProcessor, "from_pretrained", no_torchvision)
    fallback = load_processor(directory)
    assert isinstance(fallback, ImageOnlyQwenProcessor) and fallback.chat_template == reference.chat_template
    conversation = [[{"role": "user", "content": [{"type": "image", "image": render_shapes(make_shape_scene(1_000_000))},
                                                  {"type": "text", "text": "Describe it."}]}]]
    a, b = (p.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
                                  return_tensors="pt") for p in (reference, fallback))
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["image_grid_thw"], b["image_grid_thw"])
    # torchvision's and PIL's bicubic resizes (448 -> 64 px) differ on a few edge pixels
    difference = (a["pixel_values"] - b["pixel_values"]).abs()  # [patches, C*t*p*p]
    assert difference.max() < 0.05 and difference.mean() < 1e-3


def test_commands_run_where_torchvision_cannot_be_imported(tiny_checkpoints, tmp_path):
    """paint, probe and report, one after another in one fresh interpreter where `import torchvision` fails."""
    args = ["--base", str(tiny_checkpoints["qwen2_5_vl"]), "--scenes", "2", "--max-new-tokens", "4",
            "--image-size", "64"]
    commands = [["paint", *args], ["probe", *args], ["report", *args, "--out", str(tmp_path / "r")]]
    code = ("import sys; sys.modules['torchvision'] = None; from pvm_probe.cli import main\n"
            f"for argv in {commands!r}:\n"
            "    if main(argv) != 0: sys.exit(argv[0] + ' failed')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "r" / "report.html").is_file()


# ---- errors ----------------------------------------------------------------------------------------
def one_line_error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"pvm-probe {argv[0]}: error: ") and "\n" not in err
    return err


def test_bad_checkpoints_give_one_line_errors(tiny_checkpoints, tmp_path, capsys):
    scenes = ["paint", "--scenes", "1", "--max-new-tokens", "2", "--base"]
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(tiny_checkpoints["qwen3_vl"] / "config.json", bare)
    assert "holds no model weights" in one_line_error(scenes + [str(bare)], capsys)
    shutil.copy(tiny_checkpoints["qwen3_vl"] / "model.safetensors", bare)
    assert "no processor files" in one_line_error(scenes + [str(bare)], capsys)
    no_template = tmp_path / "no_template"
    shutil.copytree(tiny_checkpoints["llava"], no_template)
    (no_template / "chat_template.jinja").unlink()
    assert "no chat template" in one_line_error(scenes + [str(no_template)], capsys)
    text_only = tmp_path / "text_only"
    shutil.copytree(tiny_checkpoints["qwen3_vl"], text_only)
    config = json.loads((text_only / "config.json").read_text())
    (text_only / "config.json").write_text(json.dumps({**config, "architectures": ["Qwen3ForCausalLM"]}))
    assert "unsupported architecture ['Qwen3ForCausalLM']" in one_line_error(scenes + [str(text_only)], capsys)
    world = ["paint", "--suite", "world", "--scenes", "1", "--base", str(tiny_checkpoints["llava"])]
    assert "needs its own vocabulary" in one_line_error(world, capsys)
