"""Papercuts a new user hit (issue 24, section 3), each on a tiny saved checkpoint or the embedded default:
lost settings, hidden digits, silent choices, bad input that slipped through, reports that said nothing."""

import json
import shutil

import pytest
from PIL import Image

from pvm_probe.cli import main
from pvm_probe.errors import InputError
from pvm_probe.registry import SUITES


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def last_line(capsys) -> str:
    """The error line after the loading progress bars (the base loads before an adapter can be fingerprinted)."""
    return capsys.readouterr().err.strip().splitlines()[-1]


def no_model(monkeypatch):
    import pvm_probe.loading

    monkeypatch.setattr(pvm_probe.loading, "load_base", lambda *a, **k: pytest.fail("loaded a model"))


@pytest.fixture(scope="module")
def probed(tiny_checkpoints, tmp_path_factory):
    """`probe` on the tiny Qwen3-VL with a budget given on the command line: (metrics, stdout)."""
    out = tmp_path_factory.mktemp("probed") / "metrics.json"
    argv = ["probe", "--base", str(tiny_checkpoints["qwen3_vl"]), "--scenes", "2", "--max-new-tokens", "12",
            "--json", str(out)]
    assert main(argv) == 0
    return json.loads(out.read_text())


# ---- lost settings and hidden numbers -----------------------------------------------------------------
def test_the_budget_given_reaches_metrics_and_the_page_header(probed):
    from pvm_probe.report.page import page

    assert probed["setting"]["max_new_tokens"] == 12
    assert "max_new_tokens 12" in page(probed, {}, [])


def test_a_runner_cap_below_the_suites_budget_is_the_budget():
    from pvm_probe.report.metrics import setting_of

    run = {"suite": {"suite": "scenes", "max_new_tokens": 48}, "generation": {"max_new_tokens": None}}
    assert setting_of(run)["max_new_tokens"] == 48
    run["generation"]["max_new_tokens"] = 16
    assert setting_of(run)["max_new_tokens"] == 16


def test_probe_prints_image_shares_to_three_decimals(probed):
    from pvm_probe.cli import _probe_table

    shares = [0.097, 0.035, 0.023, 0.017]
    metrics = json.loads(json.dumps(probed))
    metrics["variants"]["baseline"]["claim_mass_by_quarter"] = [shares] * len(probed["variants"]["baseline"]["layers"])
    row = _probe_table(metrics).splitlines()[-1].split()
    assert row[1:5] == ["0.097", "0.035", "0.023", "0.017"]


