"""`pvm-probe report` under `accelerate launch` really shards: 2 CPU processes (gloo) on one machine, and 2
"machines" (one process each, on localhost) as a multi-node launch would run them. Each process logs the
requests it generated and the files it published; the shards are disjoint, cover every request, and merge to
exactly the records of one process; process 0 alone fits the tuned lens, builds and publishes the report."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pvm_probe.records import RECORDS, read_records

# The launched script: the CLI, with the runner's batches, the lens fit and publishing logged per process.
DRIVER = """
import json, os, sys
import torch
torch.set_num_threads(1)
import pvm_probe.report.build as build
import pvm_probe.runner as runner
from pvm_probe.cli import main
from pvm_probe.probes.tuned_lens import TunedLens

log = os.path.join(sys.argv[1], f"rank{os.environ.get('RANK', '0')}.jsonl")

def logged(owner, name, entry):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        with open(log, "a") as f:
            f.write(json.dumps(entry(*args, **kwargs)) + "\\n")
        return original(*args, **kwargs)
    setattr(owner, name, wrapper)

logged(runner, "run_batch", lambda model, processor, suite, variant, handle, requests, *a, **k:
       ["generate", variant.name, [r.index for r in requests]])
logged(TunedLens, "fit", lambda *a, **k: ["fit lens"])
logged(build, "build_report", lambda *a, **k: ["build report"])
logged(build, "publish", lambda *a, **k: ["publish"])
sys.exit(main(sys.argv[2:]))
"""
SCENES = 4
VARIANTS = ["baseline", "pvm-stage1", "pvm-stage1 | gates off", "pvm-stage1 | swapped image"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(machines: int, machine_rank: int, port: int) -> list[str]:
    """`accelerate launch` for 2 processes in all over `machines` machines. On a machine without GPUs
    `--multi_gpu` starts torchrun workers, which the runner joins over gloo (pvm_probe/processes.py)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", str(machines), "--machine_rank", str(machine_rank), "--main_process_ip", "127.0.0.1",
            "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no"]


def _start(root: Path, logs: Path, out: Path, launch: list[str], name: str) -> subprocess.Popen:
    """The launch, its output in a file (a pipe left unread could fill and stall a process at the barrier)."""
    argv = ["report", "--scenes", str(SCENES), "--length", "0", "--pvm", "pvm-stage1", "--batch-size", "1",
            "--explore", "1", "--out", str(out)]
    with (logs / f"{name}.out").open("w") as output:
        return subprocess.Popen([*launch, str(root / "driver.py"), str(logs), *argv], text=True, stdout=output,
                                stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _finish(processes: list[subprocess.Popen], logs: Path) -> list[tuple[int, str]]:
    """(exit code, output) of each launch."""
    return [(p.wait(timeout=600), (logs / f"launch{i}.out").read_text()) for i, p in enumerate(processes)]


def _report(root: Path, name: str, launches: list[list[str]]) -> tuple[Path, dict[int, list]]:
    """Run the report job under each launch command at once; (its --out, each process's log by rank)."""
    logs = root / f"{name}.logs"
    logs.mkdir()
    started = [_start(root, logs, root / name, launch, f"launch{i}") for i, launch in enumerate(launches)]
    for code, output in _finish(started, logs):
        assert code == 0, output[-3000:]
    return root / name, {int(p.stem[4:]): [json.loads(line) for line in p.read_text().splitlines()]
                         for p in logs.glob("rank*.jsonl")}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    (root / "driver.py").write_text(DRIVER)
    return root, *_report(root, "one", [[sys.executable]])


def _generated(log: list) -> set[tuple[str, int]]:
    return {(entry[1], i) for entry in log if entry[0] == "generate" for i in entry[2]}


@pytest.mark.slow
@pytest.mark.parametrize("machines", [1, 2], ids=["2 processes on 1 machine", "2 machines of 1 process"])
def test_two_processes_split_the_requests_and_merge_to_the_records_of_one(one_process, machines):
    root, one, one_log = one_process
    port = _free_port()
    out, logs = _report(root, f"two-on-{machines}", [_launch(machines, r, port) for r in range(machines)])
    everything = {(v, i) for v in VARIANTS for i in range(SCENES)}
    assert list(one_log) == [0] and _generated(one_log[0]) == everything
    assert sorted(logs) == [0, 1]
    mine = {rank: _generated(log) for rank, log in logs.items()}
    assert mine[0] & mine[1] == set() and mine[0] | mine[1] == everything
    assert mine[1] == {(v, i) for v in VARIANTS for i in range(1, SCENES, 2)}  # process k: k, k + n, ...
    tasks = {rank: [entry for entry in log if entry[0] != "generate"] for rank, log in logs.items()}
    assert tasks == {0: [["fit lens"], ["build report"], ["publish"]], 1: []}  # process 1 only generates
    assert read_records(out / RECORDS) == read_records(one / RECORDS)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in one.iterdir())
    assert not list(root.glob(f".two-on-{machines}*"))  # the working folder became --out


@pytest.mark.slow
def test_machines_that_share_no_folder_are_told_so(one_process):
    """Each "machine" writes its shard into its own folder: process 0 misses process 1's records and says why."""
    root, port = one_process[0], _free_port()
    logs = root / "alone.logs"
    logs.mkdir()
    started = [_start(root, logs, root / f"alone{r}", _launch(2, r, port), f"launch{r}") for r in range(2)]
    (code, output), _ = _finish(started, logs)
    assert code != 0 and "file system that every machine shares" in output
    assert not (root / "alone0").exists()  # nothing was published
