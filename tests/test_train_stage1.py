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


def test_claims_collator_labels_exactly_the_grounded_claims(processor):
    """Reference: the world's own answer, where the claims are the colour and shape after each cell."""
    from pvm_probe.train.world_data import ClaimsCollator, WorldSFTDataset
    from pvm_probe.world.scenes import COLOURS, SHAPES

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