def test_paint_probe_prints_the_image_share_table(tiny_checkpoints, capsys):
    argv = ["paint", "--probe", "--base", str(tiny_checkpoints["qwen3_vl"]), "--scenes", "2", "--max-new-tokens", "8"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "image share at claim tokens by quarter" in out and "plateau" in out


# ---- small things -------------------------------------------------------------------------------------
def test_the_page_header_keeps_what_a_reader_needs_and_folds_the_rest(probed):
    """Base, suite, requests, budget and decoding in the header; every setting, the tuned lens's training
    formatted, in a details block."""
    from pvm_probe.report.page import page

    metrics = {**probed, "setting": {**probed["setting"], "tuned_lens": {"steps": 250, "optimizer": "sgd",
                                                                        "train_kl_first": 0.004172362154349685}}}
    body = page(metrics, {}, [])
    header = body.split("</h1>", 1)[1].split("</p>", 1)[0]
    assert header.endswith("suite <b>scenes</b>: requests 2, max_new_tokens 12, decoding greedy.")
    assert not any(word in header for word in ("tuned_lens", "dtype", "probes", "seed", "image_size"))
    details = body.split('<details id="settings"><summary>All settings</summary>', 1)[1].split("</details>", 1)[0]
    assert "<li>tuned_lens (steps 250, optimizer sgd, train kl first 0.004172)</li>" in details
    assert "<li>dtype float32</li>" in details and "<li>image_size " in details
    assert "{" not in details and "0.004172362" not in details


@pytest.mark.parametrize("points", [-0.0, -0.04, -1e-9])
def test_a_gain_that_rounds_to_zero_is_plus_zero(points):
    from pvm_probe.report.metrics import _control_lines
    from pvm_probe.report.page import headline_cells

    row = {"q1": 0.5, "q4": 0.5, "overall": 0.5, "q4_image_share": None, "gain_q4": points, "gain_overall": points}
    assert dict(headline_cells(row))["gain_q4"] == "+0.0"
    variants = {"a": {"kind": "adapter", "block": "pvm"}, "a | gates off": {"kind": "gates_off"}}
    lines, _ = _control_lines(variants, {"a": row, "a | gates off": row})
    assert "-0.0" not in " ".join(lines) and "+0.0 points against the baseline" in " ".join(lines)


@pytest.mark.parametrize("argv,message", [
    (["paint", "--image-size", "64"], "--image-size does not apply to --suite world"),
    (["paint", "--image-size", "64", "--max-new-tokens", "8"], "--image-size, --max-new-tokens do not apply to"),
])
def test_the_foreign_flag_message_agrees_with_its_count(argv, message, capsys, monkeypatch):
    no_model(monkeypatch)
    assert main(argv) == 2
    assert message in one_line(capsys)


def test_info_rounds_alphas_to_four_significant_digits(tmp_path):
    from pvm_probe.checkpoints import SHIPPED_ADAPTERS, describe_adapter

    adapter = shutil.copytree(SHIPPED_ADAPTERS / "pvm-stage1", tmp_path / "a")
    meta = json.loads((adapter / "pvm_config.json").read_text())
    meta["provenance"]["result"] = {"alphas_initial": {"1": 0.123456789, "2": 1.0},
                                    "alphas": {"1": 0.912345678, "2": 2.0}}
    (adapter / "pvm_config.json").write_text(json.dumps(meta))
    text = describe_adapter(adapter)["text"]
    assert "(from 0.1235)" in text and "result.alphas.1: 0.9123" in text
    assert "0.12345" not in text and "0.91234" not in text


def test_the_images_caption_names_the_hallucination_rate():
    from pvm_probe.report.figures import CAPTIONS

    caption = CAPTIONS["claims_by_quarter"]({"metric": {"name": "hallucination rate", "higher_is_better": False}})
    assert caption.startswith("Hallucination rate of the claims") and "error rate" not in caption.lower()


def test_the_paper_table_sets_accuracy_beside_accuracy():
    from pvm_probe.report.page import _ours

    def variant(kind, error, **extra):  # one quarter's error rate stands for all
        return {"kind": kind, "primary": error, "primary_by_quarter": [error] * 4, **extra,
                "claims_by_quarter": {"all": {"correct_overall": 1 - error}}}

    metrics = {"metric": {"name": "error rate", "higher_is_better": False},
               "variants": {"baseline": variant("baseline", 0.4),
                            "pvm": variant("adapter", 0.25, block="pvm", num_parameters=10)}}
    row = _ours(metrics)["controls, 8B average accuracy: baseline / iso-parameter MLP / PVM"]
    assert row == "claims correct (%): 60.0 / - / 75.0"


def test_a_checkpoint_without_weights_is_one_plain_line(tiny_checkpoints, tmp_path, capsys):
    for name in ("config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_checkpoints["qwen3_vl"] / name, tmp_path / name)
    assert main(["paint", "--base", str(tmp_path), "--scenes", "1"]) == 2
    err = one_line(capsys)
    assert f"{tmp_path} holds no model weights: expected model.safetensors" in err and "Error no file" not in err


# ---- bad input that slipped through -------------------------------------------------------------------
def test_placement_with_more_blocks_than_layers_is_one_line(capsys, monkeypatch):
    no_model(monkeypatch)
    assert main(["placement", "--blocks", "99"]) == 2
    assert "--blocks 99: cannot place 99 blocks in a 4-layer model" in one_line(capsys)


def test_an_unreadable_image_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    no_model(monkeypatch)
    Image.new("RGB", (8, 8), "red").save(tmp_path / "good.png")
    png = (tmp_path / "good.png").read_bytes()
    (tmp_path / "bad.png").write_bytes(png[:40] + bytes(len(png) - 40))  # the header parses, the data does not
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps({"image": name, "prompt": "Describe."})
                                                   for name in ("good.png", "bad.png")))
    assert main(["paint", "--data", str(tmp_path / "data.jsonl")]) == 2
    assert f"data.jsonl:2: cannot read image {tmp_path / 'bad.png'}" in one_line(capsys)


