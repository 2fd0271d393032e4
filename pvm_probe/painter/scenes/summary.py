"""Aggregate scored answers into per-quarter rates: CHAIR_i / CHAIR_s and the error rate of each claim kind."""

from __future__ import annotations

from .scoring import KINDS


def _rate(errors: int, claims: int) -> float | None:
    return errors / claims if claims else None


def by_quarter(scores: list[dict]) -> dict:
    """{kind: {"claims": [4], "errors": [4], "error_rate": [4] (None where no claims)}}."""
    table = {kind: {"claims": [0] * 4, "errors": [0] * 4} for kind in KINDS}
    for score in scores:
        for claim in score["claims"]:
            row = table[claim["kind"]]
            row["claims"][claim["quarter"]] += 1
            row["errors"][claim["quarter"]] += not claim["correct"]
    for row in table.values():
        row["error_rate"] = [_rate(e, c) for e, c in zip(row["errors"], row["claims"], strict=True)]
    return table


def summarize(scores: list[dict], answer_tokens: list[int]) -> dict:
    """Headline numbers for a set of answers (`scores` from `score_answer`, one token count each).

    chair_i: hallucinated object mentions / object mentions; chair_s: fraction of answers with at
    least one hallucinated object; *_by_quarter: the same error rates per quarter of the answer."""
    table = by_quarter(scores)
    objects = table["object"]
    hallucinating = [any(c["kind"] == "object" and not c["correct"] for c in s["claims"]) for s in scores]
    n = max(len(scores), 1)
    return {
        "n_answers": len(scores),
        "mean_answer_words": sum(s["words"] for s in scores) / n,
        "mean_answer_tokens": sum(answer_tokens) / n,
        "chair_s": sum(hallucinating) / n,
        "chair_i": _rate(sum(objects["errors"]), sum(objects["claims"])),
        "chair_i_by_quarter": objects["error_rate"],
        "attribute_error_by_quarter": table["attribute"]["error_rate"],
        "count_error_by_quarter": table["count"]["error_rate"],
        "position_error_by_quarter": table["position"]["error_rate"],
        "claims_by_quarter": [sum(table[k]["claims"][q] for k in KINDS) for q in range(4)],
        "by_quarter": table,
    }


def _cells(values) -> str:
    return "".join(f"{'-' if v is None else f'{v:.3f}':>9}" for v in values)


def format_table(result: dict) -> str:
    """A small plain-text table of the headline rates by quarter of the answer."""
    chair_i = "-" if result["chair_i"] is None else f"{result['chair_i']:.3f}"
    lines = [
        f"scenes suite: {result['n_answers']} answers, {result['mean_answer_words']:.1f} words / "
        f"{result['mean_answer_tokens']:.1f} tokens on average; CHAIR_s {result['chair_s']:.3f}, CHAIR_i {chair_i}",
        f"{'quarter':<22}" + "".join(f"{f'Q{q + 1}':>9}" for q in range(4)),
        f"{'CHAIR_i':<22}" + _cells(result["chair_i_by_quarter"]),
        f"{'attribute errors':<22}" + _cells(result["attribute_error_by_quarter"]),
        f"{'count errors':<22}" + _cells(result["count_error_by_quarter"]),
        f"{'position errors':<22}" + _cells(result["position_error_by_quarter"]),
        f"{'claims':<22}" + "".join(f"{n:>9}" for n in result["claims_by_quarter"]),
    ]
    share = result.get("image_attention_by_quarter")
    if share:
        layer_mean = [None if any(r[q] is None for r in share) else sum(r[q] for r in share) / len(share)
                      for q in range(4)]
        lines.append(f"{'image attention':<22}" + _cells(layer_mean) + "  (mean over layers; per layer in the JSON)")
    return "\n".join(lines)
