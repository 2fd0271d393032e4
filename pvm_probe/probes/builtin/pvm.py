"""`pvm`: PVM's gates and retrieval, token by token (variants with a PVM memory block only).

Record section `pvm`: `layers` (the decoder layers holding a block), `alpha` [Lp], `injection_ratio` `[Lp][n]`
(|alpha h_pvm| / |x|), `entropy` `[Lp][n]` (of PVM's attention over the image tokens). Each claim gets
`pvm_on_boxes` [Lp] (PVM's weight on the claimed region at the claim's token); explored requests keep
PVM's weights over every patch (not with a swapped image: they would be over the partner's image).
"""

from __future__ import annotations

import base64
import io

from PIL import Image

from ...plots import report as plots
from ...records import mean_of, rounded
from ..gates import PVMRetrieval
from ..protocol import Batch, Figure, Probe, Row, quarter_values


class PVMProbe(Probe):
    name = "pvm"
    title = "PVM gates and retrieval"

    @classmethod
    def applies(cls, batch: Batch) -> bool:
        return batch.handle is not None and batch.handle.config.block == "pvm"

    def attach(self):
        self.probe = PVMRetrieval(self.batch.handle)
        return self.probe

    def record(self, row: Row) -> dict:
        pvm, b, n = self.probe.result, row.b, row.n
        for claim in row.record["claims"]:
            t, inside = claim["token"], row.inside(claim["boxes"])
            claim["pvm_on_boxes"] = (rounded(pvm.weights[b, :, t, : len(inside)][:, inside].sum(1))
                                     if inside is not None and t is not None and t < n else None)
        explore = row.record.get("explore")
        if explore is not None and not self.batch.swapped_image:
            own = row.cells[:, 0] == 0  # [N] image 0's tokens
            explore["pvm_layers"] = pvm.layers
            explore["pvm"] = [rounded(pvm.weights[b, i, :n, : len(own)][:, own], 4) for i in range(len(pvm.layers))]
        return {"layers": pvm.layers, "alpha": rounded(pvm.alpha, 6),
                "injection_ratio": rounded(pvm.injection_ratio[b, :, :n]), "entropy": rounded(pvm.entropy[b, :, :n], 4)}

    @classmethod
    def metrics(cls, records: list[dict]) -> dict:
        layers = records[0]["pvm"]["layers"]
        out = {"layers": layers, "alpha": records[0]["pvm"]["alpha"]}
        for name in ("injection_ratio", "entropy"):
            out[f"{name}_by_quarter"] = [[mean_of(quarter_values(r["pvm"][name][i], q) for r in records)
                                          for q in range(4)] for i in range(len(layers))]
        on_boxes = [c for r in records for c in r["claims"] if c.get("pvm_on_boxes") is not None]
        out["on_claimed_region_by_quarter"] = [[mean_of([c["pvm_on_boxes"][i] for c in on_boxes if c["quarter"] == q])
                                                for q in range(4)] for i in range(len(layers))]
        out["claimed_region_chance"] = mean_of([c["box_share"] for c in on_boxes])
        return {"pvm": out}

    @classmethod
    def figures(cls, metrics: dict, records: list[dict]) -> list[Figure]:
        figures = [Figure.of_chart("pvm_gates", "PVM gates and retrieval", plots.pvm_gates(metrics),
                                   gates_caption(metrics))]
        overlay = retrieval_figure(records)
        if overlay is not None:
            figures.append(Figure.of_chart("retrieval_overlay", "Where PVM looks", overlay, overlay_caption(metrics)))
        return figures


def decode_image(uri: str) -> Image.Image:
    """A PNG data URI (an explored record's image) as a PIL image."""
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB")


def retrieval_figure(records: list[dict]):
    """PVM's retrieval at the last claim of the first explored answer of a PVM variant, per block, beside the
    backbone's own attention on the image at that token (its last explorer layer); None when there is none."""
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
        return plots.retrieval_overlay(decode_image(explore["image"]), explore["cells"], maps, claim["boxes"], title)
    return None


def gates_caption(metrics: dict) -> str:
    if plots.has_regions(metrics):
        return ("PVM blocks, named by the decoder layer they sit in: the size of the injection relative to the "
                "residual stream, the entropy of PVM's attention over the image tokens, and its weight on the image "
                "region the claim is about (dotted: chance, the region's share of the tokens), by quarter. PVM "
                "retrieves when that weight is well above chance where the backbone's own share has fallen.")
    return ("PVM blocks, named by the decoder layer they sit in: the size of the injection relative to the residual "
            "stream and the entropy of PVM's attention over the image tokens, by quarter. This suite's claims name "
            "no image region (an images line lists objects, not where they are), so PVM's weight on the claimed "
            "region is not measured here; the scenes suite measures it.")


def overlay_caption(metrics: dict) -> str:
    text = ("Where PVM looks at the last claim of one answer: each block's attention over the image tokens "
            "(brighter = more), beside the backbone's own attention on the image at the same token")
    if plots.has_regions(metrics):
        return text + ("; the claimed region is outlined. Retrieval means PVM's weight sits on the outlined region; "
                       "a diffuse map means PVM re-injects the whole image rather than the part the text is about.")
    return text + (". This suite's claims name no image region, so none is outlined: read whether PVM's weight "
                   "sits on the object the claim names or spreads over the whole image.")