# ---- silent choices -----------------------------------------------------------------------------------
def test_an_arm_without_compare_runs_the_arm():
    from pvm_probe.jobs import Job, variants_of

    assert [v.name for v in variants_of(Job(adapters=[], remedies=["vcd"], only="adapter"))] == ["vcd"]
    assert [v.name for v in variants_of(Job(adapters=[], only="adapter"))] == ["baseline"]
    names = [v.name for v in variants_of(Job(adapters=["pvm-stage1"], remedies=["pai"], only="adapter"))]
    assert names == ["pvm-stage1", "pai"]


def _adapter_with_init(directory, init) -> None:
    from pvm_probe.checkpoints import SHIPPED_ADAPTERS

    shutil.copytree(SHIPPED_ADAPTERS / "pvm-stage1", directory)
    meta = json.loads((directory / "pvm_config.json").read_text())
    meta["provenance"]["init"] = {"adapter": str(init), "provenance": {}}
    (directory / "pvm_config.json").write_text(json.dumps(meta))


def test_train_refuses_to_replace_an_adapter_without_overwrite(tmp_path, capsys, monkeypatch):
    import pvm_probe.train.run

    def reached(job, *args, **kwargs):
        raise InputError(f"training into {job.out}")

    monkeypatch.setattr(pvm_probe.train.run, "train", reached)
    _adapter_with_init(tmp_path / "stage1", None)
    _adapter_with_init(tmp_path / "stage2", tmp_path / "stage1")
    argv = ["train-pvm", "--out", str(tmp_path / "stage1"), "--steps", "1"]
    assert main(argv) == 2
    assert one_line(capsys).endswith(f"--out {tmp_path / 'stage1'} already holds an adapter that stage2 started "
                                     "from (--init): add --overwrite to replace it")
    assert main([*argv, "--overwrite"]) == 2
    assert f"training into {tmp_path / 'stage1'}" in one_line(capsys)


# ---- failing early, naming the adapter ----------------------------------------------------------------
def test_an_adapter_of_another_family_names_its_pvm(tiny_checkpoints, open_adapter, capsys):
    argv = ["paint", "--base", str(tiny_checkpoints["llava"]), "--pvm", str(open_adapter), "--scenes", "1"]
    assert main(argv) == 2
    err = last_line(capsys)
    assert f"--pvm {open_adapter}: adapter was trained on a base with architecture=Qwen3VL" in err


def test_an_adapter_on_changed_weights_gives_advice_a_cli_user_can_follow(open_adapter, tmp_path, capsys):
    from pvm_probe.suites.scenes.words import SCENE_WORDS
    from pvm_probe.zoo import save_tiny_checkpoint

    other = save_tiny_checkpoint("qwen3_vl", tmp_path / "other", SCENE_WORDS, seed=1)  # same shapes, new weights
    assert main(["paint", "--base", str(other), "--pvm", str(open_adapter), "--scenes", "1"]) == 2
    err = last_line(capsys)
    assert f"--pvm {open_adapter}: adapter was trained on other base weights" in err
    assert "run it on the base it was trained on" in err and "pass allow_other_weights=True" not in err


