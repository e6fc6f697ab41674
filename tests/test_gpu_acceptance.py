"""benchmarks/gpu_acceptance.py rehearsed on the CPU: the dry run goes through every stage and
writes the JSON and the table; a failing stage is recorded and the next still runs; a training
stopped on its budget is continued by --resume-training; an overrunning stage is stopped; the
data-parallel smoke test is skipped, saying why, where CuPy cannot load NCCL.
"""
import importlib.util
import json
import re
import signal
import subprocess
import sys
import time
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_acceptance.py"
TOP_KEYS = ("device", "commit", "final_val_loss", "wall_time_s", "step_ms", "torch_step_ms",
            "speedup_vs_torch", "peak_mem_gb", "torch_peak_mem_gb")
OUT_NAME = re.compile(r"^[A-Za-z0-9._-]+$")  # what the device tool brings back from $OUT


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ga = load("gpu_acceptance", SCRIPT)


def acceptance(*args, timeout=240):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def metrics(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def table(stdout):
    """The lines from the table's title to the end of the output."""
    lines = stdout.rstrip("\n").splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("GPU acceptance"))
    return lines[start:]


# ---- the dry run, as CI runs it ------------------------------------------------------------

@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dry")
    proc = acceptance("--dry-run", "--out", root / "out", "--work", root / "work")
    return proc, root


def test_dry_run_passes_every_stage_and_writes_the_json(dry_run):
    proc, root = dry_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads((root / "out" / "acceptance.json").read_text())
    for key in TOP_KEYS:
        assert key in res, key
    assert res["dry_run"] is True and res["device"] == "cpu (dry run)" and res["commit"]
    stages = res["stages"]
    assert stages["tests"]["status"] in ("passed", "skipped")  # skipped: no GPU and no CuPy stand-in
    assert stages["bench"]["status"] == "ok" and stages["train"]["status"] == "complete"
    dist = stages["dist"]       # the smoke test, on the CPU: no NCCL needed, none asked for
    assert dist["status"] == "passed" and dist["command"].endswith("-m gpt.distributed --smoke --device cpu")
    assert dist["smoke"]["steps"] == 3 and dist["smoke"]["device"] == "cpu" and dist["smoke"]["world_size"] == 1
    assert "available" in dist["nccl"]                                   # CuPy was asked all the same
    assert "smoke: ok " in (root / "out" / "dist.log").read_text()
    # The headline figures are the stages' own, not made up: bench_train's JSON and the metrics.
    bench = stages["bench"]["result"]
    assert res["step_ms"] == bench["tl_ms"] > 0 and res["peak_mem_gb"] == bench["tl_peak_mb"] / 1024 > 0
    assert res["torch_step_ms"] == bench["torch_ms"] and res["speedup_vs_torch"] == bench["speedup_vs_torch"]
    if bench["torch_ms"] is not None:  # torch is installed here (CI's test extra has none)
        assert res["speedup_vs_torch"] == pytest.approx(bench["torch_ms"] / bench["tl_ms"])
    last = metrics(root / "work" / "train" / "metrics.jsonl")[-1]
    assert last["step"] == ga.DRY_TRAIN_ITERS and res["final_val_loss"] == last["val_loss"]
    assert 0 < res["wall_time_s"] <= stages["train"]["seconds"]
    assert (root / "out" / "train_metrics.jsonl").read_text() == (root / "work" / "train" / "metrics.jsonl").read_text()


def test_dry_run_tests_stage_runs_a_sample_of_the_cuda_tests_and_counts_them(dry_run):
    _, root = dry_run
    res = json.loads((root / "out" / "acceptance.json").read_text())["stages"]["tests"]
    cases = list(ET.parse(root / "out" / "tests.xml").getroot().iter("testcase"))
    # a module skipped at import (no PyTorch here, say) is a testcase without a classname, not a test
    module_skips = [c for c in cases if not c.get("classname")]
    assert len(module_skips) == len(res["skipped_modules"])
    cases = [c for c in cases if c.get("classname")]
    assert len(cases) == res["tests"] == ga.DRY_TEST_SAMPLE  # the suite has far more cuda tests
    names = [f"{c.get('classname')}::{c.get('name')}".lower() for c in cases]
    assert all("cuda" in n and "test_cuda_kernel" not in n for n in names)    # -k's selection
    skipped = sum(any(child.tag == "skipped" for child in c) for c in cases)
    failed = sum(any(child.tag in ("failure", "error") for child in c) for c in cases)
    assert (res["skipped"], res["failed"] + res["errors"], res["passed"]) == (skipped, failed,
                                                                             len(cases) - skipped - failed)
    assert "-k 'cuda and not test_cuda_kernel'" in res["command"]


