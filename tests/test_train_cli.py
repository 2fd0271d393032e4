"""`train-pvm` end to end through `pvm_probe.cli.main` on a tiny saved checkpoint of every family, its one-line
errors before any weights load, its summary, and the Makefile's recipes."""

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from test_train_stage2 import WORDS, write_data

from pvm_probe.cli import build_parser, main
from pvm_probe.zoo import save_tiny_checkpoint

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--steps", "2", "--batch-size", "2", "--layers", "1", "--lr", "1e-2", "--log-every", "1"]


def variety(completions, **_):
    """A user reward (`--reward test_train_cli:variety`): distinct words / words."""
    return [len(set(c[0]["content"].split())) / (1 + len(c[0]["content"].split())) for c in completions]


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("bases")
    return {arch: save_tiny_checkpoint(arch, root / arch, WORDS) for arch in ("qwen3_vl", "qwen2_5_vl", "llava")}


@pytest.fixture
def data(tmp_path):
    return write_data(tmp_path)


def _adapter(path) -> dict:
    return json.loads((Path(path) / "pvm_config.json").read_text())


@pytest.mark.parametrize("arch", ["qwen3_vl", *(pytest.param(a, marks=pytest.mark.slow) for a in ("qwen2_5_vl", "llava"))])
def test_stage1_then_stage2_with_exact_on_every_family(arch, bases, data, tmp_path, capsys):
    from pvm_probe.train.config import TrainJob

    stage1 = ["train-pvm", "--base", str(bases[arch]), "--data", str(data), "--out", str(tmp_path / "s1"), *TINY,
              "--warmup", "20", "--max-length", "40", "--max-pixels", "1024", "--eval-split", "0.25"]
    assert main(stage1) == 0
    out, err = capsys.readouterr()
    assert f"wrote adapter to {tmp_path / 's1'}" in out and "alpha by layer: 1: " in out
    assert re.search(r"final loss \d+\.\d+ \(step 2\), eval loss \d+\.\d+", out)
    assert "warm-up clipped to 0 steps" in err
    meta = _adapter(tmp_path / "s1")
    job = TrainJob.from_dict(meta["provenance"]["job"])
    assert job.optim.warmup_steps == 0 and job.data.max_length == 40 and json.loads(json.dumps(job.to_dict())) == meta["provenance"]["job"]
    assert meta["provenance"]["train_examples"] == 3 and meta["provenance"]["eval_examples"] == 1
    log = json.loads((tmp_path / "s1" / "train_log.json").read_text())
    assert [e["step"] for e in log if "eval_loss" in e] == [2]
    if arch == "llava":
        assert "--max-pixels has no effect on CLIPImageProcessorPil" in err

    stage2 = ["train-pvm", "--stage", "2", "--init", str(tmp_path / "s1"), "--base", str(bases[arch]), "--data",
              str(data), "--out", str(tmp_path / "s2"), "--reward", "exact", "--steps", "2", "--batch-size", "4",
              "--num-generations", "4", "--max-completion-length", "6", "--log-every", "1"]
    assert main(stage2) == 0
    out, _ = capsys.readouterr()
    assert f"wrote adapter to {tmp_path / 's2'}" in out and "last means: exact 0.0000" in out
    assert "alpha moved less than 0.001" in out  # a random policy never gets the answer: no advantage, no step
    provenance = _adapter(tmp_path / "s2")["provenance"]
    assert provenance["job"]["optim"]["rewards"] == [{"name": "exact", "weight": 0.9}]
    assert provenance["init"]["provenance"]["stage"] == "I"


def test_a_user_reward_by_module_and_function(bases, data, tmp_path, capsys):
    argv = ["train-pvm", "--stage", "2", "--base", str(bases["qwen3_vl"]), "--data", str(data), "--out",
            str(tmp_path / "s2"), "--reward", "test_train_cli:variety=2", "--reward", "format", "--steps", "2",
            "--batch-size", "4", "--num-generations", "4", "--max-completion-length", "6", "--layers", "1",
            "--alpha-init", "0.5", "--lr", "1e-2", "--gradient-checkpointing"]
    assert main(argv) == 0
    out, _ = capsys.readouterr()
    assert "last means: variety " in out and "format 0.0000" in out
    rewards = _adapter(tmp_path / "s2")["provenance"]["job"]["optim"]["rewards"]
    assert rewards == [{"name": "test_train_cli:variety", "weight": 2.0}, {"name": "format", "weight": 0.1}]


