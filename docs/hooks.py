"""MkDocs hooks of the docs site (mkdocs.yml: `hooks`): what a Markdown page cannot say by itself.

- The CLI reference: `cli.md`'s marker becomes every subcommand's `--help`, from the parsers the program
  itself builds (`pvm_probe.cli.build_parser`), so the page cannot drift from the code.
- The repository's `figures/` (images) and `notebooks/` join the site. Pages link to them as `../figures/x.png`
  and `../notebooks/x.ipynb`, paths that also work when GitHub shows `docs/*.md`; here they are rewritten to
  the site's copies.
- Notebooks render from their committed outputs (mkdocs-jupyter, never executed). An output that carries a
  plotly figure (`application/vnd.plotly.v1+json`) is drawn from that JSON with the plotly.js of the
  installed plotly package, copied into the site once, so nothing is fetched from a CDN; scripts that
  nbconvert's template would load from a CDN (MathJax, Mermaid) are left out of the notebook pages.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
CLI_MARKER = "<!-- cli-reference -->"
HELP_WIDTH = "100"  # columns of the generated help, whatever terminal builds the site
IMAGES = ("*.png", "*.svg", "*.jpg")
PLOTLY_MIME = "application/vnd.plotly.v1+json"
PLOTLY_JS = "assets/javascripts/plotly.min.js"
REPO_LINK = re.compile(r"(\]\(|src=\")\.\./(figures|notebooks)/")
# nbconvert's template: Mermaid imported from a CDN (when a page has diagrams) and MathJax from `custom_mathjax_url`
# (empty here); the notebooks use neither.
CDN_SCRIPT = re.compile(r"<script\b[^>]*>(?:(?!</script>).)*?cdnjs\.cloudflare\.com.*?</script>\s*|<script src=\"\">\s*</script>\s*",
                        re.S)

_scratch: tempfile.TemporaryDirectory | None = None
_plotly_pages: set[str] = set()


# ---- the CLI reference --------------------------------------------------------------------------------
def subcommands() -> dict[str, argparse.ArgumentParser]:
    """Each subcommand's parser, as `pvm-probe` builds it."""
    from pvm_probe.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def cli_reference() -> str:
    """Markdown: one section per subcommand with its `--help` text."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH
    try:
        sections = [f"### {parser.prog}\n\n```text\n{parser.format_help().rstrip()}\n```\n"
                    for parser in subcommands().values()]
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return "\n".join(sections)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri == "cli.md":
        if CLI_MARKER not in markdown:
            raise PluginError(f"cli.md lost its marker {CLI_MARKER}: the CLI reference has nowhere to go")
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if page.file.src_uri.count("/") == 0:  # a top-level page: ../figures/ is the repository's figures/
        markdown = REPO_LINK.sub(r"\1\2/", markdown)
    return markdown


# ---- figures and notebooks from the repository --------------------------------------------------------
@event_priority(50)  # before mkdocs-jupyter's on_files, which turns .ipynb files into pages
def on_files(files, config):
    global _scratch
    _scratch = tempfile.TemporaryDirectory(prefix="pvm_probe_docs_")
    _plotly_pages.clear()
    for pattern in IMAGES:
        for path in sorted((ROOT / "figures").glob(pattern)):
            files.append(_repository_file(f"figures/{path.name}", ROOT, config))
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        source_dir = _offline_notebook(path, Path(_scratch.name))
        files.append(_repository_file(f"notebooks/{path.name}", source_dir, config))
    return files


def _repository_file(uri: str, source_dir: Path, config) -> File:
    # A real source folder (not File.generated): mkdocs-jupyter reads a notebook through its src_dir.
    return File(uri, src_dir=str(source_dir), dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"])


def _offline_notebook(path: Path, scratch: Path) -> Path:
    """The folder holding notebooks/NAME: the repository (as committed), or a scratch folder with a copy whose
    plotly outputs are drawn offline from their JSON."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    changed = False
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if PLOTLY_MIME in data:
                data["text/html"] = _plotly_html(data[PLOTLY_MIME])
                changed = True
    if not changed:
        return ROOT
    _plotly_pages.add(f"notebooks/{path.name}")
    (scratch / "notebooks").mkdir(parents=True, exist_ok=True)
    (scratch / "notebooks" / path.name).write_text(json.dumps(notebook), encoding="utf-8")
    return scratch


def _plotly_html(figure: dict) -> str:
    import plotly.io as pio

    # The page loads plotly.js once from the site (on_post_page); the figure is a div and a call to it.
    return pio.to_html(figure, include_plotlyjs=False, full_html=False, validate=False)


def on_post_page(output: str, page, config) -> str:
    if page.file.src_uri.startswith("notebooks/"):
        output = CDN_SCRIPT.sub("", output)
        if page.file.src_uri in _plotly_pages:
            depth = page.file.url.count("/")
            script = f'<script src="{"../" * depth}{PLOTLY_JS}"></script>'
            output = output.replace("</head>", f"{script}\n</head>", 1)
    return output


def on_post_build(config):
    if _plotly_pages:
        import plotly

        target = Path(config["site_dir"]) / PLOTLY_JS
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", target)
    if _scratch is not None:
        _scratch.cleanup()
