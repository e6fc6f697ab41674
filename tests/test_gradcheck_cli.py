"""python -m tensorlite.gradcheck: runs every op, prints a table, fails loudly."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tensorlite as tl
import tensorlite.functional as F
from tensorlite.gradcheck.__main__ import main, op_cases

ROOT = Path(__file__).resolve().parents[1]


def all_functions():
    found, stack = set(), [tl.Function]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub.__module__.startswith("tensorlite") and sub not in found:
                stack.append(sub)
                if tl.kernels.reference_of(sub) is None:  # a fast kernel is checked through its op
                    found.add(sub)
    return found


def test_the_cli_checks_every_function():
    covered = {op for op, _, _ in op_cases(np.random.default_rng(0)).values()}
    missing = sorted(f.__name__ for f in all_functions() - covered)
    assert not missing, f"python -m tensorlite.gradcheck has no case for: {missing}"


def test_the_cli_runs_and_passes():
    out = subprocess.run([sys.executable, "-m", "tensorlite.gradcheck", "--seed", "1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["op", "input", "shape"]
    assert lines[-1] == f"{len(op_cases(np.random.default_rng(0)))} ops, 0 failed"
    assert "FAIL" not in out.stdout and "Warning" not in out.stderr


def test_the_cli_exits_non_zero_on_a_wrong_backward(monkeypatch, capsys):
    monkeypatch.setattr(F.GELU, "backward", lambda self, gy: gy * self.s)  # a term short: x ds/dx
    assert main(["--op", "gelu", "--op", "tanh"]) == 1
    out = capsys.readouterr().out
    gelu_row = next(line for line in out.splitlines() if line.startswith("gelu"))
    assert "FAIL at element" in gelu_row
    assert out.splitlines()[-1] == "2 ops, 1 failed"


def test_the_cli_names_unknown_ops(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--op", "softmaxx"])
    assert e.value.code == 2
    assert "unknown op(s) softmaxx" in capsys.readouterr().err


def test_the_cli_suggests_the_flag_a_misspelt_one_means(capsys):
    """One line with "did you mean", as the example scripts' (the same parser), not argparse's usage dump."""
    with pytest.raises(SystemExit) as e:
        main(["--devcie", "cpu"])
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: unrecognized argument --devcie (did you mean --device?); see --help\n"


@pytest.mark.skipif(tl.gpu_available(), reason="CuPy sees a GPU here: --device cuda runs the checks")
def test_the_cli_on_cuda_without_a_gpu_says_so_in_one_line(capsys):
    assert main(["--device", "cuda"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""                              # not even the table's header
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "GPU" in lines[0] and "pip install" in lines[0]
