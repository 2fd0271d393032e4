"""POPE (Li et al. 2023): yes/no questions "Is there a {object} in the image?" about objects that are in the
image and objects that are not, and the official way of reading the answers.

Building (RUCAIBox/POPE main.py and utils.py): take `images` images that have at least `per_image` annotated
objects, then for each of an image's first `per_image` objects ask about it (label yes) and about one object
the image lacks (label no). The negative is drawn by one of three strategies, over the chosen images only:

    random       any object of the chosen images, uniformly
    popular      the most frequent object there that the image lacks and that was not asked about yet
    adversarial  the object most often seen together with the positive one, on the same terms

falling back to a random one when the ranking runs dry. Everything is seeded: the same objects, images and seed
give the same questions. Official question files (one JSON object per line: question_id, image, text, label)
are read as they are.

Reading an answer (RUCAIBox/POPE evaluate.py): keep the text before the first ".", drop commas, split on
spaces; "No", "no" or "not" among the words reads no, anything else yes.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import InputError
from ..io import read_text

SPLITS = ("random", "popular", "adversarial")
NEGATIVE_WORDS = ("No", "not", "no")
_QUESTION = re.compile(r"Is there an? (.+) in the image\?")


@dataclass(frozen=True)
class Question:
    question_id: int
    image: str  # the image's file name
    text: str
    label: str  # "yes" | "no"
    object: str
    split: str

    def to_dict(self) -> dict:
        return asdict(self)


def question_text(name: str) -> str:
    """The question about one object ("an" before a vowel, as in the released COCO files)."""
    article = "an" if name[:1] in "aeiou" else "a"
    return f"Is there {article} {name} in the image?"


def build_questions(objects: dict[str, list[str]], split: str, images: int = 500, per_image: int = 3,
                    seed: int = 0) -> list[Question]:
    """POPE's questions for one split. `objects`: image file name -> its objects (distinct, in annotation
    order), the images to draw from. The same (objects, images, per_image, seed) choose the same images in
    every split; the negatives of each split come from their own seeded stream."""
    if split not in SPLITS:
        raise InputError(f"unknown POPE split {split!r}; known: {', '.join(SPLITS)}")
    chosen = choose_images(objects, images, per_image, seed)
    frequency = Counter(name for image in chosen for name in objects[image])  # insertion order: first seen
    popular = [name for name, _ in sorted(frequency.items(), key=lambda kv: -kv[1])]  # stable: ties first seen
    together = co_occurrence(objects[image] for image in chosen)
    rng = random.Random(f"pope-{seed}-{split}")
    questions = []
    for image in chosen:
        present, asked = objects[image], []
        for positive in present[:per_image]:
            asked.append(positive)
            questions.append(Question(len(questions) + 1, image, question_text(positive), "yes", positive, split))
            ranking = {"random": [], "popular": popular, "adversarial": together.get(positive, [])}[split]
            candidates = [n for n in frequency if n not in asked and n not in present]
            if not candidates:
                raise InputError(f"POPE: no object left to ask about as absent from {image} "
                                 f"(the chosen images name only {len(frequency)} objects)")
            negative = next((n for n in ranking if n in candidates), None) or rng.choice(candidates)
            asked.append(negative)
            questions.append(Question(len(questions) + 1, image, question_text(negative), "no", negative, split))
    return questions


def choose_images(objects: dict[str, list[str]], images: int, per_image: int, seed: int) -> list[str]:
    """`images` of the images with at least `per_image` objects, drawn with `seed`."""
    eligible = [image for image, names in objects.items() if len(names) >= per_image]
    if len(eligible) < images:
        raise InputError(f"POPE needs {images} images with at least {per_image} annotated objects; "
                         f"only {len(eligible)} images have that many")
    return random.Random(f"pope-{seed}-images").sample(eligible, images)


def co_occurrence(object_lists) -> dict[str, list[str]]:
    """object -> the objects seen in the same image, most often first (ties: first seen first)."""
    counts: dict[str, Counter] = {}
    for names in object_lists:
        for name in names:
            row = counts.setdefault(name, Counter())
            row.update(other for other in names if other != name)
    return {name: [o for o, _ in sorted(row.items(), key=lambda kv: -kv[1])] for name, row in counts.items()}


def read_question_file(path) -> list[Question]:
    """An official POPE question file (JSON lines: question_id, image, text, label); the split is named by
    the file (coco_pope_adversarial.json -> adversarial; otherwise the file's stem)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"POPE questions {path}: no such file")
    split = next((s for s in SPLITS if s in path.stem), path.stem)
    questions = []
    for line, raw in enumerate(read_text(path).splitlines(), start=1):
        if raw.strip():
            questions.append(_question_row(raw, f"{path}:{line}", split))
    if not questions:
        raise InputError(f"POPE questions {path}: no questions (one JSON object per line)")
    return questions


def _question_row(raw: str, where: str, split: str) -> Question:
    try:
        row = json.loads(raw)
    except json.JSONDecodeError as err:
        raise InputError(f"{where}: not valid JSON ({err.msg})") from None
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for field in ("image", "text"):
        if not isinstance(row.get(field), str) or not row[field].strip():
            raise InputError(f"{where}: '{field}' must be a non-empty string")
    if row.get("label") not in ("yes", "no"):
        raise InputError(f"{where}: 'label' must be \"yes\" or \"no\", got {row.get('label')!r}")
    qid = row.get("question_id")
    if not isinstance(qid, int) or isinstance(qid, bool):
        raise InputError(f"{where}: 'question_id' must be an integer")
    match = _QUESTION.fullmatch(row["text"].strip())
    name = match.group(1) if match else row["text"]
    return Question(qid, row["image"], row["text"], row["label"], name, split)


def read_answer(text: str) -> tuple[str, int | None]:
    """POPE's reading of an answer: ("yes" | "no", the character where the deciding word starts). For a no,
    the first negative word of the first sentence; for a yes, the answer's first non-blank character (None
    for an empty answer, which POPE reads as yes)."""
    first = text.split(".")[0] if "." in text else text
    start = 0
    for word in first.split(" "):
        if word.replace(",", "") in NEGATIVE_WORDS:
            return "no", start
        start += len(word) + 1
    stripped = len(text) - len(text.lstrip())
    return "yes", (stripped if stripped < len(text) else None)


def scores(predicted: list[str], labels: list[str]) -> dict:
    """Accuracy, precision, recall, F1 (yes is the positive class) and the share of yes answers, as POPE's
    evaluate.py computes them; a rate with an empty denominator is None."""
    pairs = list(zip(predicted, labels, strict=True))
    tp = sum(p == "yes" and t == "yes" for p, t in pairs)
    fp = sum(p == "yes" and t == "no" for p, t in pairs)
    tn = sum(p == "no" and t == "no" for p, t in pairs)
    fn = sum(p == "no" and t == "yes" for p, t in pairs)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = (2 * precision * recall / (precision + recall)) if precision and recall else (
        0.0 if precision is not None and recall is not None else None)
    n = len(pairs)
    return {"n": n, "tp": tp, "fp": fp, "tn": tn, "fn": fn, "accuracy": (tp + tn) / n if n else None,
            "precision": precision, "recall": recall, "f1": f1, "yes_ratio": (tp + fp) / n if n else None}
