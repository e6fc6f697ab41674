"""The training loop: batches, AdamW, evaluation, metrics, checkpoints and sampling.

    model_cfg, train_cfg = gpt.preset("cpu")
    result = gpt.train.run(model_cfg, train_cfg, text, out_dir="out/cpu", device="cpu")

Each evaluation prints the lecture's line, `step {i}: train loss {x:.4f}, val loss {y:.4f}`,
appends the same numbers to OUT/metrics.jsonl and checkpoints OUT/ckpt.pkl (gpt/checkpoint.py:
atomic, so a killed run always leaves the last good checkpoint loadable). Resuming from it
continues bit-identically on the CPU: the checkpoint holds the weights, the optimizer's
moments, the step and every RNG state. A state is saved only once the loss and gradients
computed from it proved finite (its step's, computed before the update; the last step's too),
so the last good checkpoint always resumes; and one run at a time trains in a folder.
"""
import contextlib
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

import tensorlite as tl
from tensorlite import backend, kernels

from . import distributed
from .checkpoint import (CHECKPOINT, FORMAT, LOCK, METRICS, RunLock, TrainingError,  # noqa: F401 (gpt.train.*)
                         check_resume, check_same_text, first_nonfinite, load_checkpoint,
                         check_world_size, model_from_checkpoint, restore_training_state, resume_settings,
                         rng_snapshot, save_checkpoint, training_state, truncate_metrics)
from .config import memory_estimate
from .data import CharTokenizer, get_batch, text_sha256, train_val_split
from .model import GPT


# ================================== evaluation ===========================================

@tl.no_grad()
def estimate_loss(model, splits, eval_iters, batch_size, block_size, seed):
    """Mean loss over eval_iters random batches of each split, in eval mode, under no_grad.

    The batches come from their own generator, seeded per call, so evaluating never moves
    the training batches' generator and resumed runs stay identical.
    """
    was_training = model.training
    model.eval()
    rng = np.random.default_rng(seed)
    out = {}
    for name, data in splits.items():
        losses = np.empty(eval_iters)
        for k in range(eval_iters):
            x, y = get_batch(data, batch_size, block_size, rng)
            losses[k] = model(x, y)[1].item()
        out[name] = float(losses.mean())
    model.train(was_training)
    return out


# ==================================== the loop ===========================================

class _StopRequest:
    """Turns Ctrl-C (SIGINT) and SIGTERM into a flag, read once a step's loss and gradients
    proved finite, so the run stops on that step's state, known good, and saves it before the
    update. A second Ctrl-C interrupts at once (its message: see stopped_at_once in _run)."""

    def __init__(self):
        self.requested = None

    def __enter__(self):
        self.previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave the handlers alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _progress_bar(total, initial, enabled):
    """A tqdm bar on stderr, only where stderr is a terminal: in a log file or a pipe (tail,
    mpirun, CI) its redraws would bury the step lines."""
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, leave=False, file=sys.stderr)


def run(model_config, train_config, text, out_dir, device="cpu", resume=False, overwrite=False,
        progress=True, log=print, data_path=None, resume_command=None):
    """Train a GPT on text in out_dir; returns {"step", "train_loss", "val_loss", "sample",
    "seconds", "interrupted"} ("interrupted": "SIGINT" or "SIGTERM" when a signal stopped it).
    Resuming a run already at max_iters trains nothing: it logs one line saying so and how to
    go on, and returns its step with "already_finished": True (and no losses).

    train_config.tf32 False turns TF32 matmuls off on cuda for the run (True leaves
    tensorlite.backend's setting: on, unless TENSORLITE_TF32=0); the setting is put back after.

    A new run refuses an out_dir holding a checkpoint unless overwrite=True (which replaces
    it); resume=True continues that checkpoint, with only the settings in
    gpt.checkpoint.CHANGEABLE_ON_RESUME allowed to differ, on the same text. data_path (the
    file text came from) is recorded in the checkpoint for resuming; resume_command is what
    the line printed on Ctrl-C or SIGTERM tells the user to run to continue.

    Launched by mpirun, it trains data-parallel (gpt/distributed.py): rank 0 alone makes
    out_dir, holds its lock and writes the checkpoints, the metrics and the log.
    """
    with distributed.init().starting() as world:
        world.use(device)
        if not world.is_main:
            log, progress = _quiet, False
        if resume and overwrite:
            raise ValueError("resume and overwrite exclude each other: resume continues the run in "
                             "out_dir, overwrite replaces it with a new one")
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise NotADirectoryError(f"output folder {str(out_dir)!r} is a file, not a folder")
        created = []    # the folders this run makes, out_dir first, then the parents it needed
        if world.is_main:
            folder = out_dir
            while not folder.exists() and folder != folder.parent:
                created.append(folder)
                folder = folder.parent
            out_dir.mkdir(parents=True, exist_ok=True)
        tf32_before = backend.tf32_enabled()
        try:
            if not train_config.tf32:   # --no-tf32: full float32 matmuls on cuda for this run
                backend.set_tf32(False)
            with RunLock(out_dir) if world.is_main else contextlib.nullcontext():
                return _run(model_config, train_config, text, out_dir, device, resume, overwrite, progress,
                            log, data_path, resume_command, world)
        except BaseException:
            for folder in created:   # a run refused at the start leaves no empty folder (nor out/ above it)
                if any(folder.iterdir()):
                    break
                folder.rmdir()
            raise
        finally:
            if backend.tf32_enabled() != tf32_before:
                backend.set_tf32(tf32_before)


