"""The CLI, called in-process: one-line errors with exit codes, checks before any work, instant --help."""

import subprocess
import sys
import time

import pytest

from pvm_probe import cli
from pvm_probe.cli import main


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("argv,message", [
    (["paint", "--scenes", "0"], "argument --scenes: expected a positive integer, got '0'"),
    (["paint", "--scenes", "-3"], "argument --scenes: expected a positive integer"),
    (["paint", "--length", "-1"], "argument --length: expected an integer >= 0"),
    (["paint", "--seed", "-10"], "argument --seed: expected a held-out set number >= 0"),
    (["paint", "--filler", "bogus"], "argument --filler: invalid choice: 'bogus'"),
    (["paint", "--batch-size", "0"], "argument --batch-size: expected a positive integer"),
    (["paint", "--json", "."], "argument --json: . is a directory"),
    (["report", "--out", __file__], "is an existing file; expected a folder"),
    (["paint", "--base", "/no/such/dir"], "argument --base: /no/such/dir: no such directory"),
    (["paint", "--data", "/no/such.jsonl"], "argument --data: /no/such.jsonl: no such file"),
    (["bench", "nope"], "argument name: invalid choice"),
])
def test_argument_errors_are_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = one_line(capsys)
    assert err.startswith(f"pvm-probe {argv[0]}: error: ") and message in err


@pytest.mark.parametrize("argv,message", [
    (["paint", "--length", "2", "--image-size", "64"], "--image-size does not apply to --suite world"),
    (["paint", "--suite", "images"], "--suite images needs --data"),
    (["paint", "--gates-off", "--swap-pvm-image", "--pvm", "pvm-stage1"], "two variants"),
    (["paint", "--pvm", "no-such-adapter"], "no-such-adapter"),
    (["paint", "--gates-off"], "gates off needs exactly one adapter"),
    (["report", "--remedy", "vcd:alfa=2", "--out", "unused"], "options from alpha, beta, noise_step, seed"),
    (["report", "--remedy", "vcd:alpha", "--out", "unused"], "expected vcd:option=value"),
    (["report", "--remedy", "nope"], "unknown remedy 'nope'"),
])
def test_bad_combinations_fail_before_any_model_loads(argv, message, capsys, monkeypatch):
    import pvm_probe.jobs

    monkeypatch.setattr(pvm_probe.jobs, "load_base", lambda *a, **k: pytest.fail("loaded a model"))
    assert main(argv) == 2
    assert message in one_line(capsys)


def test_a_report_never_replaces_a_folder_of_other_files(tmp_path, capsys, monkeypatch):
    import pvm_probe.jobs

    monkeypatch.setattr(pvm_probe.jobs, "load_base", lambda *a, **k: pytest.fail("loaded a model"))
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["report", "--out", str(tmp_path)]) == 2
    assert "holds other files" in one_line(capsys) and (tmp_path / "notes.txt").read_text() == "mine"


def test_ctrl_c_is_one_line_and_130_and_a_bug_keeps_its_traceback(monkeypatch, capsys):
    import pvm_probe.jobs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pvm_probe.jobs, "paint", interrupted)
    assert main(["paint"]) == 130
    assert one_line(capsys) == "pvm-probe paint: interrupted"

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(pvm_probe.jobs, "paint", bug)
    with pytest.raises(ZeroDivisionError):
        main(["paint"])


def test_help_and_argument_errors_come_back_without_torch():
    code = ("import sys, time; t = time.time(); from pvm_probe.cli import main; main(['report', '--help']); "
            "code = main(['paint', '--scenes', '0']); "
            "print('heavy', sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules), code)")
    start = time.time()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "--out" in done.stdout and "heavy [] 2" in done.stdout, done.stdout + done.stderr
    assert time.time() - start < 10


def test_every_command_has_help(capsys):
    for name in cli.COMMANDS:
        assert main([name, "--help"]) == 0
        assert "usage: pvm-probe" in capsys.readouterr().out
