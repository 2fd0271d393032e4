"""The `chair` suite: CHAIR (Rohrbach et al. 2018) on a local COCO directory, pinned or sampled.

    ChairSuite(coco="coco/")                               # protocol opera-500 (the default)
    ChairSuite(coco="coco/", protocol="memvr-500")         # see benchmarks/protocols/ for the names
    ChairSuite(coco="coco/", sample=100, seed=0)           # a seeded sample of the directory's images

A protocol pins the image ids, the prompt and max_new_tokens (`benchmarks/protocol.py`); a sample takes
OPERA's prompt and 512 tokens unless told otherwise. The ground truth of an image is CHAIR's: its instance
annotations and the objects of its human captions (`benchmarks/coco.py`). Every object mention the reference
parser finds is an object claim, carrying the generated token where the mention starts, correct iff the
object is in the ground truth; its quarter is where that token sits among the answer's tokens.

`benchmark` reduces one variant's records to CHAIR_s, CHAIR_i, recall, mean caption length (the reference's
nltk tokens, whitespace words, generated tokens), and CHAIR_i by quarter of the answer, under both parsers: `reference` (CHAIR as published, the
primary numbers) and `fixed` (its known faults repaired), side by side.
"""

from __future__ import annotations

import itertools
import random

from ..benchmarks.chair import VARIANTS, ChairParser
from ..benchmarks.coco import load_coco
from ..benchmarks.metrics import chair_metrics, score_caption
from ..benchmarks.protocol import load_protocol
from ..errors import InputError
from .base import Answer, Claim, Request, Suite, check_int, open_rgb, quarter_of

DEFAULT_PROTOCOL = "opera-500"
OPERA_PROMPT = "Please describe this image in detail."

_MEMVR = ("Zou et al., MemVR (arXiv:2410.03577), the CHAIR table in its repository's README figure "
          "(1zhou-Wang/MemVR, assets/figexp.png): max_new_tokens 1024, MemVR's own 500 images (its list is not "
          "released)")
_OPERA = ("Huang et al., OPERA (CVPR 2024, arXiv:2311.17911), Table 1 (CHAIR, max new tokens 512), OPERA on "
          "LLaVA-1.5: OPERA's 500 images")


def _row(source, protocol, method, decoding, chair_s, chair_i, recall=None, length=None) -> dict:
    """A published LLaVA-1.5-7B row, in benchmark()'s keys and units (fractions; length in nltk tokens)."""
    return {"source": source, "protocol": protocol, "model": "LLaVA-1.5-7B", "method": method,
            "decoding": decoding, "CHAIR_s": chair_s, "CHAIR_i": chair_i, "recall": recall, "length": length}