def test_dry_run_prints_the_table_last_and_logs_everything(dry_run):
    proc, root = dry_run
    rows = table(proc.stdout)
    assert rows[0].startswith("GPU acceptance DRY RUN")
    stage_rows = [line.split()[:2] for line in rows[3:7]]
    assert [name for name, _ in stage_rows] == ["tests", "dist", "bench", "train"]
    assert stage_rows[0][1] in ("passed", "skipped")
    assert stage_rows[1:] == [["dist", "passed"], ["bench", "ok"], ["train", "complete"]]
    assert "1 rank on cpu, no all-reduce: 3 steps" in rows[4]
    targets = rows[8:12]
    assert [t.split("  ")[0] for t in targets] == ["final val loss <= 1.48", "step time >= 1.0x PyTorch eager",
                                                   "5000 steps + evals < 180 s", "peak memory <= PyTorch's (GB)"]
    # The val loss and the 5000-step time are not judged on a 40-step tiny model.
    assert targets[0].endswith("  -") and targets[2].endswith("  -")
    assert rows[-1].startswith("* dry run")
    assert len("\n".join(rows)) < 2000  # well inside the 12,000 characters the device tool returns
    assert (root / "out" / "acceptance.log").read_text() == proc.stdout
    names = sorted(p.name for p in (root / "out").iterdir())
    assert len(names) <= 8 and all(OUT_NAME.match(n) for n in names), names
    assert {"acceptance.json", "acceptance.log", "tests.log", "tests.xml", "dist.log", "bench.log",
            "train.log"} <= set(names)


# ---- a failing stage, a training stopped on its budget, and its resume -------------------

PLANTED = '''
def test_cuda_planted_pass():
    assert 1 + 1 == 2


def test_cuda_planted_failure():
    assert 2 + 2 == 5, "planted failure"
'''


def test_a_failing_stage_is_recorded_and_a_stopped_training_resumes(tmp_path):
    planted = tmp_path / "test_planted.py"
    planted.write_text(PLANTED)
    work = tmp_path / "work"
    iters, stop = 200, 20
    proc = acceptance("--dry-run", "--stages", "tests,train", "--tests-path", planted, "--train-iters", iters,
                      "--stop-at-step", stop, "--out", tmp_path / "out1", "--work", work)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # a stage failed
    res = json.loads((tmp_path / "out1" / "acceptance.json").read_text())
    tests, train = res["stages"]["tests"], res["stages"]["train"]
    assert (tests["status"], tests["passed"], tests["failed"]) == ("failed", 1, 1)
    # junit's classname is the planted file's dotted path from pytest's rootdir, which depends
    # on where the checkout and the temporary folder lie: compare the module and the test
    assert len(tests["failures"]) == 1 and tests["failures"][0].endswith("test_planted::test_cuda_planted_failure")
    assert "planted failure" in tests["error_tail"]
    assert res["stages"]["bench"]["status"] == "not run"  # not asked for
    # The training still ran after the failed stage, and was stopped as on an exhausted budget.
    assert train["status"] == "unfinished" and train["must_resume"] is True
    first = train["segments"][0]
    assert first["stopped"] == "requested" and stop <= first["end_step"] < iters
    assert "--resume-training" in train["resume_command"] and "--resume-training" in table(proc.stdout)[-1]
    assert res["final_val_loss"] is None and res["wall_time_s"] is None
    assert any(line.startswith("tests  failed") for line in table(proc.stdout))

    proc = acceptance("--resume-training", "--out", tmp_path / "out2", "--work", work)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the failed tests stay recorded
    res = json.loads((tmp_path / "out2" / "acceptance.json").read_text())
    train = res["stages"]["train"]
    assert train["status"] == "complete" and len(train["segments"]) == 2 and len(res["commands"]) == 2
    second = train["segments"][1]
    assert second["resumed"] is True and second["start_step"] == first["end_step"]
    assert second["end_step"] == iters
    # The last command's logs hold the whole run: both commands, both training segments.
    train_log = (tmp_path / "out2" / "train.log").read_text()
    commands = [line for line in train_log.splitlines() if line.startswith("$ ")]
    assert len(commands) == 2 and all("train_shakespeare.py" in c for c in commands)
    assert commands[1].endswith("--resume") and "resuming from" in train_log
    log = (tmp_path / "out2" / "acceptance.log").read_text()
    assert log.startswith((tmp_path / "out1" / "acceptance.log").read_text()) and log.endswith(proc.stdout)
    rows = metrics(work / "train" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(0, iters + 1, 10))  # every evaluation once, none lost
    assert res["final_val_loss"] == rows[-1]["val_loss"]
    assert res["wall_time_s"] == pytest.approx(first["loop_s"] + second["loop_s"], abs=0.11)
    assert res["stages"]["tests"]["status"] == "failed"  # carried over from the first command


