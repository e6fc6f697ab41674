"""The GPU acceptance run: one command that checks `--device cuda` end to end on a real GPU.

    python benchmarks/gpu_acceptance.py [--out DIR] [--budget-s 540] [--data PATH]
    python benchmarks/gpu_acceptance.py --resume-training [--out DIR] [--budget-s S]
    python benchmarks/gpu_acceptance.py --dry-run [--out DIR]          # the same stages, CPU, tiny sizes

Stages, in order, each in its own process, each independent (a stage that fails or crashes is
recorded with the tail of its log, and the next one still runs):

  tests  the cuda-parametrized tests: `pytest tests -k "cuda and not test_cuda_kernel"` (every
         op's forward against NumPy, every gradcheck on CuPy in float64, every fast CUDA kernel
         against its reference op, the cuda training path; the CUDA kernels' CPU gates are left
         to CI), on 4 pytest-xdist workers where it is installed; pass/fail/skip counts from the
         junit XML.
  dist   the data-parallel smoke test in one process, `python -m gpt.distributed --smoke --device
         cuda`: the gradients all-reduced through NCCL (a communicator of one rank), the time of a
         4 MiB all-reduce, and 3 training steps of a tiny GPT. Recorded as "skipped: NCCL not
         installed" when CuPy cannot load NCCL (pip install nvidia-nccl-cu12, or -cu13 to match
         a CUDA 13 CuPy). The dry run runs the same command with --device cpu.
  bench  `benchmarks/bench_train.py --preset lecture --device cuda --json`: tensorlite against
         PyTorch eager on the same GPU, TF32 allowed on both sides; median step time of each,
         their ratio, and the peak GPU memory of each.
  train  the lecture preset, 5000 iterations, through `examples/train_shakespeare.py --device
         cuda`; the final val loss and the wall time of the steps and their evaluations.

Time: the whole run fits in --budget-s. Each stage gets a share of the budget that is left
when it starts (--shares), and is stopped when it overruns: SIGINT first, --stop-grace-s before
its share ends (pytest then writes its report; the training loop saves a checkpoint), then
SIGTERM, then SIGKILL. A training run stopped this way is continued by a second command with
--resume-training, which needs the same --work folder (on the device machine: a warm machine,
since a fresh one starts bare).

Output: DIR/acceptance.json (rewritten after every stage, so a killed run leaves what it had),
DIR/acceptance.log (everything printed here), and each stage's log (tests.log, tests.xml,
dist.log, bench.log, train.log, train_metrics.jsonl). The last thing printed is a short table: the
stages, and the targets (val loss <= 1.48; step time >= 1.0x PyTorch eager; 5000 steps with
evaluations under 3 minutes; peak memory <= PyTorch's) with pass or FAIL.

Exit status: 0 when every stage that ran succeeded and every target passed (in a dry run the
targets are not judged); 1 when a stage failed or a target was missed; 75 when nothing failed
but the training must be continued with --resume-training; 2 for a usage error.
"""
import argparse
import hashlib
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCHEMA = "tensorlite-gpu-acceptance/1"
STAGES = ("tests", "dist", "bench", "train")
DEFAULT_SHARES = {"tests": 0.15, "dist": 0.03, "bench": 0.12, "train": 0.7}
TESTS_K = "cuda and not test_cuda_kernel"
RESERVE_S = 5.0          # kept back from the budget for the last JSON and the table
KILL_AFTER_S = 5.0       # SIGTERM -> SIGKILL
EXIT_RESUME = 75         # EX_TEMPFAIL: nothing failed, the training must be continued

# The targets (issue text: lecture preset on one H100 or H200).
TARGET_VAL_LOSS = 1.48
TARGET_SPEEDUP = 1.0
TARGET_TRAIN_S = 180.0
LECTURE_ITERS = 5000

EVAL_LINE = re.compile(r"^step (\d+): train loss ([0-9.eE+-]+|nan|inf), val loss ([0-9.eE+-]+|nan|inf)")
RESUME_LINE = re.compile(r"resuming from .* at step (\d+)")
OUTPUTS = ("acceptance.json", "acceptance.log", "tests.log", "tests.xml", "dist.log", "bench.log", "train.log",
           "train_metrics.jsonl")  # what a command leaves in --out: 8 files (the device tool returns 8)
SAMPLE_ENV = "GPU_ACCEPTANCE_SAMPLE"  # read by the pytest plugin below
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"  # gpt.data's

# The dry run's tiny training run: the same script and loop, a model that trains in a second.
DRY_TRAIN_FLAGS = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "32",
                   "--batch-size", "8", "--eval-interval", "10", "--eval-iters", "2", "--sample-chars", "40"]
DRY_TRAIN_ITERS = 40
DRY_BENCH_FLAGS = ["--preset", "cpu", "--device", "cpu", "--warmup", "1", "--block", "1",
                   "--block-warmup", "0", "--pause", "0", "--gen-tokens", "0", "--threads", "1"]
DRY_BENCH_STEPS = 2
DRY_TEST_SAMPLE = 12


