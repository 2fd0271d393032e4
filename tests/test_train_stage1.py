"""Stage I: only PVM trains, labels cover the answer only, the paper's data layouts load."""

import json

import pytest
import torch
from conftest import small_config

from pvm_probe import attach_pvm, load_pvm, read_adapter_meta
from pvm_probe.train import RecordDataset, SFTCollator, StageIConfig, load_records, train_stage1
from pvm_probe.world import build_processor, make_scene, render
from pvm_probe.world.model import build_model


@pytest.fixture(scope="module")
def processor():
    return build_processor()


def _fixture_files(root):
    """The paper's SFT layouts, written by hand: LLaVA conversations, chat messages, flat fields."""
    for i in range(3):
        render(make_scene(i)).save(root / f"scene{i}.png")
    rows = [
        {"image": "scene0.png", "conversations": [{"from": "human", "value": "<image>\npaint o0 g1 fcount x1"},
                                                  {"from": "gpt", "value": "p0 r0c0 red circle n1"}]},
        {"images": ["scene1.png"], "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "paint o1 g1 fcount x1"}]},
            {"role": "assistant", "content": "p0 r0c0 blue square n1"}]},
        {"image": "scene2.png", "question": "paint o2 g1 fcount x1", "solution": "p0 r3c3 green star n1"},
    ]
    (root / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (root / "data.json").write_text(json.dumps(rows))
    return root


@pytest.mark.parametrize("name", ["data.jsonl", "data.json"])
def test_load_records_reads_all_layouts(tmp_path, name):
    records = load_records(_fixture_files(tmp_path) / name)
    assert [r.question for r in records] == ["paint o0 g1 fcount x1", "paint o1 g1 fcount x1", "paint o2 g1 fcount x1"]
    assert [r.answer.split()[2] for r in records] == ["red", "blue", "green"]
    assert all(len(r.images) == 1 for r in records)


def test_missing_image_is_a_clear_error(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"image": "nope.png", "question": "q", "answer": "a"}))
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_records(tmp_path / "d.jsonl")


def test_labels_cover_exactly_the_answer(tmp_path, processor):
    records = load_records(_fixture_files(tmp_path) / "data.jsonl")
    batch = SFTCollator(processor)(records[:2])
    tok = processor.tokenizer
    for row, record in enumerate(records[:2]):
        labelled = batch["labels"][row][batch["labels"][row] != -100]
        assert tok.convert_ids_to_tokens(labelled.tolist()) == record.answer.split() + ["<|im_end|>"]


def test_stage1_trains_pvm_only_and_saves_the_adapter(tmp_path, processor):
    records = load_records(_fixture_files(tmp_path) / "data.jsonl")
    model = build_model(processor, hidden=64, layers=2)
    backbone = {k: v.clone() for k, v in model.state_dict().items()}
    handle = attach_pvm(model, small_config(layers=(1,)))
    pvm_before = {k: v.clone() for k, v in handle.state_dict().items()}
    cfg = StageIConfig(steps=3, batch_size=3, lr=1e-2, warmup_steps=0, logging_steps=1)
    log = train_stage1(model, handle, RecordDataset(records), SFTCollator(processor), tmp_path / "out", cfg)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in backbone.items()), "a backbone tensor changed"
    assert all(not torch.equal(v, handle.state_dict()[k]) for k, v in pvm_before.items())
    assert [e["loss"] for e in log if "loss" in e]
    meta = read_adapter_meta(tmp_path / "out")
    assert meta["provenance"]["stage"] == "I" and meta["provenance"]["trainable_parameters"] == handle.num_parameters()
    assert json.loads((tmp_path / "out" / "train_log.json").read_text()) == log
    trained = {k: v.clone() for k, v in handle.state_dict().items()}
    handle.remove()
    reloaded = load_pvm(model, tmp_path / "out").state_dict()
    assert all(torch.equal(trained[k], reloaded[k]) for k in trained)