def test_resume_without_an_earlier_run_says_so_in_one_line(tmp_path):
    proc = acceptance("--resume-training", "--out", tmp_path / "out", "--work", tmp_path / "work")
    assert proc.returncode == 2
    assert proc.stdout.strip().startswith("error: --resume-training: no earlier run in")
    assert len(proc.stdout.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


# ---- the dist stage: the 1-rank NCCL smoke test, or why it was skipped -------------------------

CUPYS_REASON = ("nccl library could not be loaded. Reason: ImportError (libnccl.so.2: cannot open shared "
                "object file: No such file or directory)")


def gpu_args(tmp_path):
    """The arguments of a real (not dry) run, for calling a stage here."""
    return ga.parse_args(["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")])


def test_the_dist_stage_is_skipped_saying_why_when_nccl_cannot_load(tmp_path, monkeypatch):
    monkeypatch.setattr(ga, "nccl_status", lambda: {"available": False, "reason": CUPYS_REASON})
    monkeypatch.setattr(ga, "dist_command", lambda args: pytest.fail("the smoke test ran without NCCL"))
    args = gpu_args(tmp_path)
    args.out.mkdir(parents=True)
    res = ga.stage_dist(args, {}, 30.0)
    assert res["status"] == "skipped"
    assert res["reason"] == f"NCCL not installed: {CUPYS_REASON}; {ga.INSTALL_NCCL}"
    assert "pip install nvidia-nccl-cu12" in res["reason"]
    assert (args.out / "dist.log").read_text() == f"skipped: {res['reason']}\n"
    assert ga.stage_detail("dist", res).startswith("NCCL not installed: pip install nvidia-nccl-cu12")
    results = {"dry_run": False, "targets": ga.judge(lecture_results()),
               "stages": {"tests": {"status": "passed"}, "dist": res, "bench": {"status": "ok"},
                          "train": {"status": "complete"}}}
    assert ga.exit_status(results) == 0                        # a skip fails nothing


@pytest.mark.parametrize("outcome", ["passes", "fails"])
def test_the_dist_stage_runs_the_cuda_smoke_test_when_nccl_loads(tmp_path, monkeypatch, outcome):
    """With NCCL there, the stage runs `python -m gpt.distributed --smoke --device cuda` (here a
    script printing what it prints) and reads its summary, or records the end of its log."""
    summary = {"world_size": 1, "device": "cuda", "gradients": "nccl", "allreduce_ms_4MiB": 0.25, "steps": 3,
               "val_loss": 3.25, "allreduce_calls": 8}
    code = (f"print('step 3: train loss 3.2, val loss 3.25'); print('smoke: ok ' + {json.dumps(summary)!r})"
            if outcome == "passes" else "import sys; sys.exit('error: average_gradients left wte at 1.5')")
    monkeypatch.setattr(ga, "nccl_status", lambda: {"available": True, "version": 22703})
    monkeypatch.setattr(ga, "dist_command", lambda args: [sys.executable, "-c", code])
    args = gpu_args(tmp_path)
    args.out.mkdir(parents=True)
    res = ga.stage_dist(args, {}, 30.0)
    if outcome == "passes":
        assert res["status"] == "passed" and res["smoke"] == summary and "error_tail" not in res
        assert ga.stage_detail("dist", res) == ("1 rank on cuda, NCCL: 3 steps, val loss 3.2500, "
                                                "4 MiB all-reduce 0.25 ms")
    else:
        assert res["status"] == "failed" and res["returncode"] == 1 and "smoke" not in res
        assert "average_gradients left wte at 1.5" in res["error_tail"]


