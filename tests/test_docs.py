"""The manual keeps up with the code: every subcommand, public name, registered extension and one-line error
has its entry; the README's tables list what the registries hold; the site builds offline with warnings as
errors (slow)."""

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import griffe
import pytest

import pvm_probe
from pvm_probe.backbones import HOOK_SITES
from pvm_probe.cli import COMMANDS
from pvm_probe.registry import PROBES, REMEDIES, SUITES

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_LIMIT = 12 * 1024

# The public names the API reference must show (besides pvm_probe.__all__ and every registered class).
PUBLIC = [
    "pvm_probe.loading.load_base", "pvm_probe.inject.attach_pvm", "pvm_probe.inject.load_pvm",
    "pvm_probe.inject.PVMHandle", "pvm_probe.config.PVMConfig",
    "pvm_probe.probes.attention_mass.VisualAttentionMass", "pvm_probe.probes.logit_lens.LogitLens",
    "pvm_probe.probes.tuned_lens.TunedLens", "pvm_probe.probes.dilution.dilution_report",
    "pvm_probe.probes.protocol.Probe", "pvm_probe.remedies.base.Remedy",
    "pvm_probe.suites.base.Suite", "pvm_probe.suites.base.Request", "pvm_probe.suites.base.Answer",
    "pvm_probe.suites.base.Claim",
    "pvm_probe.jobs", "pvm_probe.jobs.Job", "pvm_probe.jobs.report", "pvm_probe.jobs.paint", "pvm_probe.jobs.probe",
    "pvm_probe.specs", "pvm_probe.specs.ModelSpec", "pvm_probe.specs.SuiteSpec",
    "pvm_probe.benchmarks.score.score_captions",
    "pvm_probe.registry", "pvm_probe.registry.Registry", "pvm_probe.registry.SUITES",
    "pvm_probe.registry.PROBES", "pvm_probe.registry.REMEDIES",
]
ERRORS = {"InputError", "ConfigError", "AdapterError", "AdapterMismatchError", "ArgumentTypeError",
          "FileNotFoundError", "RecordError"}
SHORTEST_FRAGMENT = 8  # a message's literal text shorter than this ("{where}: {problem}") says nothing to look up


def load_hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table(text: str, first_heading: str) -> list[list[str]]:
    """The rows (cells, stripped) of the Markdown table whose header row starts with `first_heading`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"\|\s*{re.escape(first_heading)}\s*\|", line))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def builtin(registry) -> dict:
    """name -> class of the registry's built-ins (a plug-in another test registered is not ours to document)."""
    return {name: cls for name, cls in registry.items() if cls.__module__.startswith("pvm_probe.")}


def unquote(cell: str) -> str:
    return cell.strip("`")


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text)


# ---- the command line -----------------------------------------------------------------------------------
def test_every_subcommand_has_a_row_in_the_command_table():
    rows = table((DOCS / "cli.md").read_text(), "command")
    listed = {unquote(row[0]).split()[0] for row in rows}
    assert listed == set(COMMANDS), f"docs/cli.md's command table: missing {set(COMMANDS) - listed}, " \
                                    f"stale {listed - set(COMMANDS)}"


def test_the_cli_reference_is_the_help_of_every_subcommand():
    hooks = load_hooks()
    assert hooks.CLI_MARKER in (DOCS / "cli.md").read_text()
    reference = hooks.cli_reference()
    for name in COMMANDS:
        assert f"### pvm-probe {name}\n" in reference
        assert f"usage: pvm-probe {name}" in reference
    assert "--max-new-tokens" in reference and "--reward" in reference  # the flags, not only the titles


# ---- the API reference ----------------------------------------------------------------------------------
def directives() -> list[str]:
    return [m.group(1) for page in sorted(DOCS.rglob("*.md"))
            for m in re.finditer(r"^::: (\S+)$", page.read_text(), re.M)]


def test_every_public_name_and_registered_class_has_an_api_entry():
    package = griffe.load("pvm_probe", search_paths=[str(ROOT)], allow_inspection=False)
    documented = set(directives())
    # `from pvm_probe import X`: documented where X is defined (pvm_probe.jobs re-exports ModelSpec from specs)
    wanted = set(PUBLIC) | {package[f"{module}.{name}"].canonical_path for name, module in pvm_probe._API.items()}
    for registry in (SUITES, PROBES, REMEDIES):
        wanted |= {f"{cls.__module__}.{cls.__qualname__}" for cls in builtin(registry).values()}
    missing = sorted(wanted - documented)
    assert not missing, f"no `::: NAME` entry in docs/api/ for {missing}"


def test_every_api_entry_names_an_object_that_exists():
    package = griffe.load("pvm_probe", search_paths=[str(ROOT)], allow_inspection=False)  # as mkdocstrings reads it

    def exists(path: str) -> bool:
        try:
            package[path.removeprefix("pvm_probe.")]
        except KeyError:
            return False
        return True

    unknown = [path for path in directives() if not exists(path)]
    assert not unknown, f"docs name objects that do not exist: {unknown}"


