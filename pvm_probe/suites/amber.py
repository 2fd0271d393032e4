"""The `amber` suite: AMBER's generative task on a local copy of AMBER's data (`benchmarks/amber.py`).

    AmberSuite(amber="AMBER/data", image_dir="AMBER/image")   # image_dir default: AMBER/../image

One request per generative query (AMBER's own prompt, "Describe this image."). Every object noun of the
description is an object claim, carrying the generated token where the word starts: correct unless AMBER
reads it as a hallucination (its safe words are correct claims, as they count among AMBER's nouns). A
claim's quarter is where its token sits among the answer's tokens. `benchmark` gives AMBER's CHAIR, Cover,
Hal and Cog over one variant's records, and CHAIR by quarter of the answer.
"""

from __future__ import annotations

from pathlib import Path

from ..benchmarks import amber as amber_data
from ..errors import InputError
from .base import Answer, Claim, Request, Suite, check_int, open_rgb, quarter_of


class AmberSuite(Suite):
    name = "amber"
    claim_kinds = ("object",)
    higher_is_better = False
    words = {"metric": "hallucination rate", "claims": "object nouns"}
    options = ("amber", "image_dir", "max_new_tokens")
    benchmark_layout = {  # how the report shows benchmark(): one row per variant
        "columns": [("chair", "CHAIR (%)", True), ("cover", "Cover (%)", True), ("hal", "Hal (%)", True),
                    ("cog", "Cog (%)", True)],
        "by_quarter": "chair_by_quarter", "ylabel": "AMBER CHAIR (%)",
        "caption": ("AMBER's CHAIR by quarter of the answer: of the AMBER object nouns whose token falls in that "
                    "quarter of the generated tokens, the share AMBER reads as hallucinated. Dilution predicts a "
                    "rise from Q1 to Q4. Matching is exact after lemmatisation (AMBER's word-vector step is not "
                    "reproduced), so levels can sit above AMBER's own script; the shape across quarters is the "
                    "point.")}
    published: list[dict] = []  # no AMBER row for a model family this project runs has been pinned yet

    def __init__(self, amber=None, image_dir=None, max_new_tokens: int = 512):
        check_int("max_new_tokens", max_new_tokens, 1)
        if amber is None:
            raise InputError("--suite amber needs --amber DIR (AMBER's data folder: annotations.json, query/, ...)")
        self.data = amber_data.AmberData(amber)
        self.images = Path(image_dir) if image_dir is not None else self.data.directory.parent / "image"
        self.budget = max_new_tokens
        missing = [item.image for item in self.data.items if not (self.images / item.image).is_file()]
        if missing:
            raise InputError(f"AMBER images {self.images}: {len(missing)} of {len(self.data.items)} images are "
                             f"missing, e.g. {missing[0]}")

    def __len__(self) -> int:
        return len(self.data.items)

    def request(self, index: int) -> Request:
        self.check_request(index)
        item = self.data.items[index]
        image = open_rgb(self.images / item.image)
        meta = {"amber_id": item.id, "image": item.image, "truth": list(item.truth), "hallu": list(item.hallu)}
        return Request(index, f"amber-{item.id}", (image,), item.query, meta)

    def max_new_tokens(self, request: Request) -> int:
        return self.budget

    def score(self, request: Request, answer: Answer) -> list[Claim]:
        found, _, _ = self._judge(answer.text, request.meta)
        claims = []
        for noun in found:
            token = answer.token_at(noun.start)
            claims.append(Claim("object", token, noun.word, noun.verdict != "hallucinated",
                                quarter_of(token or 0, len(answer.token_ids)), detail={"verdict": noun.verdict}))
        return claims

    def _judge(self, text: str, meta: dict):
        return amber_data.judge(amber_data.nouns(text), meta["truth"], meta["hallu"], self.data)

    def benchmark(self, records: list[dict]) -> dict:
        """AMBER's generative metrics over one variant's records, and its CHAIR by quarter of the answer."""
        out = amber_data.metrics([self._judge(r["answer"], r["meta"]) for r in records])
        claims = [c for r in records for c in r["claims"]]
        out["chair_by_quarter"] = [amber_data.share([not c["correct"] for c in claims if c["quarter"] == q])
                                   for q in range(4)]
        return out

    def settings(self) -> dict:
        return {"suite": self.name, "amber": str(self.data.directory.resolve()),
                "image_dir": str(self.images.resolve()),
                "requests": len(self), "max_new_tokens": self.budget,
                "matching": "exact after lemmatisation (AMBER's spaCy similarity step is not reproduced)"}

