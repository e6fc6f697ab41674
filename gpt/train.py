"""The training loop: batches, AdamW, evaluation, metrics, checkpoints, resume and sampling.

    model_cfg, train_cfg = gpt.preset("cpu")
    result = gpt.train.run(model_cfg, train_cfg, text, out_dir="out/cpu", device="cpu")

Each evaluation prints the lecture's line, `step {i}: train loss {x:.4f}, val loss {y:.4f}`,
appends the same numbers to OUT/metrics.jsonl and writes OUT/ckpt.pkl atomically (a
temporary file, flushed, fsynced and renamed), so a killed run always leaves the last
good checkpoint loadable. Resuming from it continues bit-identically on the CPU: the
checkpoint holds the weights, the optimizer's moments, the step and every RNG state.
"""
import json
import math
import os
import pickle
import signal
import sys
import tempfile
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

import tensorlite as tl
from tensorlite import backend

from .config import GPTConfig
from .data import CharTokenizer, get_batch, train_val_split
from .model import GPT

CHECKPOINT = "ckpt.pkl"
METRICS = "metrics.jsonl"
FORMAT = "tensorlite-gpt/1"


class TrainingError(RuntimeError):
    """Training stopped: a non-finite loss or gradient, or a checkpoint that does not fit."""


# ================================== checkpoints ==========================================

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
    """Read a checkpoint written by save_checkpoint; a clear error if it is missing or damaged.

    Checkpoints are pickles: load only files you trust, as with torch.load.
    """
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


def model_from_checkpoint(state, device="cpu"):
    """(model, tokenizer) rebuilt from a checkpoint dict, on device."""
    config = GPTConfig(**state["model_config"])
    tl.manual_seed(0)
    model = GPT(config)
    model.load_state_dict(state["model"])
    return model.to(device=device), CharTokenizer.from_chars(state["vocab"])


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
    """Turns Ctrl-C (SIGINT) and SIGTERM into a flag checked between steps, so the run stops
    on a consistent state and saves it. A second Ctrl-C interrupts at once."""

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
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, leave=False, file=sys.stderr)


