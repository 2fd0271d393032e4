"""The token explorer as a Jupyter widget: pick a variant, a request and a layer, click a token of the answer, and
see where the backbone looked among the image patches and where each PVM block looked, the baseline and the
variant side by side.

    from pvm_probe.report.widget import TokenExplorer
    TokenExplorer(records)    # records of a run with --explore N: its first N requests keep per-patch attention

It reads the data the report's explorer reads (`explorer.explorer_answers`) and draws two `Chart`s in plotly
`FigureWidget`s: the answers token by token (`plots.report.answer_strip`) and the maps at the chosen token
(`plots.report.retrieval_overlay`). Needs ipywidgets and anywidget (`pip install "pvm_probe[jupyter]"`).
"""

from __future__ import annotations

import base64
import json

import ipywidgets as widgets
import plotly.graph_objects as go

from ..errors import InputError
from ..plots.chart import png
from ..plots.report import answer_strip, retrieval_overlay
from ..probes.builtin.pvm import decode_image
from .explorer import explorer_answers


class TokenExplorer(widgets.VBox):
    """`variant`, `request`, `layer`: the dropdowns; `token`: the chosen position (click the strip, or `select`);
    `strip`, `maps`: the two plotly FigureWidgets."""

    def __init__(self, records: list[dict]):
        answers = explorer_answers(records)
        if not answers:
            raise InputError("no record keeps per-patch attention: run with --explore N (N >= 1)")
        self.answers = {(a["variant"], a["id"]): a for a in answers}
        variants = list(dict.fromkeys(a["variant"] for a in answers))
        self.variant = widgets.Dropdown(options=[v for v in variants if v != "baseline"] or variants,
                                        description="variant")
        self.request = widgets.Dropdown(description="request")
        self.layer = widgets.Dropdown(description="layer")
        self.token, self._quiet = 0, False
        self.strip, self.maps = go.FigureWidget(), go.FigureWidget()
        self._choose_variant()
        self.variant.observe(lambda _: self._choose_variant(), "value")
        self.request.observe(lambda _: self._choose_request(), "value")
        self.layer.observe(lambda _: self._draw(), "value")
        super().__init__([widgets.HBox([self.variant, self.request, self.layer]), self.strip, self.maps])

    def shown(self) -> list[dict]:
        """The answers on show: the baseline's to the same request (when explored) and the variant's."""
        ids = [self.variant.value] if self.variant.value == "baseline" else ["baseline", self.variant.value]
        return [self.answers[v, self.request.value] for v in ids if (v, self.request.value) in self.answers]

    def select(self, t: int) -> None:
        """Show the maps at generated position `t` (what a click on the strip does)."""
        self.token = int(t)
        self._draw()

    def on_click(self, trace, points, state) -> None:
        """The strip's click handler (plotly `on_click`): the clicked token's position."""
        if points.xs:
            self.select(points.xs[0])

    def _choose_variant(self) -> None:
        ids = [i for v, i in self.answers if v == self.variant.value]
        layers = self.answers[self.variant.value, ids[0]]["layers"]
        self._quiet = True  # the dropdowns change one by one: draw once, at the end
        try:
            current = self.request.value
            self.request.options = ids
            self.request.value = current if current in ids else ids[0]
            self.layer.options = [(f"layer {layer}", i) for i, layer in enumerate(layers)]
            self.layer.value = len(layers) - 1
        finally:
            self._quiet = False
        self._choose_request()

    def _choose_request(self) -> None:
        """A new answer opens on its last claim (where a late answer loses the image), else its first token."""
        if not self._quiet:
            claims = self.shown()[-1]["claims"]
            self.select(claims[-1]["token"] if claims else 0)

    def _draw(self) -> None:
        if self._quiet:
            return
        _show(self.strip, self.strip_chart().interactive())
        for trace in self.strip.data:
            trace.on_click(self.on_click)
        _show(self.maps, self.maps_chart().interactive())

    def strip_chart(self):
        return answer_strip(self.shown(), self.layer.value, self.token)

    def maps_chart(self):
        """The image and, at the chosen token and layer, each shown answer's backbone attention over the
        patches and, for a PVM variant, each block's retrieval weights."""
        t, layer, shown = self.token, self.layer.value, self.shown()
        maps = {}
        for answer in (a for a in shown if t < len(a["pieces"])):
            maps[f"{answer['variant']}: backbone, layer {answer['layers'][layer]}"] = answer["attention"][layer][t]
            for k, block in enumerate(answer.get("pvm_layers", [])):
                maps[f"{answer['variant']}: PVM block at layer {block}"] = answer["pvm"][k][t]
        main = shown[-1]
        claim = next((c for c in main["claims"] if c["token"] == t), None)
        piece = json.dumps(main["pieces"][t], ensure_ascii=False) if t < len(main["pieces"]) else "(answer ended)"
        title = f"{main['variant']}, {main['id']}, token {t} {piece}" + (
            f": the claim \"{claim['text']}\" ({'correct' if claim['correct'] else 'wrong'})" if claim else "")
        return retrieval_overlay(decode_image(main["image"]), main["cells"], maps, claim["boxes"] if claim else [],
                                 title)

    def _repr_mimebundle_(self, **kwargs):
        """The live widget, and a PNG of the maps for viewers without a kernel."""
        bundle = super()._repr_mimebundle_(**kwargs)
        return {**bundle, "image/png": base64.b64encode(png(self.maps_chart().static(), dpi=72)).decode()}


def _show(widget: go.FigureWidget, figure: go.Figure) -> None:
    """Put `figure` into the widget: traces updated in place when their kinds match, else replaced."""
    with widget.batch_update():
        if [t.type for t in widget.data] == [t.type for t in figure.data]:
            for old, new in zip(widget.data, figure.data, strict=True):
                old.update(new.to_plotly_json(), overwrite=True)
        else:
            widget.data = []
            widget.add_traces(list(figure.data))
        widget.layout = figure.layout