# ---- reports that say nothing, without saying so -----------------------------------------------------
@pytest.fixture(scope="module")
def unscored(tiny_checkpoints, tmp_path_factory):
    """A report on the tiny Qwen3-VL with an adapter over an `images` file without objects: no claim parsed
    (and image lines have no regions). Returns (folder, stderr)."""
    import torch
    from conftest import open_gates, small_config

    from pvm_probe import attach_pvm
    from pvm_probe.loading import load_base

    root = tmp_path_factory.mktemp("unscored")
    for i, colour in enumerate(("red", "blue")):
        Image.new("RGB", (64, 64), colour).save(root / f"{i}.png")
    (root / "data.jsonl").write_text("\n".join(json.dumps({"image": f"{i}.png", "prompt": "Describe."})
                                               for i in range(2)))
    model, _ = load_base(tiny_checkpoints["qwen3_vl"])
    torch.manual_seed(0)
    handle = attach_pvm(model, small_config())
    open_gates(handle)
    handle.save(root / "adapter")
    handle.remove()
    capture = pytest.MonkeyPatch()
    import io
    import sys
    err = io.StringIO()
    capture.setattr(sys, "stderr", err)
    try:
        argv = ["report", "--base", str(tiny_checkpoints["qwen3_vl"]), "--data", str(root / "data.jsonl"),
                "--max-new-tokens", "8", "--pvm", str(root / "adapter"), "--no-tuned-lens", "--explore", "1",
                "--out", str(root / "report")]
        assert main(argv) == 0
    finally:
        capture.undo()
    return root / "report", err.getvalue()


def _texts(fig) -> list[str]:
    return [" ".join(t.get_text().split()) for ax in fig.axes for t in ax.texts]


def test_a_report_without_claims_warns_on_the_page_and_the_cli(unscored):
    folder, stderr = unscored
    metrics = json.loads((folder / "metrics.json").read_text())
    assert len(metrics["warnings"]) == 1 and metrics["warnings"][0].startswith("no claim was parsed in any answer")
    assert 'lines without "objects" are not scored' in metrics["warnings"][0]
    assert f"pvm-probe report: warning: {metrics['warnings'][0]}" in stderr
    page = (folder / "report.html").read_text()
    assert '<div class="note" id="warnings">' in page and "no claim was parsed in any answer" in page


def test_a_report_with_claims_has_no_warning(probed):
    assert probed["warnings"] == []


def test_the_browser_check_reports_the_pages_warnings():
    from pvm_probe.report.browser import warning_problems

    assert warning_problems([], []) == []
    assert warning_problems(["w"], ["w"]) == ["the page warns: w"]
    assert warning_problems(["w"], []) == ["metrics.json warns, the page does not: w"]


@pytest.mark.slow
def test_the_browser_check_of_a_report_without_claims_is_not_ok(unscored):
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from pvm_probe.report.browser import check_report

    problems = check_report(unscored[0] / "report.html")
    assert problems and problems[0].startswith("the page warns: no claim was parsed in any answer")


def test_empty_panels_say_n_is_zero(unscored):
    from pvm_probe.records import read_records
    from pvm_probe.report.figures import report_figures

    folder = unscored[0]
    metrics = json.loads((folder / "metrics.json").read_text())
    figures = {f.name: (f.figure, f.caption) for f in report_figures(metrics, read_records(folder / "records.jsonl"), {})}
    assert _texts(figures["claims_by_quarter"][0]) == ["no claims in any variant (n = 0)",
                                                       "no object claims in any variant (n = 0)"]
    assert _texts(figures["claim_mass_by_quarter"][0]) == ["no claims in this variant (n = 0)"] * 4
    assert "no claims in any variant (n = 0)" in _texts(figures["accuracy_vs_mass"][0])


def test_quarters_without_claims_say_n_is_zero(probed):
    from pvm_probe.plots.report import claim_mass_by_quarter, claims_by_quarter

    metrics = json.loads(json.dumps(probed))
    table = metrics["variants"]["baseline"]["claims_by_quarter"]["all"]
    table["n"], table["error_rate"] = [3, 0, 2, 0], [0.5, None, 0.5, None]
    assert _texts(claims_by_quarter(metrics).static()).count("n = 0") >= 2
    assert _texts(claim_mass_by_quarter(metrics).static()) == ["n = 0", "n = 0"]


def test_suites_without_regions_leave_out_the_region_panel_and_say_why(unscored):
    from pvm_probe.records import read_records
    from pvm_probe.report.figures import report_figures

    folder = unscored[0]
    metrics = json.loads((folder / "metrics.json").read_text())
    figures = {f.name: (f.figure, f.caption) for f in report_figures(metrics, read_records(folder / "records.jsonl"), {})}
    gates, caption = figures["pvm_gates"]
    assert [ax.get_title() for ax in gates.axes] == ["|alpha h_pvm| / |x|", "attention entropy (nats)"]
    assert "claims name no image region" in caption and "dotted: chance" not in caption