# ---- the README -----------------------------------------------------------------------------------------
def test_readme_is_a_front_page_whose_links_resolve():
    text = README.read_text()
    assert len(text.encode()) <= README_LIMIT, f"README.md is {len(text.encode())} bytes (limit {README_LIMIT})"
    assert "make report" in text and "make test" in text
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert any(link.startswith("docs/") for link in links)
    broken = [link for link in links if "://" not in link and not (ROOT / link).exists()]
    assert not broken, f"README.md links to missing files: {broken}"


def test_readme_tables_list_the_registered_families_suites_and_remedies():
    text = README.read_text()
    families = {unquote(row[1]) for row in table(text, "family")}
    assert families == set(HOOK_SITES)
    suites = {unquote(row[0]) for row in table(text, "suite")}
    assert suites == set(builtin(SUITES))
    remedies = {unquote(row[0]): unquote(row[1]) for row in table(text, "remedy")}
    assert remedies == {name: cls.changes for name, cls in builtin(REMEDIES).items()}


# ---- troubleshooting ------------------------------------------------------------------------------------
def raised_messages() -> list[tuple[str, str]]:
    """(where, the longest literal piece of the message) of every one-line error raised in pvm_probe."""
    found = []
    for path in sorted((ROOT / "pvm_probe").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            func = node.exc.func
            if (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)) not in ERRORS:
                continue
            pieces = [piece.value for arg in node.exc.args for piece in
                      ([arg] if isinstance(arg, ast.Constant) else getattr(arg, "values", []))
                      if isinstance(piece, ast.Constant) and isinstance(piece.value, str)]
            longest = max((squash(p).strip(" :;,") for p in pieces), key=len, default="")
            if len(longest) >= SHORTEST_FRAGMENT:
                found.append((f"{path.relative_to(ROOT)}:{node.lineno}", longest))
    return found


def test_troubleshooting_lists_every_one_line_error():
    page = squash((DOCS / "troubleshooting.md").read_text())
    messages = raised_messages()
    assert len(messages) > 150  # the scan found the raises (a broken scan would pass vacuously)
    missing = [f"{where}: {fragment!r}" for where, fragment in messages if fragment not in page]
    assert not missing, "docs/troubleshooting.md does not list:\n" + "\n".join(missing)


# ---- the hooks ------------------------------------------------------------------------------------------
def test_plotly_outputs_render_offline_from_their_json(tmp_path):
    hooks = load_hooks()
    figure = {"data": [{"type": "bar", "x": ["Q1", "Q4"], "y": [1, 0.2]}], "layout": {"title": {"text": "t"}}}
    cdn = '<script src="https://cdn.plot.ly/plotly-3.0.1.min.js"></script><div id="x"></div>'
    notebook = {"cells": [{"cell_type": "code", "source": "", "metadata": {}, "outputs": [
        {"output_type": "display_data", "metadata": {},
         "data": {hooks.PLOTLY_MIME: figure, "text/html": cdn, "image/png": "iVBORw0KGgo="}}]}],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    source = tmp_path / "nb.ipynb"
    source.write_text(json.dumps(notebook))
    folder = hooks._offline_notebook(source, tmp_path / "scratch")
    html = json.loads((folder / "notebooks" / "nb.ipynb").read_text())["cells"][0]["outputs"][0]["data"]["text/html"]
    assert "Plotly.newPlot" in html and "://" not in html.replace("http://www.w3.org", "")

    plain = {**notebook, "cells": [{"cell_type": "markdown", "source": "x", "metadata": {}}]}
    source.write_text(json.dumps(plain))
    assert hooks._offline_notebook(source, tmp_path / "scratch") == hooks.ROOT  # rendered as committed


# ---- the site -------------------------------------------------------------------------------------------
# What a browser would fetch from elsewhere: a script, image or frame by URL, a stylesheet or font link, an ES import.
EXTERNAL = re.compile(r"<(?:script|img|iframe|source)\b[^>]*\bsrc=\"(?:https?:)?//|<link\b[^>]*\bhref=\"(?:https?:)?//"
                      r"|\bimport\s*\(?\s*[\"'](?:https?:)?//")


@pytest.mark.slow
def test_docs_site_builds_strict_and_offline(tmp_path):
    site = tmp_path / "site"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    print(f"docs build: {time.perf_counter() - start:.1f} s")
    log = done.stdout + done.stderr
    assert done.returncode == 0 and "WARNING" not in log, log
    cli = (site / "cli.html").read_text()
    for name in COMMANDS:
        assert f"usage: pvm-probe {name}" in cli
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        page = (site / "notebooks" / f"{notebook.stem}.html").read_text()
        assert "data:image/png;base64" in page  # the committed outputs are there
    assert "VisualAttentionMass" in (site / "api" / "probes.html").read_text()
    fetched = {str(p.relative_to(site)) for p in site.rglob("*.html") if EXTERNAL.search(p.read_text())}
    fetched |= {str(p.relative_to(site)) for p in site.rglob("*.css")
                if re.search(r"url\((['\"]?)(https?:)?//|@import", p.read_text())}
    assert not fetched, f"pages that would fetch from the network: {sorted(fetched)}"