# =============================== arguments ===============================================

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None,
                   help="results folder (default $OUT if set, else out/gpu-acceptance[-dry])")
    p.add_argument("--work", default=None,
                   help="folder for the training checkpoint and the state --resume-training reads; it "
                        "must survive between commands (default out/gpu-acceptance[-dry]-work)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="seconds for the whole command (default 540: one 10-minute device command "
                        "with a minute to spare; 600 for a dry run)")
    p.add_argument("--shares", default=None,
                   help="relative shares of the remaining budget (default "
                        + ",".join(f"{k}={v}" for k, v in DEFAULT_SHARES.items()) + ")")
    p.add_argument("--stop-grace-s", type=float, default=None,
                   help="seconds the training gets between SIGINT and SIGTERM when it overruns, to finish an "
                        "evaluation and save its checkpoint (default 30; dry run 5); the tests get at most "
                        "15 s to write their report, the benchmark 3 s (it has nothing partial to report)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--dry-run", action="store_true",
                   help="the same stages on the CPU at tiny sizes (no GPU needed)")
    p.add_argument("--resume-training", action="store_true",
                   help="continue the training stage of an earlier command from its checkpoint in --work")
    p.add_argument("--data", default=None,
                   help="Tiny Shakespeare input.txt (default $TINYSHAKESPEARE_PATH, data/tinyshakespeare/"
                        "input.txt in the checkout, or ../shared/data/...; a dry run writes a small "
                        "text of its own)")
    p.add_argument("--commit", default=None, help="the commit being tested, when the checkout has no .git")
    p.add_argument("--tests-k", default=TESTS_K,
                   help=f"pytest -k expression for the tests stage (default {TESTS_K!r}: the tests on the "
                        "cuda device; the CUDA kernels' CPU gates, test_cuda_kernel*, run in CI)")
    p.add_argument("--tests-path", action="append", default=None,
                   help="what pytest collects (default tests/; repeatable)")
    p.add_argument("--tests-sample", type=int, default=None,
                   help="run only N of the selected tests, spread over the list (default all; dry run 12)")
    p.add_argument("--tests-workers", type=int, default=None,
                   help="pytest-xdist workers for the tests stage (0: no xdist; default 4 where "
                        "pytest-xdist is installed, 0 in a dry run)")
    p.add_argument("--bench-steps", type=int, default=None, help="timed steps per side (default 20; dry run 2)")
    p.add_argument("--train-iters", type=int, default=None,
                   help=f"training iterations (default the preset's, {LECTURE_ITERS}; dry run {DRY_TRAIN_ITERS})")
    p.add_argument("--stop-at-step", type=int, default=None,
                   help="rehearse the budget stop: once the training reports this step, stop it exactly "
                        "as if its share of the budget had run out")
    args = p.parse_args(argv)

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        p.error(f"--stages: unknown stage(s) {unknown} (choose from {','.join(STAGES)})")
    args.stages = [s for s in STAGES if s in stages]
    if args.resume_training:
        args.stages = ["train"]
    try:
        args.shares = parse_shares(args.shares)
    except ValueError as e:
        p.error(f"--shares: {e}")
    dry = args.dry_run
    args.budget_s = args.budget_s if args.budget_s is not None else (600.0 if dry else 540.0)
    args.stop_grace_s = args.stop_grace_s if args.stop_grace_s is not None else (5.0 if dry else 30.0)
    if args.budget_s <= RESERVE_S:
        p.error(f"--budget-s must be more than {RESERVE_S:.0f}")
    for name in ("tests_sample", "bench_steps", "train_iters", "stop_at_step"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.tests_sample is None and dry:
        args.tests_sample = DRY_TEST_SAMPLE
    if args.tests_workers is None:
        import importlib.util
        args.tests_workers = 0 if dry or importlib.util.find_spec("xdist") is None else 4
    elif args.tests_workers < 0:
        p.error("--tests-workers must be 0 or more")
    suffix = "-dry" if dry else ""
    args.out = Path(args.out or os.environ.get("OUT") or REPO / f"out/gpu-acceptance{suffix}").resolve()
    args.work = Path(args.work or REPO / f"out/gpu-acceptance{suffix}-work").resolve()
    return args


def parse_shares(text):
    """'tests=0.2,train=0.8' -> {stage: weight}, missing stages at their defaults."""
    shares = dict(DEFAULT_SHARES)
    if not text:
        return shares
    for item in text.split(","):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r} in {text!r}")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"{item!r} is not stage=number") from None
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"the share of {name} must be a positive number, got {value!r}")
        shares[name] = weight
    return shares


def allot(remaining_s, stage, stages_left, shares):
    """This stage's seconds: its share of what is left among the stages still to run, so time a
    stage leaves unused passes on to the later ones."""
    total = sum(shares[s] for s in stages_left)
    return max(0.0, remaining_s) * shares[stage] / total


# =============================== running a stage's process ===============================

class Stopped:
    """How run_process ended a child early, if it did."""
    BUDGET = "budget"        # its share of the budget ran out
    REQUESTED = "requested"  # on_line asked for the stop (--stop-at-step): handled exactly as BUDGET
    INTERRUPTED = "interrupted"  # this script got Ctrl-C or SIGTERM


def run_process(cmd, log_path, seconds, grace_s, env=None, on_line=None, cwd=REPO):
    """Run cmd in its own process group, its output (stdout and stderr) appended to log_path and
    passed line by line to on_line(line, t) (t: seconds since start; returning "stop" stops the
    child). After `seconds - grace_s` (or on a stop request) the group gets SIGINT, `grace_s`
    later SIGTERM, KILL_AFTER_S after that SIGKILL. grace_s is at most a quarter of `seconds`.

    The child writes into the log file itself, not into a pipe to this script, and this script
    follows the file: if this script is killed, the child's next print cannot fail on a broken
    pipe, so the training still gets to save its checkpoint (see _in_the_child).

    Returns {"returncode", "seconds", "stopped" (None or a Stopped value), "tail" (last lines),
    "last_line_t" (t of the last line)}.
    """
    start = time.monotonic()
    grace_s = min(grace_s, seconds / 4)  # a short share keeps most of itself for the work
    state = {"stop": False, "last_line_t": None, "notes": []}
    tail = deque(maxlen=60)
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8", errors="replace") as log:
        log.write(f"$ {shlex.join(map(str, cmd))}\n")
        log.flush()
        offset = log.tell()
        proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=_in_the_child)
        done = threading.Event()  # set once the child has exited: read to the end, then stop

        def follow():
            with open(log_path, "r", encoding="utf-8", errors="replace") as f:
                f.seek(offset)
                partial = ""
                while True:
                    chunk = f.readline()
                    if not chunk:
                        if done.is_set():
                            break
                        time.sleep(0.02)
                        continue
                    partial += chunk
                    if not partial.endswith("\n") and not done.is_set():
                        continue  # a line still being written
                    line, partial = partial.rstrip("\n"), ""
                    t = time.monotonic() - start
                    tail.append(line)
                    state["last_line_t"] = t
                    if on_line is not None:
                        try:
                            if on_line(line, t) == "stop":
                                state["stop"] = True
                        except Exception as e:  # a parsing bug must not hang the stage
                            state["notes"].append(f"on_line failed: {type(e).__name__}: {e}")

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        stopped, stop_t = None, None
        try:
            while proc.poll() is None:
                now = time.monotonic() - start
                if stopped is None and (state["stop"] or now >= seconds - grace_s):
                    stopped = Stopped.REQUESTED if state["stop"] else Stopped.BUDGET
                    stop_t = now
                    _signal_group(proc, signal.SIGINT)
                elif stopped is not None and now >= stop_t + grace_s + KILL_AFTER_S:
                    _signal_group(proc, signal.SIGKILL)
                elif stopped is not None and now >= stop_t + grace_s:
                    _signal_group(proc, signal.SIGTERM)
                time.sleep(0.05)
        except KeyboardInterrupt:  # this script was interrupted: stop the child the same way, then report
            INTERRUPTED["flag"] = True
            stopped = Stopped.INTERRUPTED
            _signal_group(proc, signal.SIGINT)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
        finally:
            if proc.poll() is None:  # only on an unexpected error above
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        done.set()
        thread.join(timeout=10)
        seconds_run = time.monotonic() - start
        log.seek(0, os.SEEK_END)
        for note in state["notes"]:
            log.write(f"[gpu_acceptance] {note}\n")
        log.write(f"[gpu_acceptance] exit status {proc.returncode} after {seconds_run:.1f} s"
                  + (f", stopped ({stopped})" if stopped else "") + "\n")
    return {"returncode": proc.returncode, "seconds": seconds_run, "stopped": stopped,
            "tail": list(tail), "last_line_t": state["last_line_t"]}