def _quiet(*args, **kwargs):
    """The log of ranks other than 0: rank 0 says everything once."""


def check_new_run(out_dir, text, overwrite=False):
    """Refuse, in one line, a new run in a folder that holds one (unless overwrite): what is
    there, and the ways on. The CLI calls it before printing anything; run() calls it again."""
    ckpt_path = Path(out_dir) / CHECKPOINT
    if ckpt_path.exists() and not overwrite:
        raise _occupied(out_dir, ckpt_path, text_sha256(text))


def _occupied(out_dir, ckpt_path, digest):
    """The refusal of a new run in a folder holding one: the run there (its step, and its data
    when that is not this run's text) and the three ways on."""
    try:
        state = load_checkpoint(ckpt_path)
    except Exception as e:  # damaged, or not ours: say what it is, refuse all the same
        what = f"({CHECKPOINT}, which cannot be read: {e})"
        state = None
    else:
        data = state.get("data") or {}
        what = f"({CHECKPOINT}, at step {state.get('step')}"
        if data.get("sha256") and data["sha256"] != digest:
            origin = f"{data['path']!r}" if data.get("path") else f"a text with sha256 {data['sha256'][:12]}..."
            what += f", trained on other data: {origin})"
        else:
            what += ", on this data)"
    other = state is not None and (state.get("data") or {}).get("sha256") not in (None, digest)
    ways = ("pass another --out for the new run, --overwrite to replace that run, or --resume to continue it "
            "on its own data" if other else
            "pass --resume to continue it, --overwrite to replace it with a new run, or another --out")
    return TrainingError(f"{out_dir} already holds a training run {what}: {ways}")


