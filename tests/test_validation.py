"""Adapters and configs are validated at the boundary: a bad file or argument is one `InputError` line.

Property tests feed mutated `pvm_config.json` files (from a real saved adapter) and random
`PVMConfig(**kwargs)`: each either loads and runs a forward with finite logits, or raises `InputError`
with a one-line message; no other exception may escape. Targeted tests pin the messages.
"""

import ast
import json
import math
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path

import pytest
import torch
from conftest import SMALL_PVM, open_gates, small_config
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pvm_probe import InputError, PVMConfig, attach_pvm, load_pvm, read_adapter_meta, strided_layers
from pvm_probe.checkpoints import CONFIG_FILE, WEIGHTS_FILE
from pvm_probe.config import BLOCK_KINDS
from pvm_probe.memory import BLOCKS
from pvm_probe.zoo import Image, fake_request, tiny_model

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


@cache
def model():
    """One tiny Qwen3-VL shared by the property tests; every example leaves it without PVM."""
    return tiny_model("qwen3_vl")


@cache
def request():
    return fake_request(model(), [Image(4, 4)])


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A real saved adapter: (directory, its pvm_config.json as a dict)."""
    directory = tmp_path_factory.mktemp("adapter") / "adapter"
    handle = attach_pvm(model(), small_config())
    open_gates(handle)
    handle.save(directory, provenance={"stage": "test"})
    handle.remove()
    return directory, json.loads((directory / CONFIG_FILE).read_text())


def assert_one_line(err: Exception) -> None:
    message = str(err)
    assert message and "\n" not in message and "\r" not in message, message


def write_adapter(source: Path, meta, target: Path) -> Path:
    target.mkdir()
    shutil.copy(source / WEIGHTS_FILE, target / WEIGHTS_FILE)
    (target / CONFIG_FILE).write_text(json.dumps(meta))
    return target


@cache
def plain_logits():
    """The reference: a second copy of the same tiny model that never has PVM attached."""
    with torch.no_grad():
        return tiny_model("qwen3_vl")(**request()).logits


def runs_with_finite_logits(handle) -> None:
    """One forward with finite logits; with every gate at 0, exactly the logits without PVM."""
    try:
        with torch.no_grad():
            logits = model()(**request()).logits
        assert torch.isfinite(logits).all()
        if all(alpha == 0 for alpha in handle.alphas().values()):
            assert torch.equal(logits, plain_logits())
    finally:
        handle.remove()


# ---- property: mutated adapter configs -------------------------------------------------------------
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 200), st.sampled_from([2**40, 10**6, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
    st.sampled_from(["64", "12", "1e-6", "nan", "hidden:0", "hidden:9", "hidden:x", "embeddings", "pvm", "mlp"]),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
    max_leaves=6)


def twists(value) -> list:
    """Realistic wrong versions of a value: other types, wrong nesting, off-by-one, NaN."""
    out = [str(value), [value], {"value": value}, None, True]
    if isinstance(value, bool):
        return out + [int(value), not value]
    if isinstance(value, int):
        return out + [float(value), value + 1, -value, 0, -1, 2 * value, 2**40]
    if isinstance(value, float):
        return out + [math.nan, math.inf, -math.inf, -value, 0.0, -1.0, 10 * value, 1e300]
    if isinstance(value, list):
        return out + [value[::-1], value + value, value[:1], [], [str(v) for v in value]]
    if isinstance(value, dict):
        return out + [list(value.values()), list(value), {}]
    if isinstance(value, str):
        return out + [value.upper(), value + "x", ""]
    return out + [0, ""]


def paths(doc, prefix=()):
    """Every path into the document, but only the first two and last tensor records of the fingerprint."""
    yield prefix
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    items = list(items)
    if prefix == ("base", "tensors"):
        items = items[:2] + items[-1:]
    for key, value in items:
        yield from paths(value, prefix + (key,))


def mutate(data, doc):
    """One mutation at a drawn path: replace (by a twist or any JSON value), delete, add a key, rewrap."""
    everywhere = list(paths(doc))
    pvm = [p for p in everywhere if p[:1] == ("pvm",)]  # half the mutations go to the pvm section
    path = data.draw(st.sampled_from(pvm) | st.sampled_from(everywhere) if pvm else st.sampled_from(everywhere))
    parent = None if not path else _get(doc, path[:-1])
    value = _get(doc, path)
    kind = data.draw(st.sampled_from(["twist", "replace", "delete", "add", "rewrap"]))
    if kind == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
        return doc
    if kind == "add" and isinstance(value, dict):
        value[data.draw(st.sampled_from(["extra", "layers", "tensors", "x", ""]) | st.text(max_size=6))] = (
            data.draw(JSON_VALUES))
        return doc
    new = data.draw(st.sampled_from(twists(value)) if kind != "replace" else JSON_VALUES)
    if kind == "rewrap":
        new = [value] if not isinstance(value, list) else {str(i): v for i, v in enumerate(value)}
    if parent is None:
        return new
    parent[path[-1]] = new
    return doc


def benign(data, doc):
    """One change that keeps the file valid (the loading branch must be exercised too)."""
    pvm, tensors = doc["pvm"], doc["base"]["tensors"]
    first = next(iter(tensors.values()))
    changes = [
        lambda: pvm.update(visual_source="hidden:0"),
        lambda: pvm.update(layers=pvm["layers"][::-1]),
        lambda: pvm.update(alpha_init=data.draw(st.floats(-1000, 1000))),
        lambda: pvm.update(rms_norm_eps=data.draw(st.floats(1e-12, 1.0))),
        lambda: pvm.update(extra=data.draw(st.dictionaries(st.text(max_size=4), JSON_SCALARS.filter(_finite),
                                                           max_size=2))),
        lambda: doc["provenance"].update({data.draw(st.text(max_size=4)): data.draw(JSON_VALUES)}),
        lambda: first["sum"] is None or first.update(sum=first["sum"] + 1e-4 * first["abs_sum"]),
        lambda: first.update(sum=None, abs_sum=None),
        lambda: first.update(dtype="bfloat16"),
    ]
    data.draw(st.sampled_from(changes))()


def misfit(data, doc):
    """One change to a valid config that no longer fits the weights or the base (must be refused)."""
    pvm, base = doc["pvm"], doc["base"]
    changes = [
        lambda: pvm.update(ffn_dim=pvm["ffn_dim"] + 1),
        lambda: pvm.update(num_kv_heads=2),
        lambda: pvm.update(head_dim=2 * pvm["head_dim"], latent_dim=2 * pvm["latent_dim"]),
        lambda: pvm.update(layers=[1, 2]),
        lambda: pvm.update(layers=[1]),
        lambda: pvm.update(block="mlp"),
        lambda: base.update(hidden_size=2 * base["hidden_size"]),
        lambda: base.update(num_layers=base["num_layers"] + 1),
        lambda: base.update(attention_window=8),
        lambda: next(iter(base["tensors"].values())).update(shape=[1]),
        lambda: base["tensors"].pop(next(iter(base["tensors"]))),
    ]
    data.draw(st.sampled_from(changes))()


def _finite(value) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def _get(doc, path):
    for key in path:
        doc = doc[key]
    return doc


@pytest.mark.slow
@PROPERTY
@given(data=st.data())
def test_mutated_adapter_configs_load_and_run_or_raise_one_line_input_errors(adapter, data):
    source, meta = adapter
    doc = json.loads(json.dumps(meta))
    for _ in range(data.draw(st.integers(0, 3))):
        benign(data, doc)
    if data.draw(st.integers(0, 3)) == 0:
        misfit(data, doc)
    for _ in range(data.draw(st.integers(0, 2))):
        doc = mutate(data, doc)
    with tempfile.TemporaryDirectory() as tmp:
        directory = write_adapter(source, doc, Path(tmp) / "adapter")
        try:
            read_adapter_meta(directory, check_weights=True)  # what `info` shows
            meta_ok = True
        except InputError as err:
            assert_one_line(err)
            meta_ok = False
        try:
            handle = load_pvm(model(), directory)
        except InputError as err:
            assert_one_line(err)
            event(f"refused: {type(err).__name__}")
            return
    event("loaded and ran")
    assert meta_ok, "load_pvm accepted an adapter that read_adapter_meta refused"
    runs_with_finite_logits(handle)


# ---- property: random PVMConfig(**kwargs) -----------------------------------------------------------
ODD = st.one_of(st.booleans(), st.none(), st.text(max_size=4), st.floats(allow_nan=True, allow_infinity=True),
                st.lists(st.integers(-1, 5), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
EDGE_FLOATS = [math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, -1e-6, 1e-13, 1e-12, 1.0, 5.0, 1e30, -1e30, 1e300]


def edges(values, anything):
    """Half the draws from the listed edge values, half from `anything` (sizes stay small: attach allocates)."""
    return st.one_of(st.sampled_from(values), anything)


SIZES = edges([0, -1, 1, 2, 4, 8, True, False, 4.0, "4", None, [4]], st.one_of(st.integers(-2, 40), ODD))
FIELDS = {
    "layers": edges([[], [1, 1], [-1, 2], "12", "1", [1.0], [True, 2], (3,), [2, 1], [0, 5], [9], None, 1],
                    st.one_of(st.lists(st.integers(-1, 5), max_size=4), ODD)),
    "latent_dim": SIZES, "head_dim": SIZES, "num_heads": SIZES, "num_kv_heads": SIZES, "ffn_dim": SIZES,
    "rms_norm_eps": edges(EDGE_FLOATS + [1e-6, 0, -1], st.one_of(st.floats(allow_nan=True, allow_infinity=True), ODD)),
    "alpha_init": edges(EDGE_FLOATS + [1000, -1000, 1001, 0],
                        st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2000, 2000), ODD)),
    "visual_source": edges(["embeddings", "hidden:0", "hidden:1", "hidden:3", "hidden:", "hidden:-1", "hidden:0x",
                            "hidden:\u00b2", "pixels", " embeddings"], ODD),
    "block": edges(["pvm", "mlp", "lora", "PVM"], ODD),
    "extra": edges([{}, {"note": "x"}, {"x": math.nan}, {1: 2}, []],
                   st.one_of(st.dictionaries(st.text(max_size=3), JSON_SCALARS, max_size=2), ODD)),
}


@st.composite
def pvm_kwargs(draw, focus: str):
    """SMALL_PVM (maybe with another consistent shape and layers), `focus` drawn freely, and now and
    then one more field drawn freely."""
    kwargs = {"layers": (1, 3), **SMALL_PVM}
    if draw(st.booleans()):
        heads = draw(st.sampled_from([1, 2, 4, 8]))
        head_dim = draw(st.integers(1, 16))
        kwargs.update(num_heads=heads, num_kv_heads=draw(st.sampled_from([k for k in (1, 2, 4, 8) if heads % k == 0])),
                      head_dim=head_dim, latent_dim=heads * head_dim, ffn_dim=draw(st.integers(1, 48)),
                      layers=draw(st.lists(st.integers(1, 3), min_size=1, max_size=3, unique=True)))
    names = [focus] + draw(st.sampled_from([[], [], [], [draw(st.sampled_from(sorted(FIELDS)))]]))
    for name in names:
        kwargs[name] = draw(FIELDS[name])
    return kwargs


@pytest.mark.slow
@pytest.mark.parametrize("focus", sorted(FIELDS))
@PROPERTY
@given(data=st.data())
def test_random_pvm_configs_attach_and_run_or_raise_one_line_input_errors(focus, data):
    kwargs = data.draw(pvm_kwargs(focus))
    try:
        config = PVMConfig(**kwargs)
        handle = attach_pvm(model(), config)
    except InputError as err:
        assert_one_line(err)
        event(f"refused: {str(err).split(' ')[0]}")
        return
    event("attached and ran")
    assert not any(isinstance(v, bool) for v in (config.latent_dim, config.head_dim, config.num_heads))
    runs_with_finite_logits(handle)


# ---- targeted: adapter files --------------------------------------------------------------------------
def _edit(adapter, tmp_path, change) -> Path:
    source, meta = adapter
    doc = json.loads(json.dumps(meta))
    change(doc)
    return write_adapter(source, doc, tmp_path / "adapter")


@pytest.mark.parametrize("change, message", [
    (lambda d: d["pvm"].update(latent_dim="64"), "pvm.latent_dim must be a positive integer, got '64' (str)"),
    (lambda d: d["pvm"].update(latent_dim=64.0), "pvm.latent_dim must be a positive integer, got 64.0 (float)"),
    (lambda d: d["pvm"].update(layers="12"),
     "pvm.layers must be a non-empty list of distinct integers >= 0, got '12' (str)"),
    (lambda d: d["pvm"].update(rms_norm_eps=math.nan), "pvm.rms_norm_eps must be a finite number in [1e-12, 1], got nan"),
    (lambda d: d["pvm"].update(head_dim=True), "pvm.head_dim must be a positive integer, got True (bool)"),
    (lambda d: d["pvm"].update(colour="red"), "pvm.colour is not a known field"),
    (lambda d: d["pvm"].pop("ffn_dim"), "pvm.ffn_dim is missing"),
    (lambda d: d.update(pvm=[1, 2]), "pvm must be an object, got [1, 2] (list)"),
    (lambda d: d.pop("base"), "base is missing"),
    (lambda d: d["base"].update(hidden_size="64"), "base.hidden_size must be a positive integer, got '64' (str)"),
    (lambda d: d["base"].update(tensors=[]), "base.tensors must be a non-empty object, got [] (list)"),
    (lambda d: d.update(num_parameters=-1), "num_parameters must be an integer >= 0, got -1 (int)"),
    (lambda d: d.update(num_parameters=5), "num_parameters must be 36002 for this pvm config and base width, got 5"),
    (lambda d: d.update(provenance="stage I"), "provenance must be a JSON object, got 'stage I' (str)"),
    (lambda d: d.update(format_version="1"), "format_version must be a positive integer, got '1' (str)"),
    (lambda d: d.update(format_version=3), "written by a newer pvm_probe (format 3, this reads <= 2)"),
    (lambda d: d.update(notes="x"), "notes is not a known key"),
    (lambda d: d["pvm"].update(layers=[1, 9]), "pvm.layers must name layers of the base (0..3), got [1, 9]"),
    (lambda d: d.update(base={**d["base"], "tensors": {**d["base"]["tensors"], "lm_head.weight": {"shape": [1]}}}),
     "base.tensors.lm_head.weight.dtype is missing"),
])
def test_bad_adapter_configs_give_one_line_errors(adapter, tmp_path, change, message):
    directory = _edit(adapter, tmp_path, change)
    for read in (lambda: read_adapter_meta(directory), lambda: load_pvm(model(), directory)):
        with pytest.raises(InputError) as info:
            read()
        assert_one_line(info.value)
        assert str(info.value).startswith(str(directory / CONFIG_FILE) + ": ")
        assert message in str(info.value)
    assert not any(".pvm" in name for name, _ in model().named_modules())


def test_a_document_that_is_not_an_object_is_refused(adapter, tmp_path):
    directory = write_adapter(adapter[0], [1, 2], tmp_path / "adapter")
    with pytest.raises(InputError, match=r"pvm_config\.json: must hold a JSON object, got \[1, 2\] \(list\)$"):
        load_pvm(model(), directory)


def test_nan_in_the_weights_names_the_tensor(adapter, tmp_path):
    from safetensors.torch import load_file, save_file

    directory = _edit(adapter, tmp_path, lambda d: None)
    tensors = load_file(directory / WEIGHTS_FILE)
    tensors["layers.3.cross_attn.k_proj.weight"][0, 0] = math.nan
    save_file(tensors, directory / WEIGHTS_FILE)
    read_adapter_meta(directory)  # the header is fine: the values are only read on load
    with pytest.raises(InputError, match=r"tensor layers\.3\.cross_attn\.k_proj\.weight holds non-finite values"):
        load_pvm(model(), directory)


def test_random_bytes_as_weights_are_caught_by_the_header_check(adapter, tmp_path):
    directory = _edit(adapter, tmp_path, lambda d: None)
    (directory / WEIGHTS_FILE).write_bytes(os.urandom(4096))
    read_adapter_meta(directory, check_weights=False)  # the config alone is fine
    with pytest.raises(InputError, match="corrupted adapter weights") as info:
        read_adapter_meta(directory)
    assert_one_line(info.value)


def test_weights_that_do_not_fit_the_config_are_caught_without_loading(adapter, tmp_path):
    from safetensors.torch import load_file, save_file

    directory = _edit(adapter, tmp_path, lambda d: None)
    tensors = load_file(directory / WEIGHTS_FILE)
    tensors["layers.1.w_x.weight"] = tensors["layers.1.w_x.weight"][:, :8].contiguous()
    save_file(tensors, directory / WEIGHTS_FILE)
    with pytest.raises(InputError, match=r"tensor layers\.1\.w_x\.weight has shape \[32, 8\], the config needs \[32, 64\]"):
        read_adapter_meta(directory)


def test_missing_files_are_file_not_found(adapter, tmp_path):
    directory = _edit(adapter, tmp_path, lambda d: None)
    (directory / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="the adapter has no weights"):
        read_adapter_meta(directory)
    read_adapter_meta(directory, check_weights=False)


# ---- targeted: PVMConfig ------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, message", [
    (dict(head_dim=0), "PVMConfig.head_dim must be a positive integer, got 0 (int)"),
    (dict(num_kv_heads=0), "PVMConfig.num_kv_heads must be a positive integer, got 0 (int)"),
    (dict(num_kv_heads=3), "PVMConfig.num_kv_heads must divide num_heads (4), got 3"),
    (dict(ffn_dim=-5), "PVMConfig.ffn_dim must be a positive integer, got -5 (int)"),
    (dict(latent_dim=True), "PVMConfig.latent_dim must be a positive integer, got True (bool)"),
    (dict(num_heads=4.0), "PVMConfig.num_heads must be a positive integer, got 4.0 (float)"),
    (dict(alpha_init=math.nan), "PVMConfig.alpha_init must be a finite number in [-1000, 1000], got nan (float)"),
    (dict(alpha_init=math.inf), "PVMConfig.alpha_init must be a finite number"),
    (dict(rms_norm_eps=-1), "PVMConfig.rms_norm_eps must be a finite number in [1e-12, 1], got -1 (int)"),
    (dict(rms_norm_eps=0.0), "PVMConfig.rms_norm_eps must be a finite number"),
    (dict(layers=(1, 1)), "PVMConfig.layers must be a non-empty list of distinct integers >= 0, got (1, 1)"),
    (dict(layers=()), "PVMConfig.layers must be a non-empty list"),
    (dict(layers=(-1, 2)), "PVMConfig.layers must be a non-empty list"),
    (dict(layers="12"), "PVMConfig.layers must be a non-empty list of distinct integers >= 0, got '12' (str)"),
    (dict(layers=(True, 2)), "PVMConfig.layers must be"),
    (dict(visual_source="hidden:1"), "PVMConfig.visual_source layer 1 must precede every PVM layer [1, 3]"),
    (dict(visual_source="hidden:²"), "PVMConfig.visual_source must be 'embeddings' or 'hidden:<layer>'"),
    (dict(extra={"x": math.nan}), "PVMConfig.extra must be a JSON object"),
])
def test_bad_pvm_configs_give_one_line_errors(bad, message):
    with pytest.raises(InputError) as info:
        PVMConfig(**{"layers": (1, 3), **SMALL_PVM, **bad})
    assert_one_line(info.value)
    assert message in str(info.value)


def test_a_valid_config_is_normalised_and_frozen():
    config = small_config(layers=[3, 1], rms_norm_eps=1, alpha_init=2)
    assert config.layers == (3, 1) and config.rms_norm_eps == 1.0 and isinstance(config.alpha_init, float)
    with pytest.raises(AttributeError):
        config.latent_dim = 0


def test_config_files_name_themselves(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({**small_config().to_dict(), "latent_dim": "64"}))
    with pytest.raises(InputError, match=r"c\.json: latent_dim must be a positive integer, got '64' \(str\)$"):
        PVMConfig.from_json(path)
    path.write_text('{"layers": [1], "layers": [2]}')
    with pytest.raises(InputError, match=r"c\.json: is not valid JSON \(key 'layers' appears twice"):
        PVMConfig.from_json(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(InputError, match=r"c\.json: is not valid JSON"):
        PVMConfig.from_json(path)


def test_presets_and_scaling_refuse_bad_arguments():
    with pytest.raises(InputError, match="unknown PVM preset 'qwen9'"):
        PVMConfig.preset("qwen9")
    with pytest.raises(InputError, match="PVMConfig.latent_dims is not a known field"):
        PVMConfig.preset("qwen3-vl-8b", latent_dims=64)
    with pytest.raises(InputError, match="PVMConfig.layers must be a non-empty list"):
        PVMConfig.for_model(4096, 36, layers=[])
    with pytest.raises(InputError, match="cannot place 4 blocks in a 4-layer model"):
        strided_layers(4, 4)
    with pytest.raises(InputError, match=r"must be integers, got 36\.0 \(float\) and 3 \(int\)"):
        strided_layers(36.0, 3)


def test_block_kinds_are_the_blocks_that_exist():
    assert set(BLOCK_KINDS) == set(BLOCKS)


# ---- targeted: handles and models ---------------------------------------------------------------------
def test_gates_off_with_a_layer_without_a_block_names_the_pvm_layers():
    handle = attach_pvm(model(), small_config())
    try:
        open_gates(handle)
        before = handle.alphas()
        with pytest.raises(InputError, match=r"^layer 0 has no PVM block; PVM layers are \[1, 3\]$"):
            with handle.gates_off([0, 7]):
                pass
        with pytest.raises(InputError, match="layers must be PVM layer indices, got '1'"):
            with handle.gates_off("1"):
                pass
        assert handle.alphas() == before
        with handle.gates_off(3):
            assert handle.alphas() == {1: before[1], 3: 0.0}
        assert handle.alphas() == before
    finally:
        handle.remove()


def test_attach_refuses_bad_arguments_with_input_errors():
    with pytest.raises(InputError, match="config must be a PVMConfig, got {'layers': .1.} .dict."):
        attach_pvm(model(), {"layers": [1]})
    with pytest.raises(InputError, match="layer index 7 out of range"):
        attach_pvm(model(), small_config(layers=(1, 7)))
    with pytest.raises(InputError, match="unsupported architecture Linear"):
        attach_pvm(torch.nn.Linear(2, 2), small_config())
    with pytest.raises(InputError, match="an adapter is a directory or a shipped adapter's name, got None"):
        load_pvm(model(), None)


# ---- structure: no import circle ---------------------------------------------------------------------
def _imports(module: str) -> set[str]:
    tree = ast.parse((Path(__file__).parents[1] / "pvm_probe" / f"{module}.py").read_text())
    return {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}


def test_the_file_format_knows_nothing_of_hooks_and_nothing_imports_locally():
    assert "inject" not in _imports("checkpoints")
    for module in ("checkpoints", "inject", "config", "memory", "io", "errors"):
        tree = ast.parse((Path(__file__).parents[1] / "pvm_probe" / f"{module}.py").read_text())
        local = [node for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef)
                 for node in ast.walk(fn) if isinstance(node, ast.ImportFrom) and node.level]
        assert not local, f"{module}.py imports a project module inside a function"
