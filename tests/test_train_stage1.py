"""Stage I: the data files, the collator's labels and guard rails, PVM-only training, checkpointing, dropout."""

import json
import os
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import small_config

from pvm_probe import attach_pvm, load_pvm, read_adapter_meta
from pvm_probe.errors import InputError
from pvm_probe.suites.world import build_processor, make_grid_scene, render_grid
from pvm_probe.suites.world.model import build_model
from pvm_probe.train.collate import SFTCollator, limit_pixels
from pvm_probe.train.config import StageIConfig
from pvm_probe.train.data import Record, scan_data
from pvm_probe.train.sft import train_stage1

QUESTIONS = ["paint o0 g1 fcount x1", "paint o1 g1 fcount x1", "paint o2 g1 fcount x1"]


@pytest.fixture(scope="module")
def processor():
    return build_processor()


def _rows():
    """The paper's SFT layouts, written by hand: LLaVA conversations, chat messages, flat fields."""
    return [
        {"image": "scene0.png", "conversations": [{"from": "human", "value": "<image>\npaint o0 g1 fcount x1"},
                                                  {"from": "gpt", "value": "p0 r0c0 red circle n1"}]},
        {"images": ["scene1.png"], "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "paint o1 g1 fcount x1"}]},
            {"role": "assistant", "content": "p0 r0c0 blue square n1"}]},
        {"image": "scene2.png", "question": "paint o2 g1 fcount x1", "solution": "p0 r3c3 green cross n1"},
    ]


def _fixture_files(root: Path) -> Path:
    for i in range(3):
        render_grid(make_grid_scene(i)).save(root / f"scene{i}.png")
    rows = _rows()
    (root / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (root / "data.json").write_text(json.dumps(rows, indent=1))
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = [{"image": r.get("image") or r["images"][0], "question": q, "answer": "p0 r0c0 red circle n1"}
            for r, q in zip(rows, QUESTIONS, strict=True)]
    pq.write_table(pa.Table.from_pylist(flat), root / "data.parquet", row_group_size=2)
    return root


@pytest.mark.parametrize("name", ["data.jsonl", "data.json"])
def test_scan_reads_all_layouts_lazily(tmp_path, name):
    data = scan_data(_fixture_files(tmp_path) / name)
    records = [data[i] for i in range(len(data))]
    assert [r.question for r in records] == QUESTIONS
    assert [r.answer.split()[2] for r in records] == ["red", "blue", "green"]
    assert [r.images for r in records] == [[tmp_path / f"scene{i}.png"] for i in range(3)]
    assert data.kinds == {"records": 3, "text_only": 0}
    assert (data.rows is None) is (name == "data.jsonl")  # JSONL: byte offsets only, each line read on demand


def test_parquet_rows_come_from_their_row_groups(tmp_path):
    data = scan_data(_fixture_files(tmp_path) / "data.parquet")
    assert [data[i].question for i in (2, 0, 1)] == [QUESTIONS[2], QUESTIONS[0], QUESTIONS[1]]
    assert data[2].where.endswith("row 3")


@pytest.mark.parametrize("line, expected", [
    ("not json", "line 2: not valid JSON"),
    ('["a list"]', "line 2: expected a JSON object, got list"),
    ('{"image": "nope.png", "question": "q", "answer": "a"}', "nope.png is missing"),
    ('{"image": "scene0.png", "question": "q"}', "line 2: no answer"),
    ('{"image": "scene0.png", "text": "q"}', "line 2: no question"),
    ('{"image": "scene0.png", "conversations": [{"from": "gpt", "value": "a"}]}', "no user turn"),
    ('{"image": 3, "question": "q", "answer": "a"}', "an image must be a path"),
    ('{"image": "data.json", "question": "q", "answer": "a"}', "data.json is not a readable image"),
])
def test_a_bad_record_is_named_by_its_line(tmp_path, line, expected):
    _fixture_files(tmp_path)
    good = json.dumps(_rows()[2])
    (tmp_path / "bad.jsonl").write_text(f"{good}\n{line}\n{good}\n")
    with pytest.raises(InputError, match=expected) as err:
        scan_data(tmp_path / "bad.jsonl")
    assert "\n" not in str(err.value) and "bad.jsonl" in str(err.value)


def test_json_array_errors_carry_line_numbers(tmp_path):
    _fixture_files(tmp_path)
    rows = _rows()
    rows[2] = {"image": "gone.png", "question": "q", "answer": "a"}
    (tmp_path / "a.json").write_text(json.dumps(rows, indent=1))
    expected_line = json.dumps(rows, indent=1).splitlines().index(" {", 20) + 1  # the third element's "{"
    with pytest.raises(InputError, match=f"a.json line {expected_line}: image .*gone.png is missing"):
        scan_data(tmp_path / "a.json")


def test_scan_checks_and_stage2_records_without_answers(tmp_path):
    _fixture_files(tmp_path)
    (tmp_path / "q.jsonl").write_text(json.dumps({"image": "scene0.png", "question": "q"}))
    assert scan_data(tmp_path / "q.jsonl", need_answer=False)[0].answer is None
    with pytest.raises(InputError, match="line 1: too short"):
        scan_data(tmp_path / "q.jsonl", need_answer=False, checks=(lambda r: "too short",))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InputError, match="holds no records"):
        scan_data(tmp_path / "empty.jsonl")


