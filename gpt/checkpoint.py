"""A training run's folder: its checkpoint, its metrics log, its lock, and what resuming it may change.

    OUT/ckpt.pkl        the weights, the optimizer's moments, the step, every RNG state, both
                        configs, the vocabulary and which text it trained on (path, sha256)
    OUT/metrics.jsonl   one JSON line per evaluation
    OUT/train.lock      held (flock) by the run training in OUT, removed when it ends

Checkpoints are written atomically (a temporary file, flushed, fsynced and renamed), so a run
killed at any moment leaves the previous checkpoint loadable. They are pickles: load only
files you trust, as with torch.load.
"""
import json
import os
import pickle
import tempfile
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

import tensorlite as tl

from .config import GPTConfig, TrainConfig
from .data import CharTokenizer
from .model import GPT

try:
    import fcntl
except ImportError:  # not POSIX (Windows): runs are not locked
    fcntl = None

CHECKPOINT = "ckpt.pkl"
METRICS = "metrics.jsonl"
LOCK = "train.lock"
FORMAT = "tensorlite-gpt/1"

# What a resumed run may set differently from the checkpoint: how long it runs, how often it
# evaluates and saves, where the cosine schedule ends, what it prints, and whether cuda's
# float32 matmuls may use TF32 (a precision of the hardware, as moving to another GPU is).
# Everything else (the model, the batch, the optimizer, the seed) would make it another run.
CHANGEABLE_ON_RESUME = ("max_iters", "eval_interval", "eval_iters", "checkpoint_interval",
                        "lr_decay_iters", "sample_chars", "debug_nan", "tf32")


class TrainingError(RuntimeError):
    """Training cannot start or go on: a non-finite loss, a checkpoint that does not fit, an
    output folder in use or holding another run."""


# ================================ saving and loading ========================================

