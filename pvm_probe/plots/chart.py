"""A figure as data, drawn two ways from the same numbers.

A `Chart` is a grid of `Panel`s, each holding lines, grouped bars, heat maps, an image, reference rules,
rectangles and notes. `static(chart)` draws it with matplotlib (PNG/SVG for papers and the figure scripts),
`interactive(chart)` with plotly (hover, zoom, legend groups that toggle a variant in every panel at once).
The report's figure functions (`plots.report`) compute their series once into a chart, so the two versions
cannot disagree. In Jupyter a chart shows itself as the plotly figure with the static PNG in the same output
(static viewers show the PNG).

Hover text is plotly's `hovertemplate` (`%{x}`, `%{y:.3f}`, `%{customdata[0]}`); matplotlib ignores it.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass, field

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.figure import Figure as MatplotlibFigure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

_DASH = {"-": "solid", "--": "dash", ":": "dot", "-.": "dashdot"}
_MARKER = {"o": "circle", "s": "square", "^": "triangle-up", "v": "triangle-down", "<": "triangle-left",
           ">": "triangle-right", "D": "diamond", "p": "pentagon", ".": "circle"}
_HATCH = {"//": "/", "..": "."}
_SCALE = {"viridis": "Viridis", "inferno": "Inferno"}
PX_PER_INCH = 96


@dataclass
class Line:
    x: list
    y: list
    label: str = ""  # legend entry: the first item of each label gets one, and it toggles all of them
    color: str = "black"
    ls: str = "-"  # "": markers only
    marker: str | None = None
    width: float = 1.0
    hover: str = ""  # plotly hovertemplate
    customdata: list | None = None  # per point, for the hover
    text: list | None = None  # per point, for the hover (%{text})


@dataclass
class Bars:
    """One bar per x; the bars of one panel stand side by side at each x (grouped)."""

    x: list
    y: list
    label: str = ""
    color: str = "black"
    hatch: str | None = None
    alpha: float = 0.85
    hover: str = ""
    customdata: list | None = None


@dataclass
class Heatmap:
    z: np.ndarray  # [rows, cols], NaN where there is nothing
    zmin: float = 0.0
    zmax: float = 1.0
    cmap: str = "viridis"
    scale: str | None = None  # colour bar label (None: no colour bar)
    shared_scale: bool = False  # one colour bar for every heat map of the chart (the same zmin/zmax)
    extent: tuple | None = None  # (x0, x1, y0, y1) in data units (a raster over an image); None: cells at 0..n-1
    hover: str = ""
    customdata: list | None = None  # [rows][cols]


@dataclass
class Picture:
    image: object  # a PIL image, drawn at pixel coordinates


@dataclass
class Rule:
    """A reference line across the panel: vertical at x = `at`, or horizontal at y = `at`."""

    at: float
    axis: str = "x"
    color: str = "0.5"
    ls: str = ":"
    width: float = 0.8
    label: str = ""


@dataclass
class Box:
    x0: float
    y0: float
    x1: float
    y1: float
    color: str = "white"
    width: float = 2.0


@dataclass
class Note:
    """Text in the panel: at (x, y) in data units, or (None) at its centre."""

    text: str
    x: float | None = None
    y: float | None = None
    size: float = 8
    color: str = "0.3"
    rotation: float = 0
    offset: tuple = (0, 0)  # points right and up of (x, y)
    va: str = "bottom"  # the text's bottom at (x, y), or its "center"


@dataclass
class Panel:
    items: list = field(default_factory=list)
    title: str = ""
    xlabel: str = ""
    ylabel: str = ""
    categories: list | None = None  # x tick labels at 0..n-1 (x values of the items are indices)
    rows: list | None = None  # y tick labels at 0..n-1 (a heat map's rows, top to bottom)
    ylog: bool = False
    ylim: tuple | None = None
    image: bool = False  # an image panel: pixel axes, y down, no ticks


@dataclass
class Chart:
    panels: list
    cols: int = 1
    panel_size: tuple = (4.0, 3.2)  # inches per panel
    share: bool = False  # every panel on the same x and y axes (zoom one, zoom all)
    xlabel: str = ""  # for the whole grid
    ylabel: str = ""
    title: str = ""

    @property
    def rows(self) -> int:
        return math.ceil(len(self.panels) / self.cols)

    def static(self):
        return static(self)

    def interactive(self):
        return interactive(self)

    def _repr_mimebundle_(self, include=None, exclude=None):
        """Jupyter: the plotly figure (as plotly's own mimetype renderer gives it), and the static PNG for viewers
        that cannot run it."""
        import plotly.io

        return {"application/vnd.plotly.v1+json": json.loads(plotly.io.to_json(self.interactive(), validate=False)),
                "image/png": base64.b64encode(png(self.static(), dpi=72)).decode(),
                "text/plain": f"<Chart: {self.title or ', '.join(p.title for p in self.panels if p.title)}>"}


def png(fig, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def _hex(color: str) -> str:
    return mcolors.to_hex(color)


def _label(item) -> str:
    return getattr(item, "label", "")


# ---------------------------------------------------------------------------------------------- matplotlib


def static(chart: Chart):
    """The chart as a matplotlib figure (not registered with pyplot: nothing to close, nothing shown)."""
    w, h = chart.panel_size
    legend = _legend_entries(chart)
    beside = legend or any(isinstance(i, Heatmap) and i.shared_scale for p in chart.panels for i in p.items)
    fig = MatplotlibFigure(figsize=(w * chart.cols + (1.8 if beside else 0.3), h * chart.rows + 0.6))
    axes = fig.subplots(chart.rows, chart.cols, squeeze=False, sharex=chart.share, sharey=chart.share).flat
    for ax in axes[len(chart.panels):]:
        ax.set_visible(False)
    shared = None
    for ax, panel in zip(axes, chart.panels, strict=False):
        shared = _draw_panel(ax, panel, fig) or shared
    if chart.xlabel:
        fig.supxlabel(chart.xlabel, fontsize=9)
    if chart.ylabel:
        fig.supylabel(chart.ylabel, fontsize=9)
    if chart.title:
        fig.suptitle(chart.title, fontsize=9)
    if shared is not None:
        fig.colorbar(shared[0], ax=list(axes[:len(chart.panels)]), shrink=0.8, label=shared[1])
    else:
        fig.tight_layout()
    if legend:
        fig.legend([_handle(item) for item in legend.values()], list(legend), loc="upper left",
                   bbox_to_anchor=(1.0, 0.98), fontsize=7, frameon=False)
    return fig


def _legend_entries(chart: Chart) -> dict:
    entries = {}
    for panel in chart.panels:
        for item in panel.items:
            if _label(item) and _label(item) not in entries:
                entries[_label(item)] = item
    return entries


def _handle(item):
    if isinstance(item, Bars):
        return Patch(facecolor=item.color, hatch=item.hatch, alpha=item.alpha)
    if isinstance(item, Rule):
        return Line2D([], [], color=item.color, ls=item.ls, lw=item.width)
    return Line2D([], [], color=item.color, ls=item.ls, lw=max(item.width, 1.2), marker=item.marker, ms=4)


def _draw_panel(ax, panel: Panel, fig):
    """Draw one panel; returns (image, label) of a heat map whose colour bar is shared, else None."""
    bars = [item for item in panel.items if isinstance(item, Bars)]
    shared = None
    for item in panel.items:
        if isinstance(item, Line):
            ax.plot(item.x, _floats(item.y), color=item.color, ls=item.ls, marker=item.marker, lw=item.width,
                    ms=2 if item.marker == "." else 3.5, label=item.label)
        elif isinstance(item, Bars):
            width = 0.8 / len(bars)
            x = np.asarray(item.x, dtype=float) + (bars.index(item) - (len(bars) - 1) / 2) * width
            ax.bar(x, _floats(item.y), width, color=item.color, hatch=item.hatch, alpha=item.alpha)
        elif isinstance(item, Heatmap):
            shown = ax.imshow(item.z, aspect="auto" if item.extent is None else "equal", cmap=item.cmap,
                              vmin=item.zmin, vmax=item.zmax, interpolation="nearest", extent=item.extent)
            if item.shared_scale:
                shared = (shown, item.scale)
            elif item.scale is not None:
                fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03, label=item.scale)
        elif isinstance(item, Picture):
            ax.imshow(item.image)
        elif isinstance(item, Rule):
            (ax.axvline if item.axis == "x" else ax.axhline)(item.at, color=item.color, ls=item.ls, lw=item.width)
        elif isinstance(item, Box):
            ax.add_patch(Rectangle((item.x0, item.y0), item.x1 - item.x0, item.y1 - item.y0, fill=False,
                                   ec=item.color, lw=item.width))
        elif isinstance(item, Note):
            if item.x is None:
                ax.text(0.5, 0.5, item.text, transform=ax.transAxes, ha="center", va="center", fontsize=item.size,
                        color=item.color)
            else:
                ax.annotate(item.text, (item.x, item.y), xytext=item.offset, textcoords="offset points",
                            fontsize=item.size, color=item.color, rotation=item.rotation,
                            ha="center" if item.rotation else "left", va=item.va)
    _axes(ax, panel)
    return shared


def _axes(ax, panel: Panel) -> None:
    ax.set_title(panel.title, fontsize=8)
    if panel.image:
        ax.axis("off")
        return
    if panel.categories is not None:
        ax.set_xticks(range(len(panel.categories)), panel.categories, fontsize=7 if len(panel.categories) > 4 else None)
    if panel.rows is not None:
        step = max(1, len(panel.rows) // 8)
        ax.set_yticks(range(0, len(panel.rows), step), panel.rows[::step])
    if panel.ylog:
        ax.set_yscale("log")
    if panel.ylim is not None:
        ax.set_ylim(*panel.ylim)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)


def _floats(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


# ------------------------------------------------------------------------------------------------- plotly


def interactive(chart: Chart):
    """The chart as a plotly figure: the same panels, with hover, zoom and legend groups."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    specs = [[{} if r * chart.cols + c < len(chart.panels) else None for c in range(chart.cols)]
             for r in range(chart.rows)]
    fig = make_subplots(rows=chart.rows, cols=chart.cols, specs=specs, shared_xaxes="all" if chart.share else False,
                        shared_yaxes="all" if chart.share else False, x_title=chart.xlabel or None,
                        y_title=chart.ylabel or None, subplot_titles=[p.title.replace("\n", "<br>") for p in chart.panels],
                        horizontal_spacing=min((0.5 if _own_scales(chart) else 0.3) / chart.cols, 0.12),
                        vertical_spacing=min(0.3 / chart.rows, 0.12))
    fig.update_annotations(font_size=11)  # the panel titles
    traces, where, seen, shapes, notes, axes = [], [], set(), [], [], {}
    for i, panel in enumerate(chart.panels):
        row, col = divmod(i, chart.cols)
        sub = fig.get_subplot(row + 1, col + 1)
        refs = (sub.xaxis.plotly_name.replace("axis", ""), sub.yaxis.plotly_name.replace("axis", ""))
        for item in panel.items:
            trace = _trace(go, item, panel, seen, sub)
            if trace is not None:
                traces.append(trace)
                where.append((row + 1, col + 1))
            elif isinstance(item, Note):
                notes.append(_note(item, panel, *refs))
            else:
                shapes.append(_shape(item, *refs))
        axes[sub.xaxis.plotly_name], axes[sub.yaxis.plotly_name] = _plotly_axes(panel, refs[0])
    fig.add_traces(traces, rows=[r for r, _ in where], cols=[c for _, c in where])
    _, h = chart.panel_size
    fig.update_layout(**axes, template="plotly_white", height=max(360, int(PX_PER_INCH * h * chart.rows) + 90), barmode="group",
                      hovermode="closest", margin=dict(l=60, r=20, t=50, b=50), font=dict(size=11),
                      legend=dict(groupclick="togglegroup", font=dict(size=10)),
                      title=dict(text=chart.title, font=dict(size=13)) if chart.title else None,
                      annotations=[*fig.layout.annotations, *notes], shapes=shapes)  # all at once: one by one is slow
    return fig