def test_scenes_keep_the_region_panel(probed):
    from pvm_probe.plots.report import pvm_gates

    metrics = json.loads(json.dumps(probed))
    metrics["variants"]["a"] = {"pvm": {"layers": [1], "injection_ratio_by_quarter": [[0.1] * 4],
                                        "entropy_by_quarter": [[1.0] * 4],
                                        "on_claimed_region_by_quarter": [[0.3, None, 0.2, 0.1]],
                                        "claimed_region_chance": 0.1}}
    assert [ax.get_title() for ax in pvm_gates(metrics).static().axes][-1] == "weight on the claimed region"


# ---- training curves ----------------------------------------------------------------------------------
def test_stage2_training_curves_plot_loss_linearly_and_the_reward():
    from pvm_probe.checkpoints import SHIPPED_ADAPTERS
    from pvm_probe.plots.report import training_curves

    logs = {name: json.loads((SHIPPED_ADAPTERS / name / "train_log.json").read_text())
            for name in ("pvm-stage1", "pvm-stage2")}
    axes = {ax.get_title(): ax for ax in training_curves(logs).static().axes}
    assert list(axes) == ["Stage I loss", "Stage II loss", "Stage II reward"]
    assert axes["Stage I loss"].get_yscale() == "log" and axes["Stage II loss"].get_yscale() == "linear"
    for title, key in (("Stage II loss", "loss"), ("Stage II reward", "reward")):
        (line,) = axes[title].get_lines()
        assert list(line.get_ydata()) == [e[key] for e in logs["pvm-stage2"] if key in e]
        assert axes[title].get_ylim()[0] <= min(line.get_ydata()) <= max(line.get_ydata()) <= axes[title].get_ylim()[1]


# ---- the library path refuses what the CLI refuses ----------------------------------------------------
@pytest.mark.parametrize("arch", ["qwen3_vl", "qwen2_5_vl", "llava"])
def test_generate_with_pvm_refuses_non_finite_pixels(arch):
    import torch
    from conftest import open_gates, small_config

    from pvm_probe import attach_pvm
    from pvm_probe.zoo import Image as PatchGrid
    from pvm_probe.zoo import fake_request, tiny_model

    model = tiny_model(arch)
    handle = attach_pvm(model, small_config())
    open_gates(handle)
    try:
        batch = fake_request(model, [PatchGrid(4, 4), PatchGrid(4, 4)])
        batch["pixel_values"][0] = float("nan")  # image 0's first patch (Qwen) or whole image (LLaVA)
        with pytest.raises(InputError, match=r"non-finite visual tokens \(NaN or inf\) in request row\(s\) \[0"):
            model.generate(**batch, max_new_tokens=2, do_sample=False)
        clean = fake_request(model, [PatchGrid(4, 4), PatchGrid(4, 4)])
        logits = model(**clean).logits  # the same handle serves the next request
        assert torch.isfinite(logits).all()
    finally:
        handle.remove()