def _jsonl(root: Path, rows) -> str:
    (root / "f.jsonl").write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return str(root / "f.jsonl")


STAGE2 = ["--stage", "2", "--num-generations", "2"]
GOOD = {"image": "img0.png", "question": "how many shapes are there", "answer": "2"}
BAD_RUNS = {  # name: (extra arguments, data rows or None for the good file, expected one-line message)
    "bad record": ([], [GOOD, "{oops"], r"f.jsonl line 2: not valid JSON"),
    "missing image": ([], [GOOD, {**GOOD, "image": "gone.png"}], r"line 2: image .*gone.png is missing"),
    "no answer for exact": ([*STAGE2, "--reward", "exact"], [GOOD, {"image": "img0.png", "question": "q"}],
                            r"line 2: no answer"),
    "answer not a number": ([*STAGE2, "--reward", "numeric"], [GOOD, {**GOOD, "answer": "many"}],
                            r"line 2: answer 'many' holds no number"),
    "no image in stage 2": (STAGE2, [GOOD, {"question": "q", "answer": "1"}], r"line 2: no image"),
    "reward of another stage": (["--reward", "exact"], None, r"--reward is a Stage 2 option"),
    "option of another stage": (["--stage", "2", "--max-length", "9"], None, r"--max-length is a Stage 1 option"),
    "user reward missing": ([*STAGE2, "--reward", "nowhere_xyz:f"], None, r"cannot import nowhere_xyz"),
    "scenes for stage 1": (["--suite", "scenes", "--no-data"], None, r"it is a Stage II source"),
    "exact on scenes": ([*STAGE2, "--suite", "scenes", "--no-data", "--reward", "exact"], None,
                        r"reward exact needs prompts from a data file"),
    "not whole groups": (["--stage", "2", "--batch-size", "3", "--num-generations", "2"], None,
                         r"3 completions per step is not a whole number of groups"),
    "empty eval split": (["--eval-split", "0.1"], None, r"holds out 0: need at least one"),
    "layer outside": (["--layers", "7"], None, r"layer 7 is outside the base: it has 4 decoder layers"),
    "layers and placement": (["--layers", "1", "--placement", "peak"], None, r"--layers or --placement"),
    "no data, no world": (["--no-data"], None, r"was not trained on the painter world: pass --data FILE"),
    "world option with data": (["--fillers", "said"], None, r"--fillers is a painter-world option"),
    "scenes option with data": (["--image-size", "64"], None, r"--image-size 64: a scenes-suite option"),
    "init with a shape": (["--init", "pvm-stage1", "--block", "mlp"], None, r"drop --block"),
    "init of another base": (["--init", "pvm-stage1"], None, r"hidden_size 128; .* has 64"),
}


@pytest.mark.parametrize("name", BAD_RUNS)
def test_every_failure_is_one_line_before_any_weights_load(name, bases, data, tmp_path, capsys, monkeypatch):
    import pvm_probe.train.run as run

    monkeypatch.setattr(run, "load_base", lambda *a, **k: pytest.fail("weights loaded before the error"))
    extra, rows, expected = BAD_RUNS[name]
    path = _jsonl(data.parent, rows) if rows else str(data)
    argv = ["train-pvm", "--base", str(bases["qwen3_vl"]), "--out", str(tmp_path / "out"), *TINY[:4]]
    argv += [] if "--no-data" in extra else ["--data", path]
    if "--layers" in extra or "--init" in extra:
        argv = [a for i, a in enumerate(argv) if a != "--layers" and argv[i - 1] != "--layers"]
    assert main(argv + [a for a in extra if a != "--no-data"]) == 2
    err = capsys.readouterr().err
    assert re.search(expected, err), err
    assert err.count("\n") == 1 and err.startswith("pvm-probe train-pvm: error: ")
    assert not (tmp_path / "out").exists()


