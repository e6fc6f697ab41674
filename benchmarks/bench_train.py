"""Training-step speed of tensorlite's GPT against the same model in PyTorch eager.

    python benchmarks/bench_train.py [--preset cpu|lecture] [--device cpu|cuda] [--steps 20]
        [--warmup 3] [--block 5] [--block-warmup 2] [--json] [--no-torch] [--gen-tokens 200]
        [--threads N] [--profile] [--kernels reference|fast]

One step = forward, backward, AdamW step, zero_grad, on one fixed random batch. After
--warmup steps each, the two sides alternate in blocks (a pause, --block-warmup untimed
steps, --block timed steps) until each has --steps timed steps, so both see the same machine
state in the steady state of a training loop; the table reports medians. Peak memory is
measured in a fresh child process per side (see measure_memory). Both sides use the preset's
model config and batch size, its dropout (or --dropout), and AdamW(lr=1e-3, weight_decay=0.01).
The same blocks then time the step's matrix products alone, on each side (matmul_floor_ms): what
is left of a step, the "rest" column, is everything that is not a matrix product.
"""
import argparse
import dataclasses
import inspect
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)                                 # tensorlite and gpt
sys.path.insert(0, os.path.join(REPO, "benchmarks"))     # torch_reference


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="tensorlite vs PyTorch eager: GPT training-step speed")
    p.add_argument("--preset", choices=["cpu", "lecture"], default="cpu")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--steps", type=int, default=20, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per side first")
    p.add_argument("--dropout", type=float, default=None, help="override the preset's dropout (both sides)")
    p.add_argument("--gen-tokens", type=int, default=200, help="tokens to generate for gen tok/s (0: skip)")
    p.add_argument("--block", type=int, default=5, help="timed steps per side before switching sides")
    p.add_argument("--block-warmup", type=int, default=2,
                   help="untimed steps at the start of each block, after the pause")
    p.add_argument("--pause", type=float, default=None,
                   help="seconds of sleep before each block, so that the other side's BLAS threads "
                        "stop spinning first (default 0.2 on cpu, 0 on cuda; see README)")
    p.add_argument("--threads", type=int, default=None, help="BLAS/OpenMP threads for both sides")
    p.add_argument("--no-torch", action="store_true", help="time tensorlite only")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--profile", action="store_true", help="also print tl.profile() of one tensorlite step")
    p.add_argument("--kernels", choices=["reference", "fast"], default=None,
                   help="tensorlite's ops: the fast kernels or the reference ops (default: "
                        "TENSORLITE_KERNELS, else fast)")
    p.add_argument("--_memory", choices=["tl", "torch"], help=argparse.SUPPRESS)  # child-process mode
    args = p.parse_args(argv)
    if args.steps < 1 or args.block < 1 or args.block_warmup < 0 or args.warmup < 0:
        p.error("--steps and --block must be at least 1, --warmup and --block-warmup at least 0")
    return args


if __name__ == "__main__":
    # Thread counts and TF32 are read when numpy / cupy / torch load, so set them before importing.
    ARGS = parse_args()
    if ARGS.threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(ARGS.threads)
    if ARGS.device == "cuda":
        os.environ.setdefault("CUPY_TF32", "1")

import numpy as np  # noqa: E402  (imported after the environment is set)

import tensorlite as tl  # noqa: E402
from gpt import GPT, preset  # noqa: E402

# ---------------------------------------------------------------------------------------------
# The two sides. Each make_* returns (step, sync, model): step() runs one training step and
# returns the loss tensor; sync() waits for the GPU (a no-op on the CPU).

def load_config(args):
    """The preset's model config as a dict (dropout overridden if asked) and its batch size."""
    model_cfg, train_cfg = preset(args.preset)
    cfg = dataclasses.asdict(model_cfg)
    if args.dropout is not None:
        cfg["dropout"] = args.dropout
    return cfg, train_cfg.batch_size