# ---- probe definition: a generated placeholder is not an image key ------------------------------------
@pytest.mark.parametrize("arch", ["qwen3_vl", "llava"])
def test_a_generated_image_placeholder_is_not_an_image_key(arch):
    """Generation forced to write the image placeholder at step 1: from step 2 on the probe's image share
    equals eager attention summed over the prompt's image positions only (not over the generated one)."""
    import numpy as np
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    from pvm_probe.probes import VisualAttentionMass
    from pvm_probe.probes._base import SEGMENTS
    from pvm_probe.zoo import IMAGE_TOKEN, fake_request, tiny_model
    from pvm_probe.zoo import Image as PatchGrid

    class WritePlaceholder(LogitsProcessor):
        def __call__(self, input_ids, scores):
            if input_ids.shape[1] == prompt + 1:  # step 1
                scores = torch.full_like(scores, -torch.inf)
                scores[:, IMAGE_TOKEN] = 0.0
            return scores

    model = tiny_model(arch, attn="eager")
    batch = fake_request(model, [PatchGrid(4, 4), PatchGrid(2, 4)], prompt_len=5)
    prompt = batch["input_ids"].shape[1]
    with VisualAttentionMass(model) as mass, torch.no_grad():
        out = model.generate(**batch, max_new_tokens=5, min_new_tokens=5, do_sample=False, output_attentions=True,
                             return_dict_in_generate=True, logits_processor=LogitsProcessorList([WritePlaceholder()]))
    assert (out.sequences[:, prompt + 1] == IMAGE_TOKEN).all()  # the answer holds a placeholder
    image = batch["input_ids"] == IMAGE_TOKEN  # [B, P] the prompt's image positions
    shares = mass.result.shares[..., SEGMENTS.index("image")]  # [B, L, H, T]
    for t in range(2, 5):  # queries that see the generated placeholder as a key
        for layer, weights in enumerate(out.attentions[t]):  # [B, H, 1, P + t]
            expected = (weights[:, :, -1, :prompt] * image[:, None, :]).sum(-1)  # [B, H]
            np.testing.assert_allclose(shares[:, layer, :, t], expected.numpy(), atol=1e-5)