INTERRUPTED = {"flag": False}  # set when this script got Ctrl-C or SIGTERM during a stage

try:  # prctl, resolved now: the child runs _in_the_child between fork and exec, where imports are unsafe
    import ctypes
    _LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
except (ImportError, OSError):
    _LIBC = None
PR_SET_PDEATHSIG = 1


def _in_the_child():
    """Between fork and exec: the stage gets its own process group, so a stop reaches its own
    children too (pytest-xdist workers, bench_train's memory processes) while a Ctrl-C at the
    terminal reaches only this script, which then stops the stage in order. Same session, so
    whatever kills this command's session kills the stage. On Linux the stage also gets SIGTERM
    if this script dies (killed at a device command's time limit, say): the training then saves
    its checkpoint and exits instead of running on unwatched. SIGTERM, not SIGINT: the kernel
    sends the parent-death signal again each time the child is handed to another of the dying
    script's threads, and a second SIGINT means "stop at once" to the training loop, which
    could then stop in the middle of its save (a second SIGTERM only repeats the request)."""
    os.setpgid(0, 0)
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))


def _signal_group(proc, sig):
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def tail_text(lines, n=25, width=400):
    """The last n lines, each cut to width characters: what a failed stage shows."""
    return "\n".join(line[:width] for line in list(lines)[-n:])


# =============================== the tests stage =========================================

try:                      # the script itself needs only the standard library
    from pytest import hookimpl as _hookimpl
except ImportError:
    def _hookimpl(**_):
        return lambda f: f


@_hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """pytest plugin hook (this module is loaded with `-p gpu_acceptance` in the tests stage):
    with $GPU_ACCEPTANCE_SAMPLE=N, keep N of the tests -k selected, evenly spread over the list.
    Run at collection, after -k (trylast), so pytest-xdist's workers all collect the same N."""
    n = int(os.environ.get(SAMPLE_ENV) or 0)
    if n <= 0 or len(items) <= n:
        return
    keep = [items[round(i * (len(items) - 1) / max(n - 1, 1))] for i in range(n)]
    kept = set(map(id, keep))
    config.hook.pytest_deselected(items=[it for it in items if id(it) not in kept])
    items[:] = keep


def junit_counts(path):
    """{"tests", "passed", "failed", "errors", "skipped", "failures": [names], "skip_reasons":
    {reason: count, the 5 most common}, "skipped_modules": [module: reason]} from a junit XML.

    A module skipped whole at import (pytest.importorskip: PyTorch not installed, say) shows in
    the XML as a testcase with an empty classname (the module in its name); it is listed in
    skipped_modules, not counted as a test.
    A module that fails to import still counts, as an error."""
    root = ET.parse(path).getroot()
    counts = {"tests": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": [],
              "skipped_modules": []}
    reasons = {}
    for case in root.iter("testcase"):
        kinds = {child.tag for child in case}
        if not case.get("classname") and kinds == {"skipped"}:
            message = case.find("skipped").get("message", "")
            counts["skipped_modules"].append(f"{case.get('name', '')}: {message}")
            continue
        counts["tests"] += 1
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if "failure" in kinds:
            counts["failed"] += 1
            counts["failures"].append(name)
        elif "error" in kinds:
            counts["errors"] += 1
            counts["failures"].append(name)
        elif "skipped" in kinds:
            counts["skipped"] += 1
            reason = case.find("skipped").get("message", "")
            reasons[reason] = reasons.get(reason, 0) + 1
        else:
            counts["passed"] += 1
    counts["skip_reasons"] = dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:5])
    return counts


def stage_tests(args, ctx, seconds):
    xml = args.out / "tests.xml"
    if xml.exists():
        xml.unlink()
    paths = args.tests_path or ["tests"]
    cmd = [sys.executable, "-m", "pytest", *paths, "-k", args.tests_k, "-p", "no:cacheprovider",
           "-p", "gpu_acceptance", f"--junitxml={xml}", "-rfE", "--tb=short",
           f"--ignore={REPO / 'tests' / 'test_gpu_acceptance.py'}"]
    if args.tests_workers:
        cmd += ["-n", str(args.tests_workers)]
    env = child_env(args, tf32=False)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "benchmarks"), env.get("PYTHONPATH")]))
    env[SAMPLE_ENV] = str(args.tests_sample or 0)
    run = run_process(cmd, args.out / "tests.log", seconds, min(args.stop_grace_s, 15.0), env=env)
    res = {"command": shlex.join(map(str, cmd)), "returncode": run["returncode"],
           "seconds": round(run["seconds"], 1), "stopped": run["stopped"], "log": "tests.log"}
    if xml.exists():
        try:
            res.update(junit_counts(xml))
        except ET.ParseError as e:
            res["junit_error"] = f"{xml.name} could not be read: {e}"
    res["failures"] = res.get("failures", [])[:50]
    code = run["returncode"]
    if run["stopped"]:
        res["status"] = "timeout"
    elif code == 0 and res.get("passed", 0) > 0:
        res["status"] = "passed"
    elif code == 0 and res.get("tests", 0) == res.get("skipped", -1):
        res["status"] = "skipped"  # every selected test skipped itself (no GPU): see tests.log
    elif code == 1:
        res["status"] = "failed"
    else:  # 2 interrupted, 3 internal error, 4 usage error, 5 nothing selected
        res["status"] = "error"
    if res["status"] in ("failed", "error", "timeout"):
        res["error_tail"] = tail_text(run["tail"])
    return res


