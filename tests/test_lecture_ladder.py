"""examples/lecture_ladder.py as a user runs it, at tiny sizes on a small text (CI has no
Tiny Shakespeare and no internet); the full-size ladder's figures are in the README."""
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gpt.lecture import STAGE_NAMES

REPO = Path(__file__).resolve().parents[1]
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 40
TINY = ["--max-iters", "4", "--eval-iters", "1", "--eval-interval", "2", "--n-embd", "8", "--n-head", "2",
        "--n-layer", "1", "--block-size", "8", "--batch-size", "4", "--device", "cpu"]


def ladder(tmp_path, *args):
    data = tmp_path / "input.txt"
    data.write_text(TEXT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "examples/lecture_ladder.py", "--data", str(data), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_the_ladder_trains_every_stage_in_order_and_writes_its_table(tmp_path):
    out = tmp_path / "out" / "ladder.json"
    proc = ladder(tmp_path, *TINY, "--stages", "all", "--json", out, "--sample", "10")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    rows = result["stages"]
    assert [r["stage"] for r in rows] == list(STAGE_NAMES)
    for r in rows:
        assert [h["step"] for h in r["history"]] == [0, 2, 3]            # every 2 steps and the last
        assert r["val_loss"] == r["history"][-1]["val"] > 0 and r["parameters"] > 0
        assert len(r["sample_ids"]) == 11
    assert rows[0]["parameters"] == result["vocab_size"] ** 2            # the bigram's (V, V) table
    # the bigram's figure is the lecture's bigram.py run in PyTorch (README), the others its commits'
    assert [r["lecture_val_loss"] for r in rows] == [2.4911, 2.5, 2.28, 2.24, None, 2.06, 1.48]
    table = proc.stdout[proc.stdout.index("stage        commit"):]
    cells = re.findall(r"^(\w+) +[0-9a-f]{7} +[\d,]+ +4 +\d\.\d{4} +(\d\.\d\d(?:\[\d\])?|-) +[\d.]+s$", table, re.M)
    assert cells == [("bigram", "2.49[1]"), ("head", "2.50[2]"), ("multihead", "2.28"), ("feedforward", "2.24"),
                     ("residual", "-"), ("layernorm", "2.06"), ("scaleup", "1.48")], table
    # under the table: where the bigram's figure comes from, and what the single head's code reaches
    assert re.search(r"^\[1\] bigram: .*bigram\.py run in PyTorch 2\.13 on the CPU, its last val loss", table, re.M), table
    assert re.search(r"^\[2\] head: .*\"reach 2\.5 val loss\".* ends at about 2\.41", table, re.M), table
    assert re.search(r"^== layernorm \(0016836\): layer norms, [\d,]+ parameters", proc.stdout, re.M)


def test_on_the_cpu_the_scaleup_is_skipped_with_a_note_unless_asked_for(tmp_path):
    proc = ladder(tmp_path, *TINY, "--stages", "bigram", "--json", tmp_path / "a.json")
    assert proc.returncode == 0, proc.stderr
    assert [r["stage"] for r in json.loads((tmp_path / "a.json").read_text())["stages"]] == ["bigram"]
    proc = ladder(tmp_path, *TINY[:8], "--device", "cpu", "--max-iters", "2", "--json", tmp_path / "b.json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "b.json").read_text())["stages"]
    assert [r["stage"] for r in rows] == list(STAGE_NAMES)
    assert rows[-1].get("skipped") and not any(r.get("skipped") for r in rows[:-1])
    assert re.search(r"^note: scaleup is the lecture preset .* needs a GPU; skipped on the CPU", proc.stdout, re.M)
    assert re.search(r"^scaleup +482b15d +skipped +1\.48 +$", proc.stdout, re.M)
    assert re.search(r"^bigram +83f7d22 .* 2\.49\[1\] ", proc.stdout, re.M)


def test_a_bad_argument_is_a_one_line_error(tmp_path):
    proc = ladder(tmp_path, "--device", "cpu", "--stages", "bigram,attention")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "unknown stage(s) attention" in lines[0], proc.stderr


@pytest.mark.parametrize("args, error, fragment", [
    (["--stages", ""], ValueError, "(none given)"),
    (["--max-iters", "0"], ValueError, "--max-iters must be a positive integer"),
    (["--n-embd", "-4"], ValueError, "--n-embd must be a positive integer"),
    (["--data", "/nonexistent/input.txt"], FileNotFoundError, "does not exist"),
])
def test_bad_arguments_name_the_problem(args, error, fragment):
    spec = importlib.util.spec_from_file_location("lecture_ladder", REPO / "examples" / "lecture_ladder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(error) as info:
        module.main(["--device", "cpu", *args])
    assert fragment in str(info.value)
