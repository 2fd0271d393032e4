"""The `Probe` protocol: one measurement from `generate` to the report, in one class.

    runner    for each batch the enabled probes that apply attach (`attach`), `generate` runs, and each
              probe writes its own section of every record (`record`: record[probe.name])
    metrics   each probe reduces one variant's records to its keys of metrics.json (`metrics`)
    report    each probe draws its figures, every one with a caption that says what to read in it (`figures`):
              a matplotlib figure, and if it likes the same figure in plotly (`Figure.of_chart` gives both)

A probe sees the model only through `Batch` and the records only as JSON, so it can be written, and
registered (`pvm_probe.registry.PROBES`, or the `pvm_probe.probes` entry-point group), without touching
the runner or the report. Built-ins: `mass` (attention_mass.py), `lens` (logit_lens.py), `tuned_lens`
(tuned_lens.py) and `pvm` (gates.py).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Batch:
    """What a probe may read while it attaches to one batch."""

    model: object
    handle: object = None  # the PVM handle of the variant (None: no adapter)
    lens: object = None  # the base's tuned lens, when the run has one
    explore: list = field(default_factory=list)  # batch rows kept whole for the token explorer
    explore_layers: list = field(default_factory=list)  # decoder layers kept for them
    swapped_image: bool = False  # PVM reads another request's image in this batch


@dataclass
class Row:
    """One answer of the batch, as a probe writes its record section."""

    b: int  # batch row
    n: int  # the answer's own tokens (the probes' rows 0..n-1)
    record: dict  # the record so far: answer, claims (a probe may add fields to each claim), earlier sections
    cells: np.ndarray  # [N, 5] each visual token's place in its image (runner.visual_cells)
    request: object  # the suite's Request

    def inside(self, boxes: list) -> np.ndarray | None:
        """[N] True where a visual token's cell centre (of image 0) lies in one of the boxes; None: no boxes."""
        if not boxes:
            return None
        cells = self.cells
        cx, cy = (cells[:, 1] + cells[:, 3]) / 2, (cells[:, 2] + cells[:, 4]) / 2  # [N]
        hit = np.zeros(len(cells), dtype=bool)
        for x0, y0, x1, y1 in boxes:
            hit |= (cells[:, 0] == 0) & (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
        return hit


@dataclass
class Figure:
    """One figure of the report: the static version (PNG/SVG, and the page's fallback) and, optionally, the
    same figure in plotly, which the page shows interactively."""

    name: str  # file stem and page anchor
    title: str  # the section heading
    figure: object  # a matplotlib figure
    caption: str  # what to read in it, and what would falsify the story
    extra_html: str = ""  # e.g. a table shown under the figure
    interactive: object = None  # a plotly figure (or its dict) of the same data; None: the page shows the PNG

    @classmethod
    def of_chart(cls, name: str, title: str, chart, caption: str, extra_html: str = "") -> Figure:
        """Both versions from one `pvm_probe.plots.chart.Chart`, drawn once each."""
        return cls(name, title, chart.static(), caption, extra_html, chart.interactive())


def quarter_values(values: list, q: int) -> float | None:
    """Mean of one quarter of a per-token list (None where empty)."""
    part = np.array_split(np.asarray(values, dtype=float), 4)[q]
    return float(np.nanmean(part)) if len(part) and not np.isnan(part).all() else None


class Probe(AbstractContextManager):
    """Subclass, set `name` and `title`, implement `attach`, `record`, `metrics` and (optionally) `figures`."""

    name: str = ""
    title: str = ""

    def __init__(self, batch: Batch):
        self.batch = batch
        self._hooks = None

    @classmethod
    def applies(cls, batch: Batch) -> bool:
        """Whether this probe runs on this batch (the PVM probe needs a PVM adapter, say)."""
        return True

    def attach(self) -> AbstractContextManager:
        """A context manager that records during `generate` and removes every hook on exit."""
        raise NotImplementedError

    def __enter__(self):
        self._hooks = self.attach()
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        return self._hooks.__exit__(*exc)

    def record(self, row: Row) -> dict | None:
        """This probe's JSON section of one answer's record (arrays over the answer's n tokens)."""
        raise NotImplementedError

    @classmethod
    def metrics(cls, records: list[dict]) -> dict:
        """One variant's records (each holding this probe's section) -> its keys of metrics.json."""
        raise NotImplementedError

    @classmethod
    def figures(cls, metrics: dict, records: list[dict]) -> list[Figure]:
        """Figures of the whole metrics.json (every variant), each with its caption; [] for none."""
        return []