def save_checkpoint(path, state):
    """Pickle `state` to path atomically: write a temporary file beside it, flush, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path):
    """Read a checkpoint written by save_checkpoint (a file, or the folder holding ckpt.pkl);
    a clear error if it is missing or damaged."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    try:
        with open(path, "rb") as f:
            state = pickle.load(f)
    except Exception as e:  # a damaged pickle can raise almost anything
        raise TrainingError(f"checkpoint {str(path)!r} is truncated or corrupt "
                            f"({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TrainingError(f"{str(path)!r} is not a tensorlite-gpt checkpoint (format {FORMAT})")
    return state


def rng_snapshot(batch_rng):
    """{"batches", "tensorlite"}: the batch generator's and tensorlite's (dropout's) states now.

    The training loop takes one before each step draws its batch and dropout masks, and saves
    that one with the step's state once the step's loss and gradients proved finite."""
    return {"batches": batch_rng.bit_generator.state, "tensorlite": tl.backend.get_rng_state()}


def training_state(step, best_val_loss, model, optimizer, batch_rng, model_config, train_config, vocab, data,
                   ranks=None, rng=None):
    """What a checkpoint holds: everything an exact resume needs, and what the run trained on.

    rng: an rng_snapshot taken before step `step` drew anything (default: batch_rng's and
    tensorlite's states now). ranks: for a data-parallel run (gpt/distributed.py), every
    rank's snapshot in rank order; saved as rng["ranks"] with "world_size" beside it.
    """
    state = {
        "format": FORMAT, "step": step, "best_val_loss": best_val_loss,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "model_config": asdict(model_config), "train_config": asdict(train_config),
        "vocab": list(vocab), "data": data,
        "rng": dict(rng) if rng is not None else rng_snapshot(batch_rng),
    }
    if ranks is not None:
        state["world_size"] = len(ranks)
        state["rng"]["ranks"] = list(ranks)
    return state


def restore_training_state(state, model, optimizer, batch_rng, rank=0):
    """Put a checkpoint's weights, optimizer moments and RNG states (rank's, for a data-parallel
    run) back; (step, best_val_loss)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    rng = state["rng"]["ranks"][rank] if "ranks" in state["rng"] else state["rng"]
    batch_rng.bit_generator.state = rng["batches"]
    tl.backend.set_rng_state(rng["tensorlite"])
    return state["step"], state["best_val_loss"]


def check_world_size(state, world_size):
    """Refuse to resume a checkpoint on another number of data-parallel processes than it was
    trained on: each process's batch stream is saved, and another count would be another run."""
    saved = state.get("world_size", 1)
    if saved != world_size:
        def processes(n):
            return "one process" if n == 1 else f"{n} processes (mpirun -n {n})"
        raise TrainingError(f"cannot resume on {processes(world_size)}: the checkpoint was trained on "
                            f"{processes(saved)}, and each process's batches continue from where it stopped; "
                            f"resume it on {processes(saved)}, or start a new run in another --out")


def model_from_checkpoint(state, device="cpu"):
    """(model, tokenizer) rebuilt from a checkpoint dict, on device."""
    config = GPTConfig(**state["model_config"])
    tl.manual_seed(0)
    model = GPT(config)
    model.load_state_dict(state["model"])
    return model.to(device=device), CharTokenizer.from_chars(state["vocab"])


def first_nonfinite(state):
    """The name of the first weight or optimizer moment in a checkpoint dict that holds a NaN
    or an Inf, else None.

    The training loop saves a state only after its own loss and gradients proved finite; this
    is the last guard, for a value the loss does not read (an optimizer moment, say)."""
    for name, value in state["model"].items():
        if not np.isfinite(value).all():
            return name
    for i, moments in state["optimizer"]["state"].items():
        for key, value in moments.items():
            if not np.isfinite(value).all():
                return f"the optimizer's {key} of parameter {i}"
    return None


# ================================ resuming ==================================================

def _refuse_change(field, saved, wanted):
    changeable = ", ".join(CHANGEABLE_ON_RESUME)
    return TrainingError(f"cannot resume with {field} = {wanted!r}: the checkpoint was trained with "
                         f"{field} = {saved!r}, and a resumed run may change only {changeable}; "
                         f"to change {field}, start a new run in another --out")


def resume_settings(state, model_overrides=None, train_overrides=None):
    """(GPTConfig, TrainConfig) for resuming: the checkpoint's, with the given settings applied.

    Only the fields in CHANGEABLE_ON_RESUME may differ from the checkpoint; any other given
    with another value is refused, naming it. Settings given with the checkpoint's value pass.
    """
    saved_model, saved_train = state["model_config"], state["train_config"]
    model_overrides, train_overrides = model_overrides or {}, train_overrides or {}
    for field, value in model_overrides.items():
        if saved_model.get(field) != value:
            raise _refuse_change(field, saved_model.get(field), value)
    for field, value in train_overrides.items():
        if field not in CHANGEABLE_ON_RESUME and saved_train.get(field) != value:
            raise _refuse_change(field, saved_train.get(field), value)
    return (GPTConfig(**{**saved_model, **model_overrides}),
            TrainConfig(**{**saved_train, **train_overrides}))


def check_resume(state, model_config, train_config, log=print):
    """The TrainConfig a resumed run uses; refuses settings that cannot change midway.

    With lr_decay on and lr_decay_iters 0 ("end at max_iters"), a new max_iters would bend the
    cosine the run has been following, and the learning rate would jump: the schedule keeps
    ending where it did (the checkpoint's max_iters), and the log says so.
    """
    saved_model, saved_train = state["model_config"], TrainConfig(**state["train_config"])
    if train_config.max_iters < state["step"]:
        raise TrainingError(f"cannot resume with max_iters = {train_config.max_iters}: the checkpoint is "
                            f"already at step {state['step']}")
    for f in fields(GPTConfig):
        if saved_model.get(f.name) != getattr(model_config, f.name):
            raise _refuse_change(f.name, saved_model.get(f.name), getattr(model_config, f.name))
    for f in fields(TrainConfig):
        saved, wanted = getattr(saved_train, f.name), getattr(train_config, f.name)
        if f.name not in CHANGEABLE_ON_RESUME and saved != wanted:
            raise _refuse_change(f.name, saved, wanted)
    if (train_config.lr_decay and train_config.lr_decay_iters == 0 and saved_train.lr_decay_iters == 0
            and train_config.max_iters != saved_train.max_iters):
        train_config = TrainConfig(**{**asdict(train_config), "lr_decay_iters": saved_train.max_iters})
        log(f"the learning-rate schedule still ends at step {saved_train.max_iters}, the checkpoint's "
            "max_iters (--lr-decay-iters moves it)")
    return train_config


def check_same_text(state, digest, data_path=None):
    """Refuse to resume on another text than the checkpoint's (by sha256)."""
    saved = state.get("data") or {}
    if saved.get("sha256") and saved["sha256"] != digest:
        what = f"data file {str(data_path)!r} is not the text" if data_path is not None else "the text is not the one"
        origin = f" from {saved['path']!r}" if saved.get("path") else ""
        raise TrainingError(f"{what} this checkpoint was trained on (its sha256 is "
                            f"{digest[:12]}..., the checkpoint's data{origin} had {saved['sha256'][:12]}...): "
                            f"the file changed since, or it is another one; resume with the original text")


# ================================ the metrics log ===========================================

def read_metrics(path, warn=print, require=()):
    """The lines of a metrics.jsonl as dicts, in order; [] if there is no such file.

    A line that is not a JSON object with an integer step (true and false are not integers)
    and a number in each field of `require` (a kill midway through writing it, bytes appended
    by something else) is dropped with a warning naming the file and the line. Resuming
    (truncate_metrics) and examples/plot_loss.py read the log through this one reader.
    """
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for n, line in enumerate(path.read_bytes().decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not (isinstance(row, dict) and _is_int(row.get("step"))):
                raise ValueError("not an object with an integer step")
            missing = [k for k in require if not _is_number(row.get(k))]
            if missing:
                raise ValueError(f"no number in {', '.join(missing)}")
        except ValueError as e:
            shown = line if len(line) <= 40 else line[:37] + "..."
            warn(f"warning: {path}:{n}: dropped a damaged line ({shown!r}: {e})")
            continue
        rows.append(row)
    return rows


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value):
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)))