def _legend(item, seen: set) -> dict:
    """One legend entry per label; clicking it toggles every item of that label, in every panel."""
    label = _label(item)
    shown = bool(label) and label not in seen
    seen.add(label)
    return {"name": label, "legendgroup": label or None, "showlegend": shown}


def _x(item, panel: Panel):
    """x values as plotly shows them: category names where the panel has categories, else an array (plotly
    stores numeric arrays as base64, far smaller in a page or a notebook than a JSON list)."""
    if panel.categories is None:
        return np.asarray(item.x)
    return [panel.categories[int(v)] for v in item.x]


def _y(item, panel: Panel):
    """y values as plotly shows them: row names where the panel names its rows."""
    if panel.rows is None:
        return _floats(item.y).astype(np.float32)
    return [panel.rows[int(v)] for v in item.y]


def _own_scales(chart: Chart) -> bool:
    return any(isinstance(item, Heatmap) and item.scale is not None and not item.shared_scale
               for panel in chart.panels for item in panel.items)


def _trace(go, item, panel: Panel, seen: set, sub):
    if isinstance(item, Line):
        mode = "markers" if not item.ls else "lines+markers" if item.marker else "lines"
        return go.Scatter(x=_x(item, panel), y=_y(item, panel), mode=mode,
                          line=dict(color=_hex(item.color), dash=_DASH.get(item.ls), width=item.width * 1.6),
                          marker=dict(symbol=_MARKER[item.marker], size=4 if item.marker == "." else 6)
                          if item.marker else None,
                          hovertemplate=item.hover or None, customdata=item.customdata, text=item.text,
                          **_legend(item, seen))
    if isinstance(item, Bars):
        return go.Bar(x=_x(item, panel), y=_y(item, panel), marker=dict(
            color=_hex(item.color), opacity=item.alpha, pattern=dict(shape=_HATCH[item.hatch]) if item.hatch else None),
            hovertemplate=item.hover or None, customdata=item.customdata, offsetgroup=item.label or None,
            **_legend(item, seen))
    if isinstance(item, Heatmap):
        place = {}
        if item.extent is not None:
            x0, x1, y0, y1 = item.extent  # y0 > y1: row 0 at the top, as an image
            rows, cols = item.z.shape
            place = dict(dx=(x1 - x0) / cols, x0=x0 + (x1 - x0) / cols / 2, dy=(y0 - y1) / rows,
                         y0=y1 + (y0 - y1) / rows / 2)
        elif panel.categories is not None or panel.rows is not None:
            place = dict(x=panel.categories, y=panel.rows)
        return go.Heatmap(z=np.asarray(item.z, dtype=np.float32), zmin=item.zmin, zmax=item.zmax, colorscale=_SCALE.get(item.cmap, item.cmap),
                          hovertemplate=item.hover or None, customdata=item.customdata, showscale=item.scale is not None,
                          colorbar=_colorbar(item, sub), hoverongaps=False, name="", **place)
    if isinstance(item, Picture):
        return go.Image(source=_data_uri(item.image), hoverinfo="skip", name="")
    if isinstance(item, Rule) and item.label and item.axis == "y":  # a line trace, to be in the legend
        span = _x_span(panel)
        return go.Scatter(x=span, y=[item.at] * len(span), mode="lines", hovertemplate=f"{item.label}: %{{y:.4g}}<extra></extra>",
                          line=dict(color=_hex(item.color), dash=_DASH[item.ls], width=item.width * 1.4),
                          **_legend(item, seen))
    return None