def run(model_config, train_config, text, out_dir, device="cpu", resume=False, progress=True, log=print):
    """Train a GPT on text; returns {"step", "train_loss", "val_loss", "sample", "seconds"}."""
    tc, out_dir = train_config, Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT
    if resume:
        state = load_checkpoint(ckpt_path)
        saved_cfg = GPTConfig(**state["model_config"])
        if saved_cfg != model_config:
            diff = {f.name: (getattr(saved_cfg, f.name), getattr(model_config, f.name))
                    for f in fields(GPTConfig) if getattr(saved_cfg, f.name) != getattr(model_config, f.name)}
            raise TrainingError(f"--resume: the checkpoint's model settings differ from these "
                                f"(checkpoint, now): {diff}")
        tokenizer = CharTokenizer.from_chars(state["vocab"])
    else:
        tokenizer = CharTokenizer(text)
    if tokenizer.vocab_size != model_config.vocab_size:
        raise ValueError(f"GPTConfig.vocab_size is {model_config.vocab_size} but the text has "
                         f"{tokenizer.vocab_size} distinct characters")
    train_data, val_data = train_val_split(tokenizer.encode(text))
    for name, data in (("train", train_data), ("val", val_data)):
        if len(data) <= model_config.block_size:
            raise ValueError(f"the {name} split has {len(data)} characters, too few for "
                             f"block_size {model_config.block_size}: use more text or a smaller --block-size")

    tl.manual_seed(tc.seed)
    model = GPT(model_config).to(device=device)
    optimizer = model.configure_optimizer(tc.learning_rate, tc.weight_decay, (tc.beta1, tc.beta2))
    schedule = (tl.optim.WarmupCosine(optimizer, tc.warmup_iters, tc.lr_decay_iters or tc.max_iters, tc.min_lr)
                if tc.lr_decay else None)
    batch_rng = np.random.default_rng(tc.seed)
    step, best_val = 0, math.inf
    if resume:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        batch_rng.bit_generator.state = state["rng"]["batches"]
        backend.set_rng_state(state["rng"]["tensorlite"])
        step, best_val = state["step"], state["best_val_loss"]
        log(f"resuming from {ckpt_path} at step {step}")
        _truncate_metrics(out_dir / METRICS, step)  # evaluations after the checkpoint are redone
    elif (out_dir / METRICS).exists():
        (out_dir / METRICS).unlink()  # a fresh run starts a fresh log
    for stale in out_dir.glob(CHECKPOINT + ".*.tmp"):  # left by a run killed while saving
        stale.unlink()

    def checkpoint(at_step):
        save_checkpoint(ckpt_path, {
            "format": FORMAT, "step": at_step, "best_val_loss": best_val,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "model_config": asdict(model_config), "train_config": asdict(tc),
            "vocab": tokenizer.chars,
            "rng": {"batches": batch_rng.bit_generator.state, "tensorlite": backend.get_rng_state()},
        })

    B, T = tc.batch_size, model_config.block_size
    bar = _progress_bar(tc.max_iters, step, progress)
    write = bar.write if bar is not None else log
    t_start, tokens_per_s, losses = time.perf_counter(), 0.0, {}
    resumed_at = step if resume else None
    model.train()
    with _StopRequest() as stop:
        while True:
            if schedule is not None:
                schedule.step(min(step, tc.max_iters - 1))
            at_eval = step % tc.eval_interval == 0 or step == tc.max_iters
            if at_eval and step != resumed_at:  # a resumed run already evaluated its first step
                losses = estimate_loss(model, {"train": train_data, "val": val_data}, tc.eval_iters,
                                       B, T, seed=tc.seed + step)
                write(f"step {step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                if not all(math.isfinite(v) for v in losses.values()):
                    raise TrainingError(f"step {step}: the evaluation loss is not finite ({losses}); "
                                        f"the last good checkpoint is {ckpt_path}")
                best_val = min(best_val, losses["val"])
                with open(out_dir / METRICS, "a") as f:
                    f.write(json.dumps({"step": step, "train_loss": losses["train"], "val_loss": losses["val"],
                                        "lr": optimizer.param_groups[0]["lr"], "tokens_per_s": tokens_per_s,
                                        "elapsed_s": time.perf_counter() - t_start}) + "\n")
                checkpoint(step)
            elif tc.checkpoint_interval and step % tc.checkpoint_interval == 0 and step != resumed_at:
                checkpoint(step)
            if step >= tc.max_iters:
                break
            if stop.requested:
                checkpoint(step)
                write(f"{stop.requested}: saved a checkpoint at step {step} in {ckpt_path}; "
                      "continue with --resume")
                break

            t0 = time.perf_counter()
            x, y = get_batch(train_data, B, T, batch_rng)
            _, loss = model(x, y)
            optimizer.zero_grad()
            loss.backward()
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise TrainingError(f"step {step}: the loss is {loss_value}"
                                    + _first_nonfinite_op(model, x, y, tc.debug_nan)
                                    + f"; the last good checkpoint is {ckpt_path}")
            if tc.grad_clip:
                norm = tl.optim.clip_grad_norm_(model.parameters(), tc.grad_clip)
                if not math.isfinite(norm):
                    raise TrainingError(f"step {step}: the gradient norm is {norm}"
                                        + _first_nonfinite_op(model, x, y, tc.debug_nan)
                                        + f"; the last good checkpoint is {ckpt_path}")
            optimizer.step()
            step += 1
            tokens_per_s = B * T / (time.perf_counter() - t0)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{tokens_per_s:,.0f}")
    if bar is not None:
        bar.close()

    seconds = time.perf_counter() - t_start
    result = {"step": step, "train_loss": losses.get("train"), "val_loss": losses.get("val"),
              "seconds": seconds, "sample": None}
    if step >= tc.max_iters and tc.sample_chars:
        start = np.array([[tokenizer.stoi.get("\n", 0)]])
        ids = model.generate(start, tc.sample_chars, seed=tc.seed)
        result["sample"] = tokenizer.decode(ids[0, 1:])
        log(result["sample"])
    return result


def _truncate_metrics(path, step):
    """Keep only the metrics lines of evaluations up to `step` (those the checkpoint saw)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))


def _first_nonfinite_op(model, x, y, debug):
    """With debug on, re-run the step under tl.detect_anomaly() to name the op that first
    produced a NaN or Inf; otherwise a hint to do so."""
    if not debug:
        return " (run with --debug-nan to name the op that produced it)"
    try:
        with tl.detect_anomaly():
            _, loss = model(x, y)
            loss.backward()
    except FloatingPointError as e:
        return f" ({e})"
    return " (no op produced a non-finite value when the step was re-run)"