def truncate_metrics(path, step, warn=print):
    """Keep the metrics lines of evaluations up to `step` (those the checkpoint saw); damaged
    lines are dropped with a warning (see read_metrics)."""
    path = Path(path)
    if not path.exists():
        return
    keep = [json.dumps(row) for row in read_metrics(path, warn) if row["step"] <= step]
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, path)
    except BaseException:  # the log is untouched; leave no half-written copy beside it
        tmp.unlink(missing_ok=True)
        raise


# ================================ one run per folder ========================================

class RunLock:
    """Holds OUT/train.lock with flock for as long as a run trains in OUT.

    The kernel releases a flock when its process dies, however it dies, so a killed run never
    leaves the folder locked; the file (holding the pid, for the message) is removed on exit.
    A second run gets a TrainingError naming the folder and the holder's pid.
    """

    def __init__(self, directory):
        self.directory = Path(directory)
        self.path = self.directory / LOCK
        self.fd = None

    def __enter__(self):
        if fcntl is None:
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise TrainingError(f"{self.directory} is in use by another training run (pid {holder}); "
                                    "wait for it to finish or stop it, or pass another --out") from None
            try:  # the holder before us may have removed the file between our open and lock
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            if current is not None and os.path.samestat(os.fstat(fd), current):
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            try:
                os.unlink(self.path)  # while still holding the lock: see __enter__'s stat check
            except FileNotFoundError:
                pass
            os.close(self.fd)
            self.fd = None
