"""The runner: records of every variant x request, probe rows that match eager attention, resuming after
an interruption, the swapped-image control and stop tokens (several processes: test_sharding.py)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pvm_probe.errors import InputError
from pvm_probe.jobs import Job, ModelSpec, SuiteSpec, open_job
from pvm_probe.loading import load_base
from pvm_probe.records import RECORDS, read_records
from pvm_probe.runner import RunConfig, run, visual_cells
from pvm_probe.suites import ImagesSuite, Request, ScenesSuite
from pvm_probe.suites.inputs import chat_inputs
from pvm_probe.variants import BASELINE, Variant, plan
from pvm_probe.zoo import ARCHS


def scenes_run(checkpoint, tmp_path, scenes=2, tokens=8, variants=(BASELINE,), **config):
    model, processor = load_base(checkpoint)
    suite = ScenesSuite(scenes=scenes, image_size=64, max_new_tokens=tokens)
    records = run(model, processor, suite, list(variants), tmp_path / "run",
                  RunConfig(batch_size=2, progress=False, **config))
    return model, processor, suite, records


@pytest.mark.parametrize("arch", ARCHS)
def test_records_hold_the_answer_claims_and_probe_rows(arch, tiny_checkpoints, tmp_path):
    _, processor, _, records = scenes_run(tiny_checkpoints[arch], tmp_path, scenes=3)
    assert [(r["variant"], r["request"]) for r in records] == [("baseline", i) for i in range(3)]
    for r in records:
        n = r["n_tokens"]
        assert 0 < n <= 8 and len(r["pieces"]) == n and "".join(r["pieces"]) == r["answer"]
        assert np.shape(r["mass"]["image"]) == (4, n) and len(r["lens"]["convergence"]) == n
        for c in r["claims"]:
            assert c["mass"] == [row[c["token"]] for row in r["mass"]["image"]]
    assert read_records(tmp_path / "run" / RECORDS) == records


def test_mass_rows_equal_eager_attention_of_a_full_forward(tiny_checkpoints, tmp_path):
    """Independent reference: eager `output_attentions` of one forward over prompt + answer (no cache)."""
    model, processor, suite, records = scenes_run(tiny_checkpoints["qwen3_vl"], tmp_path, scenes=2, tokens=6)
    model.set_attn_implementation("eager")
    for record in records:
        request = suite.request(record["request"])
        inputs = chat_inputs(processor, [request], model.device)
        answer = torch.tensor([processor.tokenizer.encode(record["answer"], add_special_tokens=False)])
        ids = processor.tokenizer.convert_tokens_to_ids  # re-encoding must give the generated ids back
        assert answer.shape[1] == record["n_tokens"], ids
        full = {**inputs, "input_ids": torch.cat([inputs["input_ids"], answer], 1),
                "attention_mask": torch.ones(1, inputs["input_ids"].shape[1] + answer.shape[1], dtype=torch.long),
                "mm_token_type_ids": torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(answer)], 1)}
        with torch.no_grad():
            attentions = model(**full, output_attentions=True).attentions  # L x [1, H, S, S]
        P, image = inputs["input_ids"].shape[1], full["input_ids"][0] == model.config.image_token_id
        for layer, weights in enumerate(attentions):
            rows = weights[0, :, P - 1:P - 1 + record["n_tokens"]]  # [H, n, S]: row t made token t
            expected = rows[..., image].sum(-1).mean(0).numpy()  # [n]
            np.testing.assert_allclose(record["mass"]["image"][layer], expected, atol=2e-5)


def test_a_row_that_stops_early_keeps_only_its_own_tokens(tiny_checkpoints, tmp_path):
    model, processor, suite, records = scenes_run(tiny_checkpoints["llava"], tmp_path / "a", scenes=2, tokens=8)
    stop = records[0]["token_ids"][2]  # make the third token of the first answer a stop token
    expected = [r["token_ids"].index(stop) if stop in r["token_ids"] else 8 for r in records]  # greedy: same prefix
    model.generation_config.eos_token_id = stop
    again = run(model, processor, suite, [BASELINE], tmp_path / "b", RunConfig(batch_size=2, progress=False))
    assert [r["n_tokens"] for r in again] == expected and expected[0] <= 2
    for before, after in zip(records, again, strict=True):
        n = after["n_tokens"]
        assert after["stopped"] == (n < 8) and after["token_ids"] == before["token_ids"][:n]
        assert np.shape(after["mass"]["image"]) == (4, n) and len(after["lens"]["convergence"]) == n
        np.testing.assert_allclose(np.array(after["mass"]["image"], dtype=float).reshape(4, n),
                                   np.array(before["mass"]["image"], dtype=float)[:, :n], atol=1e-5)


def test_an_interrupted_run_resumes_after_its_last_whole_record(tiny_checkpoints, tmp_path):
    model, processor, suite, records = scenes_run(tiny_checkpoints["qwen2_5_vl"], tmp_path, scenes=3)
    path = tmp_path / "run" / RECORDS
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # killed while writing the second record
    calls = []
    original = model.generate
    model.generate = lambda **kw: calls.append(kw["input_ids"].shape[0]) or original(**kw)
    resumed = run(model, processor, suite, [BASELINE], tmp_path / "run", RunConfig(batch_size=2, progress=False))
    assert calls == [2]  # requests 1 and 2 only, in one batch
    assert [r["answer"] for r in resumed] == [r["answer"] for r in records]
    other = ScenesSuite(scenes=3, image_size=64, max_new_tokens=9)
    with pytest.raises(InputError, match="records of another run"):
        run(model, processor, other, [BASELINE], tmp_path / "run", RunConfig(progress=False))


def test_the_swapped_image_changes_nothing_when_every_image_is_the_same(tiny_checkpoints, open_adapter, tmp_path):
    model, processor = load_base(tiny_checkpoints["qwen3_vl"])
    for name, colours in (("same", [(200, 0, 0)] * 2), ("different", [(200, 0, 0), (0, 0, 200)])):
        folder = tmp_path / name
        folder.mkdir()
        for i, colour in enumerate(colours):
            Image.new("RGB", (64, 64), colour).save(folder / f"{i}.png")
        (folder / "d.jsonl").write_text("\n".join(json.dumps({"image": f"{i}.png", "prompt": "Describe it."})
                                                  for i in range(2)))
        suite = ImagesSuite(folder / "d.jsonl", max_new_tokens=6)
        records = run(model, processor, suite, plan([str(open_adapter)], baseline=False), folder / "run",
                      RunConfig(batch_size=2, progress=False))
        by = {r["variant"]: r for r in records if r["request"] == 0}
        plain, swapped = by["adapter"], by["adapter | swapped image"]
        assert plain["n_tokens"] > 1, "an empty answer cannot tell the images apart"
        same = np.allclose(plain["mass"]["image"], swapped["mass"]["image"], atol=1e-6)
        assert same == (name == "same"), name  # PVM's injection shifts the backbone's later attention
        assert (plain["pvm"]["entropy"] == swapped["pvm"]["entropy"]) == (name == "same")


def test_non_finite_pixels_are_refused_before_generation():
    class Processor:
        tokenizer = type("T", (), {"padding_side": "left"})()

        def apply_chat_template(self, *args, **kwargs):
            from transformers import BatchFeature

            return BatchFeature({"input_ids": torch.ones(1, 3, dtype=torch.long),
                                 "pixel_values": torch.tensor([[0.0, float("nan")]])})

    request = ScenesSuite(scenes=1).request(0)
    with pytest.raises(InputError, match="non-finite pixel values in request"):
        chat_inputs(Processor(), [request], "cpu")


@pytest.mark.parametrize("arch", ["qwen3_vl", "llava"])
def test_visual_cells_tile_the_image(arch, tiny_checkpoints):
    model, processor = load_base(tiny_checkpoints[arch])
    suite = ScenesSuite(scenes=1, image_size=64)
    request = suite.request(0)
    cells = visual_cells(model, chat_inputs(processor, [request], "cpu"), [request])[0]  # [N, 5]
    assert len(cells) == 16 and (cells[:, 0] == 0).all()
    area = ((cells[:, 3] - cells[:, 1]) * (cells[:, 4] - cells[:, 2])).sum()
    assert area == pytest.approx(1.0) and cells[0, 1:].tolist() == [0, 0, 0.25, 0.25]


def test_visual_cells_follow_the_qwen_merge_order_per_request():
    """Two requests, a 4 x 6 patch grid (2 x 3 merged tokens, row-major) and a 2 x 2 one (1 token)."""
    from pvm_probe.zoo import IMAGE_TOKEN, tiny_model

    model = tiny_model("qwen3_vl")
    ids = torch.tensor([[IMAGE_TOKEN] * 6, [0] * 5 + [IMAGE_TOKEN]])
    one_image = Request(0, "r", (None,), "")
    first, second = visual_cells(model, {"input_ids": ids, "image_grid_thw": torch.tensor([[1, 4, 6], [1, 2, 2]])},
                                 [one_image, one_image])
    tops_lefts = [(round(y0, 3), round(x0, 3)) for _, x0, y0, _, _ in first]
    assert tops_lefts == [(0, 0), (0, 0.333), (0, 0.667), (0.5, 0), (0.5, 0.333), (0.5, 0.667)]
    assert second.tolist() == [[0, 0, 0, 1, 1]]


def test_jobs_refuse_the_world_on_a_foreign_base_before_loading_weights(tiny_checkpoints):
    job = Job(model=ModelSpec(base=str(tiny_checkpoints["llava"])), suite=SuiteSpec(name="world"))
    with pytest.raises(InputError, match="needs its own vocabulary"):
        open_job(job)
    with pytest.raises(InputError, match="--length does not apply to --suite scenes"):
        open_job(Job(model=ModelSpec(base=str(tiny_checkpoints["llava"])), suite=SuiteSpec(length=2)))


@pytest.mark.parametrize("arch", ARCHS)
def test_remedies_run_as_variants_and_leave_the_model_as_it_was(arch, tiny_checkpoints, tmp_path):
    model, processor, suite, records = scenes_run(tiny_checkpoints[arch], tmp_path / "plain", tokens=5)
    remedies = plan(remedies=["vcd", "pai", "memvr"], baseline=False)
    armed = run(model, processor, suite, remedies, tmp_path / "armed", RunConfig(batch_size=2, progress=False))
    assert [r["variant"] for r in armed] == ["vcd", "vcd", "pai", "pai", "memvr", "memvr"]
    for r in armed:  # the probes read the answer's own rows, not the remedies' second rows
        assert np.shape(r["mass"]["image"]) == (4, r["n_tokens"]) and len(r["lens"]["convergence"]) == r["n_tokens"]
    again = run(model, processor, suite, [BASELINE], tmp_path / "again", RunConfig(batch_size=2, progress=False))
    assert [r["answer"] for r in again] == [r["answer"] for r in records]  # every hook came off
    no_strength = [Variant("vcd0", remedy="vcd", options={"alpha": 0.0}), Variant("memvr0", remedy="memvr",
                                                                                options={"ratio": 0.0})]
    zero = run(model, processor, suite, no_strength, tmp_path / "zero", RunConfig(batch_size=2, progress=False))
    assert [r["token_ids"] for r in zero] == [r["token_ids"] for r in records] * 2  # strength 0 is the baseline


def test_a_billion_requests_cost_nothing_until_asked_for(tmp_path, monkeypatch):
    """Requests are made one batch at a time: interrupting after the first batch, only it was made."""
    from pvm_probe.records import RecordStore
    from pvm_probe.suites import WorldSuite

    model, processor = load_base()
    suite = WorldSuite(scenes=10 ** 9, length=0)
    made = []
    original = suite.request
    monkeypatch.setattr(suite, "request", lambda i: made.append(i) or original(i))

    def stop_after_first_batch(self, record):
        if record["request"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(RecordStore, "append", stop_after_first_batch)
    with pytest.raises(KeyboardInterrupt):
        run(model, processor, suite, [BASELINE], tmp_path, RunConfig(batch_size=2, probes=False, progress=False))
    assert made == [0, 1]
