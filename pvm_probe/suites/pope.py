"""The `pope` suite: POPE's yes/no object questions on a local COCO directory (`benchmarks/pope.py`).

    PopeSuite(coco="coco/")                                  # build: 500 images x 6 questions x 3 splits
    PopeSuite(coco="coco/", splits=("adversarial",), image_count=100, seed=1)
    PopeSuite(coco="coco/", questions=["coco_pope_random.json", ...])   # the official question files

Built questions come from the COCO instance annotations (an image's objects in annotation order, the first
`per_image` asked about), seeded. Each answer is read as POPE's evaluation reads it; the claim is the answer
token that decides it (the first negative word for a no, the first token for a yes), correct when the reading
matches the label, so the probes' image share at that token lands in every record. `benchmark` gives
accuracy, precision, recall, F1 and yes-ratio per split, and the mean image share at the answer token.
"""

from __future__ import annotations

from ..benchmarks import pope
from ..benchmarks.coco import load_coco
from ..errors import InputError
from ..records import rounded
from .base import Answer, Claim, Request, Suite, check_int, open_rgb, quarter_of


class PopeSuite(Suite):
    name = "pope"
    claim_kinds = ("answer",)
    higher_is_better = True
    positional = False  # a one-word answer
    words = {"metric": "answers correct", "claims": "yes/no answers"}
    options = ("coco", "questions", "splits", "image_count", "per_image", "seed", "max_new_tokens")
    benchmark_layout = {  # how the report shows benchmark(): one row per split; no by-quarter figure
        "group": "split",
        "columns": [("accuracy", "accuracy (%)", True), ("precision", "precision (%)", True),
                    ("recall", "recall (%)", True), ("f1", "F1 (%)", True), ("yes_ratio", "yes (%)", True),
                    ("image_share_at_answer", "image share at answer", False)]}
    published = [
        {"source": "Huang et al., OPERA (CVPR 2024, arXiv:2311.17911), the POPE tables of its README (shikiw/OPERA "
                   "at 61426ef, one per split): OPERA decoding, beam 5, on OPERA's POPE files read by OPERA's "
                   "pope_eval.py, max_new_tokens 10", "model": "LLaVA-1.5-7B", "method": "OPERA",
         "split": split, "accuracy": acc, "precision": p, "recall": r, "f1": f1, "yes_ratio": yes}
        for split, acc, p, r, f1, yes in (("random", 0.894, 0.904, 0.888, 0.896, 0.506),
                                          ("popular", 0.860, 0.841, 0.888, 0.864, 0.528),
                                          ("adversarial", 0.791, 0.744, 0.888, 0.810, 0.597))]

    def __init__(self, coco=None, questions=None, splits=None, image_count: int | None = None,
                 per_image: int | None = None, seed: int | None = None, max_new_tokens: int = 16):
        check_int("max_new_tokens", max_new_tokens, 1)
        if coco is None:
            raise InputError("--suite pope needs --coco DIR (COCO images with instances_*.json and captions_*.json)")
        self.coco = load_coco(coco)
        self.budget = max_new_tokens
        self.question_files = [str(q) for q in ([questions] if isinstance(questions, str) else questions or [])]
        building = {"splits": splits, "image_count": image_count, "per_image": per_image, "seed": seed}
        if self.question_files:
            given = [f"--{k.replace('_', '-')}" for k, v in building.items() if v is not None]
            if given:
                raise InputError(f"{', '.join(given)} build POPE questions: they do not apply with --questions")
            self.questions = [q for path in self.question_files for q in pope.read_question_file(path)]
        else:
            self.building = {"splits": _splits(splits), "image_count": 500 if image_count is None else image_count,
                             "per_image": 3 if per_image is None else per_image, "seed": seed or 0}
            self.questions = self._build(**self.building)
        self.splits = list(dict.fromkeys(q.split for q in self.questions))
        self._ids = {name: i for i, name in self.coco.files.items()}
        self._check_images()

    def _build(self, splits, image_count, per_image, seed) -> list[pope.Question]:
        check_int("image_count", image_count, 1)
        check_int("per_image", per_image, 1)
        check_int("seed", seed, 0)
        objects = {self.coco.files[i]: list(dict.fromkeys(names)) for i, names in self.coco.categories.items()
                   if i in self.coco.files}  # distinct, in annotation order
        return [q for split in splits for q in pope.build_questions(objects, split, image_count, per_image, seed)]

    def _check_images(self) -> None:
        unknown = sorted({q.image for q in self.questions} - set(self._ids))
        if unknown:
            raise InputError(f"COCO {self.coco.root} split {self.coco.split}: {len(unknown)} images the POPE "
                             f"questions ask about are not in its annotations, e.g. {unknown[0]}")
        for name in dict.fromkeys(q.image for q in self.questions):
            self.coco.image_path(self._ids[name])  # a one-line InputError for a missing file

    def __len__(self) -> int:
        return len(self.questions)

    def request(self, index: int) -> Request:
        self.check_request(index)
        question = self.questions[index]
        image = open_rgb(self.coco.image_path(self._ids[question.image]))
        return Request(index, f"pope-{question.split}-{question.question_id}", (image,), question.text,
                       question.to_dict())

    def max_new_tokens(self, request: Request) -> int:
        return self.budget

    def score(self, request: Request, answer: Answer) -> list[Claim]:
        predicted, char = pope.read_answer(answer.text)
        token = None if char is None else answer.token_at(char)
        word = answer.text[char:].split(" ")[0] if char is not None else ""
        return [Claim("answer", token, word, predicted == request.meta["label"],
                      quarter_of(token or 0, len(answer.token_ids)),
                      detail={"predicted": predicted, "label": request.meta["label"],
                              "split": request.meta["split"], "object": request.meta["object"]})]

    def benchmark(self, records: list[dict]) -> dict:
        """POPE's scores per split over one variant's records, each with the mean image share (over layers,
        then answers) at the answer token when the probes ran."""
        out = {}
        for split in dict.fromkeys(r["meta"]["split"] for r in records):
            mine = [r for r in records if r["meta"]["split"] == split]
            predicted = [pope.read_answer(r["answer"])[0] for r in mine]
            row = pope.scores(predicted, [r["meta"]["label"] for r in mine])
            row["image_share_at_answer"] = _mean_share([c for r in mine for c in r["claims"]])
            out[split] = row
        return out

    def settings(self) -> dict:
        source = {"questions": self.question_files} if self.question_files else dict(self.building)
        return {"suite": self.name, "coco": str(self.coco.root.resolve()), "requests": len(self),
                "max_new_tokens": self.budget, **source}


def _splits(splits) -> tuple[str, ...]:
    splits = pope.SPLITS if splits is None else (splits,) if isinstance(splits, str) else tuple(splits)
    unknown = [s for s in splits if s not in pope.SPLITS]
    if unknown or not splits:
        raise InputError(f"unknown POPE split {unknown[0] if unknown else '(none)'!r}; known: {', '.join(pope.SPLITS)}")
    return splits


def _mean_share(claims: list[dict]) -> float | None:
    shares = [sum(v for v in c["mass"] if v is not None) / max(1, sum(v is not None for v in c["mass"]))
              for c in claims if c.get("mass")]
    return rounded(sum(shares) / len(shares)) if shares else None
