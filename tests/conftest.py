import os

import pytest
import torch

from pvm_probe import PVMConfig, attach_pvm
from pvm_probe.zoo import tiny_model

torch.set_num_threads(int(os.environ.get("PVM_PROBE_THREADS", "1")))  # tiny models: 1 thread is fastest

SMALL_PVM = dict(latent_dim=32, head_dim=8, num_heads=4, num_kv_heads=1, ffn_dim=96)


def small_config(layers=(1, 3), **overrides) -> PVMConfig:
    return PVMConfig(layers=layers, **{**SMALL_PVM, **overrides})


def open_gates(handle, seed: int = 0) -> None:
    """Give every alpha a non-zero value so the branch really changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in handle.blocks.values():
            block.alpha.copy_(0.5 + torch.rand((), generator=g))


def continuation_inputs(batch: dict, sequences: torch.Tensor) -> dict:
    """Inputs for one full forward over prompt + generated tokens (no cache)."""
    extra = sequences.shape[1] - batch["input_ids"].shape[1]
    full = {**batch, "input_ids": sequences}
    ones = torch.ones(len(sequences), extra, dtype=batch["attention_mask"].dtype)
    full["attention_mask"] = torch.cat([batch["attention_mask"], ones], dim=1)
    if "mm_token_type_ids" in batch:
        full["mm_token_type_ids"] = torch.cat([batch["mm_token_type_ids"], 0 * ones], dim=1)
    return full


@pytest.fixture
def qwen3():
    return tiny_model("qwen3_vl")


@pytest.fixture
def qwen3_pvm(qwen3):
    handle = attach_pvm(qwen3, small_config())
    open_gates(handle)
    yield qwen3, handle
    handle.remove()


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """A tiny random checkpoint of each supported family, saved as a local Hugging Face directory whose
    tokenizer knows the scenes suite's words (so decoded answers hold claims)."""
    from pvm_probe.suites.scenes.words import SCENE_WORDS
    from pvm_probe.zoo import ARCHS, save_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny_checkpoints")
    return {arch: save_tiny_checkpoint(arch, root / arch, SCENE_WORDS) for arch in ARCHS}


@pytest.fixture
def open_adapter(tiny_checkpoints, tmp_path):
    """An adapter of the tiny Qwen3-VL with open gates (it changes the answers), saved to disk."""
    from pvm_probe.loading import load_base

    model, _ = load_base(tiny_checkpoints["qwen3_vl"])
    torch.manual_seed(0)  # the block's random init: the same adapter whatever ran before
    handle = attach_pvm(model, small_config())
    open_gates(handle)
    handle.save(tmp_path / "adapter")
    handle.remove()
    return tmp_path / "adapter"
