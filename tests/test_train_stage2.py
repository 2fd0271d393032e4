"""Stage II: the rewards against hand-computed values, per-completion sampling, and a few GRPO steps on a tiny
saved checkpoint of every family (only PVM changes; with train_backbone everything but the vision tower)."""

import json
import math

import pytest
import torch
from PIL import Image

from pvm_probe.errors import InputError
from pvm_probe.train.config import RewardSpec, StageIIConfig
from pvm_probe.train.rewards import (
    boxed,
    exact_score,
    final_answer,
    format_score,
    import_reward,
    numeric_score,
    resolve_reward,
    scene_claim_score,
)
from pvm_probe.train.sampling import RowSeededSampler, stream_key


def _completion(text):
    return [{"role": "assistant", "content": text}]


# ---- rewards, by hand ---------------------------------------------------------------------------------
def test_final_answer_is_the_last_boxed_content_else_the_last_line():
    assert boxed(r"so \boxed{a_{1}} or \boxed{\frac{1}{2}} and \boxed{open") == ["a_{1}", r"\frac{1}{2}"]
    assert final_answer("Let me think.\nWe get 12.\n\n  Final answer: 12  \n") == "Final answer: 12"
    assert final_answer(r"first \boxed{3} then \boxed{ 4 }") == "4"
    assert final_answer("") == ""


@pytest.mark.parametrize("text, reference, expected", [
    (r"It is \boxed{ Paris }", "paris.", 1.0),
    ("reasoning\nFinal answer: $Paris$", r"\boxed{\text{Paris}}", 1.0),
    (r"\boxed{Lyon}", "Paris", 0.0),
    ("", "Paris", 0.0),
    (r"\boxed{B}", "b", 1.0),
])
def test_exact(text, reference, expected):
    assert exact_score(text, reference) == expected


@pytest.mark.parametrize("text, reference, expected", [
    (r"\boxed{1,234.5}", "1234.5", 1.0),
    (r"\boxed{\frac{1}{3}}", "0.33333", 1.0),  # |1/3 - 0.33333| = 3.3e-6 <= 1e-4 x 0.33333
    (r"\boxed{0.33}", r"\frac{1}{3}", 0.0),  # 3.3e-3 > 3.3e-5
    ("so 3/4", "0.75", 1.0),
    ("x = 7 and then 9", "9", 1.0),  # the last number
    ("no number", "9", 0.0),
    (r"\boxed{-2e3}", "-2000", 1.0),
])
def test_numeric(text, reference, expected):
    assert numeric_score(text, reference) == expected


def test_format():
    assert [format_score(t) for t in (r"\boxed{42}", r"\boxed{ }", r"\boxed{42", "42")] == [1.0, 0.0, 0.0, 0.0]


def test_scenes_claim_score_by_hand():
    """Scene 2 (a training seed): a purple circle on the left, two red stars (center, right): 2 kinds, 3 objects,
    target 3 x 2 + 3 = 9. Correct: 'stars', 'red stars', 'two red stars', 'circle', 'purple circle', 'circle
    left', 'star' (7 distinct); wrong: 'tree' (never drawn), 'blue star' (no blue star): (7 - 2) / 9."""
    from pvm_probe.suites.scenes import make_shape_scene

    scene = make_shape_scene(2)
    assert scene.describe() == [{"shape": "circle", "colour": "purple", "region": "left"},
                                {"shape": "star", "colour": "red", "region": "center"},
                                {"shape": "star", "colour": "red", "region": "right"}]
    text = "There are two red stars. A purple circle is on the left. There is a green tree. There is a blue star."
    assert scene_claim_score(scene, text) == pytest.approx(5 / 9)
    assert scene_claim_score(scene, text + " There are two red stars.") == pytest.approx(5 / 9)  # no gain
    assert scene_claim_score(scene, text + " A green tree.") == pytest.approx(4 / 9)  # each hallucination costs
    assert scene_claim_score(scene, "A tree, a car, a dog, a cat, a house, a bird, a cup, a hat, a fork, a bus.") == -1


