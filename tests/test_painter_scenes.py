"""The Blind Painter scenes suite: claim scoring, scene rendering, tiny checkpoints of the three real
classes end to end through the CLI, batching with PVM, processor fallback and one-line errors."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import open_gates, small_config

from pvm_probe import attach_pvm
from pvm_probe.cli import main
from pvm_probe.loading import load_base
from pvm_probe.painter.scenes import (
    Scene,
    SceneObject,
    generate_answers,
    load_processor,
    make_scene,
    render,
    score_answer,
    summarize,
)
from pvm_probe.painter.scenes import processor as processor_module
from pvm_probe.painter.scenes.words import PALETTE, REGIONS, SCENE_WORDS
from pvm_probe.world.processor import PainterProcessor
from pvm_probe.zoo import ARCHS, save_tiny_checkpoint


def obj(shape, colour, region):
    index = REGIONS.index(region)
    row, col = divmod(index, 3)
    return SceneObject(shape, colour, index, ((col + 0.5) / 3, (row + 0.5) / 3), 0.1)


SCENE = Scene(seed=0, objects=(obj("star", "red", "top left"), obj("triangle", "green", "top right"),
                               obj("star", "red", "center"), obj("circle", "blue", "bottom right")))
CORRECT = ("There are two red stars, one in the top left corner and one in the center. A blue circle sits in "
           "the bottom right. There is a green triangle at the top right. There are no hearts, and there "
           "isn't a single cross. Altogether the image holds four shapes on a white background.")


def claims(text, kind=None):
    found = score_answer(SCENE, text)["claims"]
    return [c for c in found if kind in (None, c["kind"])]


def errors(text, kind=None):
    return [c["text"] for c in claims(text, kind) if not c["correct"]]


# ---- scoring ---------------------------------------------------------------------------------------
def test_a_fully_correct_answer_has_claims_of_every_kind_and_no_errors():
    found = claims(CORRECT)
    assert {c["kind"] for c in found} == {"object", "attribute", "count", "position"}
    assert errors(CORRECT) == []
    summary = summarize([score_answer(SCENE, CORRECT)], [60])
    assert summary["chair_s"] == 0 and summary["chair_i"] == 0
    assert all(r in (0, None) for r in summary["attribute_error_by_quarter"] + summary["position_error_by_quarter"])


def test_a_hallucination_at_the_end_shows_up_only_in_the_last_quarter():
    summary = summarize([score_answer(SCENE, CORRECT + " Finally, a purple heart.")], [70])
    assert summary["by_quarter"]["object"]["errors"] == [0, 0, 0, 1] and summary["chair_i_by_quarter"][3] > 0
    assert summary["by_quarter"]["attribute"]["errors"] == [0, 0, 0, 1] and summary["chair_s"] == 1
    assert sum(summary["claims_by_quarter"]) == len(claims(CORRECT + " Finally, a purple heart."))


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
    assert score_answer(SCENE, CORRECT) == score_answer(SCENE, CORRECT)


# ---- scenes ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [1_000_000, 1_000_001, 1_000_002, 1_000_003, 1_000_004])
def test_the_pixel_at_each_object_centre_has_its_colour(seed):
    scene, size = make_scene(seed), 448
    image = render(scene, size)
    for o in scene.objects:
        assert image.getpixel((int(o.centre[0] * size), int(o.centre[1] * size))) == PALETTE[o.colour], o


def test_scenes_are_deterministic_per_seed_and_have_repeated_kinds():
    assert make_scene(1_000_000) == make_scene(1_000_000) and make_scene(1_000_000) != make_scene(1_000_001)
    assert render(make_scene(1_000_007)).tobytes() == render(make_scene(1_000_007)).tobytes()
    scenes = [make_scene(1_000_000 + i) for i in range(20)]
    assert any(s.count(o.shape, o.colour) > 1 for s in scenes for o in s.objects)
    assert all(len({o.region for o in s.objects}) == len(s.objects) for s in scenes)


# ---- tiny checkpoints end to end -------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {arch: save_tiny_checkpoint(arch, root / arch, SCENE_WORDS) for arch in ARCHS}


@pytest.mark.parametrize("arch", ARCHS)
def test_paint_scenes_cli_runs_on_a_tiny_checkpoint(arch, checkpoints, tmp_path, capsys):
    out = tmp_path / "scenes.json"
    argv = ["paint", "--suite", "scenes", "--base", str(checkpoints[arch]), "--scenes", "2",
            "--max-new-tokens", "12", "--batch-size", "2", "--json", str(out)]
    extra = {"qwen3_vl": ["--probe"], "llava": ["--dtype", "bfloat16"]}.get(arch, [])
    assert main(argv + extra) == 0
    assert "CHAIR_i" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["suite"] == "scenes" and result["n_answers"] == 2 and result["pvm"] is None
    for key in ("chair_i_by_quarter", "attribute_error_by_quarter", "count_error_by_quarter",
                "position_error_by_quarter", "claims_by_quarter"):
        assert len(result[key]) == 4
    assert set(result["by_quarter"]) == {"object", "attribute", "count", "position"}
    assert 0 < result["mean_answer_tokens"] <= 12 and sum(result["claims_by_quarter"]) > 0
    assert [s["seed"] for s in result["scenes"]] == [1_000_000, 1_000_001]
    assert all(isinstance(s["answer"], str) and s["objects"] and "claims" in s for s in result["scenes"])
    if arch == "qwen3_vl":
        assert len(result["image_attention_by_quarter"]) == 4  # [L=4][4]
        assert all(0 < v < 1 for row in result["image_attention_by_quarter"] for v in row)


def test_batched_generation_with_pvm_matches_one_at_a_time(checkpoints):
    model, processor = load_base(checkpoints["qwen3_vl"], attn_implementation="sdpa", load_processor=load_processor)
    handle = attach_pvm(model, small_config())
    open_gates(handle)
    # different aspect ratios -> different image-token counts -> real left padding in the batch
    images = [render(make_scene(1_000_000)), render(make_scene(1_000_001)).crop((0, 0, 448, 224)),
              render(make_scene(1_000_002)).crop((0, 0, 224, 448))]
    batched = generate_answers(model, processor, images, max_new_tokens=10, batch_size=3, progress=False)
    alone = generate_answers(model, processor, images, max_new_tokens=10, batch_size=1, progress=False)
    assert [(a.text, a.tokens) for a in batched] == [(a.text, a.tokens) for a in alone]
    with handle.gates_off():
        plain = generate_answers(model, processor, images, max_new_tokens=10, batch_size=3, progress=False)
    assert [a.text for a in plain] != [a.text for a in batched]  # the open gates do change the answers


def test_cli_loads_an_adapter_and_turns_its_gates_off(checkpoints, tmp_path):
    model, _ = load_base(checkpoints["qwen3_vl"], load_processor=load_processor)
    attach_pvm(model, small_config()).save(tmp_path / "adapter")
    out = tmp_path / "r.json"
    assert main(["paint", "--suite", "scenes", "--base", str(checkpoints["qwen3_vl"]), "--pvm", str(tmp_path / "adapter"),
                 "--gates-off", "--scenes", "1", "--max-new-tokens", "4", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["gates_off"] is True and result["pvm"] == str(tmp_path / "adapter")


@pytest.mark.parametrize("arch", ["qwen3_vl", "qwen2_5_vl"])
def test_without_torchvision_qwen_processors_fall_back_to_the_pil_image_processor(arch, checkpoints, monkeypatch):
    directory = checkpoints[arch]
    reference = load_processor(directory)

    def no_torchvision(*args, **kwargs):
        raise ImportError("Qwen2VLVideoProcessor requires the Torchvision library but it was not found")
    monkeypatch.setattr(processor_module.AutoProcessor, "from_pretrained", no_torchvision)
    fallback = load_processor(directory)
    assert isinstance(fallback, PainterProcessor) and fallback.chat_template == reference.chat_template
    conversation = [[{"role": "user", "content": [{"type": "image", "image": render(make_scene(1_000_000))},
                                                  {"type": "text", "text": "Describe it."}]}]]
    a, b = (p.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
                                  return_tensors="pt") for p in (reference, fallback))
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["image_grid_thw"], b["image_grid_thw"])
    # torchvision's and PIL's bicubic resizes (448 -> 64 px) differ on a few edge pixels
    difference = (a["pixel_values"] - b["pixel_values"]).abs()  # [patches, C*t*p*p]
    assert difference.max() < 0.05 and difference.mean() < 1e-3


def test_cli_runs_where_torchvision_cannot_be_imported(checkpoints, tmp_path):
    out = tmp_path / "r.json"
    code = ("import sys; sys.modules['torchvision'] = None; from pvm_probe.cli import main; "
            f"sys.exit(main(['paint', '--suite', 'scenes', '--base', {str(checkpoints['qwen2_5_vl'])!r}, '--scenes', '1', "
            f"'--max-new-tokens', '4', '--json', {str(out)!r}]))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(out.read_text())["n_answers"] == 1


# ---- errors ----------------------------------------------------------------------------------------
def one_line_error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pvm-probe paint: error: ") and "\n" not in err
    return err


def test_bad_inputs_give_one_line_errors(checkpoints, tmp_path, capsys):
    scenes = ["paint", "--suite", "scenes", "--scenes", "1", "--max-new-tokens", "2", "--base"]
    assert "does not exist" in one_line_error(scenes + [str(tmp_path / "missing")], capsys)
    assert "needs --base" in one_line_error(["paint", "--suite", "scenes"], capsys)
    assert "--forced only apply to --suite world" in one_line_error(scenes + [str(tmp_path), "--forced"], capsys)
    assert "--probe only apply to --suite scenes" in one_line_error(["paint", "--probe"], capsys)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(checkpoints["qwen3_vl"] / "config.json", bare)
    assert "no processor files" in one_line_error(scenes + [str(bare)], capsys)
    no_template = tmp_path / "no_template"
    shutil.copytree(checkpoints["llava"], no_template)
    (no_template / "chat_template.jinja").unlink()
    assert "no chat template" in one_line_error(scenes + [str(no_template)], capsys)
    text_only = tmp_path / "text_only"
    shutil.copytree(checkpoints["qwen3_vl"], text_only)
    config = json.loads((text_only / "config.json").read_text())
    (text_only / "config.json").write_text(json.dumps({**config, "architectures": ["Qwen3ForCausalLM"]}))
    assert "unsupported architecture ['Qwen3ForCausalLM']" in one_line_error(scenes + [str(text_only)], capsys)