def _x_span(panel: Panel) -> list:
    """The first and last x of the panel's lines and bars, as plotly places them."""
    if panel.categories is not None:
        return [panel.categories[0], panel.categories[-1]]
    xs = [float(x) for item in panel.items if isinstance(item, Line | Bars) for x in item.x]
    return [min(xs), max(xs)] if xs else [0, 1]


def _colorbar(item: Heatmap, sub) -> dict:
    """A shared colour bar at the right of the grid; a heat map's own one beside its panel."""
    bar = dict(title=dict(text=item.scale or "", side="right"), thickness=12, len=0.8)
    if item.shared_scale:
        return bar
    right, (y0, y1) = sub.xaxis.domain[1], sub.yaxis.domain
    return bar | dict(x=right + 0.005, xanchor="left", y=(y0 + y1) / 2, len=0.9 * (y1 - y0))


def _shape(item, xref: str, yref: str) -> dict:
    """A rule or a box as a layout shape of one subplot (a shape in the legend breaks plotly.js's resize)."""
    if isinstance(item, Box):
        return dict(type="rect", x0=item.x0, y0=item.y0, x1=item.x1, y1=item.y1, xref=xref, yref=yref,
                    line=dict(color=_hex(item.color), width=item.width))
    line = dict(color=_hex(item.color), dash=_DASH[item.ls], width=item.width * 1.4)
    if item.axis == "x":
        return dict(type="line", x0=item.at, x1=item.at, y0=0, y1=1, xref=xref, yref=f"{yref} domain", line=line)
    return dict(type="line", y0=item.at, y1=item.at, x0=0, x1=1, yref=yref, xref=f"{xref} domain", line=line)


