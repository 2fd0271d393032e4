r"""Stage II rewards: named, verifiable, each computed from a completion and what the prompt's record knows.

    format          1 if the completion holds a non-empty \boxed{...} with balanced braces, else 0
    exact           1 if the completion's final answer equals the record's final answer after
                    normalisation, else 0
    numeric         1 if the last numbers of the two final answers agree within NUMERIC_RTOL (relative) +
                    NUMERIC_ATOL, else 0 (the record's answer must hold a number: checked up front)
    scenes          the scenes suite's claim score of a description of a generated scene:
                    (distinct correct claims - wrong claims) / target, clipped to [-1, 1], where target =
                    3 x kinds + objects is what a complete, correct description claims: for each kind of
                    object (shape and colour) its mention, its colour and its count, and each object's
                    position. Wrong claims count every time (a hallucination repeated costs twice);
                    correct ones once (repeating a true claim earns nothing).
    world-format    painter world: 1 when every step is claimed, in the prompt's order, nothing extra
    world-accuracy  painter world: the share of claims whose colour and shape are true of the image
    module:function your own, imported by name and called as TRL calls a reward function:
                    f(prompts=..., completions=..., completion_ids=..., **columns) -> list[float | None]

Final answer (exact, numeric; the completion's and the record's alike): the content of the last \boxed{...}
when there is one, else the last non-empty line. Normalised for `exact`: a leading "answer:" or "final
answer:" dropped, \text{...} unwrapped, surrounding $ and a trailing full stop removed, whitespace collapsed,
case folded. Numbers: integers, decimals, scientific notation, 1,234 thousands, a/b and \frac{a}{b}.

The total reward of a completion is the weighted sum of the run's rewards (TRL's `reward_weights`); GRPO then
normalises it within each prompt's group. Default weights: 0.1 for format and world-format, 0.9 for every
other reward (the paper's format 0.1 + accuracy 0.9).
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InputError
from ..suites.scenes import make_shape_scene, score_description
from ..suites.world import PaintSpec, make_grid_scene, score_painting
from .config import REWARD_NAMES, RewardSpec, default_weight

NUMERIC_RTOL, NUMERIC_ATOL = 1e-4, 1e-9
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]*?)\s*\}\s*\{\s*([^{}]*?)\s*\}")
_TEXT = re.compile(r"\\(?:text|textbf|mathrm)\s*\{([^{}]*)\}")
_NUMBER = re.compile(r"(-?\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+)(?:\s*/\s*(-?\d+(?:\.\d+)?))?")
_LEAD = re.compile(r"^(?:final answer|answer)\s*[:：]\s*", re.IGNORECASE)


# ---- reading answers ---------------------------------------------------------------------------------
def boxed(text: str) -> list[str]:
    r"""The contents of every \boxed{...} (or \fbox{...}) whose braces balance, in order."""
    found = []
    for match in _BOXED.finditer(text):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                found.append(text[start:i])
                break
    return found


def final_answer(text: str) -> str:
    r"""The last \boxed{...} content, else the last non-empty line ('' for an empty text)."""
    contents = boxed(text)
    if contents:
        return contents[-1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def normalise(answer: str) -> str:
    text = _TEXT.sub(r"\1", _LEAD.sub("", answer.strip()))
    text = text.strip().strip("$").strip().removesuffix(".").strip()
    return " ".join(text.split()).casefold()


def parse_number(answer: str) -> float | None:
    """The last number of an answer (a/b and \\frac{a}{b} as fractions), or None."""
    text = _FRAC.sub(r"\1/\2", _TEXT.sub(r"\1", answer))
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return None
    numerator, denominator = matches[-1].groups()
    value = float(numerator.replace(",", ""))
    if denominator is not None:
        value = value / float(denominator) if float(denominator) != 0 else math.nan
    return value if math.isfinite(value) else None


def completion_text(completion) -> str:
    """A TRL completion (conversational: [{"role": "assistant", "content": ...}], or a string) as text."""
    if isinstance(completion, str):
        return completion
    content = completion[0]["content"]
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") for part in content if part.get("type") == "text")


# ---- the scores ---------------------------------------------------------------------------------------
def format_score(text: str) -> float:
    return float(any(content.strip() for content in boxed(text)))


def exact_score(text: str, reference: str) -> float:
    expected = normalise(final_answer(reference))
    return float(expected != "" and normalise(final_answer(text)) == expected)


def numeric_score(text: str, reference: str) -> float:
    expected, got = parse_number(final_answer(reference)), parse_number(final_answer(text))
    if expected is None or got is None:
        return 0.0
    return float(abs(got - expected) <= NUMERIC_ATOL + NUMERIC_RTOL * abs(expected))


def scene_claim_score(scene, text: str) -> float:
    """(distinct correct claims - wrong claims) / (3 x kinds + objects), clipped to [-1, 1]."""
    claims = score_description(scene, text)["claims"]
    correct = {(c["kind"], c["text"]) for c in claims if c["correct"]}
    wrong = sum(not c["correct"] for c in claims)
    kinds = len({(o.shape, o.colour) for o in scene.objects})
    return max(-1.0, min(1.0, (len(correct) - wrong) / (3 * kinds + len(scene.objects))))


# ---- as TRL reward functions ------------------------------------------------------------------------
@dataclass(frozen=True)
class Reward:
    """A reward TRL can call, with what it needs from each prompt's record.

    sources: where its prompts may come from (data, scenes, world); needs_answer: the record's answer is
    read; check(answer) -> problem or None, run on every record before training."""

    name: str
    function: Callable
    weight: float
    sources: tuple[str, ...] = ("data", "scenes", "world")
    needs_answer: bool = False
    check: Callable[[str], str | None] | None = None


def _per_completion(name: str, score: Callable) -> Callable:
    def reward(completions, **columns) -> list[float]:
        return [score(completion_text(c), *(columns[k][i] for k in _COLUMNS[name]))
                for i, c in enumerate(completions)]

    reward.__name__ = name
    return reward


def _scene_score(text: str, scene_seed: int) -> float:
    return scene_claim_score(make_shape_scene(scene_seed), text)


def _world_score(key: str, text: str, scene_seed, order, gap, filler, passes) -> float:
    score = score_painting(make_grid_scene(scene_seed), PaintSpec(order, gap, filler, passes), text.split())
    if key == "accuracy":
        return score["accuracy"]
    return float(score["n_extra"] == 0 and all(not c["missing"] and c["order_ok"] for c in score["claims"]))


_WORLD_COLUMNS = ("scene_seed", "order", "gap", "filler", "passes")
_COLUMNS = {"format": (), "exact": ("answer",), "numeric": ("answer",), "scenes": ("scene_seed",),
            "world-format": _WORLD_COLUMNS, "world-accuracy": _WORLD_COLUMNS}
_SCORES = {"format": format_score, "exact": exact_score, "numeric": numeric_score, "scenes": _scene_score,
           "world-format": lambda text, *a: _world_score("format", text, *a),
           "world-accuracy": lambda text, *a: _world_score("accuracy", text, *a)}
_SOURCES = {"format": ("data",), "exact": ("data",), "numeric": ("data",), "scenes": ("scenes",),
            "world-format": ("world",), "world-accuracy": ("world",)}


def _numeric_check(answer: str) -> str | None:
    if parse_number(final_answer(answer)) is None:
        return f"answer {final_answer(answer)[:40]!r} holds no number (reward numeric compares numbers)"
    return None


def resolve_reward(spec: RewardSpec) -> Reward:
    """The Reward for a spec: a shipped name, or `module:function` imported now (one-line InputError if it
    cannot be imported or is not callable)."""
    if ":" in spec.name:
        return Reward(spec.name, import_reward(spec.name), spec.weight)
    if spec.name not in REWARD_NAMES:
        raise InputError(f"unknown reward {spec.name!r}; known: {', '.join(REWARD_NAMES)}, or module:function")
    needs_answer = "answer" in _COLUMNS[spec.name]
    return Reward(spec.name, _per_completion(spec.name, _SCORES[spec.name]), spec.weight, _SOURCES[spec.name],
                  needs_answer, _numeric_check if spec.name == "numeric" else None)


def import_reward(name: str) -> Callable:
    """`package.module:function` -> the function."""
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise InputError(f"--reward {name}: expected module:function, e.g. my_rewards:length_penalty")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any failure of the user's module is bad input here
        raise InputError(f"--reward {name}: cannot import {module_name}: {type(err).__name__}: {err}") from None
    function = getattr(module, attribute, None)
    if function is None:
        raise InputError(f"--reward {name}: module {module_name} has no attribute {attribute}")
    if not callable(function):
        raise InputError(f"--reward {name}: {module_name}.{attribute} is a {type(function).__name__}, not callable")
    if not hasattr(function, "__name__"):  # TRL names a reward's log entries after it
        function.__name__ = attribute
    return function


def default_rewards(source: str) -> tuple[RewardSpec, ...]:
    """data: format + exact; scenes: scenes; world: world-format + world-accuracy (weights 0.1 / 0.9)."""
    names = {"data": ("format", "exact"), "scenes": ("scenes",), "world": ("world-format", "world-accuracy")}[source]
    return tuple(RewardSpec(name, default_weight(name)) for name in names)


def check_sources(rewards: list[Reward], source: str) -> None:
    """Each reward can be computed on prompts from `source` (else a one-line InputError)."""
    for reward in rewards:
        if source not in reward.sources:
            where = {"data": "a data file (--data)", "scenes": "the scenes suite", "world": "the painter world"}
            raise InputError(f"reward {reward.name} needs prompts from {where[reward.sources[0]]}, "
                             f"this run's come from {where[source]}")
