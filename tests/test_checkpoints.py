"""Adapter checkpoints: round trip, base fingerprint, file modes, whole-directory writes; bad inputs\ngive one-line errors and leave the model untouched."""

import json
import os
import stat
import warnings
from contextlib import contextmanager

import pytest
import torch
from conftest import open_gates, small_config
from torch import nn

from pvm_probe import InputError, attach_pvm, load_pvm, read_adapter_meta
from pvm_probe.checkpoints import (
    CONFIG_FILE,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    AdapterMismatchError,
    base_fingerprint,
    describe_adapter,
    upgrade_fingerprint,
)
from pvm_probe.errors import LegacyFingerprintWarning
from pvm_probe.io import atomic_dir, atomic_write_json, atomic_write_text
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
    with pytest.raises(InputError, match="corrupted adapter weights .*incomplete metadata"):
        load_pvm(model, directory)
    untouched(model, before, batch)


def test_corrupted_config_gives_a_clear_error(saved):
    directory, _, _ = saved
    (directory / CONFIG_FILE).write_text("{not json")
    with pytest.raises(InputError, match=r"pvm_config.json: is not valid JSON \(Expecting property name"):
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


def test_adapter_with_a_wider_base_is_refused():
    # pvm-stage1 was trained on the shipped baseline (width 128); the tiny model has width 64
    with pytest.raises(AdapterMismatchError, match="hidden_size=128, this model has 64"):
        load_pvm(tiny_model("qwen3_vl"), "pvm-stage1")


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

    def failing_write(self, data):
        open(self, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.Path, "write_bytes", failing_write)
    with pytest.raises(OSError, match="disk full"):
        handle.save(directory)
    assert (directory / WEIGHTS_FILE).read_bytes() == good
    assert sorted(p.name for p in directory.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert [p.name for p in directory.parent.iterdir()] == [directory.name]  # no temporary sibling left


def test_adapter_from_a_windowed_base_is_refused_without_the_window(saved):
    from pvm_probe.suites.world.window import set_attention_window
    directory, _, _ = saved
    windowed = tiny_model("qwen3_vl")  # same weights, but its text decoder only sees its last 8 tokens
    set_attention_window(windowed, 8)
    with pytest.raises(AdapterMismatchError, match="attention_window=None, this model has 8"):
        load_pvm(windowed, directory)


# ---- the base fingerprint -------------------------------------------------------------------------
def test_fingerprint_checksums_match_a_hand_computation():
    model = tiny_model("qwen3_vl")
    weight = model.model.language_model.layers[3].mlp.down_proj.weight  # [64, 128]
    flat = weight.detach().double().numpy().ravel()
    picks = flat[[i * (flat.size - 1) // 63 for i in range(64)]]  # 64 evenly spaced, both ends included
    record = base_fingerprint(model)["tensors"]["model.language_model.layers.3.mlp.down_proj.weight"]
    assert record["shape"] == [64, 128] and record["dtype"] == "float32"
    assert record["sum"] == pytest.approx(picks.sum(), rel=1e-6)
    assert record["abs_sum"] == pytest.approx(abs(picks).sum(), rel=1e-6)


def test_fingerprint_ignores_attached_blocks_and_names_every_backbone_tensor():
    model = tiny_model("qwen3_vl")
    plain = base_fingerprint(model)
    handle = attach_pvm(model, small_config())
    assert base_fingerprint(model) == plain
    handle.remove()
    assert list(plain["tensors"]) == [name for name, _ in model.named_parameters()]


def _with_last_layer_of(model, other):
    last = len(model.model.language_model.layers) - 1
    model.model.language_model.layers[last].load_state_dict(other.model.language_model.layers[last].state_dict())
    return model


def test_base_whose_last_layer_differs_is_refused(saved):
    directory, _, batch = saved
    model = _with_last_layer_of(tiny_model("qwen3_vl"), tiny_model("qwen3_vl", seed=1))
    before = logits(model, batch)
    with pytest.raises(AdapterMismatchError, match=r"other base weights: model\.language_model\.layers\.3\.\S+ differs"):
        load_pvm(model, directory)
    untouched(model, before, batch)


def test_same_base_in_bf16_accepts_an_fp32_adapter_and_the_reverse(saved, tmp_path):
    directory, _, batch = saved
    load_pvm(tiny_model("qwen3_vl", dtype=torch.bfloat16), directory).remove()
    bf16 = tiny_model("qwen3_vl", dtype=torch.bfloat16)
    attach_pvm(bf16, small_config()).save(tmp_path / "bf16")
    meta = read_adapter_meta(tmp_path / "bf16")
    assert meta["base"]["tensors"]["lm_head.weight"]["dtype"] == "bfloat16"
    load_pvm(tiny_model("qwen3_vl"), tmp_path / "bf16").remove()
    with pytest.raises(AdapterMismatchError, match="other base weights"):  # bf16 of another base still differs
        load_pvm(tiny_model("qwen3_vl", seed=1, dtype=torch.bfloat16), directory)


def _as_format_1(directory, embedding_checksum):
    meta = json.loads((directory / CONFIG_FILE).read_text())
    base = {k: v for k, v in meta["base"].items() if k != "tensors"}
    meta.update(format_version=1, base={**base, "embedding_checksum": embedding_checksum})
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    return meta


def test_old_format_fingerprint_loads_with_a_warning_and_still_checks_its_checksum(saved):
    directory, expected, batch = saved
    model = tiny_model("qwen3_vl")
    first_rows = float(model.get_input_embeddings().weight.detach()[:64].abs().sum())
    _as_format_1(directory, first_rows)
    with pytest.warns(LegacyFingerprintWarning, match="old, weaker base fingerprint"):
        handle = load_pvm(model, directory)
    assert torch.equal(logits(model, batch), expected)
    handle.remove()
    _as_format_1(directory, first_rows * 1.5)
    with pytest.warns(LegacyFingerprintWarning), pytest.raises(AdapterMismatchError, match="embedding checksum"):
        load_pvm(model, directory)


def test_upgrade_fingerprint_rewrites_only_the_base_section(saved):
    directory, _, _ = saved
    model = tiny_model("qwen3_vl")
    old = _as_format_1(directory, float(model.get_input_embeddings().weight.detach()[:64].abs().sum()))
    with pytest.raises(AdapterMismatchError):  # only its own base may upgrade it
        upgrade_fingerprint(directory, tiny_model("qwen3_vl", seed=1))
    upgrade_fingerprint(directory, model)
    new = read_adapter_meta(directory)
    assert new["format_version"] == FORMAT_VERSION and new["base"] == base_fingerprint(model)
    assert {k: v for k, v in new.items() if k not in ("format_version", "base")} == {
        k: v for k, v in old.items() if k not in ("format_version", "base")}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_pvm(model, directory).remove()


def test_shipped_adapters_load_on_the_shipped_baseline_without_a_warning():
    from pvm_probe.loading import load_base

    model, _ = load_base()
    for name in ("pvm-stage1", "pvm-stage2", "mlp-control", "processed-control"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            load_pvm(model, name).remove()
        assert read_adapter_meta(name)["format_version"] == FORMAT_VERSION


def test_newer_format_is_refused(saved):
    directory, _, _ = saved
    meta = json.loads((directory / CONFIG_FILE).read_text())
    (directory / CONFIG_FILE).write_text(json.dumps({**meta, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(InputError, match=rf"written by a newer pvm_probe \(format {FORMAT_VERSION + 1}, "
                                         rf"this reads <= {FORMAT_VERSION}\)"):
        load_pvm(tiny_model("qwen3_vl"), directory)


# ---- file modes and whole-directory writes -----------------------------------------------------------
@contextmanager
def umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                       (0o002, 0o664, 0o775)])
def test_written_files_and_directories_follow_the_umask(tmp_path, mask, file_mode, dir_mode):
    handle = attach_pvm(tiny_model("qwen3_vl"), small_config())
    with umask(mask):
        handle.save(tmp_path / "adapter")
        atomic_write_json(tmp_path / "new" / "metrics.json", {"a": 1})
    assert mode(tmp_path / "adapter") == dir_mode
    assert mode(tmp_path / "adapter" / CONFIG_FILE) == mode(tmp_path / "adapter" / WEIGHTS_FILE) == file_mode
    assert mode(tmp_path / "new") == dir_mode and mode(tmp_path / "new" / "metrics.json") == file_mode


def test_rewriting_a_file_keeps_its_mode(tmp_path):
    path = tmp_path / "report.json"
    atomic_write_text(path, "old")
    os.chmod(path, 0o640)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and mode(path) == 0o640


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt(), SystemExit(3)])
def test_atomic_dir_failure_leaves_the_old_directory_and_no_temporary(tmp_path, error):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(type(error)):
        with atomic_dir(target) as tmp:
            (tmp / "new.txt").write_text("half")
            raise error
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in target.iterdir()] == ["old.txt"] and (target / "old.txt").read_text() == "old"


def test_atomic_dir_replaces_the_old_directory_whole(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.")
        (tmp / "new.txt").write_text("new")
        assert (target / "old.txt").exists() and not (target / "new.txt").exists()  # not yet visible
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="exists and is not a directory"):
        with atomic_dir(tmp_path / "file"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "out"]


def test_saving_over_an_adapter_keeps_its_other_files_and_a_foreign_directory_is_refused(saved, tmp_path):
    directory, _, _ = saved
    (directory / "train_log.json").write_text("[]")
    attach_pvm(tiny_model("qwen3_vl"), small_config()).save(directory)
    assert sorted(p.name for p in directory.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE, "train_log.json"]
    foreign = tmp_path / "results"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="refusing to save an adapter over .*results"):
        attach_pvm(tiny_model("qwen3_vl"), small_config()).save(foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_describe_adapter_reads_the_trained_gates_and_checks_the_weights(saved):
    directory, _, _ = saved
    handle = load_pvm(tiny_model("qwen3_vl"), directory)
    described = describe_adapter(directory)
    assert described["raw"]["alphas"] == {str(layer): value for layer, value in handle.alphas().items()}
    assert described["raw"]["pvm"] == handle.config.to_dict()
    assert "layers       1, 3 " in described["text"] and "tensors fingerprinted" in described["text"]
    alphas = handle.alphas()
    assert f"alpha        layer 1: {alphas[1]:.4g} (from 0.0)" in described["text"] and "\n  stage: test" in described["text"]
    (directory / WEIGHTS_FILE).write_bytes(b"\0" * 64)
    with pytest.raises(InputError, match="corrupted adapter weights"):
        describe_adapter(directory)