def test_the_real_smoke_command_is_the_one_the_issue_names(tmp_path):
    assert ga.dist_command(gpu_args(tmp_path))[1:] == ["-m", "gpt.distributed", "--smoke", "--device", "cuda"]


def test_the_nccl_probe_reports_whether_cupy_can_load_nccl():
    status = ga.nccl_status()
    if status["available"]:
        assert isinstance(status["version"], int) and status["version"] > 0
    else:                                   # CuPy's own words, or the error of importing it
        why = (status.get("reason") or status.get("error") or "").lower()
        assert "nccl" in why or "cupy" in why, status


@pytest.mark.parametrize("flags, fragment", [(["--stages", "tests,lint"], "unknown stage"),
                                             (["--shares", "train=-1"], "positive number"),
                                             (["--budget-s", "3"], "--budget-s must be more than")])
def test_bad_flags_are_refused(flags, fragment, tmp_path):
    proc = acceptance("--dry-run", "--out", tmp_path, *flags)
    assert proc.returncode == 2 and fragment in proc.stderr and "Traceback" not in proc.stderr


# ---- stopping a stage that overruns its share ---------------------------------------------

def test_an_overrunning_stage_gets_sigint_at_its_share_minus_the_grace(tmp_path):
    code = "import time\nprint('started', flush=True)\ntime.sleep(60)"
    run = ga.run_process([sys.executable, "-c", code], tmp_path / "log", seconds=3.0, grace_s=1.0)
    assert run["stopped"] == "budget"
    assert 1.9 < run["seconds"] < 2.9  # SIGINT at 2 s, and Python stops at once: no SIGTERM needed
    assert run["returncode"] == -signal.SIGINT


def test_a_stage_that_ignores_sigint_and_sigterm_is_killed(tmp_path, monkeypatch):
    """A stop (here asked for by on_line, as --stop-at-step does) escalates: SIGINT, then SIGTERM
    grace_s later, then SIGKILL KILL_AFTER_S after that."""
    monkeypatch.setattr(ga, "KILL_AFTER_S", 0.5)
    code = ("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('started', flush=True)\ntime.sleep(60)")
    seen = []

    def on_line(line, t):
        seen.append(t)
        return "stop" if line == "started" else None
    run = ga.run_process([sys.executable, "-c", code], tmp_path / "log", seconds=60, grace_s=0.5, on_line=on_line)
    assert run["stopped"] == "requested" and run["returncode"] == -signal.SIGKILL
    assert 0.9 < run["seconds"] - seen[0] < 2.5  # killed 0.5 + 0.5 s after the stop, not at 60 s


# ---- the pieces: shares, targets, junit counts, exit status --------------------------------

def test_each_stage_gets_its_share_of_what_is_left():
    shares = ga.parse_shares("tests=1,bench=1,train=2")
    assert ga.allot(400, "tests", ["tests", "bench", "train"], shares) == 100
    assert ga.allot(360, "bench", ["bench", "train"], shares) == 120  # tests left 40 s unused
    assert ga.allot(240, "train", ["train"], shares) == 240
    assert ga.allot(-5, "train", ["train"], shares) == 0
    assert ga.parse_shares("") == ga.DEFAULT_SHARES
    with pytest.raises(ValueError, match="unknown stage"):
        ga.parse_shares("lint=1")


def lecture_results(**figures):
    base = dict(final_val_loss=1.47, speedup_vs_torch=1.2, wall_time_s=170.0, peak_mem_gb=4.0,
                torch_peak_mem_gb=6.0)
    return {**base, **figures}