def _file_id(path):
    """What tells one version of a file from the next (inode, size, mtime), or None if absent."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


@contextlib.contextmanager
def _explained(kind, explain):
    """Re-raise an exception of `kind` from the block as kind(explain()): a second Ctrl-C
    becomes a KeyboardInterrupt whose message says what was saved and how to continue."""
    try:
        yield
    except kind:
        raise kind(explain()) from None


def _write_failed(what, error, intact):
    """One line for a failed write (a full disk, a file-size limit): what failed, the system's
    reason, and what is still intact."""
    reason = error.strerror or str(error) or type(error).__name__
    return TrainingError(f"{what}: {reason}; {intact}")


def _unwarned():
    """NumPy's overflow, invalid-value and division warnings off, around a training step's and
    an evaluation's arithmetic: the loop checks the loss, the gradient norm and the evaluation
    for NaN and Inf itself and stops with one line naming the step, so a diverging run does not
    print a screen of RuntimeWarnings first. Elsewhere the warnings stay as they were."""
    return np.errstate(over="ignore", invalid="ignore", divide="ignore")


def _run(model_config, tc, text, out_dir, device, resume, overwrite, progress, log, data_path, resume_command,
         world):
    ckpt_path, metrics_path = out_dir / CHECKPOINT, out_dir / METRICS
    if resume:
        if not ckpt_path.exists():
            raise TrainingError(f"nothing to resume: {out_dir} holds no checkpoint ({CHECKPOINT}); "
                                "leave out --resume to start a new run there")
        state = load_checkpoint(ckpt_path)
        finished = state["step"] == tc.max_iters
        if not finished:
            log(f"resuming from {ckpt_path} at step {state['step']}")
        check_world_size(state, world.size)
        tc = check_resume(state, model_config, tc, log)
        tokenizer = CharTokenizer.from_chars(state["vocab"])
    else:
        check_new_run(out_dir, text, overwrite)
        tokenizer = CharTokenizer(text)
    digest = text_sha256(text)
    if resume:
        check_same_text(state, digest, data_path)
        if finished:   # nothing to train: say so, and how to go on
            n = state["step"]
            world.started()
            log(f"nothing to do: the run in {out_dir} already finished at step {n} (max_iters {n}); to train "
                f"it longer, resume with a larger --max-iters (e.g. --max-iters {max(2 * n, n + 1)})")
            return {"step": n, "train_loss": None, "val_loss": None, "seconds": 0.0, "sample": None,
                    "interrupted": None, "already_finished": True}
    if tokenizer.vocab_size != model_config.vocab_size:
        raise ValueError(f"GPTConfig.vocab_size is {model_config.vocab_size} but the text has "
                         f"{tokenizer.vocab_size} distinct characters")
    check_memory(model_config, tc, device)
    train_data, val_data = train_val_split(tokenizer.encode(text))
    for name, data in (("train", train_data), ("val", val_data)):
        if len(data) <= model_config.block_size:
            raise ValueError(f"the {name} split has {len(data)} characters, too few for "
                             f"block_size {model_config.block_size}: use more text or a smaller --block-size")
    if data_path is not None:
        data_path = str(Path(data_path).resolve())
    elif resume:
        data_path = (state.get("data") or {}).get("path")
    data_record = {"path": data_path, "sha256": digest, "chars": len(text)}

    tl.manual_seed(tc.seed)
    model = GPT(model_config).to(device=device)   # the same initial weights on every rank
    if world.rank:                                # its own dropout masks (rank 0: a 1-process run's)
        tl.manual_seed(int(distributed.rank_seed(tc.seed, world.rank, 1).generate_state(1)[0]))
    params = list(model.parameters())
    optimizer = model.configure_optimizer(tc.learning_rate, tc.weight_decay, (tc.beta1, tc.beta2))
    schedule = (tl.optim.WarmupCosine(optimizer, tc.warmup_iters, tc.lr_decay_iters or tc.max_iters, tc.min_lr)
                if tc.lr_decay else None)
    batch_rng = np.random.default_rng(distributed.rank_seed(tc.seed, world.rank))  # each rank its batches
    step, best_val, saved_step = 0, math.inf, None
    if resume:
        step, best_val = restore_training_state(state, model, optimizer, batch_rng, rank=world.rank)
        saved_step = step
        if world.is_main:
            try:
                truncate_metrics(metrics_path, step, log)  # evaluations after the checkpoint are redone
            except OSError as e:
                raise _write_failed(f"could not rewrite {metrics_path} for the resume", e,
                                    f"the checkpoint (step {step}) in {ckpt_path} and that file are intact") from e
        del state
    elif world.is_main:
        for old in (metrics_path, ckpt_path):       # a new run starts a new log (and --overwrite
            old.unlink(missing_ok=True)             # a new checkpoint)
    for stale in out_dir.glob(CHECKPOINT + ".*.tmp") if world.is_main else ():  # left by a run killed while saving
        stale.unlink()
    if world.gradients is not None:
        log(f"data-parallel: {world.describe()}; batch_size {tc.batch_size} per process, "
            f"{world.size * tc.batch_size} sequences per step")

    def last_good():
        if saved_step is None:
            return "; no checkpoint was saved"
        return f"; the last good checkpoint (step {saved_step}) is {ckpt_path}"

    def intact(which="previous"):
        if saved_step is None:
            return "no checkpoint was saved before it"
        return f"the {which} checkpoint (step {saved_step}) in {ckpt_path} is intact"

    saving, saved_file = None, _file_id(ckpt_path)   # the step being saved; the file the last save left

    def stopped_at_once():
        """The line for a second Ctrl-C, which stops at once, even midway through a save."""
        last = saved_step
        if saving is not None and _file_id(ckpt_path) != saved_file:
            last = saving   # it struck after the new file was in place
        where = f" while saving step {saving}" if saving is not None else ""
        if last is None:
            return f"SIGINT again{where}: stopped at once; no checkpoint was saved, so a new run starts over"
        return (f"SIGINT again{where}: stopped at once; the last checkpoint (step {last}) in {ckpt_path} is "
                f"intact; continue with: {resume_command or 'the same call with resume=True'}")

    def checkpoint(at_step, rng):
        """Save the state of step at_step, whose loss and gradients were just found finite; rng:
        this rank's rng_snapshot from before the step drew its batch and dropout masks."""
        nonlocal saved_step, saving, saved_file
        world.check_identical(model, f"step {at_step}")
        ranks = world.rng_states(rng)   # every rank's batch and dropout streams (None: one process)

        def save():                     # on rank 0 alone; its error is raised on every rank
            state = training_state(at_step, best_val, model, optimizer, batch_rng, model_config, tc,
                                   tokenizer.chars, data_record, ranks=ranks, rng=rng)
            bad = first_nonfinite(state)
            if bad is not None:   # a weight the loss does not read, or a moment, overflowed: never save that
                raise TrainingError(f"step {at_step}: {bad} is not finite after the update of step {at_step - 1} "
                                    "(its gradient or the update overflowed), so this state was not saved"
                                    + last_good())
            try:
                save_checkpoint(ckpt_path, state)   # atomic: on failure the previous file is untouched
            except OSError as e:
                raise _write_failed(f"could not save the checkpoint of step {at_step} to {ckpt_path}", e,
                                    intact()) from e
        saving = at_step
        world.on_main(save)
        saved_step, saving, saved_file = at_step, None, _file_id(ckpt_path)

    B, T = tc.batch_size, model_config.block_size
    bar = _progress_bar(tc.max_iters, step, progress)
    write = bar.write if bar is not None else log
    t_start, tokens_per_s, losses = time.perf_counter(), 0.0, {}
    resumed_at = step if resume else None
    interrupted = None
    model.train()
    world.started()   # every rank is ready, or every rank stops here with the first one's error
    # Each step: evaluate (at an evaluation step), compute the loss and gradients, check them,
    # and only then save the state they came from (a checkpoint of step s is one whose own
    # loss and gradients were finite), then update. The last step computes them too, unused,
    # so that the final checkpoint passes the same check; a signal saves the same way.
    with _explained(KeyboardInterrupt, stopped_at_once), _StopRequest() as stop:
        while True:
            if schedule is not None:
                schedule.step(min(step, tc.max_iters - 1))
            at_eval = step % tc.eval_interval == 0 or step == tc.max_iters
            if at_eval and step != resumed_at:  # a resumed run already evaluated its first step
                with _unwarned():
                    losses = estimate_loss(model, {"train": train_data, "val": val_data}, tc.eval_iters, B, T,
                                           seed=distributed.rank_seed(tc.seed + step, world.rank))
                losses = world.mean(losses)
                write(f"step {step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                if not all(math.isfinite(v) for v in losses.values()):
                    raise TrainingError(f"step {step}: the evaluation loss is not finite ({losses})"
                                        + last_good())
                best_val = min(best_val, losses["val"])

                def append_metrics():
                    line = json.dumps({"step": step, "train_loss": losses["train"], "val_loss": losses["val"],
                                       "lr": optimizer.param_groups[0]["lr"], "tokens_per_s": tokens_per_s,
                                       "elapsed_s": time.perf_counter() - t_start,
                                       "world_size": world.size}) + "\n"
                    try:
                        with open(metrics_path, "a") as f:
                            f.write(line)
                    except OSError as e:  # a partial line left there is dropped (with a warning) on resume
                        raise _write_failed(f"could not append step {step}'s evaluation to {metrics_path}", e,
                                            intact("last")) from e
                world.on_main(append_metrics)
            due = at_eval or step >= tc.max_iters or (tc.checkpoint_interval and step % tc.checkpoint_interval == 0)

            t0 = time.perf_counter()
            rng_before = rng_snapshot(batch_rng)  # what a checkpoint of this step resumes from
            x, y = get_batch(train_data, B, T, batch_rng)
            with _unwarned():
                _, loss = model(x, y)
                optimizer.zero_grad()
                loss.backward()
                flat = optimizer.gather_grads()      # each group's gradients in one flat buffer
                world.average_gradients(optimizer)   # data-parallel: the ranks' mean (in place), before clipping
                if tc.grad_clip:
                    norm = tl.optim.clip_grad_norm_(params, tc.grad_clip)
                else:                                # not clipped, but checked all the same
                    norm = kernels.resolve(tl.optim.grad_norm, backend.device_of(flat[0]))(flat)
                # the step's one host sync: the loss, the norm and the deferred id checks in one read
                loss_value, norm_value = backend.item(loss, norm)
            loss_value = world.mean_loss(loss_value, stop.requested)  # the ranks' mean (one process: itself)
            if not math.isfinite(loss_value):
                raise TrainingError(f"step {step}: the loss is {loss_value}"
                                    + _first_nonfinite_op(model, x, y, tc.debug_nan) + last_good())
            if not math.isfinite(norm_value):
                raise TrainingError(f"step {step}: the gradient norm is {norm_value}"
                                    + _first_nonfinite_op(model, x, y, tc.debug_nan) + last_good())
            stopping = step < tc.max_iters and world.stop_requested(stop.requested)  # with several ranks: agreed
            if (due or stopping) and saved_step != step:
                checkpoint(step, rng_before)
            if step >= tc.max_iters:
                break
            if stopping:
                interrupted = stopping
                write(f"{interrupted}: interrupted at step {step}, saved a checkpoint in {ckpt_path}; "
                      f"continue with: {resume_command or 'the same call with resume=True'}")
                break
            with _unwarned():
                optimizer.step()
            step += 1
            tokens_per_s = world.size * B * T / (time.perf_counter() - t0)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{tokens_per_s:,.0f}")
    if bar is not None:
        bar.close()

    seconds = time.perf_counter() - t_start
    result = {"step": step, "train_loss": losses.get("train"), "val_loss": losses.get("val"),
              "seconds": seconds, "sample": None, "interrupted": interrupted, "already_finished": False}
    if step >= tc.max_iters and tc.sample_chars and world.is_main:
        start = np.array([[tokenizer.stoi.get("\n", 0)]])
        ids = model.generate(start, tc.sample_chars, seed=tc.seed)
        result["sample"] = tokenizer.decode(ids[0, 1:])
        log(result["sample"])
    return result


# ================================ memory ====================================================

def available_memory(device):
    """Bytes a run may still allocate on device, or None when unknown: MemAvailable from
    /proc/meminfo on the CPU; the GPU's free memory plus CuPy's pooled free blocks on cuda."""
    if device == "cuda":
        cp = getattr(backend, "cp", None)
        try:
            free, _ = cp.cuda.runtime.memGetInfo()
            return int(free) + int(cp.get_default_memory_pool().free_bytes())
        except Exception:  # no CuPy, no device, or a CuPy without these: do not guess
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _size(n):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


def check_memory(model_config, train_config, device):
    """Refuse, before anything is allocated, a model and batch whose training step cannot fit
    in the memory available on device (gpt.config.memory_estimate, a lower bound)."""
    parts = memory_estimate(model_config, train_config.batch_size)
    need, have = sum(parts.values()), available_memory(device)
    if have is None or need <= have:
        return
    detail = ", ".join(f"{name} {_size(n)}" for name, n in parts.items())
    where = "the GPU has free" if device == "cuda" else "the machine has available (MemAvailable)"
    raise TrainingError(
        f"block_size {model_config.block_size} with batch_size {train_config.batch_size} "
        f"(n_layer {model_config.n_layer}, n_head {model_config.n_head}, n_embd {model_config.n_embd}) "
        f"needs at least {_size(need)} to train ({detail}), but {where} {_size(have)}: "
        "use a smaller --block-size, --batch-size or model")


def _first_nonfinite_op(model, x, y, debug):
    """With debug on, re-run the step under tl.detect_anomaly() to name the op that first
    produced a NaN or Inf; otherwise a hint to do so."""
    if not debug:
        return " (run with --debug-nan to name the op that produced it)"
    try:
        with tl.detect_anomaly(), _unwarned():
            _, loss = model(x, y)
            loss.backward()
    except FloatingPointError as e:
        return f" ({e})"
    return " (no op produced a non-finite value when the step was re-run)"
