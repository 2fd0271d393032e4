"""The report's figures and their captions: what to read in each, and what would falsify the story.

`report_figures(metrics, records, logs)` returns {name: (figure, caption)} for the sections the metrics
support; the wording follows the suite (no painter-world words on a page about another suite).
"""

from __future__ import annotations

import base64
import io

from PIL import Image

from ..plots import report as plots


def _caption_claims(metrics: dict) -> str:
    if metrics["metric"]["higher_is_better"]:
        return ("Claims correct in each quarter of the answer, per variant (hatched: the same adapter reading "
                "another request's image; dotted: its gates off). Dilution predicts the baseline falls late while "
                "PVM holds. If the swapped image keeps the gain, or the MLP control matches it, the gain does not "
                "come from the image.")
    return (f"{metrics['metric']['name'].capitalize()} of the claims in each quarter of the answer (lower is "
            "better), all claims and by kind. "
            "Dilution predicts more errors late in the answer; a flat baseline means this model does not lose "
            "the image within this answer length. Hatched: the adapter reading another request's image.")


def _caption_mass(metrics: dict) -> str:
    text = ("Share of attention on the image tokens at each generated position, one panel per decoder layer, "
            "averaged over the requests still answering (grey dashes: a/(t+b)+c fitted to the baseline). Dilution "
            "predicts a fall with t, then a plateau; flat curves in every layer would falsify it for this model.")
    if metrics.get("image_leaves_window_at") is not None:
        text += (f" This base attends only to a window of recent tokens: from position "
                 f"{metrics['image_leaves_window_at']} the image has left it and the share is exactly 0.")
    return text


CAPTIONS = {
    "claims_by_quarter": _caption_claims,
    "mass_vs_position": _caption_mass,
    "claim_mass_by_quarter": lambda m: (
        "Image share of attention at the queries that write a claim, by decoder layer (rows) and quarter of the "
        "answer (columns), one map per variant. These are the lookups the claims depend on: a share that falls "
        "in late quarters is the dilution the late claims must survive."),
    "accuracy_vs_mass": lambda m: (
        "Every claim, binned by the image share of attention at its token (mean over layers): the share of claims "
        "correct per bin, and (numbers) how many claims fall in it. If dilution causes errors, accuracy rises with "
        "the share; a flat line means visual mass does not predict errors on this model."),
    "logit_lens": lambda m: (
        "Left: KL between the final next-token distribution and each layer's read-out (the last layer, 0 by "
        "construction, is left out); solid: LogitLens, dash-dot: tuned lens. Right: the first layer from which the "
        "read-out's top token stays the model's, by quarter of the answer. The paper reports earlier convergence "
        "with PVM; a later or equal convergence layer would contradict it here."),
    "pvm_gates": lambda m: (
        "PVM blocks, named by the decoder layer they sit in: the size of the injection relative to the residual "
        "stream, the entropy of PVM's attention over the image tokens, and its weight on the image region the "
        "claim is about (dotted: chance, the region's share of the tokens), by quarter. PVM retrieves when that "
        "weight is well above chance where the backbone's own share has fallen." if plots.has_regions(m) else
        "PVM blocks, named by the decoder layer they sit in: the size of the injection relative to the residual "
        "stream and the entropy of PVM's attention over the image tokens, by quarter. This suite's claims name no "
        "image region (an images line lists objects, not where they are), so PVM's weight on the claimed region "
        "is not measured here; the scenes suite measures it."),
    "retrieval_overlay": lambda m: (
        "Where PVM looks at the last claim of one answer: each block's attention over the image tokens (brighter = "
        "more), beside the backbone's own attention on the image at the same token; the claimed region is "
        "outlined. Retrieval means PVM's weight sits on the outlined region; a diffuse map means PVM re-injects the "
        "whole image rather than the part the text is about." if plots.has_regions(m) else
        "Where PVM looks at the last claim of one answer: each block's attention over the image tokens (brighter = "
        "more), beside the backbone's own attention on the image at the same token. This suite's claims name no "
        "image region, so none is outlined: read whether PVM's weight sits on the object the claim names or "
        "spreads over the whole image."),
    "remedies": lambda m: (
        "PVM against the training-free remedies (dashed: VCD, contrast with a noised image; PAI, more attention on "
        "the image plus text-free guidance; MemVR, the visual tokens re-injected as FFN memory when a layer is "
        "unsure), each at its paper's defaults unless its name says otherwise. Right: the backbone's own share of "
        "attention on the image. A remedy that only re-weights attention or logits cannot help where that share "
        "is 0 (the image is out of reach); one that re-injects the image might."),
    "training_curves": lambda m: (
        "Training logs of each adapter: the Stage I (SFT) loss on a log axis; for a Stage II (GRPO) adapter its "
        "loss on a linear axis (GRPO's loss is near 0, and may be negative, whatever it learns) and the mean "
        "reward per log step, which is what Stage II optimises. A Stage I loss that never left its plateau, or a "
        "reward that never rose, means the adapter learned nothing, whatever the other figures show."),
}


def _image(uri: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB")


def retrieval_figure(records: list[dict]):
    """PVM's retrieval at the last claim of the first explored answer of a PVM variant, per block, beside the
    backbone's own attention on the image at that token (its last explorer layer)."""
    for record in records:
        explore = record.get("explore", {})
        claims = [c for c in record["claims"] if c["token"] is not None and c["token"] < record["n_tokens"]]
        if "pvm" not in explore or not claims:
            continue
        claim = claims[-1]
        t = claim["token"]
        maps = {f"PVM block at layer {layer}": explore["pvm"][k][t] for k, layer in enumerate(explore["pvm_layers"])}
        maps[f"backbone, layer {explore['layers'][-1]}"] = explore["attention"][-1][t]
        title = (f"{record['variant']}, {record['id']}: the claim \"{claim['text']}\" at token {t} "
                 f"({'correct' if claim['correct'] else 'wrong'})")
        return plots.retrieval_overlay(_image(explore["image"]), explore["cells"], maps, claim["boxes"], title)
    return None


def report_figures(metrics: dict, records: list[dict], logs: dict) -> dict:
    """{name: (figure, caption)} for every section the metrics support."""
    variants = metrics["variants"].values()
    makers = {"claims_by_quarter": lambda: plots.claims_by_quarter(metrics)}
    if any("mass_by_layer" in m for m in variants):
        makers |= {"mass_vs_position": lambda: plots.mass_vs_position(metrics),
                   "claim_mass_by_quarter": lambda: plots.claim_mass_by_quarter(metrics),
                   "accuracy_vs_mass": lambda: plots.accuracy_vs_mass(metrics),
                   "logit_lens": lambda: plots.logit_lens(metrics)}
    if any("pvm" in m for m in variants):
        makers |= {"pvm_gates": lambda: plots.pvm_gates(metrics), "retrieval_overlay": lambda: retrieval_figure(records)}
    if any(m["kind"] in plots.ARMS for m in variants):
        makers["remedies"] = lambda: plots.remedies(metrics)
    if logs:
        makers["training_curves"] = lambda: plots.training_curves(logs)
    figures = {name: (make(), CAPTIONS[name](metrics)) for name, make in makers.items()}
    return {name: pair for name, pair in figures.items() if pair[0] is not None}