@pytest.mark.parametrize("figures, target, expected", [
    ({}, None, True),
    ({"final_val_loss": 1.48}, "val_loss", True), ({"final_val_loss": 1.4801}, "val_loss", False),
    ({"speedup_vs_torch": 1.0}, "speedup_vs_torch", True), ({"speedup_vs_torch": 0.99}, "speedup_vs_torch", False),
    ({"wall_time_s": 179.9}, "train_time_s", True), ({"wall_time_s": 180.0}, "train_time_s", False),
    ({"peak_mem_gb": 6.0}, "peak_mem_gb", True), ({"peak_mem_gb": 6.01}, "peak_mem_gb", False),
    ({"final_val_loss": None}, "val_loss", None), ({"torch_peak_mem_gb": None}, "peak_mem_gb", None),
])
def test_targets_are_judged_at_their_bounds(figures, target, expected):
    verdicts = ga.judge(lecture_results(**figures))
    if target is None:
        assert all(v["pass"] is True for v in verdicts.values())
    else:
        assert verdicts[target]["pass"] is expected
        assert all(v["pass"] is True for name, v in verdicts.items() if name != target)


def test_a_run_of_another_length_is_not_judged_on_loss_or_time():
    verdicts = ga.judge(lecture_results(final_val_loss=0.5, wall_time_s=1.0), lecture_run=False)
    assert verdicts["val_loss"]["pass"] is None and verdicts["train_time_s"]["pass"] is None
    assert verdicts["speedup_vs_torch"]["pass"] is True


def test_exit_status():
    def results(dry_run=False, **statuses):
        r = {"dry_run": dry_run, "stages": {s: {"status": st} for s, st in statuses.items()}}
        r["targets"] = ga.judge(lecture_results())
        return r
    assert ga.exit_status(results(tests="passed", bench="ok", train="complete")) == 0
    assert ga.exit_status(results(tests="failed", bench="ok", train="complete")) == 1
    assert ga.exit_status(results(tests="passed", bench="timeout", train="complete")) == 1
    assert ga.exit_status(results(tests="passed", bench="ok", train="unfinished")) == ga.EXIT_RESUME
    r = results(tests="passed", bench="ok", train="complete")
    r["targets"]["speedup_vs_torch"]["pass"] = False
    assert ga.exit_status(r) == 1
    r["dry_run"] = True
    assert ga.exit_status(r) == 0  # a dry run's sizes say nothing about the targets


def test_junit_counts(tmp_path):
    xml = tmp_path / "t.xml"
    xml.write_text('<testsuites><testsuite name="pytest">'
                   '<testcase classname="tests.test_a" name="test_x[cuda]"/>'
                   '<testcase classname="tests.test_a" name="test_y[cuda]"><failure message="boom"/></testcase>'
                   '<testcase classname="tests.test_b" name="test_z[cuda]"><error message="setup"/></testcase>'
                   '<testcase classname="tests.test_b" name="test_s[cuda]"><skipped message="no GPU"/></testcase>'
                   '<testcase classname="tests.test_b" name="test_t[cuda]"><skipped message="no GPU"/></testcase>'
                   '<testcase classname="" name="tests.test_c"><skipped message="no torch"/></testcase>'
                   '<testcase classname="" name="tests.test_d"><error message="ImportError"/></testcase>'
                   '</testsuite></testsuites>')
    counts = ga.junit_counts(xml)
    assert {k: counts[k] for k in ("tests", "passed", "failed", "errors", "skipped")} == \
        {"tests": 6, "passed": 1, "failed": 1, "errors": 2, "skipped": 2}
    assert counts["failures"] == ["tests.test_a::test_y[cuda]", "tests.test_b::test_z[cuda]", "::tests.test_d"]
    assert counts["skip_reasons"] == {"no GPU": 2}
    assert counts["skipped_modules"] == ["tests.test_c: no torch"]  # skipped at import: not a test


def test_the_tiny_shakespeare_digest_is_the_data_modules():
    from gpt.data import TINYSHAKESPEARE_SHA256
    assert ga.TINYSHAKESPEARE_SHA256 == TINYSHAKESPEARE_SHA256