def fixed_batch(cfg, batch_size):
    rng = np.random.default_rng(0)
    shape = (batch_size, cfg["block_size"])
    return rng.integers(0, cfg["vocab_size"], shape), rng.integers(0, cfg["vocab_size"], shape)  # int64


def training_step(model, opt, x, y):
    """One step, the same code for both sides: tensorlite's model and optimizer API is PyTorch's."""
    def step():
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss
    return step


def make_tl(cfg, x, y, device):
    from gpt import GPTConfig
    tl.manual_seed(0)
    model = GPT(GPTConfig(**cfg)).to(device=device)
    opt = tl.optim.AdamW(model.parameters(), lr=1e-3)  # after .to(): AdamW packs the parameters
    x, y = tl.tensor(x, device=device), tl.tensor(y, device=device)

    def sync():
        if device == "cuda":
            import cupy
            cupy.cuda.get_current_stream().synchronize()
    return training_step(model, opt, x, y), sync, model


def make_torch(cfg, x, y, device):
    import torch
    from torch_reference import TorchGPT
    assert cfg.get("activation", "gelu") == "gelu", "torch_reference.TorchGPT has GELU only"
    torch.manual_seed(0)
    model = TorchGPT(cfg["vocab_size"], cfg["block_size"], cfg["n_layer"], cfg["n_head"], cfg["n_embd"],
                     dropout=cfg["dropout"], bias=cfg["bias"], tie_weights=cfg["tie_weights"]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()
    return training_step(model, opt, x, y), sync, model


def timed(step, sync):
    """Seconds for one step, GPU work included."""
    sync()
    t0 = time.perf_counter()
    step()
    sync()
    return time.perf_counter() - t0


def generation_tok_s(side, model, sync, n_tokens, device, **kwargs):
    """Tokens/s of model.generate from a 1-token prompt, batch 1 (after a short warm-up)."""
    if side == "tl":
        prompt = np.zeros((1, 1), dtype=np.int64)
    else:
        import torch
        prompt = torch.zeros((1, 1), dtype=torch.long, device=device)
    model.eval()
    model.generate(prompt, 5, **kwargs)
    sync()
    t0 = time.perf_counter()
    model.generate(prompt, n_tokens, **kwargs)
    sync()
    model.train()
    return n_tokens / (time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# Peak memory: each side in a fresh child process, so neither sees the other's allocations.

def rss_bytes(field):
    """VmRSS (now) or VmHWM (peak) of this process, from /proc/self/status (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise OSError(f"{field} not in /proc/self/status")


def reset_peak_rss():
    """Make VmHWM equal the current RSS (Linux >= 4.0). getrusage's ru_maxrss cannot be reset,
    and in a child started by subprocess (vfork + exec) it starts at the parent's peak."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure_memory(args, side):
    """Run in the child: peak memory of two training steps (the first allocates AdamW's state),
    above what the process holds after imports, model, optimizer and batch are made.

    cpu:  peak RSS (VmHWM, reset after setup) minus RSS after setup, the same method for both
          sides; tensorlite also gets the tracemalloc peak of one more step (NumPy reports its
          allocations to tracemalloc). Linux only: it reads /proc/self.
    cuda: torch.cuda.max_memory_allocated() minus allocated after setup; for tensorlite the
          CuPy pool's total_bytes() (blocks held, an upper bound) minus used after setup.
    """
    cfg, batch_size = load_config(args)
    x, y = fixed_batch(cfg, batch_size)
    step, sync, _ = (make_tl if side == "tl" else make_torch)(cfg, x, y, args.device)
    result = {}
    if args.device == "cuda" and side == "tl":
        import cupy
        pool = cupy.get_default_memory_pool()
        pool.free_all_blocks()
        base = pool.used_bytes()
        for _ in range(2):
            step()
        sync()
        result["peak_mb"] = (pool.total_bytes() - base) / 2**20
    elif args.device == "cuda":
        import torch
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(2):
            step()
        sync()
        result["peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        reset_peak_rss()
        base = rss_bytes("VmRSS")
        for _ in range(2):
            step()
        result["peak_mb"] = (rss_bytes("VmHWM") - base) / 2**20
        if side == "tl":
            import tracemalloc
            tracemalloc.start()
            step()
            result["traced_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
    return result


def memory_in_child(args, side):
    cmd = [sys.executable, os.path.abspath(__file__), "--_memory", side, "--preset", args.preset,
           "--device", args.device]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.dropout is not None:
        cmd += ["--dropout", str(args.dropout)]
    cmd += ["--kernels", tl.kernels.mode()]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        print(f"memory measurement for {side} failed:\n{out.stderr}", file=sys.stderr)
        return {}
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# The machine and the model's arithmetic.

def matmul_peak_gflops(device, repeats=10):
    """Best GFLOP/s of an n x n @ n x n float32 matmul over `repeats` runs: np.matmul (cpu) or
    cupy (cuda, TF32 when CUPY_TF32=1). The best, not the median: it estimates a peak, and on a
    shared machine the median drops whenever another process takes a core."""
    if device == "cuda":
        import cupy as xp
        n, sync = 8192, xp.cuda.get_current_stream().synchronize
    else:
        xp, n, sync = np, 2048, (lambda: None)
    a = xp.asarray(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32))
    b = xp.asarray(np.random.default_rng(1).standard_normal((n, n), dtype=np.float32))
    a @ b  # warm-up: thread pools, GPU kernels
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        a @ b
        sync()
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times) / 1e9, n


def flops_per_step(cfg, batch_size):
    """Training FLOPs of one step: 3x the forward (backward costs two forwards), matmuls only.

    forward per token = 2 * N_matmul + 4 * n_layer * T * C
      N_matmul = n_layer * 12 C^2 + V C   (c_attn 3C^2, attn.c_proj C^2, c_fc 4C^2, mlp.c_proj 4C^2,
                                          lm_head VC; biases, layer norms, softmax not counted)
      attention: q @ k^T and att @ v, 2 T C each per token and layer, over the full T x T
                 matrix (the masked half is computed too, so it is not halved)
    per step   = B * T * 3 * forward per token  =  B T (6 N_matmul + 12 n_layer T C)
    """
    T, C, L, V = cfg["block_size"], cfg["n_embd"], cfg["n_layer"], cfg["vocab_size"]
    n_matmul = L * 12 * C * C + V * C
    return batch_size * T * (6 * n_matmul + 12 * L * T * C)


def step_matmuls(cfg, batch_size):
    """The matrix products of one training step as (batch, m, k, n): batch products of an
    (m, k) and a (k, n) matrix. Their FLOPs, 2 * batch * m * k * n summed, are flops_per_step.

    Each Linear (N = B*T rows, in -> out) is one forward product and two backward ones
    (dx = gy W, dW = gy^T x); attention is q k^T and att v forward and four products backward
    (d att, dv, dq, dk), over B * n_head heads of (T, hs).
    """
    B, T, C = batch_size, cfg["block_size"], cfg["n_embd"]
    L, nh, V = cfg["n_layer"], cfg["n_head"], cfg["vocab_size"]
    N, hs, bh = B * T, C // nh, B * nh
    linears = [(C, 3 * C), (C, C), (C, 4 * C), (4 * C, C)] * L + [(C, V)]
    shapes = []
    for i, o in linears:
        shapes += [(1, N, i, o), (1, N, o, i), (1, o, N, i)]
    for _ in range(L):
        shapes += [(bh, T, hs, T), (bh, T, T, hs)]                                    # forward
        shapes += [(bh, T, hs, T), (bh, T, T, hs), (bh, T, T, hs), (bh, T, T, hs)]    # backward
    return shapes


def matmul_floor_ms(sides, shapes, device, pause, passes_per_side, block):
    """Median ms per side to run just the step's matrix products, back to back, on contiguous
    random float32 operands: a floor under that side's step, since everything else costs extra.
    The sides alternate in blocks of `block` passes after a pause and an untimed pass, like the
    steps, until each has `passes_per_side`. "tl" multiplies NumPy (or CuPy) arrays, the
    arrays tensorlite's ops multiply; "torch" multiplies torch tensors."""
    rng = np.random.default_rng(0)
    runs = {}
    for name in sides:
        if name == "tl":
            xp = np if device == "cpu" else __import__("cupy")
            sync = (lambda: None) if device == "cpu" else xp.cuda.get_current_stream().synchronize
            to_side = xp.asarray
        else:
            import torch
            sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
            to_side = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
        operands = {}  # one pair per distinct shape: the layers repeat
        for b, m, k, n in set(shapes):
            lead = (b,) if b > 1 else ()
            operands[b, m, k, n] = (to_side(rng.standard_normal((*lead, m, k), dtype=np.float32)),
                                    to_side(rng.standard_normal((*lead, k, n), dtype=np.float32)))
        pairs = [operands[shape] for shape in shapes]

        def one_pass(pairs=pairs):
            for a, b in pairs:
                a @ b
        runs[name] = (one_pass, sync)
    times = {name: [] for name in runs}
    while len(times["tl"]) < passes_per_side:
        for name, (one_pass, sync) in runs.items():
            time.sleep(pause)  # as in the step blocks: the other side's threads stop spinning
            timed(one_pass, sync)
            n = min(block, passes_per_side - len(times[name]))
            times[name] += [timed(one_pass, sync) for _ in range(n)]
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}


def cpu_seconds():
    """(CPU seconds all processes used, CPU seconds that passed on all cores, CPU seconds this
    process used), from /proc/stat (Linux); None elsewhere. Two snapshots give other_cpu_percent."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    idle = ticks[3] + ticks[4]  # idle + iowait
    own = os.times()
    return (sum(ticks) - idle) / hz, sum(ticks) / hz, own.user + own.system


def other_cpu_percent(before, after):
    """Share of the machine's CPU time that other processes took between two cpu_seconds():
    well above 0 means something else competed with the benchmark and its times are suspect."""
    if before is None or after is None:
        return None
    busy, total, own = (a - b for a, b in zip(after, before, strict=True))
    return 100.0 * max(busy - own, 0.0) / max(total, 1e-9)


def git_commit():
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=REPO, check=False).returncode != 0
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def blas_info():
    """NumPy's BLAS, e.g. "scipy-openblas 0.3.31 (2 threads)"."""
    try:
        from threadpoolctl import threadpool_info
        libs = [f"{i['internal_api']} {i['version']} ({i['num_threads']} threads)"
                for i in threadpool_info() if i["user_api"] == "blas"]
        return "; ".join(libs) or "unknown"
    except ImportError:
        pass
    try:  # NumPy >= 1.25 describes its build as a dict; this says which BLAS, not how many threads
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas['version']}"
    except (KeyError, TypeError, ValueError):
        return "unknown"