@pytest.mark.slow
def test_stage2_prints_no_future_warning(tmp_path, capsys):
    """TRL reads transformers' deprecated `is_gradient_checkpointing` each generation round: the run says
    nothing of it (the warning was printed three times per run)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train-pvm", "--out", str(tmp_path / "s2"), "--stage", "2", "--init", "pvm-stage1",
                     "--steps", "2", "--batch-size", "4", "--num-generations", "4", "--fillers", "said",
                     "--max-gap", "0", "--lr", "1e-5", "--log-every", "1"]) == 0
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]


def test_the_overlay_of_a_claim_without_region_says_so():
    from pvm_probe.plots.report import retrieval_overlay
    from pvm_probe.probes.builtin.pvm import overlay_caption

    cells = [[0, 0, 0.5, 1], [0.5, 0, 1, 1]]
    fig = retrieval_overlay(Image.new("RGB", (32, 32)), cells, {"PVM block at layer 1": [0.2, 0.8]}, [], "t").static()
    assert fig.axes[0].get_title() == "image (the claim names no region)"
    metrics = {"variants": {"a": {"pvm": {"on_claimed_region_by_quarter": [[None] * 4]}}}}
    caption = overlay_caption(metrics)
    assert "claims name no image region, so none is outlined" in caption and "region is outlined" not in caption


# ---- numbers that print wrong ----------------------------------------------------------------------------
def test_kls_are_written_non_negative():
    """Float error leaves the final layer's KL at -1e-9 or -0.0; records and metrics write 0.0 (a KL is never
    negative), and a real KL passes through rounded."""
    import math
    from types import SimpleNamespace

    import numpy as np

    from pvm_probe.probes.builtin.lens import LogitLensProbe

    kl = np.array([[[0.31234, 0.5, 0.25, 0.1], [-1e-9, -0.0, -2e-7, 0.0]]])  # [B, L, T]: the last layer is final
    probe = LogitLensProbe.__new__(LogitLensProbe)
    probe.probe = SimpleNamespace(result=SimpleNamespace(kl=kl, layers=[0, 1],
                                                          convergence_layer=lambda: np.ones((1, 4), int)))
    record = probe.record(SimpleNamespace(b=0, n=4))
    assert record["kl"] == [0.2906, 0.0] and record["kl_by_quarter"][0] == [0.3123, 0.5, 0.25, 0.1]
    old = {"lens": {**record, "kl": [0.2906, -0.0], "kl_by_quarter": [[0.1] * 4, [-0.0] * 4]}}  # an older record
    metrics = LogitLensProbe.metrics([{"lens": record}, old])["lens"]
    written = record["kl"] + sum(record["kl_by_quarter"], []) + metrics["kl_by_layer"] + sum(metrics["kl_by_quarter"], [])
    assert all(math.copysign(1.0, v) == 1.0 for v in written), written


# ---- bad input that ended in a traceback ---------------------------------------------------------------
def _inputs(root):
    """One small valid input of every kind the suites and the trainer read, with the command that reads it:
    {name: (argv, the text file in it)}."""
    from pvm_probe.benchmarks.mini_amber import write_mini_amber
    from pvm_probe.benchmarks.mini_coco import write_mini_coco

    coco = write_mini_coco(root / "coco")
    amber = write_mini_amber(root / "amber")
    captions = root / "captions.jsonl"
    captions.write_text('{"image_id": 101, "caption": "A dog on a couch."}\n{"image_id": 102, "caption": "A cup."}\n')
    questions = root / "coco_pope_random.json"
    questions.write_text("".join(json.dumps({"question_id": i, "image": f"COCO_val2014_{101 + i:012d}.jpg",
                                             "text": "Is there a dog in the image?", "label": "yes"}) + "\n"
                                 for i in range(3)))
    Image.new("RGB", (32, 32), (200, 40, 40)).save(root / "img.png")
    images = root / "images.jsonl"
    images.write_text("".join(json.dumps({"image": "img.png", "prompt": f"Describe {k}.", "objects": ["ball"]}) + "\n"
                              for k in range(3)))
    rows = [{"image": "img.png", "question": "how many shapes are there", "answer": str(k)} for k in range(3)]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "train.json").write_text(json.dumps(rows, indent=1))
    paint = ["paint", "--max-new-tokens", "4"]
    chair = [*paint, "--suite", "chair", "--coco", str(coco), "--sample", "2"]
    train = ["train-pvm", "--out", str(root / "adapter"), "--steps", "1"]
    return {
        "captions": (["score", str(captions), "--coco", str(coco)], captions),
        "COCO instances": (["score", str(captions), "--coco", str(coco)], coco / "annotations/instances_val2014.json"),
        "COCO captions": (chair, coco / "annotations/captions_val2014.json"),
        "POPE questions": ([*paint, "--suite", "pope", "--coco", str(coco), "--questions", str(questions)], questions),
        **{f"AMBER {name}": ([*paint, "--suite", "amber", "--amber", str(amber)], amber / name)
           for name in ("relation.json", "safe_words.txt", "annotations.json", "query/query_generative.json")},
        "images JSONL": ([*paint, "--suite", "images", "--data", str(images)], images),
        "train JSONL": ([*train, "--data", str(root / "train.jsonl")], root / "train.jsonl"),
        "train JSON": ([*train, "--data", str(root / "train.json")], root / "train.json"),
    }


def _spoil(path) -> int:
    """Put a byte that is not UTF-8 (0xff) inside the second half of the file; returns its byte offset."""
    data = path.read_bytes()
    quote = data.find(b'"', len(data) // 2)
    at = quote + 1 if quote >= 0 else len(data) // 2
    path.write_bytes(data[:at] + b"\xff" + data[at:])
    return at


@pytest.mark.parametrize("name", ["captions", "COCO instances", "COCO captions", "POPE questions",
                                  "AMBER relation.json", "AMBER safe_words.txt", "AMBER annotations.json",
                                  "AMBER query/query_generative.json", "images JSONL", "train JSONL", "train JSON"])
def test_a_text_input_that_is_not_utf8_is_one_line_naming_file_and_offset(name, tmp_path, capsys, monkeypatch):
    import pvm_probe.jobs
    import pvm_probe.train.run

    argv, path = _inputs(tmp_path)[name]
    for module in (pvm_probe.jobs, pvm_probe.train.run):
        monkeypatch.setattr(module, "load_base", lambda *a, **k: pytest.fail("loaded a model"))
    offset = _spoil(path)
    assert main(argv) == 2
    err = one_line(capsys)
    assert f"{path}: not UTF-8 text: byte 0xff at byte offset {offset} (line " in err, err


def test_score_reads_standard_input_and_pipes(tmp_path, capsys, monkeypatch):
    import io
    import os

    from pvm_probe.benchmarks.mini_coco import write_mini_coco

    coco = str(write_mini_coco(tmp_path / "coco"))
    text = b'{"image_id": 101, "caption": "A dog and a pizza on a couch."}\n'
    (tmp_path / "c.jsonl").write_bytes(text)
    assert main(["score", str(tmp_path / "c.jsonl"), "--coco", coco, "--json", str(tmp_path / "file.json")]) == 0
    expected = json.loads((tmp_path / "file.json").read_text())["variants"]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text)))
    assert main(["score", "-", "--coco", coco, "--json", str(tmp_path / "stdin.json")]) == 0
    piped = json.loads((tmp_path / "stdin.json").read_text())
    assert piped["variants"] == expected and piped["captions_file"] == "<stdin>"
    read, write = os.pipe()  # what `score <(cat c.jsonl)` hands over: /dev/fd/N, a pipe, not a regular file
    os.write(write, text)
    os.close(write)
    try:
        assert main(["score", f"/dev/fd/{read}", "--coco", coco, "--json", str(tmp_path / "fd.json")]) == 0
    finally:
        os.close(read)
    assert json.loads((tmp_path / "fd.json").read_text())["variants"] == expected
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b'{"image_id": 101, "caption": "\xff"}\n')))
    capsys.readouterr()
    assert main(["score", "-", "--coco", coco]) == 2
    assert one_line(capsys).endswith("<stdin>: not UTF-8 text: byte 0xff at byte offset 30 (line 1); save the file "
                                     "as UTF-8")


def test_no_product_text_cites_an_issue(probed):
    """The package's text (pages, rows that reach metrics.json, protocols, messages) cites papers, tables and
    repositories, never this project's issue tracker."""
    import re
    from pathlib import Path

    import pvm_probe
    from pvm_probe.registry import SUITES
    from pvm_probe.report.benchmarks import benchmarks_html
    from pvm_probe.report.page import page

    issue = re.compile(r"\bissues?\s*#?\s*\d+", re.IGNORECASE)
    package = Path(pvm_probe.__file__).parent
    texts = {str(p): p.read_text(encoding="utf-8") for p in package.rglob("*")
             if p.suffix in (".py", ".json", ".md", ".txt", ".html", ".js", ".css")}
    for name, suite in SUITES.items():
        texts[f"{name} page"] = benchmarks_html(name, suite.benchmark_layout, {}, getattr(suite, "published", []))
    texts["report page"] = page(probed, [], [])
    texts["metrics.json"] = json.dumps(probed)
    cited = {where: issue.findall(text) for where, text in texts.items() if issue.search(text)}
    assert not cited, cited