def _note(item: Note, panel: Panel, xref: str, yref: str) -> dict:
    font = dict(size=item.size + 2, color=_hex(item.color))
    if item.x is None:
        return dict(text=item.text.replace("\n", "<br>"), x=0.5, y=0.5, xref=f"{xref} domain", yref=f"{yref} domain",
                    showarrow=False, font=font)
    return dict(text=item.text, x=item.x, y=math.log10(item.y) if panel.ylog else item.y, xref=xref, yref=yref,
                showarrow=False, font=font, textangle=-item.rotation, xanchor="center" if item.rotation else "left",
                yanchor="bottom" if item.va == "bottom" else "middle", xshift=item.offset[0] * 1.3,
                yshift=item.offset[1] * 1.3)  # on a category axis x is the category's index


def _plotly_axes(panel: Panel, xref: str) -> tuple[dict, dict]:
    """(x axis, y axis) settings of one panel."""
    x = dict(title_text=panel.xlabel or None)
    y = dict(title_text=panel.ylabel or None)
    if panel.image:  # pixels are square, y runs down
        x |= dict(visible=False, constrain="domain")
        y |= dict(visible=False, autorange="reversed", constrain="domain",
                  scaleanchor=xref)
    if panel.categories is not None:
        x |= dict(type="category", categoryorder="array", categoryarray=panel.categories)
    if panel.rows is not None:
        y |= dict(type="category", categoryorder="array", categoryarray=panel.rows, autorange="reversed")
    if panel.ylog:
        y |= dict(type="log")
    if panel.ylim is not None:
        y |= dict(range=list(panel.ylim))
    return x, y


def _data_uri(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
