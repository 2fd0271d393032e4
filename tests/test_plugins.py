"""Extending pvm_probe from outside the package: a probe and a remedy in a distribution of their own, found
through entry points, run end to end (help, runner, records, metrics.json, report) with no edit in
pvm_probe; and a report rebuilt from the records folder alone once the adapter folders are gone."""

import json
import shutil
import sys
import textwrap

import pytest

from pvm_probe.cli import main
from pvm_probe.errors import InputError
from pvm_probe.records import RECORDS, read_records
from pvm_probe.registry import PROBES, REMEDIES, SUITES
from pvm_probe.report import build_report

PLUGIN = '''
"""A toy probe (counts the model's forwards and reads each answer's length) and a toy remedy (scales the
final logits, which greedy decoding cannot see)."""
import matplotlib.pyplot as plt
import plotly.graph_objects as go

from pvm_probe.probes.protocol import Figure, Probe
from pvm_probe.remedies.base import Remedy


class _Counter:
    def __init__(self, model):
        self.model, self.forwards, self.handle = model, 0, None

    def __enter__(self):
        self.handle = self.model.register_forward_hook(lambda *_: setattr(self, "forwards", self.forwards + 1))
        return self

    def __exit__(self, *exc):
        self.handle.remove()


class ToyProbe(Probe):
    name = "toy_probe"
    title = "Toy probe"

    def attach(self):
        self.counter = _Counter(self.batch.model)
        return self.counter

    def record(self, row):
        return {"forwards": self.counter.forwards, "tokens": row.n}

    @classmethod
    def metrics(cls, records):
        return {"toy_probe": {"tokens_mean": sum(r["toy_probe"]["tokens"] for r in records) / len(records),
                              "forwards_max": max(r["toy_probe"]["forwards"] for r in records)}}

    @classmethod
    def figures(cls, metrics, records):
        """One figure static only, one with an interactive version (a plotly figure built by hand)."""
        names = [n for n, m in metrics["variants"].items() if "toy_probe" in m]
        forwards = [metrics["variants"][n]["toy_probe"]["forwards_max"] for n in names]
        fig, ax = plt.subplots()
        ax.bar(names, [metrics["variants"][n]["toy_probe"]["tokens_mean"] for n in names])
        both, ax = plt.subplots()
        ax.bar(names, forwards)
        return [Figure("toy_probe_tokens", "Toy probe: answer length", fig, "Mean answer length per variant."),
                Figure("toy_probe_forwards", "Toy probe: forwards", both, "Most forwards per answer.",
                       interactive=go.Figure(go.Bar(x=names, y=forwards, name="forwards")))]


class ToyRemedy(Remedy):
    name = "toy_remedy"
    title = "Toy remedy"
    changes = "logits"
    summary = "scale the final logits by 1 / temperature"
    cost = "nothing"
    sweep = {"temperature": [1.0, 2.0]}

    def __init__(self, model, temperature: float = 2.0):
        super().__init__(model)
        self.temperature = temperature

    def _install(self):
        head = self.model.get_output_embeddings()
        self._hook(head.register_forward_hook(lambda m, a, out: out / self.temperature))
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A distribution `toy-plugin` (its module and a dist-info with entry points) on sys.path."""
    root = tmp_path / "site"
    (root / "toy_plugin").mkdir(parents=True)
    (root / "toy_plugin" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    info = root / "toy_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[pvm_probe.probes]\ntoy_probe = toy_plugin:ToyProbe\n\n"
                                           "[pvm_probe.remedies]\ntoy_remedy = toy_plugin:ToyRemedy\n")
    monkeypatch.syspath_prepend(str(root))
    for registry in (PROBES, REMEDIES, SUITES):
        registry.refresh()
    yield root
    monkeypatch.delitem(sys.modules, "toy_plugin", raising=False)
    monkeypatch.undo()
    for registry in (PROBES, REMEDIES, SUITES):
        registry.refresh()


def test_a_plugin_probe_and_remedy_run_end_to_end(plugin, tiny_checkpoints, tmp_path, capsys):
    assert main(["report", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "toy_probe" in help_text and "toy_remedy" in help_text

    out = tmp_path / "report"
    argv = ["report", "--base", str(tiny_checkpoints["qwen2_5_vl"]), "--scenes", "2", "--max-new-tokens", "6",
            "--image-size", "64", "--remedy", "toy_remedy", "--no-tuned-lens", "--explore", "0", "--out", str(out)]
    assert main(argv) == 0
    records = read_records(out / RECORDS)
    assert {r["variant"] for r in records} == {"baseline", "toy_remedy"}
    for r in records:  # every enabled probe's own section, the plug-in's beside the built-ins
        assert {"mass", "lens", "toy_probe"} <= set(r)
        assert r["toy_probe"]["tokens"] == r["n_tokens"] and r["toy_probe"]["forwards"] >= r["n_tokens"]
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("baseline", "toy_remedy"):
        assert metrics["variants"][name]["toy_probe"]["tokens_mean"] == pytest.approx(
            sum(r["n_tokens"] for r in records if r["variant"] == name) / 2)
    assert metrics["variants"]["toy_remedy"]["kind"] == "toy_remedy"
    page = (out / "report.html").read_text()
    assert 'id="fig-toy_probe_tokens"' in page and "Mean answer length per variant." in page
    assert 'id="fig-remedies"' in page  # the plug-in remedy is drawn beside the baseline like any remedy
    caption = page.split('id="fig-remedies"', 1)[1].split('class="caption">', 1)[1].split("</p>", 1)[0]
    assert "Toy remedy: scale the final logits by 1 / temperature" in caption  # its registered title and summary
    assert not any(REMEDIES.get(n).title in caption for n in REMEDIES.names() if n != "toy_remedy")  # not drawn
    assert (out / "toy_probe_tokens.png").is_file() and (out / "toy_probe_forwards.png").is_file()
    # a static-only figure is its PNG; one with an interactive version is drawn by plotly over its PNG
    assert '<img alt="toy_probe_tokens"' in page and 'data-figure="toy_probe_tokens"' not in page
    assert '<div class="plot" data-figure="toy_probe_forwards"><img alt="toy_probe_forwards"' in page
    spec = page.split('<script type="application/json" id="plot-toy_probe_forwards">', 1)[1].split("</script>", 1)[0]
    (bar,) = json.loads(spec)["data"]
    assert bar["x"] == ["baseline", "toy_remedy"] and bar["y"] == [
        max(r["toy_probe"]["forwards"] for r in records if r["variant"] == n) for n in bar["x"]]


def test_a_plugin_may_not_take_a_builtin_name(tmp_path, monkeypatch):
    root = tmp_path / "site"
    info = root / "bad-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bad\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[pvm_probe.remedies]\nvcd = bad:VCD\n")
    monkeypatch.syspath_prepend(str(root))
    REMEDIES.refresh()
    try:
        with pytest.raises(InputError, match="takes the name of a registered remedy"):
            REMEDIES.names()
    finally:
        monkeypatch.undo()
        REMEDIES.refresh()
    assert "vcd" in REMEDIES.names()


def test_the_report_needs_only_the_records_folder(tiny_checkpoints, open_adapter, tmp_path):
    adapter = tmp_path / "moved-away" / "pvm"
    shutil.copytree(open_adapter, adapter)
    out = tmp_path / "report"
    assert main(["report", "--base", str(tiny_checkpoints["qwen3_vl"]), "--pvm", str(adapter), "--scenes", "2",
                 "--max-new-tokens", "6", "--image-size", "64", "--no-tuned-lens", "--explore", "1",
                 "--out", str(out)]) == 0
    before = json.loads((out / "metrics.json").read_text())
    assert before["variants"]["pvm"]["block"] == "pvm" and before["variants"]["pvm"]["num_parameters"] > 0
    assert "gates off for pvm" not in before["headline"]["missing_controls"]
    shutil.rmtree(adapter.parent)
    build_report(out)
    assert json.loads((out / "metrics.json").read_text()) == before


def test_a_remedy_with_its_own_decoding_is_replayed_under_the_probes(tiny_checkpoints, tmp_path):
    """A decoding remedy's answers (here: greedy, then each answer's first token swapped for another) land in
    the records as decoded, and the probes read those answers' own rows."""
    from pvm_probe.loading import load_base
    from pvm_probe.remedies.base import Remedy
    from pvm_probe.runner import RunConfig, run
    from pvm_probe.suites import ScenesSuite
    from pvm_probe.variants import Variant

    decoded = {}

    class SwapFirst(Remedy):
        name, title = "swap_first", "Swap first"

        def _install(self):
            pass

        def decode(self, inputs, max_new_tokens):
            sequences = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            width = inputs["input_ids"].shape[1]
            sequences[:, width] = (sequences[:, width] + 7) % 50  # a token greedy did not choose
            decoded["answers"] = sequences[:, width:].tolist()
            return sequences

    REMEDIES.add("swap_first", SwapFirst)
    try:
        model, processor = load_base(tiny_checkpoints["llava"])
        suite = ScenesSuite(scenes=2, image_size=64, max_new_tokens=5)
        records = run(model, processor, suite, [Variant("swap_first", remedy="swap_first")], tmp_path / "r",
                      RunConfig(batch_size=2, progress=False))
    finally:
        REMEDIES.remove("swap_first")
    for record, answer in zip(records, decoded["answers"], strict=True):
        assert record["token_ids"] == answer[:record["n_tokens"]]
        assert all(len(row) == record["n_tokens"] for row in record["mass"]["image"])