@pytest.mark.parametrize("suite,positional", [("pope", False), ("my_vqa", False), ("pope", True)])
def test_one_word_answers_lead_with_the_benchmark_and_drop_the_quarters(probed, suite, positional):
    """Decided by the suite's `positional` (POPE's is False), never by its name: the page says position does not
    apply, has no by-quarter headline or claims panel, and opens with the benchmark table."""
    from pvm_probe.report.browser import headline_text
    from pvm_probe.report.figures import report_figures
    from pvm_probe.report.page import page
    from pvm_probe.suites.pope import PopeSuite

    row = {"accuracy": 0.8, "precision": 0.75, "recall": 0.9, "f1": 0.818, "yes_ratio": 0.6,
           "image_share_at_answer": 0.01}
    metrics = {**probed, "suite": suite, "metric": {**probed["metric"], "positional": positional},
               "benchmark": {v: {"random": row} for v in probed["variants"]},
               "benchmark_layout": PopeSuite.benchmark_layout, "published": PopeSuite.published}
    figures = report_figures(metrics, [], {})
    body = page(metrics, figures, [])
    shown = body.split("</details>", 1)[1]
    assert ("position within the answer does not apply" in body) is not positional
    assert ('id="headline"' in body) is positional and bool(headline_text(metrics)) is positional
    assert ("claims_by_quarter" in [f.name for f in figures]) is positional
    if not positional:
        assert shown.index('id="one-word"') < shown.index('id="benchmarks"') < shown.index("<h2>The paper's numbers")
    assert PopeSuite.positional is False and all(s.positional for n, s in SUITES.items() if n != "pope")