# =============================== the dist stage ==========================================

INSTALL_NCCL = "pip install nvidia-nccl-cu12 (or nvidia-nccl-cu13 for a CUDA 13 CuPy)"

NCCL_PROBE = r"""
import json, warnings
info = {}
with warnings.catch_warnings(record=True) as caught:    # CuPy says why it could not load NCCL
    warnings.simplefilter("always")
    try:
        from cupy.cuda import nccl
        info["available"] = bool(nccl.available)
        if info["available"]:
            info["version"] = nccl.get_version()
    except Exception as e:
        info["available"] = False
        info["error"] = f"{type(e).__name__}: {e}"[:300]
why = [" ".join(str(w.message).split()) for w in caught if "nccl" in str(w.message).lower()]
if why:
    info["reason"] = why[0][:300]
print(json.dumps(info))
"""


def nccl_status():
    """{"available": bool, and "version", or "reason"/"error": why not} for CuPy's NCCL, asked in
    a child process (importing CuPy here would hold the GPU in this script)."""
    try:
        out = subprocess.run([sys.executable, "-c", NCCL_PROBE], capture_output=True, text=True,
                             timeout=120, cwd=REPO)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except Exception as e:  # no output (CuPy crashed on import, say), or a timeout
        return {"available": False, "error": f"the NCCL probe failed: {type(e).__name__}: {e}"[:300]}


def dist_command(args):
    device = "cpu" if args.dry_run else "cuda"
    return [sys.executable, "-m", "gpt.distributed", "--smoke", "--device", device]


def stage_dist(args, ctx, seconds):
    """The data-parallel smoke test in one process (issue: the NCCL path on a real GPU)."""
    nccl = nccl_status()
    res = {"log": "dist.log", "nccl": nccl}
    if not args.dry_run and not nccl.get("available"):
        why = nccl.get("reason") or nccl.get("error") or "cupy.cuda.nccl.available is False"
        res.update(status="skipped", reason=f"NCCL not installed: {why}; {INSTALL_NCCL}")
        with open(args.out / "dist.log", "a", encoding="utf-8") as log:
            log.write(f"skipped: {res['reason']}\n")
        return res
    cmd = dist_command(args)
    run = run_process(cmd, args.out / "dist.log", seconds, min(args.stop_grace_s, 3.0), env=child_env(args))
    res.update(command=shlex.join(map(str, cmd)), returncode=run["returncode"], stopped=run["stopped"],
               smoke_s=round(run["seconds"], 1))
    for line in reversed(run["tail"]):
        if line.startswith("smoke: ok "):
            try:
                res["smoke"] = json.loads(line[len("smoke: ok "):])
            except json.JSONDecodeError:
                pass
            break
    if run["stopped"]:
        res["status"] = "timeout"
    elif run["returncode"] == 0 and "smoke" in res:
        res["status"] = "passed"
    else:
        res["status"] = "failed"
    if res["status"] != "passed":
        res["error_tail"] = tail_text(run["tail"])
    return res


# =============================== the bench stage =========================================

def stage_bench(args, ctx, seconds):
    steps = args.bench_steps or (DRY_BENCH_STEPS if args.dry_run else 20)
    flags = DRY_BENCH_FLAGS if args.dry_run else ["--preset", "lecture", "--device", "cuda", "--warmup", "3",
                                                  "--gen-tokens", "0"]
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_train.py"), *flags, "--steps", str(steps), "--json"]
    # Stopped early, bench_train has nothing to report: a short grace leaves the time to the training.
    run = run_process(cmd, args.out / "bench.log", seconds, min(args.stop_grace_s, 3.0), env=child_env(args))
    res = {"command": shlex.join(map(str, cmd)), "returncode": run["returncode"],
           "seconds": round(run["seconds"], 1), "stopped": run["stopped"], "log": "bench.log"}
    bench = None
    for line in reversed(run["tail"]):
        if line.startswith("{"):
            try:
                bench = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    if bench is None:
        res["status"] = "timeout" if run["stopped"] else "error"
    else:  # the JSON is bench_train's last act: a stop or an error after it (at exit) loses nothing
        res["status"] = "ok"
        if run["returncode"] != 0:
            res["note"] = f"bench_train exited with status {run['returncode']} after printing its JSON"
        res["result"] = bench
        mb = lambda v: None if v is None else v / 1024  # noqa: E731  (MB -> GB)
        res.update(step_ms=bench.get("tl_ms"), torch_step_ms=bench.get("torch_ms"),
                   speedup_vs_torch=bench.get("speedup_vs_torch"), peak_mem_gb=mb(bench.get("tl_peak_mb")),
                   torch_peak_mem_gb=mb(bench.get("torch_peak_mb")))
        if bench.get("torch_ms") is None:
            res["note"] = "PyTorch side not timed (not installed?): see bench.log"
    if res["status"] != "ok":
        res["error_tail"] = tail_text(run["tail"])
    return res


# =============================== the train stage =========================================

def find_data(args):
    """(path, how it was found) of Tiny Shakespeare, or (None, where it looked)."""
    if args.data:
        return Path(args.data), "--data"
    candidates = []
    if os.environ.get("TINYSHAKESPEARE_PATH"):
        candidates.append((Path(os.environ["TINYSHAKESPEARE_PATH"]), "$TINYSHAKESPEARE_PATH"))
    for rel in ("data/tinyshakespeare/input.txt", "data/input.txt", "shared/data/tinyshakespeare/input.txt",
                "../shared/data/tinyshakespeare/input.txt"):
        candidates.append(((REPO / rel).resolve(), rel))
    for path, how in candidates:
        if path.is_file():
            return path, how
    return None, ", ".join(str(p) for p, _ in candidates)