def _encode_reference(processor, record: Record, answer_ids: list[int]):
    """Hand reference: the prompt alone through the processor, then the answer's ids."""
    image = render_grid(make_grid_scene(0))
    prompt = processor.apply_chat_template(record.messages(), add_generation_prompt=True, tokenize=False)
    ids = processor(text=[prompt], images=[[image]], return_tensors="pt")["input_ids"][0].tolist()
    return ids + answer_ids


def test_labels_cover_exactly_the_answer_and_max_length_cuts_only_it(processor):
    image = render_grid(make_grid_scene(0))
    long = Record("paint o0 g1 fcount x1", "p0 r0c0 red circle n1 p1 r0c1 blue cross n1", [image], "r0")
    short = Record("paint o1 g1 fcount x1", "p0 r0c0 red circle", [image], "r1")
    tok = processor.tokenizer
    batch = SFTCollator(processor)([long, short])
    for row, record in enumerate((long, short)):
        labelled = batch["labels"][row][batch["labels"][row] != -100]
        assert tok.convert_ids_to_tokens(labelled.tolist()) == record.answer.split() + ["<|im_end|>"]
        n = int(batch["attention_mask"][row].sum())
        answer_ids = tok.convert_tokens_to_ids(record.answer.split() + ["<|im_end|>"])
        assert batch["input_ids"][row][:n].tolist() == _encode_reference(processor, record, answer_ids)
    prompt_len = int(batch["attention_mask"][0].sum()) - len(long.answer.split()) - 1  # the answer and end token
    cut = SFTCollator(processor, max_length=prompt_len + 5)([long, short])
    assert cut["attention_mask"].sum(1).tolist() == [prompt_len + 5, prompt_len + 5]
    assert tok.convert_ids_to_tokens(cut["labels"][0][cut["labels"][0] != -100].tolist()) == long.answer.split()[:5]
    assert cut["input_ids"][0][:prompt_len].tolist() == batch["input_ids"][0][:prompt_len].tolist()


def test_a_prompt_longer_than_max_length_is_kept_whole_without_loss(processor):
    image = render_grid(make_grid_scene(0))
    warnings = []
    collator = SFTCollator(processor, max_length=5, warn=warnings.append)
    batch = collator([Record("paint o0 g1 fcount x1", "p0 r0c0 red circle", [image], "data.jsonl line 7")])
    assert (batch["labels"] == -100).all() and collator.prompt_only == 1
    assert batch["attention_mask"].sum() > 5  # the prompt is not cut
    assert len(warnings) == 1 and "data.jsonl line 7" in warnings[0] and ">= --max-length 5" in warnings[0]
    from types import SimpleNamespace

    from pvm_probe.train.sft import answer_token_loss

    outputs = SimpleNamespace(logits=torch.randn(*batch["labels"].shape, 7))
    assert answer_token_loss(outputs, batch["labels"], num_items_in_batch=torch.tensor(0)).item() == 0.0  # not NaN


def test_max_pixels_reaches_the_qwen_image_processor_and_llava_says_it_is_fixed(tmp_path):
    from pvm_probe.processors import load_processor
    from pvm_probe.zoo import save_tiny_checkpoint

    image = render_grid(make_grid_scene(0))  # 128 x 128
    processor = load_processor(save_tiny_checkpoint("qwen2_5_vl", tmp_path / "qwen"))
    tokens = processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"].prod().item() // 4
    assert tokens == 16  # the tiny checkpoint's 64 x 64 px: 8 x 8 patches of 8 px, 2 x 2 merged
    assert limit_pixels(processor, 32 * 32) is None
    grid = processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"]
    assert grid.tolist() == [[1, 4, 4]]  # 32 x 32 px: 4 x 4 patches -> 4 merged tokens
    with pytest.raises(InputError, match="below one merged patch"):
        limit_pixels(processor, 100)
    llava = load_processor(save_tiny_checkpoint("llava", tmp_path / "llava"))
    assert "fixed 32x32" in limit_pixels(llava, 1024)


