"""Stage II: TRL's GRPOTrainer drives the hooked VLM; rewards are the paper's format 0.1 + accuracy 0.9."""

import pytest
import torch
from conftest import small_config

from pvm_probe import attach_pvm
from pvm_probe.train.grpo import StageIIConfig, train_stage2
from pvm_probe.train.world_data import accuracy_reward, format_reward, world_prompts
from pvm_probe.world import PaintSpec, answer_tokens, build_processor, make_scene
from pvm_probe.world.model import build_model


def _completion(tokens):
    return [{"role": "assistant", "content": " ".join(tokens)}]


def test_rewards_on_hand_written_answers():
    row = world_prompts(1, gaps=(1,))[0]
    spec = PaintSpec(row["order"], row["gap"], row["filler"], row["passes"])
    right = answer_tokens(make_scene(row["scene_seed"]), spec)
    wrong_colour = list(right)
    wrong_colour[2] = next(c for c in ("red", "blue") if c != right[2])  # first claim's colour
    truncated = right[: len(right) // 2]
    fields = {k: [row[k]] * 3 for k in ("scene_seed", "order", "gap", "filler", "passes")}
    completions = [_completion(t) for t in (right, wrong_colour, truncated)]
    assert format_reward(completions, **fields) == [0.1, 0.1, 0.0]
    assert accuracy_reward(completions, **fields) == pytest.approx([0.9, 0.9 * 15 / 16, 0.9 * 8 / 16])


def red_reward(completions, **_):
    """A reward with spread even for a random policy, so the test sees real gradients."""
    return [c[0]["content"].split().count("red") / 4 for c in completions]


@pytest.mark.parametrize("train_backbone", [False, True])
def test_grpo_trains_what_it_should(tmp_path, train_backbone):
    processor = build_processor()
    model = build_model(processor, hidden=64, layers=2)
    handle = attach_pvm(model, small_config(layers=(1,)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = StageIIConfig(steps=2, num_generations=4, prompts_per_step=1, max_completion_length=16, lr=1e-2,
                        logging_steps=1, train_backbone=train_backbone)
    log = train_stage2(model, handle, processor, world_prompts(2, gaps=(1,)), [red_reward], tmp_path, cfg)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "model.language_model.layers.1.pvm.alpha" in changed
    assert not any(k.startswith("model.visual.") for k in changed), "the vision tower must stay frozen"
    assert any(k.startswith("model.language_model.layers.0.mlp") for k in changed) is train_backbone
    assert ("lm_head.weight" in changed) is train_backbone
    assert any("reward" in entry for entry in log)
    assert (tmp_path / "pvm_model.safetensors").is_file()