def test_world_rewards_on_hand_written_answers():
    from pvm_probe.suites.world import PaintSpec, answer_tokens, make_grid_scene
    from pvm_probe.train.world_data import world_prompt

    row = world_prompt(0, gaps=(1,))
    spec = PaintSpec(row["order"], row["gap"], row["filler"], row["passes"])
    right = answer_tokens(make_grid_scene(row["scene_seed"]), spec)
    wrong_colour = list(right)
    wrong_colour[2] = next(c for c in ("red", "blue") if c != right[2])  # the first claim's colour
    truncated = right[: len(right) // 2]
    columns = {k: [row[k]] * 3 for k in ("scene_seed", "order", "gap", "filler", "passes")}
    completions = [_completion(" ".join(t)) for t in (right, wrong_colour, truncated)]
    fmt = resolve_reward(RewardSpec("world-format", 0.1))
    accuracy = resolve_reward(RewardSpec("world-accuracy", 0.9))
    assert fmt.function(completions, **columns) == [1.0, 1.0, 0.0]
    assert accuracy.function(completions, **columns) == pytest.approx([1.0, 15 / 16, 8 / 16])


def test_reward_functions_read_their_record_columns():
    exact = resolve_reward(RewardSpec("exact", 0.9))
    got = exact.function([_completion(r"\boxed{4}"), _completion("5")], answer=["4", "4"], question=["q", "q"])
    assert got == [1.0, 0.0] and exact.needs_answer and exact.sources == ("data",)
    assert resolve_reward(RewardSpec("numeric", 0.9)).check("no digits here") is not None


def test_user_rewards_are_imported_by_name_with_one_line_errors():
    assert import_reward("math:sqrt")(4) == 2
    cases = {"no_such_module_xyz:f": "cannot import no_such_module_xyz", "math:nope": "has no attribute nope",
             "math:pi": "is a float, not callable", "math": "expected module:function"}
    for name, message in cases.items():
        with pytest.raises(InputError, match=message) as err:
            import_reward(name)
        assert "\n" not in str(err.value)


# ---- sampling -----------------------------------------------------------------------------------------
def test_each_completion_draws_from_its_own_stream_whatever_the_batch():
    scores = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))  # [B, V]
    keys = [stream_key(0, 3, row) for row in range(4)]
    whole = RowSeededSampler(keys, temperature=0.7)(None, scores).argmax(-1)  # [B]
    halves = [RowSeededSampler(keys[i:i + 2], temperature=0.7)(None, scores[i:i + 2]).argmax(-1) for i in (0, 2)]
    assert torch.equal(whole, torch.cat(halves))
    assert stream_key(0, 3, 1) != stream_key(0, 4, 1) != stream_key(1, 3, 1)


def test_the_sampler_draws_from_softmax_of_logits_over_temperature():
    """Reference: the softmax by hand; 6,000 rows with their own streams, each count within 4 sigma."""
    logits, temperature, n = torch.tensor([2.0, 1.0, 0.0, -1.0]), 0.8, 6000
    probs = [math.exp(x / temperature) for x in logits.tolist()]
    probs = [p / sum(probs) for p in probs]
    draws = RowSeededSampler([stream_key(7, 0, r) for r in range(n)], temperature)(None, logits.expand(n, 4))
    counts = torch.bincount(draws.argmax(-1), minlength=4).tolist()
    for count, p in zip(counts, probs, strict=True):
        assert abs(count - n * p) < 4 * math.sqrt(n * p * (1 - p)), (counts, probs)


# ---- GRPO on every family -----------------------------------------------------------------------------
WORDS = "how many shapes are there the answer is red blue green 1 2 3".split()


def variety(completions, **_):
    """A reward with spread for a random policy (distinct words / words), so every step has gradients."""
    words = [c[0]["content"].split() for c in completions]
    return [len(set(w)) / (1 + len(w)) for w in words]


def write_data(root, n: int = 4):
    """n images with a question and a numeric answer, as JSONL beside them."""
    rows = []
    for i in range(n):
        Image.new("RGB", (48 + 16 * i, 64), (60 * i, 200 - 40 * i, 90)).save(root / f"img{i}.png")
        rows.append({"image": f"img{i}.png", "question": "how many shapes are there", "answer": str(1 + i % 3)})
    (root / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root / "data.jsonl"


@pytest.mark.parametrize("train_backbone", [False, pytest.param(True, marks=pytest.mark.slow)])
@pytest.mark.parametrize("arch", ["qwen3_vl", *(pytest.param(a, marks=pytest.mark.slow) for a in ("qwen2_5_vl", "llava"))])
def test_grpo_steps_train_what_they_should(tmp_path, arch, train_backbone):
    from conftest import small_config

    from pvm_probe import attach_pvm
    from pvm_probe.backbones import hook_sites
    from pvm_probe.loading import load_base
    from pvm_probe.train.data import scan_data
    from pvm_probe.train.grpo import train_stage2
    from pvm_probe.train.prompts import data_prompts
    from pvm_probe.train.rewards import Reward
    from pvm_probe.zoo import save_tiny_checkpoint

    model, processor = load_base(save_tiny_checkpoint(arch, tmp_path / "base", WORDS))
    handle = attach_pvm(model, small_config(layers=(1,), alpha_init=0.5))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = StageIIConfig(steps=2, batch_size=4, num_generations=4, lr=1e-2, logging_steps=1,
                        train_backbone=train_backbone)
    prompts = data_prompts(scan_data(write_data(tmp_path), need_answer=False))
    log = train_stage2(model, handle, processor, prompts, [Reward("variety", variety, 1.0)], cfg, 8)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    vision = tuple(path + "." for path in hook_sites(model).vision)
    pvm = {k for k in before if ".pvm." in k}
    if train_backbone:
        assert changed == {k for k in before if not k.startswith(vision)}
    else:
        assert changed == pvm
    assert all(e["rewards/variety/std"] > 0 for e in log if "rewards/variety/std" in e)
    assert not model.training