def dry_run_text(path):
    """A small deterministic text for the dry run's tiny model (about 40 KB, 40-odd characters)."""
    words = ("the king my lord shall not be so good a friend to thee and yet what is love but "
             "a word that men may speak when all their wit is gone").split()
    lines, state = [], 12345
    for i in range(900):
        n = 4 + i % 7
        line = []
        for _ in range(n):
            state = (1103515245 * state + 12345) % 2**31
            line.append(words[state % len(words)])
        speaker = ("KING", "QUEEN", "FOOL")[i % 3]
        lines.append(f"{speaker}:\n{' '.join(line).capitalize()}{'.,;!?'[i % 5]}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def train_command(args, ctx, data, train_dir):
    """The training command of a fresh run (a resume adds --resume to the same flags)."""
    cmd = [sys.executable, str(REPO / "examples" / "train_shakespeare.py"), "--data", str(data),
           "--out", str(train_dir), "--no-progress"]
    if ctx["dry_run"]:
        cmd += ["--device", "cpu", "--preset", "cpu", *DRY_TRAIN_FLAGS]
        iters = args.train_iters or DRY_TRAIN_ITERS
    else:
        cmd += ["--device", "cuda", "--preset", "lecture"]
        iters = args.train_iters or LECTURE_ITERS
    return cmd + ["--max-iters", str(iters)], iters


def read_metrics(path):
    """metrics.jsonl as a list of dicts; lines that do not parse are skipped."""
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def checkpoint_step(train_dir):
    """The step stored in the training checkpoint, read in a child process (the checkpoint is a
    pickle that may need tensorlite and CuPy to load); None if there is none or it cannot be read."""
    ckpts = sorted(train_dir.glob("ckpt*.pkl")) or sorted(train_dir.glob("*.pkl"))
    if not ckpts:
        return None
    code = ("import pickle, sys\nwith open(sys.argv[1], 'rb') as f:\n    print(pickle.load(f)['step'])")
    try:
        out = subprocess.run([sys.executable, "-c", code, str(ckpts[0])], cwd=REPO, capture_output=True,
                             text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
        return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError, IndexError, OSError):
        return None


def stage_train(args, ctx, seconds):
    work = args.work
    train_dir = work / "train"
    prev = ctx["previous"].get("train") or {}
    resuming = args.resume_training
    res = {"log": "train.log", "segments": list(prev.get("segments", [])) if resuming else []}

    if resuming:
        if not prev.get("command"):
            return {**res, "status": "error",
                    "error_tail": f"--resume-training: no earlier training command in {work / 'state.json'}"}
        if prev.get("status") == "complete":
            say("[train] the training finished in an earlier command: nothing to resume")
            return prev
        cmd, iters = shlex.split(prev["command"]), prev["max_iters"]
        if prev.get("status") == "running":  # that command was killed: its segment's time is unknown
            res["segments"].append({"killed": True, "end_step": checkpoint_step(train_dir), "loop_s": None})
        has_ckpt = checkpoint_step(train_dir) is not None
        if has_ckpt:
            cmd.append("--resume")
        else:
            say(f"[train] no checkpoint in {train_dir}: the earlier command stopped before the first one; "
                "starting the training again")
            res["abandoned_segments"], res["segments"] = res["segments"], []
        res.update(data=prev.get("data"), data_sha256=prev.get("data_sha256"), data_is_tinyshakespeare=
                   prev.get("data_is_tinyshakespeare"))
    else:
        if ctx["dry_run"] and not args.data:
            data, how = dry_run_text(work / "dry_run_text.txt"), "dry-run text"
        else:
            data, how = find_data(args)
            if data is None or not data.is_file():
                where = how if data is None else str(data)
                return {**res, "status": "error",
                        "error_tail": f"Tiny Shakespeare not found (looked at {where}): pass --data PATH"}
        digest = sha256_of(data)
        from_tinyshakespeare = digest == TINYSHAKESPEARE_SHA256
        res.update(data=str(data), data_found_by=how, data_sha256=digest,
                   data_is_tinyshakespeare=from_tinyshakespeare)
        if not from_tinyshakespeare and not ctx["dry_run"]:
            say(f"[train] warning: {data} is not Tiny Shakespeare (sha256 {digest[:12]}...): the val loss "
                "target does not apply")
        if train_dir.exists():  # an earlier acceptance run's: keep one copy, start clean
            old = work / "train.prev"
            if old.exists():
                _rmtree(old)
            train_dir.rename(old)
            say(f"[train] moved the earlier run in {train_dir} to {old}")
        cmd, iters = train_command(args, ctx, data, train_dir)
        has_ckpt = False
    res.update(command=shlex.join(cmd[:-1] if cmd[-1] == "--resume" else cmd), max_iters=iters)

    evals, seg = [], {"resumed": has_ckpt, "start_step": None}

    def on_line(line, t):
        m = EVAL_LINE.match(line)
        if m:
            step = int(m[1])
            evals.append({"step": step, "train_loss": float(m[2]), "val_loss": float(m[3]), "t": round(t, 2)})
            say(f"[train {t:6.0f} s] {line}")
            if args.stop_at_step and step >= args.stop_at_step and step < iters:
                say(f"[train] --stop-at-step {args.stop_at_step}: stopping as if the budget had run out")
                return "stop"
        m = RESUME_LINE.search(line)
        if m:
            seg["start_step"] = int(m[1])
            seg["loop_start_t"] = round(t, 2)
            say(f"[train] {line}")
        return None

    ctx["progress"]("train", {k: v for k, v in res.items() if k != "log"})  # a killed command can be resumed
    work_log = work / "train.log"  # every segment's log, carried from command to command
    (args.out / "train.log").write_text(work_log.read_text() if resuming and work_log.is_file() else "")
    run = run_process(cmd, args.out / "train.log", seconds, args.stop_grace_s, env=child_env(args),
                      on_line=on_line)
    work_log.write_text((args.out / "train.log").read_text())
    metrics = read_metrics(train_dir / "metrics.jsonl")
    if (train_dir / "metrics.jsonl").is_file():
        (args.out / "train_metrics.jsonl").write_text((train_dir / "metrics.jsonl").read_text())
    ckpt = checkpoint_step(train_dir)
    final = next((m for m in reversed(metrics) if m.get("step") == iters), None)
    if seg["start_step"] is None:
        seg["start_step"] = 0 if not has_ckpt else (prev.get("step") or 0)
    seg.update(end_step=final["step"] if final else ckpt, returncode=run["returncode"],
               stopped=run["stopped"], process_s=round(run["seconds"], 1),
               loop_s=_loop_seconds(evals, metrics, final, run, seg.pop("loop_start_t", None)))
    res["segments"].append(seg)
    res["evals"] = [{k: m.get(k) for k in ("step", "train_loss", "val_loss", "elapsed_s")} for m in metrics]
    res.update(returncode=run["returncode"], stopped=run["stopped"],
               seconds=round(sum(s.get("process_s") or 0 for s in res["segments"]), 1), step=seg["end_step"])
    if final is not None:
        res["status"] = "complete"
        res["final_val_loss"] = final.get("val_loss")
        res["final_train_loss"] = final.get("train_loss")
        loops = [s["loop_s"] for s in res["segments"]]
        res["wall_time_s"] = round(sum(loops), 1) if all(v is not None for v in loops) else None
    elif run["stopped"] in (Stopped.BUDGET, Stopped.REQUESTED, Stopped.INTERRUPTED) and ckpt is not None:
        res["status"] = "unfinished"
        res["must_resume"] = True
        res["resume_command"] = resume_command(args)
    else:
        res["status"] = "timeout" if run["stopped"] else "error"
        res["error_tail"] = tail_text(run["tail"])
        if run["stopped"]:
            res["error_tail"] += "\n(stopped before the first checkpoint: the training must start again)"
    if run["returncode"] != 0 and res["status"] == "complete":
        res["note"] = f"the training exited with status {run['returncode']} after its last evaluation"
    return res


def _loop_seconds(evals, metrics, final, run, resume_t=None):
    """Seconds this segment spent in the training loop (steps and evaluations): from the loop's
    start, found from the first evaluation line seen and the elapsed_s metrics.jsonl gives for it
    (else the "resuming from" line, printed just before the loop), to the final evaluation (a
    finished run) or the last line printed (a stopped one)."""
    start = None
    if evals:
        first = evals[0]
        elapsed = next((m.get("elapsed_s") for m in reversed(metrics) if m.get("step") == first["step"]), None)
        if elapsed is not None:
            start = first["t"] - elapsed
    if start is None:
        start = resume_t
    if evals and final is not None and evals[-1]["step"] == final["step"]:
        end = evals[-1]["t"]
    else:
        end = run["last_line_t"]
    return None if start is None or end is None else round(end - start, 2)


def resume_command(args):
    parts = [os.path.basename(sys.executable), "benchmarks/gpu_acceptance.py", "--resume-training"]
    if args.dry_run:
        parts.append("--dry-run")
    default_work = (REPO / f"out/gpu-acceptance{'-dry' if args.dry_run else ''}-work").resolve()
    if args.work != default_work:
        parts += ["--work", str(args.work)]
    parts += ["--out", "$OUT" if os.environ.get("OUT") else str(args.out)]
    return " ".join(parts)


def _rmtree(path):
    import shutil
    shutil.rmtree(path)


# =============================== environment and results =================================

def child_env(args, tf32=True):
    """The stages' environment. tf32: CuPy may use TF32 for float32 matmuls, as PyTorch does with
    allow_tf32 (the benchmark and the training); the tests compare float32 results at float32
    tolerances, so they run without it."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if args.dry_run:  # tiny arrays: BLAS threads only contend for the cores (2 here, often shared)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, "1")
    elif tf32:
        env.setdefault("CUPY_TF32", "1")
    else:
        env.pop("CUPY_TF32", None)
    return env


PROBE = r"""
import json, platform, sys
info = {"python": platform.python_version()}
try:
    import numpy
    info["numpy"] = numpy.__version__
except Exception as e:
    info["numpy_error"] = f"{type(e).__name__}: {e}"
try:
    import cupy
    info["cupy"] = cupy.__version__
    rt = cupy.cuda.runtime
    info["cuda_runtime"] = rt.runtimeGetVersion()
    info["cuda_driver"] = rt.driverGetVersion()
    props = rt.getDeviceProperties(0)
    name = props["name"]
    info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
    info["compute_capability"] = f"{props['major']}.{props['minor']}"
    info["gpu_memory_gb"] = round(props["totalGlobalMem"] / 2**30, 1)
    info["gpu_count"] = rt.getDeviceCount()
except Exception as e:
    info["cupy_error"] = f"{type(e).__name__}: {e}"[:300]
try:
    if sys.argv[1:] == ["dry"]:  # no GPU to ask about: the version alone, without the slow import
        from importlib.metadata import version
        info["torch"] = version("torch")
    else:
        import torch
        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
except Exception as e:
    info["torch_error"] = f"{type(e).__name__}: {e}"[:300]
print(json.dumps(info))
"""


def probe_environment(dry_run):
    try:
        out = subprocess.run([sys.executable, "-c", PROBE, *(["dry"] if dry_run else [])], capture_output=True,
                             text=True, timeout=120, cwd=REPO)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except Exception as e:
        return {"probe_error": f"{type(e).__name__}: {e}"}


def git_commit(explicit):
    found = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=30).stdout.strip()
        found = commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    if explicit and found and not found.startswith(explicit[:7]):
        return f"{explicit} (git here says {found})"
    return explicit or found or "unknown"


def source_digest():
    """sha256 over the library, the model and the scripts these stages run: names the code
    tested when the checkout has no .git."""
    h = hashlib.sha256()
    files = sorted([*REPO.glob("tensorlite/**/*.py"), *REPO.glob("tensorlite/**/*.cu"), *REPO.glob("gpt/*.py"),
                    REPO / "examples" / "train_shakespeare.py", REPO / "benchmarks" / "bench_train.py"])
    for path in files:
        if path.is_file():
            h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, default=str)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def summarize(results):
    """Lift the headline figures to the top-level keys and judge the targets."""
    stages = results["stages"]
    bench = stages.get("bench") or {}
    train = stages.get("train") or {}
    for key in ("step_ms", "torch_step_ms", "speedup_vs_torch", "peak_mem_gb", "torch_peak_mem_gb"):
        results[key] = bench.get(key)
    results["final_val_loss"] = train.get("final_val_loss")
    results["wall_time_s"] = train.get("wall_time_s")
    lecture = not results["dry_run"] and train.get("max_iters") == LECTURE_ITERS
    results["targets"] = judge(results, lecture)
    return results


def judge(r, lecture_run=True):
    """Each target: {"target", "value", "pass"}; pass is None when there is nothing to judge."""
    def verdict(ok, value):
        return None if value is None else bool(ok)
    val, speed = r.get("final_val_loss"), r.get("speedup_vs_torch")
    wall, mem, tmem = r.get("wall_time_s"), r.get("peak_mem_gb"), r.get("torch_peak_mem_gb")
    val_ok = verdict(val is not None and val <= TARGET_VAL_LOSS, val)
    wall_ok = verdict(wall is not None and wall < TARGET_TRAIN_S, wall)
    if not lecture_run:  # a loss or a time of another run length says nothing about these targets
        val_ok = wall_ok = None
    mem_pair = None if mem is None or tmem is None else [mem, tmem]
    return {
        "val_loss": {"target": f"<= {TARGET_VAL_LOSS}", "value": val, "pass": val_ok},
        "speedup_vs_torch": {"target": f">= {TARGET_SPEEDUP}", "value": speed,
                             "pass": verdict(speed is not None and speed >= TARGET_SPEEDUP, speed)},
        "train_time_s": {"target": f"< {TARGET_TRAIN_S:.0f} for {LECTURE_ITERS} steps with evaluations",
                         "value": wall, "pass": wall_ok},
        "peak_mem_gb": {"target": "<= torch_peak_mem_gb", "value": mem_pair,
                        "pass": verdict(mem_pair is not None and mem <= tmem, mem_pair)},
    }


# =============================== output ==================================================

LOG = {"files": []}  # OUT/acceptance.log, and WORK/acceptance.log: every command's output, for a resume


def say(message=""):
    print(message, flush=True)
    for f in LOG["files"]:
        f.write(message + "\n")
        f.flush()


def fmt(value, spec, none="-"):
    return none if value is None else format(value, spec)


def stage_detail(name, s):
    if not s or s.get("status") == "not run":
        return ""
    if name == "tests":
        if "tests" not in s:
            return "no junit report"
        return (f"{s['passed']} passed, {s['failed']} failed, {s['errors']} errors, {s['skipped']} skipped "
                f"(of {s['tests']} run)")
    if name == "dist":
        if s.get("status") == "skipped":
            return "NCCL not installed: " + INSTALL_NCCL
        smoke = s.get("smoke")
        if not smoke:
            return ""
        how = "NCCL" if smoke.get("gradients") == "nccl" else (smoke.get("gradients") or "no all-reduce")
        ms = f", 4 MiB all-reduce {smoke['allreduce_ms_4MiB']:.2f} ms" if smoke.get("allreduce_calls") else ""
        n = smoke['world_size']
        return (f"{n} rank{'s' if n > 1 else ''} on {smoke['device']}, {how}: {smoke['steps']} steps, "
                f"val loss {smoke['val_loss']:.4f}{ms}")
    if name == "bench":
        if s.get("step_ms") is None:
            return ""
        return (f"tensorlite {s['step_ms']:.1f} ms, torch {fmt(s.get('torch_step_ms'), '.1f')} ms/step "
                f"({fmt(s.get('speedup_vs_torch'), '.2f')}x); peak {fmt(s.get('peak_mem_gb'), '.2f')} vs "
                f"{fmt(s.get('torch_peak_mem_gb'), '.2f')} GB")
    if name == "train":
        if s.get("status") == "complete":
            return (f"{s['max_iters']} steps, val loss {s['final_val_loss']:.4f}, loop "
                    f"{fmt(s.get('wall_time_s'), '.1f')} s, {len(s['segments'])} command(s)")
        if s.get("status") == "unfinished":
            return f"stopped at step {s.get('step')}/{s.get('max_iters')}: continue with --resume-training"
    return ""


def print_report(results, out):
    """Failed stages' tails, then the table: the last lines of the output."""
    for name in STAGES:
        s = results["stages"].get(name) or {}
        if s.get("error_tail"):
            say(f"---- {name}: {s['status']}, the end of {s.get('log', 'its log')} ----")
            say(s["error_tail"])
        if name == "tests" and s.get("failures"):
            say(f"---- tests: {len(s['failures'])} failing (first 15) ----")
            for f in s["failures"][:15]:
                say(f"  {f}")
        if name == "tests" and s.get("skip_reasons") and not results["dry_run"]:
            say(f"---- tests: {s['skipped']} skipped; the most common reasons ----")
            for reason, count in s["skip_reasons"].items():
                say(f"  {count:5d}  {reason[:200]}")
    dry = results["dry_run"]
    say("")
    say(f"GPU acceptance{' DRY RUN (cpu, tiny sizes)' if dry else ''}  commit {results['commit']}  "
        f"device {results['device']}  {results['date']}")
    this = results["commands"][-1]
    n = len(results["commands"])
    more = f" ({results['used_s']:.0f} s over {n} commands)" if n > 1 else ""
    say(f"budget {this['budget_s']:.0f} s, used {this['used_s']:.0f} s{more}; JSON {out / 'acceptance.json'}")
    say(f"{'stage':<7}{'status':<10}{'seconds':>8}  detail")
    for name in STAGES:
        s = results["stages"].get(name) or {"status": "not run"}
        say(f"{name:<7}{s['status']:<10}{fmt(s.get('seconds'), '8.1f', '       -')}  {stage_detail(name, s)}")
    say(f"{'target':<38}{'value':>16}  verdict")
    t = results["targets"]
    rows = [
        (f"final val loss <= {TARGET_VAL_LOSS}", fmt(t["val_loss"]["value"], ".4f"), t["val_loss"]["pass"]),
        (f"step time >= {TARGET_SPEEDUP:.1f}x PyTorch eager", fmt(t["speedup_vs_torch"]["value"], ".2f", "-") +
         ("x" if t["speedup_vs_torch"]["value"] is not None else ""), t["speedup_vs_torch"]["pass"]),
        (f"{LECTURE_ITERS} steps + evals < {TARGET_TRAIN_S:.0f} s", fmt(t["train_time_s"]["value"], ".1f") +
         (" s" if t["train_time_s"]["value"] is not None else ""), t["train_time_s"]["pass"]),
        ("peak memory <= PyTorch's (GB)", "-" if t["peak_mem_gb"]["value"] is None else
         "{:.2f} / {:.2f}".format(*t["peak_mem_gb"]["value"]), t["peak_mem_gb"]["pass"]),
    ]
    for label, value, ok in rows:
        word = "-" if ok is None else ("pass" if ok else "FAIL")
        say(f"{label:<38}{value:>16}  {word}{'*' if dry and ok is not None else ''}")
    if dry:
        say("* dry run: CPU and tiny sizes, not the targets' conditions")
    train = results["stages"].get("train") or {}
    if train.get("must_resume"):
        say(f"continue the training: {train['resume_command']}")


def exit_status(results):
    statuses = [s["status"] for s in results["stages"].values() if s]
    if any(st in ("failed", "error", "timeout") for st in statuses):
        return 1
    if not results["dry_run"] and any(t["pass"] is False for t in results["targets"].values()):
        return 1
    if "unfinished" in statuses:
        return EXIT_RESUME
    return 0


# =============================== main ====================================================

def main(argv=None):
    args = parse_args(argv)
    t0 = time.monotonic()
    deadline = t0 + args.budget_s - RESERVE_S
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    state_path = args.work / "state.json"
    out_log, work_log = args.out / "acceptance.log", args.work / "acceptance.log"
    if args.resume_training:  # the earlier commands' output first, so the last log holds the whole run
        out_log.write_text(work_log.read_text() if work_log.is_file() else "")
    else:
        for path in [*(args.out / name for name in OUTPUTS), work_log, args.work / "train.log"]:
            if path.is_file():
                path.unlink()
    LOG["files"] = [open(path, "a", encoding="utf-8") for path in dict.fromkeys([out_log, work_log])]

    if args.resume_training:
        if not state_path.is_file():
            say(f"error: --resume-training: no earlier run in {args.work} (no state.json); on the device "
                "machine this means a fresh machine: run the whole command again without --resume-training")
            return 2
        results = json.loads(state_path.read_text())
        if results.get("dry_run") != args.dry_run:
            say(f"note: the run in {args.work} was {'a dry run' if results.get('dry_run') else 'a GPU run'}; "
                "continuing it as such")
        args.dry_run = results.get("dry_run", args.dry_run)
        results["commands"].append({"started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:],
                                    "budget_s": args.budget_s})
    else:
        env = probe_environment(args.dry_run)
        device = "cpu (dry run)" if args.dry_run else env.get("gpu") or f"no GPU ({env.get('cupy_error', '?')})"
        results = {
            "schema": SCHEMA, "dry_run": args.dry_run, "device": device,
            "commit": git_commit(args.commit), "source_digest": source_digest(),
            "date": time.strftime("%Y-%m-%d"), "budget_s": args.budget_s, "environment": env,
            "cupy_tf32": {"tests": None, "bench": child_env(args).get("CUPY_TF32"),
                          "train": child_env(args).get("CUPY_TF32")},
            "commands": [{"started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:],
                          "budget_s": args.budget_s}],
            "stages": {name: {"status": "not run"} for name in STAGES},
        }
    ctx = {"dry_run": args.dry_run, "previous": dict(results["stages"])}
    say(f"[gpu_acceptance] {'dry run, ' if args.dry_run else ''}device {results['device']}, commit "
        f"{results['commit']}, budget {args.budget_s:.0f} s, stages {','.join(args.stages)}, out {args.out}")

    def save():
        results["used_s"] = round(time.monotonic() - t0 + sum(
            c.get("used_s", 0) for c in results["commands"][:-1]), 1)
        results["commands"][-1]["used_s"] = round(time.monotonic() - t0, 1)
        summarize(results)
        write_json(args.out / "acceptance.json", results)
        write_json(state_path, results)

    def progress(name, partial):  # what a stage knows before its process ends, kept if the command is killed
        results["stages"][name].update(partial)
        save()
    ctx["progress"] = progress

    runners = {"tests": stage_tests, "dist": stage_dist, "bench": stage_bench, "train": stage_train}
    save()
    for i, name in enumerate(args.stages):
        seconds = allot(deadline - time.monotonic(), name, args.stages[i:], args.shares)
        say(f"[{name}] start, {seconds:.0f} s of the budget")
        results["stages"][name] = {"status": "running", "budget_s": round(seconds, 1)}
        save()
        started = time.monotonic()
        try:
            if seconds < 1:
                res = {"status": "timeout", "error_tail": "no time left in the budget for this stage"}
            else:
                res = runners[name](args, ctx, seconds)
        except KeyboardInterrupt:
            res = {"status": "error", "error_tail": "interrupted (Ctrl-C or SIGTERM)"}
            INTERRUPTED["flag"] = True
        except Exception:
            res = {"status": "error", "error_tail": tail_text(traceback.format_exc().splitlines())}
        res.setdefault("seconds", round(time.monotonic() - started, 1))
        res["budget_s"] = round(seconds, 1)
        results["stages"][name] = res
        save()
        say(f"[{name}] {res['status']} in {res['seconds']:.1f} s  {stage_detail(name, res)}")
        if INTERRUPTED["flag"]:
            say("[gpu_acceptance] interrupted: the remaining stages are not run")
            break
    save()
    print_report(results, args.out)
    for f in LOG["files"]:
        f.close()
    return 130 if INTERRUPTED["flag"] else exit_status(results)


def _sigterm(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _sigterm)
    sys.exit(main())