def test_library_jobs_are_checked_the_same_way(bases, tmp_path):
    """A TrainJob built in code goes through the same plan: here a KL term, which needs a reference policy."""
    from pvm_probe.errors import InputError
    from pvm_probe.train.config import DataSpec, StageIIConfig, TrainJob
    from pvm_probe.train.plan import make_plan

    job = TrainJob(str(tmp_path / "o"), StageIIConfig(beta=0.1, batch_size=8), str(bases["llava"]),
                   data=DataSpec(suite="scenes"))
    with pytest.raises(InputError, match="beta 0.1: a KL term needs a reference policy"):
        make_plan(job)
    plan = make_plan(TrainJob(str(tmp_path / "o"), StageIIConfig(batch_size=8), str(bases["llava"]),
                              data=DataSpec(suite="scenes")))
    assert [r.name for r in plan.rewards] == ["scenes"] and plan.source == "scenes"


@pytest.mark.parametrize("argv, expected", [
    (["--eval-split", "1.5"], "expected a fraction in (0, 1)"),
    (["--lr", "-1"], "expected a positive number"),
    (["--max-length", "0"], "expected a positive integer"),
    (["--stage", "2", "--num-generations", "1"], "at least 2 completions"),
    (["--stage", "2", "--reward", "exactly"], "unknown reward 'exactly'"),
    (["--stage", "2", "--reward", "exact=heavy"], "expected a number"),
    (["--backbone-visual-dropout", "1"], "expected a probability in [0, 1)"),
    (["--visual-source", "hidden"], "expected embeddings or hidden:<layer>"),
])
def test_bad_numbers_and_names_are_argparse_errors(argv, expected, tmp_path, capsys):
    assert main(["train-pvm", "--out", str(tmp_path / "o"), *argv]) == 2
    assert expected in capsys.readouterr().err


def test_a_non_adapter_folder_is_never_replaced(tmp_path, data, bases, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    argv = ["train-pvm", "--base", str(bases["llava"]), "--data", str(data), "--out", str(tmp_path / "notes"), *TINY]
    assert main(argv) == 2
    assert "non-empty folder without pvm_config.json" in capsys.readouterr().err
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_a_failed_run_leaves_the_old_adapter_and_no_scratch(tmp_path, data, bases, monkeypatch):
    import transformers

    argv = ["train-pvm", "--base", str(bases["llava"]), "--data", str(data), "--out", str(tmp_path / "a"), *TINY]
    assert main(argv) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    scratch = {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("pvm_probe_trainer_")}

    def crash(self, *args, **kwargs):
        raise RuntimeError("training crashed")

    monkeypatch.setattr(transformers.Trainer, "train", crash)
    with pytest.raises(RuntimeError, match="training crashed"):  # a bug, not bad input: its traceback stays
        main(argv + ["--lr", "1e-3", "--overwrite"])
    assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()} == before
    assert {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("pvm_probe_trainer_")} == scratch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "data.jsonl", *sorted(f"img{i}.png" for i in range(4))]


def test_building_the_parser_imports_nothing_heavy():
    code = ("import sys; import pvm_probe; before = set(sys.modules); from pvm_probe.train.cli import add_arguments; "
            "import argparse; add_arguments(argparse.ArgumentParser()); "
            "print(sorted({m.split('.')[0] for m in set(sys.modules) - before}))")
    new = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert not {"transformers", "trl", "datasets", "accelerate", "pyarrow"} & set(eval(new)), new