class ChairSuite(Suite):
    name = "chair"
    claim_kinds = ("object",)
    higher_is_better = False
    words = {"metric": "hallucination rate", "claims": "object mentions"}
    options = ("coco", "protocol", "sample", "seed", "max_new_tokens", "prompt")
    benchmark_layout = {  # how the report shows benchmark(): one row per parser, columns (key, heading, is a rate)
        "group": "parser",
        "columns": [("CHAIR_s", "CHAIR_s (%)", True), ("CHAIR_i", "CHAIR_i (%)", True), ("recall", "recall (%)", True),
                    ("length", "length (nltk tokens)", False), ("words", "words", False),
                    ("answer_tokens", "generated tokens", False)],
        "by_quarter": "CHAIR_i_by_quarter", "ylabel": "CHAIR_i (%)",
        "caption": ("CHAIR_i by quarter of the answer: of the object mentions whose first token falls in that "
                    "quarter of the generated tokens, the share naming an object not in the image (its COCO "
                    "instances and human captions). Solid: CHAIR's reference parser, whose pooled value is the "
                    "published CHAIR_i; dotted: the parser with CHAIR's faults fixed (negation, non-nouns). "
                    "Dilution predicts a rise from Q1 to Q4; a remedy that helps against it lowers Q4 most. A "
                    "quarter without mentions is left out.")}
    published = [_row(_MEMVR, "memvr-500", "baseline", "greedy", 0.500, 0.154, 0.771, 100.6),
                 _row(_MEMVR, "memvr-500", "OPERA", None, 0.478, 0.146, 0.768, 98.6),
                 _row(_MEMVR, "memvr-500", "VCD", None, 0.486, 0.149, 0.773, 100.4),
                 _row(_MEMVR, "memvr-500", "MemVR", "greedy", 0.466, 0.130, 0.808, 99.6),
                 _row(_OPERA, "opera-500", "OPERA", "beam 5", 0.446, 0.128)]

    def __init__(self, coco=None, protocol: str | None = None, sample: int | None = None, seed: int = 0,
                 max_new_tokens: int | None = None, prompt: str | None = None):
        check_int("seed", seed, 0)
        if coco is None:
            raise InputError("--suite chair needs --coco DIR (COCO images with instances_*.json and captions_*.json)")
        self.coco = load_coco(coco)
        if sample is not None:
            if protocol is not None:
                raise InputError("give either a CHAIR protocol or --sample N, not both")
            check_int("sample", sample, 1)
            self.protocol, self.sample, self.seed = None, sample, seed
            self.image_ids = self._sampled(sample, seed)
            self.prompt, self.budget = prompt or OPERA_PROMPT, max_new_tokens or 512
            check_int("max_new_tokens", self.budget, 1)
        else:
            self.protocol, self.sample, self.seed = load_protocol(protocol or DEFAULT_PROTOCOL), None, None
            if max_new_tokens not in (None, self.protocol.max_new_tokens) or prompt not in (None, self.protocol.prompt):
                raise InputError(f"CHAIR protocol {self.protocol.name} pins its prompt and max_new_tokens "
                                 f"({self.protocol.max_new_tokens}); use --sample N to choose them")
            self.image_ids = list(self.protocol.image_ids)
            self.prompt, self.budget = self.protocol.prompt, self.protocol.max_new_tokens
            self._check_present(self.image_ids)
        for image_id in self.image_ids:
            self.coco.image_path(image_id)  # a one-line InputError for a missing file
        self.parsers = {name: ChairParser(name) for name in VARIANTS}

    def _sampled(self, count: int, seed: int) -> list[int]:
        ids = sorted(self.coco.image_ids)
        if count > len(ids):
            raise InputError(f"--sample {count}: COCO {self.coco.root} has only {len(ids)} images")
        return random.Random(seed).sample(ids, count)

    def _check_present(self, ids: list[int]) -> None:
        known = set(self.coco.image_ids)
        absent = [i for i in ids if i not in known]
        if absent:
            raise InputError(f"CHAIR protocol {self.protocol.name}: {len(absent)} of its {len(ids)} image ids are not "
                             f"in COCO {self.coco.root} split {self.coco.split} (e.g. {absent[0]}); it needs the full "
                             f"COCO {self.protocol.split}, or use --sample N")

    def __len__(self) -> int:
        return len(self.image_ids)

    def request(self, index: int) -> Request:
        self.check_request(index)
        return self._request(index, self.image_ids[index])

    def _request(self, index: int, image_id: int) -> Request:
        image = open_rgb(self.coco.image_path(image_id))
        return Request(index, f"coco-{image_id}", (image,), self.prompt, {"image_id": image_id})

    def calibration(self, count: int) -> list[Request]:
        """Requests on other images of the directory (seeded), never the evaluated ones; the first evaluated
        requests only when the directory has no other image."""
        evaluated = set(self.image_ids)
        others = [i for i in self.coco.image_ids if i not in evaluated]
        random.Random(f"calibration-{self.seed or 0}").shuffle(others)
        present = list(itertools.islice((i for i in others if self._has_file(i)), count))
        if not present:
            return super().calibration(count)
        return [self._request(k, image_id) for k, image_id in enumerate(present)]

    def _has_file(self, image_id: int) -> bool:
        try:
            self.coco.image_path(image_id)
        except InputError:
            return False
        return True

    def max_new_tokens(self, request: Request) -> int:
        return self.budget

    def score(self, request: Request, answer: Answer) -> list[Claim]:
        truth = self.coco.ground_truth(request.meta["image_id"])
        return [Claim("object", token, m.word, m.object in truth, quarter_of(token or 0, len(answer.token_ids)),
                      detail={"object": m.object})
                for m in self.parsers["reference"].mentions(answer.text)
                for token in [answer.token_at(m.start)]]

    def benchmark(self, records: list[dict]) -> dict:
        """CHAIR over one variant's records, per parser: {"reference": {...}, "fixed": {...}}, each with the
        reference's CHAIR_s, CHAIR_i, recall, length (nltk tokens) and words (`benchmarks/metrics.py`), the
        mean answer length in generated tokens, and CHAIR_i by quarter of the answer (by generated token)."""
        return {name: self._benchmark(records, name) for name in self.parsers}

    def _benchmark(self, records: list[dict], variant: str) -> dict:
        scores, mentions, hallucinated = [], [0] * 4, [0] * 4
        for record in records:
            truth = self.coco.ground_truth(record["meta"]["image_id"], variant)
            parse = self.parsers[variant].parse(record["answer"])
            scores.append(score_caption(record["answer"], parse, truth))
            answer = Answer(record["token_ids"], [], record["pieces"], record["answer"])
            for m in parse.mentions:
                q = quarter_of(answer.token_at(m.start) or 0, len(answer.token_ids))
                mentions[q] += 1
                hallucinated[q] += m.object not in truth
        out = chair_metrics(scores)
        out["answer_tokens"] = sum(r["n_tokens"] for r in records) / len(records) if records else None
        out["mentions_by_quarter"] = mentions
        out["CHAIR_i_by_quarter"] = [bad / n if n else None for bad, n in zip(hallucinated, mentions, strict=True)]
        return out

    def settings(self) -> dict:
        chosen = ({"protocol": self.protocol.name} if self.protocol else {"sample": self.sample, "seed": self.seed})
        return {"suite": self.name, "coco": str(self.coco.root.resolve()), "split": self.coco.split, **chosen, "requests": len(self),
                "prompt": self.prompt, "max_new_tokens": self.budget, "parsers": list(VARIANTS)}