def test_the_readme_commands_parse():
    """The commands benchmarks/README.md gives (for the device tool, and the rehearsal) are ones
    this script accepts; placeholders such as <S> stand for a number or a sha."""
    text = (REPO / "benchmarks" / "README.md").read_text()
    commands = [c for c in re.findall(r"python3? benchmarks/gpu_acceptance\.py([^\n`#]*)", text) if "[" not in c]
    assert len(commands) >= 3, commands  # the rehearsal, the first device call, the resume
    assert any("--resume-training" in c for c in commands) and any("$OUT" in c for c in commands)
    for tail in commands:
        tail = re.sub(r"<[^>]*>", "300", tail).replace("$OUT", "/tmp/out")
        ga.parse_args(tail.split())


# ---- bench_train's GPU memory count, with a stand-in for CuPy's pool -----------------------

class FakePool:
    """CuPy's MemoryPool surface that cuda_peak_memory reads: used and held bytes."""

    def __init__(self):
        self.used, self.held = 0, 0

    def malloc(self, size):
        self.used += size
        self.held = max(self.held, self.used)
        return types.SimpleNamespace(size=size)

    def free(self, ptr):
        self.used -= ptr.size

    def used_bytes(self):
        return self.used

    def total_bytes(self):
        return self.held

    def free_all_blocks(self):
        self.held = self.used


def fake_cupy(pool):
    state = {"allocator": pool.malloc}
    cuda = types.SimpleNamespace(get_allocator=lambda: state["allocator"],
                                 set_allocator=lambda f: state.__setitem__("allocator", f))
    return types.SimpleNamespace(get_default_memory_pool=lambda: pool, cuda=cuda), state


def test_bench_train_counts_the_peak_of_live_gpu_arrays(monkeypatch):
    bench = load("bench_train_for_memory", REPO / "benchmarks" / "bench_train.py")
    pool = FakePool()
    cupy, state = fake_cupy(pool)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    MB = 2**20

    def make():  # a model of 10 MB, then steps that hold 30 MB of activations at their peak
        weights = state["allocator"](10 * MB)

        def step():
            a = state["allocator"](20 * MB)
            b = state["allocator"](10 * MB)
            pool.free(a)
            pool.free(b)
            return weights
        return step, (lambda: None), None
    result = bench.cuda_peak_memory("tl", make)
    assert result == {"peak_mb": 40.0, "peak_held_mb": 40.0}
    assert state["allocator"] == pool.malloc  # the wrapper is removed afterwards

    def make_that_replaces_the_allocator():
        state["allocator"] = pool.malloc
        return (lambda: None), (lambda: None), None
    with pytest.raises(RuntimeError, match="allocator was replaced"):
        bench.cuda_peak_memory("tl", make_that_replaces_the_allocator)


def running_with(text):
    """Pids of processes whose command line holds text (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's prctl")
def test_a_killed_command_leaves_no_training_running_and_can_be_resumed(tmp_path):
    """SIGKILL (a device command's time limit) gives this script no chance to stop its stage: the
    training gets SIGTERM from the kernel instead, saves a checkpoint and exits; the state saved
    when the stage started lets --resume-training finish it."""
    work, iters = tmp_path / "work", 200
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--dry-run", "--stages", "train", "--train-iters",
                             str(iters), "--out", tmp_path / "out1", "--work", work],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if "] step 20:" in line:
            proc.kill()
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed mid-training, not finished
    deadline = time.monotonic() + 20
    while running_with(str(work / "train")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running_with(str(work / "train")) == [], "the training outlived the killed command"
    state = json.loads((work / "state.json").read_text())["stages"]["train"]
    assert state["status"] == "running" and "train_shakespeare.py" in state["command"]

    done = acceptance("--resume-training", "--dry-run", "--out", tmp_path / "out2", "--work", work)
    res = json.loads((tmp_path / "out2" / "acceptance.json").read_text())["stages"]["train"]
    assert done.returncode == 0 and res["status"] == "complete", done.stdout
    assert res["segments"][-1]["resumed"] is True and 20 <= res["segments"][-1]["start_step"] < iters