def torch_or_none(args):
    if args.no_torch:
        return None
    try:
        import torch
    except ImportError:
        return None
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return torch


# ---------------------------------------------------------------------------------------------

def main(args):
    if args.kernels:
        tl.use_kernels(args.kernels)
    if args._memory:
        if args._memory == "torch":
            torch_or_none(args)  # thread count and TF32, as in the parent
        print(json.dumps(measure_memory(args, args._memory)))
        return
    if args.pause is None:
        args.pause = 0.2 if args.device == "cpu" else 0.0
    torch = torch_or_none(args)
    if torch is None:
        reason = "--no-torch" if args.no_torch else "PyTorch is not installed"
        print(f"[bench_train] {reason}: timing the tensorlite side only", file=sys.stderr)

    cfg, batch_size = load_config(args)
    x, y = fixed_batch(cfg, batch_size)
    peak_gflops, peak_n = matmul_peak_gflops(args.device)
    flops = flops_per_step(cfg, batch_size)
    tokens = batch_size * cfg["block_size"]

    sides = {"tl": make_tl(cfg, x, y, args.device)}
    if torch is not None:
        sides["torch"] = make_torch(cfg, x, y, args.device)
    for _ in range(args.warmup):
        for step, sync, _ in sides.values():
            timed(step, sync)
    times = {name: [] for name in sides}
    cpu_before = cpu_seconds()
    while len(times["tl"]) < args.steps:  # interleaved blocks: tl x block, torch x block, ...
        for name, (step, sync, _) in sides.items():
            time.sleep(args.pause)        # the other side's threads stop spinning
            for _ in range(args.block_warmup):
                timed(step, sync)         # caches, clocks and this side's threads warm again
            n = min(args.block, args.steps - len(times[name]))
            times[name] += [timed(step, sync) for _ in range(n)]
    others = other_cpu_percent(cpu_before, cpu_seconds())
    if others is not None and others > 5:
        print(f"[bench_train] warning: other processes used {others:.0f}% of the CPUs during the timed "
              "steps; the times are inflated", file=sys.stderr)
    losses = {name: float(step().item()) for name, (step, sync, _) in sides.items()}
    peak_gflops = max(peak_gflops, matmul_peak_gflops(args.device)[0])  # again: a busy moment lowers it
    shapes = step_matmuls(cfg, batch_size)
    floor = matmul_floor_ms(sides, shapes, args.device, args.pause, args.steps, args.block)

    res = {
        "device": args.device, "commit": git_commit(), "preset": args.preset,
        "date": time.strftime("%Y-%m-%d"), "batch_size": batch_size, "kernels": tl.kernels.mode(),
        "others_cpu_pct": others, "pause_s": args.pause,
        "config": {k: cfg[k] for k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "dropout", "bias")},
        "steps": args.steps, "warmup": args.warmup, "block": args.block, "block_warmup": args.block_warmup,
        "threads": torch.get_num_threads() if torch is not None else args.threads or os.cpu_count(),
        "blas": blas_info() if args.device == "cpu" else None,
        "numpy_version": np.__version__, "torch_version": torch.__version__ if torch is not None else None,
        "peak_gflops": peak_gflops, "peak_matmul_n": peak_n, "flops_per_step": flops,
        "step_matmuls": len(shapes),
        "tl_params": sides["tl"][2].num_parameters(),
        "torch_params": sum(p.numel() for p in sides["torch"][2].parameters()) if torch is not None else None,
    }
    for name in ("tl", "torch"):
        ms = 1e3 * float(np.median(times[name])) if name in times else None
        res[f"{name}_ms"] = ms
        res[f"{name}_tokens_s"] = tokens / (ms / 1e3) if ms else None
        res[f"{name}_mfu"] = flops / (ms / 1e3) / (peak_gflops * 1e9) if ms else None
        res[f"{name}_loss"] = losses.get(name)
        res[f"{name}_matmul_ms"] = floor.get(name)  # the step's matrix products alone
    res["mfu"] = res["tl_mfu"]
    res["speedup_vs_torch"] = res["torch_ms"] / res["tl_ms"] if res["torch_ms"] else None

    # Generation: torch_reference recomputes the whole context for each token, so tensorlite is
    # timed the same way (use_cache=False) for the ratio, and with its KV cache as an extra.
    res["tl_gen_tok_s"] = res["torch_gen_tok_s"] = res["tl_gen_cached_tok_s"] = None
    if args.gen_tokens > 0:
        step, sync, model = sides["tl"]
        has_cache = "use_cache" in inspect.signature(model.generate).parameters
        res["tl_gen_tok_s"] = generation_tok_s("tl", model, sync, args.gen_tokens, args.device,
                                               **({"use_cache": False} if has_cache else {}))
        if has_cache:
            res["tl_gen_cached_tok_s"] = generation_tok_s("tl", model, sync, args.gen_tokens, args.device)
        if "torch" in sides:
            step, sync, model = sides["torch"]
            res["torch_gen_tok_s"] = generation_tok_s("torch", model, sync, args.gen_tokens, args.device)
    for name in ("tl", "torch"):
        mem = memory_in_child(args, name) if name in sides else {}
        res[f"{name}_peak_mb"] = mem.get("peak_mb")
        if name == "tl":
            res["tl_traced_peak_mb"] = mem.get("traced_peak_mb")

    if args.json:
        print(json.dumps(res))
    else:
        print_table(res, args)
    if args.profile:
        step = sides["tl"][0]
        with tl.profile() as prof:
            step()
        print(f"\ntl.profile() of one tensorlite training step ({args.preset} preset, {args.device}):")
        print(prof.table())


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def print_table(res, args):
    c = res["config"]
    print(f"bench_train {res['date']}  commit {res['commit']}  preset {res['preset']}: B={res['batch_size']} "
          f"T={c['block_size']} n_layer={c['n_layer']} n_head={c['n_head']} n_embd={c['n_embd']} "
          f"V={c['vocab_size']} dropout={c['dropout']}")
    print(f"device {res['device']}  kernels {res['kernels']}  threads {res['threads']}  BLAS {res['blas']}  "
          f"numpy {res['numpy_version']}  torch {res['torch_version']}  "
          f"other processes' CPU use during timing {fmt(res['others_cpu_pct'], '.0f')}%")
    print(f"matmul peak {res['peak_gflops']:.0f} GFLOP/s ({res['peak_matmul_n']}^3 float32)  "
          f"model {res['flops_per_step'] / 1e9:.2f} GFLOP/step  params tl {res['tl_params']:,} "
          f"torch {fmt(res['torch_params'], ',')}  "
          f"median of {res['steps']} steps after {res['warmup']} warm-up, interleaved in blocks of "
          f"{res['block']} ({res['pause_s']} s pause and {res['block_warmup']} untimed steps before each)")
    print(f"{'side':<12}{'ms/step':>10}{'tokens/s':>11}{'vs torch':>10}{'MFU':>8}{'matmuls':>9}{'rest':>8}"
          f"{'peak MB':>10}{'gen tok/s':>11}{'loss':>8}")
    for name, label in (("tl", "tensorlite"), ("torch", "torch")):
        if res[f"{name}_ms"] is None:
            print(f"{label:<12}{'(not run)':>10}")
            continue
        ratio = res["speedup_vs_torch"] if name == "tl" else 1.0 if res["torch_ms"] else None
        matmuls = res[f"{name}_matmul_ms"]
        rest = res[f"{name}_ms"] - matmuls if matmuls is not None else None
        print(f"{label:<12}{res[f'{name}_ms']:>10.2f}{res[f'{name}_tokens_s']:>11,.0f}{fmt(ratio, '.2f'):>10}"
              f"{res[f'{name}_mfu']:>8.1%}{fmt(matmuls, '.2f'):>9}{fmt(rest, '.2f'):>8}"
              f"{fmt(res[f'{name}_peak_mb'], '.1f'):>10}"
              f"{fmt(res[f'{name}_gen_tok_s'], '.1f'):>11}{res[f'{name}_loss']:>8.3f}")
    print("vs torch = torch ms / side ms (>1: faster than torch). MFU = model FLOPs/step / time / matmul peak.")
    print(f"matmuls = ms for the step's {res['step_matmuls']} matrix products alone, on contiguous operands: "
          "a floor under ms/step. rest = ms/step - matmuls: element-wise ops, reductions, copies, "
          "the engine, AdamW.")
    mem = "peak RSS (VmHWM) above RSS after setup, fresh process per side" if res["device"] == "cpu" else \
        "torch: max_memory_allocated; tensorlite: CuPy pool total_bytes (upper bound), above setup"
    traced = f"; tensorlite tracemalloc peak {res['tl_traced_peak_mb']:.1f} MB" if res.get("tl_traced_peak_mb") else ""
    print(f"peak MB = {mem}{traced}.")
    cached = f"; tensorlite with its KV cache: {res['tl_gen_cached_tok_s']:.1f} tok/s" \
        if res["tl_gen_cached_tok_s"] else ""
    print(f"gen tok/s = generate({args.gen_tokens}) from 1 token, batch 1, whole context recomputed "
          f"per token{cached}.")


if __name__ == "__main__":
    main(ARGS)