def _records(tmp_path) -> list[Record]:
    data = scan_data(_fixture_files(tmp_path) / "data.jsonl")
    return [data[i] for i in range(len(data))]


def _scratch_dirs() -> set[str]:
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("pvm_probe_trainer_")}


def test_stage1_trains_pvm_only_logs_an_eval_loss_and_leaves_no_scratch(tmp_path, processor):
    records = _records(tmp_path)
    model = build_model(processor, hidden=64, layers=2)
    backbone = {k: v.clone() for k, v in model.state_dict().items()}
    handle = attach_pvm(model, small_config(layers=(1,)))
    pvm_before = {k: v.clone() for k, v in handle.state_dict().items()}
    cfg = StageIConfig(steps=3, batch_size=2, lr=1e-2, warmup_steps=0, logging_steps=1, eval_steps=2)
    scratch = _scratch_dirs()
    log = train_stage1(model, handle, records[:2], SFTCollator(processor), cfg, eval_set=records[2:])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in backbone.items()), "a backbone tensor changed"
    assert all(not torch.equal(v, handle.state_dict()[k]) for k, v in pvm_before.items())
    assert [e["step"] for e in log if "eval_loss" in e] == [2, 3]
    assert len([e for e in log if "loss" in e]) == 3
    assert _scratch_dirs() == scratch and not model.training


def test_eval_loss_is_the_answer_token_mean_of_the_held_out_records(processor):
    """Reference: Hugging Face's own shifted cross entropy on the held-out batch (model.loss_function)."""
    image = render_grid(make_grid_scene(1))
    held_out = [Record("paint o0 g1 fcount x1", "p0 r0c0 red circle n1", [image])]
    model = build_model(processor, hidden=64, layers=2)
    handle = attach_pvm(model, small_config(layers=(1,)))
    cfg = StageIConfig(steps=1, batch_size=1, lr=1e-9, warmup_steps=0, logging_steps=1)
    log = train_stage1(model, handle, held_out, SFTCollator(processor), cfg, eval_set=held_out)
    batch = SFTCollator(processor)(held_out)
    labels = batch.pop("labels")
    with torch.no_grad():
        reference = model(**batch, labels=labels).loss.item()
    assert [e["eval_loss"] for e in log if "eval_loss" in e] == [pytest.approx(reference, rel=1e-4)]


def _loss_and_pvm_grads(model, handle, batch, labels, calls: list):
    from pvm_probe.train.sft import answer_token_loss

    model.zero_grad()
    calls.clear()
    loss = answer_token_loss(model(**batch), labels)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in handle.named_parameters()}, len(calls)


@pytest.mark.parametrize("arch", ["qwen3_vl", "qwen2_5_vl", "llava"])
def test_gradient_checkpointing_gives_the_same_loss_and_pvm_gradients(arch):
    """Reference: the same forward and backward without checkpointing; the PVM blocks must run again in the
    backward pass (their hooks ride along the recompute) for the check to mean anything."""
    from conftest import open_gates

    from pvm_probe.train.sft import leave_training, set_trainable
    from pvm_probe.zoo import Image, fake_request, tiny_model

    model = tiny_model(arch)
    handle = attach_pvm(model, small_config())
    open_gates(handle)
    set_trainable(model, handle, train_backbone=False)
    batch = fake_request(model, [Image(4, 4), Image(4, 4)], prompt_len=10)
    labels = batch["input_ids"].masked_fill(torch.arange(batch["input_ids"].shape[1]) < 8, -100)
    calls = []
    # a pre-hook: the recompute stops (early stop) inside a block's last op, before any post-hook
    for block in handle.blocks.values():
        block.register_forward_pre_hook(lambda *_: calls.append(1))
    model.train()
    plain = _loss_and_pvm_grads(model, handle, batch, labels, calls)
    model.activation_checkpointing_enable({"use_reentrant": False})
    checkpointed = _loss_and_pvm_grads(model, handle, batch, labels, calls)
    leave_training(model, gradient_checkpointing=True)
    assert (plain[2], checkpointed[2]) == (2, 4)  # two blocks, each recomputed once
    torch.testing.assert_close(checkpointed[0], plain[0], atol=1e-5, rtol=1e-5)
    for name, grad in plain[1].items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(checkpointed[1][name], grad, atol=1e-5, rtol=1e-4)
    assert not model.is_activation_checkpointing and not hasattr(model, "_require_grads_hook")