def _makefile_train_commands() -> list[list[str]]:
    """The `adapters` recipe's train-pvm commands, with the Makefile's variables expanded."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    variables = dict(re.findall(r"^(\w+)\s*:?=\s*(.*)$", text, flags=re.M))
    recipe = text.split("\nadapters:", 1)[1].split("\n\n", 1)[0]
    commands = []
    for line in recipe.splitlines()[1:]:
        line = re.sub(r"\$\((\w+)\)", lambda m: variables[m.group(1)], line)
        commands.append(shlex.split(line)[1:])  # drop the CLI
    return commands


def test_the_makefile_recipes_still_parse_into_the_shipped_runs():
    from pvm_probe.train.cli import job_from_arguments

    commands = _makefile_train_commands()
    assert len(commands) == 4 and all(c[0] == "train-pvm" for c in commands)
    jobs = [job_from_arguments(build_parser().parse_args(c)) for c in commands]
    stage1, mlp, processed, stage2 = jobs
    assert (stage1.optim.steps, stage1.optim.batch_size, stage1.optim.lr, stage1.optim.warmup_steps) == (3000, 8, 3e-3, 20)
    assert stage1.optim.backbone_visual_dropout == 0.5 and stage1.adapter.alpha_init == 1.0
    assert stage1.data.loss_on == "answer" and stage1.data.fillers == ("said",)
    assert mlp.adapter.block == "mlp" and processed.adapter.visual_source == "hidden:0"
    assert stage2.stage == 2 and stage2.adapter.init.endswith("pvm-stage1")
    assert (stage2.optim.steps, stage2.optim.batch_size, stage2.optim.num_generations, stage2.optim.lr) == (20, 16, 8, 1e-5)


@pytest.mark.slow
def test_painter_world_recipes_on_the_embedded_base(tmp_path, capsys):
    """The `make adapters` flags on a few steps: PVM with dropout and claims loss, the MLP and processed-states
    controls, then Stage II from the first with the world's format + accuracy rewards."""
    from pvm_probe.checkpoints import read_adapter_meta

    quick = ["--steps", "1", "--examples", "2", "--batch-size", "2", "--warmup", "0", "--fillers", "said",
             "--max-gap", "4"]
    runs = {"pvm": ["--backbone-visual-dropout", "0.5", "--alpha-init", "1"], "mlp": ["--block", "mlp"],
            "processed": ["--visual-source", "hidden:0", "--loss-on", "answer"]}
    for name, extra in runs.items():
        assert main(["train-pvm", "--out", str(tmp_path / name), *quick, *extra]) == 0, name
    meta = read_adapter_meta(tmp_path / "pvm")
    assert meta["pvm"]["alpha_init"] == 1.0 and meta["provenance"]["loss_on"] == "claims"
    assert meta["provenance"]["data"]["gaps"] == [0, 1, 2, 3, 4] and meta["provenance"]["data"]["fillers"] == ["said"]
    assert read_adapter_meta(tmp_path / "mlp")["pvm"]["block"] == "mlp"
    assert read_adapter_meta(tmp_path / "processed")["pvm"]["visual_source"] == "hidden:0"
    capsys.readouterr()
    assert main(["train-pvm", "--out", str(tmp_path / "s2"), "--stage", "2", "--init", str(tmp_path / "pvm"),
                 "--steps", "1", "--batch-size", "4", "--num-generations", "4", "--fillers", "said",
                 "--max-gap", "0", "--lr", "1e-5"]) == 0
    assert "last means: world-format " in capsys.readouterr().out
    rewards = read_adapter_meta(tmp_path / "s2")["provenance"]["job"]["optim"]["rewards"]
    assert rewards == [{"name": "world-format", "weight": 0.1}, {"name": "world-accuracy", "weight": 0.9}]


def test_stage2_on_the_scenes_suite_with_its_claim_reward(bases, tmp_path, capsys):
    from pvm_probe.checkpoints import read_adapter_meta

    argv = ["train-pvm", "--stage", "2", "--suite", "scenes", "--base", str(bases["llava"]), "--out",
            str(tmp_path / "s"), "--steps", "1", "--batch-size", "4", "--num-generations", "4", "--image-size", "64",
            "--max-completion-length", "6", "--layers", "1"]
    assert main(argv) == 0
    assert "last means: scenes " in capsys.readouterr().out
    provenance = read_adapter_meta(tmp_path / "s")["provenance"]
    assert provenance["data"]["source"] == "scenes" and provenance["prompts"] == 1
    assert provenance["job"]["optim"]["rewards"] == [{"name": "scenes", "weight": 0.9}]


def test_placement_by_the_measured_profile_of_a_local_checkpoint(bases, data, tmp_path, monkeypatch):
    """Max Decay on a local checkpoint: the block goes to the layer the profile train-pvm measured on this base
    (a constructed profile whose fastest-decaying layer is 3) on 8 scenes of 256 new tokens."""
    from test_placement import measured_by_hand

    from pvm_probe.checkpoints import read_adapter_meta
    from pvm_probe.suites import ScenesSuite

    asked = measured_by_hand(monkeypatch, peak=1, decay=3)
    argv = ["train-pvm", "--base", str(bases["llava"]), "--data", str(data), "--out", str(tmp_path / "p"),
            "--placement", "decay", "--blocks", "1", "--steps", "1", "--batch-size", "2"]
    assert main(argv) == 0
    assert read_adapter_meta(tmp_path / "p")["pvm"]["layers"] == [3]
    [(model, suite)] = asked
    assert type(model).__name__.startswith("Llava") and isinstance(suite, ScenesSuite) and len(suite) == 8
    assert suite.max_new_tokens(suite.request(0)) == 256
