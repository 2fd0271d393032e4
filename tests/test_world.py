"""Painter world: generator, scoring, tokenizer/processor, shipped baseline (fast tests)."""
import numpy as np
import pytest
import torch
from PIL import Image

from pvm_probe.processors import load_processor
from pvm_probe.suites.world.data import make_example, prompt_text
from pvm_probe.suites.world.processor import build_processor
from pvm_probe.suites.world.scenes import CELL_NAMES, EVAL_SEED_BASE, make_grid_scene, render_grid
from pvm_probe.suites.world.scoring import score_painting
from pvm_probe.suites.world.task import PaintSpec, answer_length, answer_tokens

torch.set_num_threads(2)


# ---------- generator ----------
def test_scene_deterministic_per_seed():
    a, b = make_grid_scene(7), make_grid_scene(7)
    assert a == b
    assert np.array_equal(np.asarray(render_grid(a)), np.asarray(render_grid(b)))
    assert make_grid_scene(8) != a
    assert render_grid(a).size == (128, 128)


def test_reference_answer_shape():
    scene = make_grid_scene(3)
    for filler, unit in (("count", 1), ("said", 4)):
        spec = PaintSpec(order=2, gap=5, filler=filler)
        ans = answer_tokens(scene, spec)
        assert len(ans) + 1 == answer_length(spec) == 16 * (4 + unit * 5) + 1
        assert sorted(ans[1::4 + unit * 5]) == sorted(CELL_NAMES)      # every cell painted once


def test_said_decoys_are_false_and_text_predictable():
    scene, spec = make_grid_scene(11), PaintSpec(gap=3, filler="said")
    a, _b = answer_tokens(scene, spec), answer_tokens(make_grid_scene(12), PaintSpec(gap=3, filler="said"))
    assert a[8] == "s2" and a[4] == "s1"
    # decoy triplets depend only on the preceding triplet (text), never on the image
    sc = score_painting(scene, spec, a)
    assert sc["accuracy"] == 1.0


# ---------- scoring ----------
def _ans(scene, spec):
    return answer_tokens(scene, spec)


def test_scoring_right_wrong_missing_extra_reordered():
    scene, spec = make_grid_scene(5), PaintSpec(order=0, gap=2)
    ref = _ans(scene, spec)
    assert score_painting(scene, spec, ref)["accuracy"] == 1.0
    assert score_painting(scene, spec, ref)["accuracy_by_quartile"] == [1.0] * 4
    # wrong: change the first claim's colour
    wrong = list(ref)
    wrong[2] = next(c for c in ("red", "green") if c != ref[2])
    s = score_painting(scene, spec, wrong)
    assert s["claims"][0]["correct"] is False and s["claims"][0]["colour_ok"] is False
    assert s["claims"][0]["shape_ok"] is True and s["accuracy"] == 15 / 16
    assert s["accuracy_by_quartile"][0] == 0.75
    # missing: answer stops after 12 steps -> last quarter all missing
    s = score_painting(scene, spec, ref[: 12 * 6])
    assert s["n_missing"] == 4 and s["accuracy_by_quartile"] == [1.0, 1.0, 1.0, 0.0]
    # extra: one more claim appended -> counted, not scored
    s = score_painting(scene, spec, ref + ["p16", "r0c0", *scene.truth("r0c0")])
    assert s["n_extra"] == 1 and s["accuracy"] == 1.0
    # reordered: swap the first two steps -> claims still true, order flagged
    swapped = ref[6:12] + ref[:6] + ref[12:]
    s = score_painting(scene, spec, swapped)
    assert s["accuracy"] == 1.0 and not s["claims"][0]["order_ok"] and s["claims"][2]["order_ok"]
    # garbage / empty answers score zero, no crash
    assert score_painting(scene, spec, [])["accuracy"] == 0.0
    assert score_painting(scene, spec, ["red", "p0", "r0c0"])["accuracy"] == 0.0


def test_decoys_counted_before_claims():
    scene, spec = make_grid_scene(9), PaintSpec(order=1, gap=4, filler="said", passes=1)
    s = score_painting(scene, spec, answer_tokens(scene, spec))
    assert s["claims"][0]["decoys_before"] == 0
    assert sum(r["decoys_before"] for r in s["claims"]) > 0


# ---------- tokenizer / processor ----------
def _encode(proc, seed=EVAL_SEED_BASE):
    ex = make_example(proc, seed, PaintSpec(gap=3))
    return proc(text=[ex.prompt + " ".join(ex.answer)], images=[ex.image], return_tensors="pt")


def test_processor_round_trip(tmp_path):
    from transformers import AutoProcessor
    proc = build_processor()
    proc.save_pretrained(tmp_path)
    ref = _encode(proc)
    assert set(ref) == {"input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids"}
    out = _encode(load_processor(tmp_path))                      # the loader every command uses
    for k in ref:
        assert torch.equal(ref[k], out[k]), k
    auto = AutoProcessor.from_pretrained(tmp_path)                # may pick torchvision if installed
    assert type(auto).__name__ == "PainterProcessor"
    out = _encode(auto)
    for k in ref:
        assert torch.allclose(ref[k].float(), out[k].float(), atol=1e-6), k
    text = "paint o3 g7 fcount x1 p0 r2c1 red circle n1"
    assert proc.tokenizer.decode(proc.tokenizer(text)["input_ids"]) == text
    assert proc.tokenizer.unk_token_id not in proc.tokenizer(text)["input_ids"]