def test_claims_collator_labels_exactly_the_grounded_claims(processor):
    """Reference: the world's own answer, where the claims are the colour and shape after each cell."""
    from pvm_probe.suites.world.scenes import COLOURS, SHAPES
    from pvm_probe.train.world_data import ClaimsCollator, WorldSFTDataset

    dataset = WorldSFTDataset(processor, 2, gaps=(8,), fillers=("said",))
    batch = ClaimsCollator(processor)([dataset[0], dataset[1]])
    for row, i in enumerate((0, 1)):
        answer = dataset.examples[i].answer
        steps = [k for k, t in enumerate(answer) if t.startswith("p")]
        expected = [answer[k + j] for k in steps for j in (2, 3)]  # p CELL COLOUR SHAPE
        labels = batch["labels"][row]
        got = processor.tokenizer.convert_ids_to_tokens(labels[labels != -100].tolist())
        assert got == expected and len(got) == 32
        assert set(got[0::2]) <= set(COLOURS) and set(got[1::2]) <= set(SHAPES)
    decoys = [t for t in dataset.examples[0].answer if t in COLOURS]
    assert len(decoys) > 16  # the decoy triplets also name colours, and none of them is labelled


def test_backbone_visual_dropout_hides_the_image_from_the_backbone_only(qwen3_pvm):
    """Reference: Hugging Face's own forward with the image embeddings zeroed by hand (no hooks)."""
    from pvm_probe.train.sft import BackboneVisualDropout
    from pvm_probe.zoo import Image, fake_request

    model, handle = qwen3_pvm
    batch = fake_request(model, [Image(4, 4), Image(4, 4)])
    visual = batch["input_ids"] == model.config.image_token_id  # [B, T]
    with torch.no_grad(), handle.gates_off():
        embeds = model.model.get_input_embeddings()(batch["input_ids"])
        image = model.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"])
        image = torch.cat(image.pooler_output if hasattr(image, "pooler_output") else image)
        seen = embeds.masked_scatter(visual[..., None], image)
        blind = seen.masked_fill(visual[..., None], 0.0)
        positions, _ = model.model.get_rope_index(batch["input_ids"], batch["mm_token_type_ids"],
                                                  batch["image_grid_thw"], attention_mask=batch["attention_mask"])
        plain = {"attention_mask": batch["attention_mask"], "position_ids": positions}
        ref_seen = model(inputs_embeds=seen, **plain).logits
        ref_blind = model(inputs_embeds=blind, **plain).logits
        model.train()
        with BackboneVisualDropout(handle, p=0.999, seed=0):
            dropped = model(**batch).logits
            captured = handle.memory.tokens.clone()
        model.eval()
        with BackboneVisualDropout(handle, p=0.999, seed=0):
            evaluated = model(**batch).logits
    torch.testing.assert_close(dropped, ref_blind, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(evaluated, ref_seen, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(ref_blind, ref_seen, atol=1e-3)
    torch.testing.assert_close(captured, image.view(2, -1, image.shape[-1]))  # PVM still reads the image
    with pytest.raises(ValueError, match="dropout"):
        BackboneVisualDropout(handle, p=1.0)


def test_a_saved_run_reloads_bit_identically(tmp_path, processor):
    from pvm_probe.train.run import save_run

    model = build_model(processor, hidden=64, layers=2)
    handle = attach_pvm(model, small_config(layers=(1,)))
    log = train_stage1(model, handle, _records(tmp_path), SFTCollator(processor),
                       StageIConfig(steps=2, batch_size=3, lr=1e-2, warmup_steps=0, logging_steps=1))
    save_run(tmp_path / "out", handle, {"stage": "I", "note": "test"}, log)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["pvm_config.json", "pvm_model.safetensors",
                                                                    "train_log.json"]
    assert read_adapter_meta(tmp_path / "out")["provenance"] == {"stage": "I", "note": "test"}
    assert json.loads((tmp_path / "out" / "train_log.json").read_text()) == log
    trained = {k: v.clone() for k, v in handle.state_dict().items()}
    handle.remove()
    reloaded = load_pvm(model, tmp_path / "out").state_dict()
    assert all(torch.equal(trained[k], reloaded[k]) for k in trained)
