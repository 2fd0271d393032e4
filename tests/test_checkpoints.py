"""Adapter checkpoints and bad inputs: each a one-line error, the model left untouched."""

import json

import pytest
import torch
from conftest import open_gates, small_config
from torch import nn

from pvm_probe import attach_pvm, load_pvm, read_adapter_meta
from pvm_probe.checkpoints import CONFIG_FILE, WEIGHTS_FILE, AdapterMismatchError
from pvm_probe.zoo import Image, fake_request, tiny_model


def logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def untouched(model, reference_logits, batch):
    assert not any(n for n, _ in model.named_modules() if n.endswith(".pvm"))
    assert torch.equal(logits(model, batch), reference_logits)


@pytest.fixture
def saved(tmp_path):
    model = tiny_model("qwen3_vl")
    handle = attach_pvm(model, small_config())
    open_gates(handle)
    handle.save(tmp_path / "adapter", provenance={"stage": "test"})
    batch = fake_request(model, [Image(4, 4)])
    return tmp_path / "adapter", logits(model, batch), batch


def test_save_load_round_trip(saved):
    directory, expected, batch = saved
    assert sorted(p.name for p in directory.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    model = tiny_model("qwen3_vl")
    handle = load_pvm(model, directory)
    assert torch.equal(logits(model, batch), expected)
    assert handle.provenance["stage"] == "test"
    meta = read_adapter_meta(directory)
    assert meta["base"]["architecture"] == "Qwen3VLForConditionalGeneration"
    assert meta["num_parameters"] == handle.num_parameters()


def test_weights_file_is_plain_safetensors(saved):
    from safetensors import safe_open

    with safe_open(saved[0] / WEIGHTS_FILE, "pt") as f:
        assert "layers.1.alpha" in f.keys()


def test_truncated_weights_give_a_clear_error(saved):
    directory, _, batch = saved
    data = (directory / WEIGHTS_FILE).read_bytes()
    (directory / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    model = tiny_model("qwen3_vl")
    before = logits(model, batch)
    with pytest.raises(ValueError, match="corrupted adapter weights"):
        load_pvm(model, directory)
    untouched(model, before, batch)


def test_corrupted_config_gives_a_clear_error(saved):
    directory, _, _ = saved
    (directory / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="corrupted adapter config"):
        load_pvm(tiny_model("qwen3_vl"), directory)


def test_adapter_from_another_base_is_refused(saved):
    directory, _, _ = saved
    other_arch = tiny_model("qwen2_5_vl")
    with pytest.raises(AdapterMismatchError, match="architecture"):
        load_pvm(other_arch, directory)
    other_weights = tiny_model("qwen3_vl", seed=1)  # same shapes, different weights
    batch = fake_request(other_weights, [Image(4, 4)])
    before = logits(other_weights, batch)
    with pytest.raises(AdapterMismatchError, match="other base weights"):
        load_pvm(other_weights, directory)
    untouched(other_weights, before, batch)
    load_pvm(other_weights, directory, allow_other_weights=True).remove()


def test_adapter_with_a_wider_base_is_refused(saved):
    directory, _, _ = saved
    meta = json.loads((directory / CONFIG_FILE).read_text())
    meta["base"]["hidden_size"] = 4096
    (directory / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(AdapterMismatchError, match="hidden_size=4096"):
        load_pvm(tiny_model("qwen3_vl"), directory)


def test_missing_adapter_names_what_is_shipped(tmp_path):
    with pytest.raises(FileNotFoundError, match="no adapter directory"):
        load_pvm(tiny_model("qwen3_vl"), tmp_path / "nope")


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unsupported architecture Linear"):
        attach_pvm(nn.Linear(2, 2), small_config())


def test_layer_out_of_range_leaves_the_model_untouched():
    model = tiny_model("qwen3_vl")
    batch = fake_request(model, [Image(4, 4)])
    before = logits(model, batch)
    with pytest.raises(ValueError, match="layer index 7 out of range: the model has 4 decoder layers"):
        attach_pvm(model, small_config(layers=(1, 7)))
    untouched(model, before, batch)


def test_attaching_twice_is_refused():
    model = tiny_model("qwen3_vl")
    handle = attach_pvm(model, small_config())
    with pytest.raises(RuntimeError, match="already attached"):
        attach_pvm(model, small_config())
    handle.remove()
    attach_pvm(model, small_config()).remove()


def test_failure_inside_attach_removes_everything(monkeypatch):
    model = tiny_model("qwen3_vl")
    batch = fake_request(model, [Image(4, 4)])
    before = logits(model, batch)
    from pvm_probe import inject

    def broken_install(self):
        self._hooks.append(model.register_forward_hook(lambda *a: None))
        raise RuntimeError("boom")

    monkeypatch.setattr(inject.PVMHandle, "_install", broken_install)
    with pytest.raises(RuntimeError, match="boom"):
        attach_pvm(model, small_config())
    assert not model._forward_hooks
    untouched(model, before, batch)


def test_save_is_atomic_when_the_write_fails(saved, monkeypatch):
    directory, _, _ = saved
    good = (directory / WEIGHTS_FILE).read_bytes()
    model = tiny_model("qwen3_vl")
    handle = attach_pvm(model, small_config())
    from pvm_probe import checkpoints

    def failing_save(tensors, path, metadata=None):
        open(path, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        handle.save(directory)
    assert (directory / WEIGHTS_FILE).read_bytes() == good
    assert sorted(p.name for p in directory.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]


def test_adapter_from_a_windowed_base_is_refused_without_the_window(saved):
    from pvm_probe.world.window import set_attention_window
    directory, _, _ = saved
    windowed = tiny_model("qwen3_vl")  # same weights, but its text decoder only sees its last 8 tokens
    set_attention_window(windowed, 8)
    with pytest.raises(AdapterMismatchError, match="attention_window=None, this model has 8"):
        load_pvm(windowed, directory)