def test_pixels_match_reference_image_processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    img = render_grid(make_grid_scene(EVAL_SEED_BASE + 1))
    ref = Qwen2VLImageProcessorPil(patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3,
                                   image_std=[0.5] * 3, min_pixels=128 * 128, max_pixels=128 * 128)
    r = ref(images=[img], return_tensors="pt")
    out = build_processor()(text=["<|vision_start|><|image_pad|><|vision_end|>"], images=[img], return_tensors="pt")
    assert out["image_grid_thw"].tolist() == r["image_grid_thw"].tolist() == [[1, 8, 8]]
    assert torch.equal(out["pixel_values"], r["pixel_values"])
    assert int((out["mm_token_type_ids"] == 1).sum()) == 16           # one merged token per cell


def test_image_token_without_image_is_a_clear_error():
    proc = build_processor()
    with pytest.raises((ValueError, TypeError)):
        proc(text=["<|vision_start|><|image_pad|><|vision_end|> paint"], return_tensors="pt")


# ---------- shipped baseline ----------
@pytest.fixture(scope="module")
def baseline():
    from pvm_probe.loading import BASELINE_DIR, load_base
    if not (BASELINE_DIR / "model.safetensors").exists():
        pytest.fail("shipped baseline missing: pvm_probe/assets/baseline/")
    return load_base()


def test_shipped_baseline_sees_the_image_until_it_leaves_the_window(baseline, tmp_path):
    from pvm_probe.backbones import attention_window
    from pvm_probe.runner import RunConfig, run
    from pvm_probe.suites import WorldSuite
    from pvm_probe.variants import BASELINE

    model, proc = baseline
    suite = WorldSuite(scenes=4)
    records = run(model, proc, suite, [BASELINE], tmp_path, RunConfig(batch_size=4, probes=False, progress=False))
    claims = [c for r in records for c in r["claims"]]
    assert len(claims) == 64 and attention_window(model) < suite.settings()["answer_tokens"] / 2
    first = [c["correct"] for c in claims if c["quarter"] == 0]
    last = [c["correct"] for c in claims if c["quarter"] == 3]
    assert sum(first) / len(first) >= 0.75 and sum(last) / len(last) <= 0.25  # chance for both: 1/36


def test_shipped_baseline_size_and_info():
    from pvm_probe.loading import BASELINE_DIR
    total = sum(p.stat().st_size for p in BASELINE_DIR.iterdir() if p.is_file())
    assert total < 25 * 2**20
    import json
    info = json.loads((BASELINE_DIR / "train_info.json").read_text())
    for k in ("seed", "lm_steps", "train_gaps", "seconds_total", "machine"):
        assert k in info


@torch.no_grad()
def test_text_only_prompt_and_blank_image_do_not_crash(baseline):
    model, proc = baseline
    spec = PaintSpec(gap=1)
    # text-only: no image tokens, no pixel values -> generates something, no crash
    inputs = proc(text=[prompt_text(proc, spec, with_image=False)], return_tensors="pt")
    assert "pixel_values" not in inputs
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    # blank (all black) image: a valid request; answer is parsed and scored, accuracy is low
    blank = Image.new("RGB", (128, 128), (0, 0, 0))
    inputs = proc(text=[prompt_text(proc, spec)], images=[blank], return_tensors="pt")
    seq = model.generate(**inputs, max_new_tokens=answer_length(spec) + 4, do_sample=False)
    toks = proc.tokenizer.convert_ids_to_tokens(seq[0, inputs["input_ids"].shape[1]:].tolist())
    s = score_painting(make_grid_scene(EVAL_SEED_BASE), spec, toks)
    assert 0.0 <= s["accuracy"] <= 1.0
    # an image of another size: the processor resizes it; image tokens agree with the grid
    odd = proc(text=[prompt_text(proc, spec)], images=[Image.new("RGB", (200, 90))], return_tensors="pt")
    n_img = int((odd["mm_token_type_ids"] == 1).sum())
    assert n_img == int(odd["image_grid_thw"].prod()) // 4
    assert model(**odd).logits.shape[1] == odd["input_ids"].shape[1]


def test_hidden_cell_claims_are_scored_by_step():
    scene, spec = make_grid_scene(21), PaintSpec(order=4, gap=1, named=False)
    ref = answer_tokens(scene, spec)
    assert spec.prompt_text().endswith("hidden") and ref[0] == "p0" and ref[1] not in CELL_NAMES
    assert len(ref) + 1 == answer_length(spec) == 16 * (3 + 1) + 1
    s = score_painting(scene, spec, ref)
    assert s["accuracy"] == 1.0 and s["claims"][3]["cell"] == spec.steps()[3]
    wrong = list(ref)
    wrong[2] = next(x for x in ("square", "circle") if x != ref[2])     # first claim's shape
    s = score_painting(scene, spec, wrong)
    assert not s["claims"][0]["correct"] and s["accuracy"] == 15 / 16
