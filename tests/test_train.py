"""gpt.train and gpt.checkpoint: exact resume, determinism, the log and checkpoint formats, atomic
checkpoints, a run killed at any moment, Ctrl-C and SIGTERM, non-finite losses, what a resume may
change, one run per folder, damaged metrics, and the errors users meet.

Every run trains a 1-layer, 16-wide GPT on a made-up text, so it takes a fraction of a second.
The subprocess tests drive examples/train_shakespeare.py, as a user would.
"""
import errno
import json
import math
import os
import pickle
import random
import re
import shlex
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

import gpt.train
import tensorlite as tl
import tensorlite.functional as F
from gpt import GPT, GPTConfig, TrainConfig, preset
from gpt.train import (CHECKPOINT, FORMAT, METRICS, TrainingError, load_checkpoint, model_from_checkpoint,
                       run, save_checkpoint)

REPO = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = "examples/train_shakespeare.py"
STEP_LINE = re.compile(r"^step (\d+): train loss (\d+\.\d{4}), val loss (\d+\.\d{4})$")
WORDS = ("the king and queen of rome shall not go to war with france my lord be still now "
         "what say you good sir I will speak no more of this O fair day").split()


def made_up_text(n_chars, seed=0):
    """Lines of random words with a little punctuation: a small vocabulary, text-like statistics."""
    rng = np.random.default_rng(seed)
    lines, size = [], 0
    while size < n_chars:
        line = " ".join(rng.choice(WORDS, rng.integers(3, 9))) + rng.choice([",", ".", ";", "!", "?"])
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)[:n_chars]


TEXT = made_up_text(4000)


def configs(text=TEXT, **overrides):
    """The cpu preset shrunk to a 1-layer, 16-wide model and 20 steps; plain AdamW (no schedule,
    no clipping) unless a test turns them on."""
    settings = dict(vocab_size=len(set(text)), n_layer=1, n_head=2, n_embd=16, block_size=16,
                    batch_size=4, max_iters=20, eval_interval=5, eval_iters=2, sample_chars=0,
                    lr_decay=False, grad_clip=0.0)
    return preset("cpu", **{**settings, **overrides})


def train(out_dir, text=TEXT, resume=False, log=None, overwrite=False, **overrides):
    """One in-process run; returns (result, printed lines)."""
    lines = []

    def record(line):
        lines.append(line)
        if log is not None:
            log(line)
    result = run(*configs(text, **overrides), text, out_dir, resume=resume, overwrite=overwrite, progress=False,
                 log=record)
    return result, lines


def state_arrays(state):
    """Every array a checkpoint holds: the weights and the optimizer's moments and step counts."""
    arrays = {"model." + k: np.asarray(v) for k, v in state["model"].items()}
    for i, moments in state["optimizer"]["state"].items():
        arrays.update({f"optimizer.{i}.{k}": np.asarray(v) for k, v in moments.items()})
    return arrays


def assert_same_state(a, b):
    a, b = state_arrays(a), state_arrays(b)
    assert a.keys() == b.keys()
    different = [k for k in a if a[k].dtype != b[k].dtype or not np.array_equal(a[k], b[k])]
    assert not different, f"arrays differ: {different}"


def step_lines(lines, after=-1):
    return [line for line in lines if STEP_LINE.match(line) and int(STEP_LINE.match(line)[1]) > after]


def read_metrics(out_dir):
    return [json.loads(line) for line in (Path(out_dir) / METRICS).read_text().splitlines()]


def metric_losses(out_dir, after=-1):
    """(step, train_loss, val_loss) of each evaluation in metrics.jsonl after step `after`."""
    return [(m["step"], m["train_loss"], m["val_loss"]) for m in read_metrics(out_dir) if m["step"] > after]


# ---- exact resume -------------------------------------------------------------------------------

RESUME_SETTINGS = {
    "plain": dict(),
    "dropout": dict(dropout=0.2),
    "dropout+grad_clip": dict(dropout=0.2, grad_clip=0.5),  # gradient norms here are about 1: it clips
}


@pytest.mark.parametrize("k", [7, 10], ids=["k=7 between evaluations", "k=10 at an evaluation"])
@pytest.mark.parametrize("settings", RESUME_SETTINGS.values(), ids=RESUME_SETTINGS.keys())
def test_resume_gives_the_same_weights_optimizer_and_losses(tmp_path, settings, k):
    """20 steps in one go == k steps (max_iters=k), then --resume to 20: every array bit-identical,
    the same step lines after step k. With dropout the dropout generator's state must travel too."""
    _, one_go = train(tmp_path / "one-go", **settings)
    first, _ = train(tmp_path / "resumed", **{**settings, "max_iters": k})
    assert first["step"] == k
    result, resumed = train(tmp_path / "resumed", resume=True, **settings)

    assert result["step"] == 20
    assert resumed[0] == f"resuming from {tmp_path / 'resumed' / CHECKPOINT} at step {k}"
    assert not any(line.startswith(f"step {k}:") for line in resumed)  # step k is not evaluated twice
    assert step_lines(resumed, after=k) == step_lines(one_go, after=k)
    assert len(step_lines(one_go, after=k)) >= 2
    a, b = load_checkpoint(tmp_path / "one-go"), load_checkpoint(tmp_path / "resumed")
    assert a["step"] == b["step"] == 20
    assert_same_state(a, b)
    assert metric_losses(tmp_path / "one-go", after=k) == metric_losses(tmp_path / "resumed", after=k)


def test_resume_with_dropout_needs_the_saved_rng_state(tmp_path, monkeypatch):
    """The comparison above can fail: drop the dropout generator's state on resume and the
    weights differ."""
    train(tmp_path / "one-go", dropout=0.2)
    train(tmp_path / "resumed", dropout=0.2, max_iters=10)
    monkeypatch.setattr(gpt.train.backend, "set_rng_state", lambda state: None)
    train(tmp_path / "resumed", resume=True, dropout=0.2)
    with pytest.raises(AssertionError, match="arrays differ"):
        assert_same_state(load_checkpoint(tmp_path / "one-go"), load_checkpoint(tmp_path / "resumed"))


def test_resume_after_ctrl_c_is_exact_with_lr_decay_warmup_and_grad_clip(tmp_path):
    """The cosine schedule ends at max_iters, so a run with lr_decay is stopped mid-way as a user
    would: SIGINT (raised in this process when step 10 is printed) saves a checkpoint at the step
    boundary; resuming with the same settings then matches the uninterrupted run bit for bit."""
    settings = dict(dropout=0.2, lr_decay=True, warmup_iters=4, min_lr=1e-4, grad_clip=0.5)
    _, one_go = train(tmp_path / "one-go", **settings)

    def press_ctrl_c_at_step_10(line):
        if line.startswith("step 10:"):
            signal.raise_signal(signal.SIGINT)
    handler_before = signal.getsignal(signal.SIGINT)
    stopped, lines = train(tmp_path / "stopped", log=press_ctrl_c_at_step_10, **settings)
    assert signal.getsignal(signal.SIGINT) is handler_before  # the run put the handler back
    assert stopped["step"] == 10 and stopped["interrupted"] == "SIGINT"
    assert lines[-1] == (f"SIGINT: interrupted at step 10, saved a checkpoint in {tmp_path / 'stopped' / CHECKPOINT}; "
                         "continue with: the same call with resume=True")
    _, resumed = train(tmp_path / "stopped", resume=True, **settings)
    assert step_lines(resumed, after=10) == step_lines(one_go, after=10)
    assert_same_state(load_checkpoint(tmp_path / "one-go"), load_checkpoint(tmp_path / "stopped"))


@pytest.mark.parametrize("landed", [False, True], ids=["midway through the save", "just after the rename"])
def test_a_second_ctrl_c_while_saving_names_the_intact_checkpoint_and_how_to_continue(tmp_path, monkeypatch, landed):
    """Ctrl-C at step 10, then Ctrl-C again while step 10 is being saved: the run stops at once,
    saying which checkpoint is intact (step 5's, or step 10's when the new file was already in
    place) and the command that continues it, which does."""
    pressed = []

    def press_ctrl_c_at_step_10(line):
        if line.startswith("step 10:"):
            pressed.append(1)
            signal.raise_signal(signal.SIGINT)
    if landed:
        import gpt.checkpoint
        replace = os.replace

        def replace_then_ctrl_c(src, dst):
            replace(src, dst)
            if pressed and Path(dst).name == CHECKPOINT:
                signal.raise_signal(signal.SIGINT)
        monkeypatch.setattr(gpt.checkpoint.os, "replace", replace_then_ctrl_c)
    else:
        dump = pickle.dump

        def dump_with_ctrl_c(obj, f, protocol=None):
            if pressed:
                f.write(b"half a pickle")
                signal.raise_signal(signal.SIGINT)
            dump(obj, f, protocol)
        monkeypatch.setattr(pickle, "dump", dump_with_ctrl_c)
    handler_before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt) as stopped:
        train(tmp_path, log=press_ctrl_c_at_step_10)
    monkeypatch.undo()
    last = 10 if landed else 5
    assert str(stopped.value) == (f"SIGINT again while saving step 10: stopped at once; the last checkpoint "
                                  f"(step {last}) in {tmp_path / CHECKPOINT} is intact; continue with: the same "
                                  "call with resume=True")
    assert signal.getsignal(signal.SIGINT) is handler_before
    assert load_checkpoint(tmp_path)["step"] == last
    assert sorted(os.listdir(tmp_path)) == [CHECKPOINT, METRICS]
    assert train(tmp_path, resume=True)[0]["step"] == 20


def test_a_script_prints_what_its_ctrl_c_says(capsys):
    from gpt.cli import run as run_script

    def stopped(message):
        def main():
            raise KeyboardInterrupt(*([message] if message else []))
        return main
    said = "SIGINT again: stopped at once; continue with: X"
    for message, line in ((said, said), (None, "interrupted")):
        with pytest.raises(SystemExit) as exit_:
            run_script(stopped(message))
        assert exit_.value.code == 130 and capsys.readouterr().err == line + "\n"


def test_resume_to_a_larger_max_iters_is_exact_with_lr_decay(tmp_path):
    settings = dict(dropout=0.2, lr_decay=True, warmup_iters=4, min_lr=1e-4, grad_clip=0.5, lr_decay_iters=20)
    _, one_go = train(tmp_path / "one-go", **settings)
    train(tmp_path / "resumed", **{**settings, "max_iters": 10})
    _, resumed = train(tmp_path / "resumed", resume=True, **settings)
    assert step_lines(resumed, after=10) == step_lines(one_go, after=10)
    assert_same_state(load_checkpoint(tmp_path / "one-go"), load_checkpoint(tmp_path / "resumed"))


# ---- determinism ----------------------------------------------------------------------------

def test_the_same_seed_gives_the_same_losses_and_another_seed_does_not(tmp_path):
    def losses(name, seed):
        train(tmp_path / name, seed=seed, dropout=0.1)
        return metric_losses(tmp_path / name)

    first, again, other = losses("a", 1), losses("b", 1), losses("c", 2)
    assert len(first) == 5
    assert first == again
    assert [s for s, _, _ in other] == [s for s, _, _ in first]
    assert all(a[1:] != c[1:] for a, c in zip(first, other))


# ---- what a run prints and writes -----------------------------------------------------------

def test_log_lines_metrics_and_checkpoint_contents(tmp_path):
    model_cfg, train_cfg = configs()
    result, lines = train(tmp_path)

    assert lines == step_lines(lines)                        # nothing but step lines here
    matches = [STEP_LINE.match(line) for line in lines]
    assert [int(m[1]) for m in matches] == [0, 5, 10, 15, 20]
    metrics = read_metrics(tmp_path)
    assert [m["step"] for m in metrics] == [0, 5, 10, 15, 20]   # one JSON line per evaluation
    for m, match in zip(metrics, matches):
        assert {"step", "train_loss", "val_loss"} <= m.keys() and m["world_size"] == 1
        assert (f"{m['train_loss']:.4f}", f"{m['val_loss']:.4f}") == (match[2], match[3])
    assert result["step"] == 20
    assert (result["train_loss"], result["val_loss"]) == (metrics[-1]["train_loss"], metrics[-1]["val_loss"])

    state = load_checkpoint(tmp_path)
    assert state["format"] == FORMAT and state["step"] == 20
    assert state["model_config"] == asdict(model_cfg) and state["train_config"] == asdict(train_cfg)
    assert state["vocab"] == sorted(set(TEXT))
    assert state["best_val_loss"] == min(m["val_loss"] for m in metrics)
    tl.manual_seed(0)
    expected = GPT(model_cfg).state_dict()
    assert state["model"].keys() == expected.keys()
    assert all(np.shape(state["model"][k]) == expected[k].shape for k in expected)
    optimizer = state["optimizer"]
    assert sum(len(g["params"]) for g in optimizer["param_groups"]) == len(expected)
    assert all(moments["step"] == 20 for moments in optimizer["state"].values())
    assert {"batches", "tensorlite"} <= state["rng"].keys()
    assert sorted(os.listdir(tmp_path)) == [CHECKPOINT, METRICS]


def test_overwrite_starts_a_fresh_metrics_log(tmp_path):
    train(tmp_path)
    train(tmp_path, max_iters=10, overwrite=True)
    assert [m["step"] for m in read_metrics(tmp_path)] == [0, 5, 10]
    assert load_checkpoint(tmp_path)["step"] == 10


# ---- atomic checkpoints ---------------------------------------------------------------------

@pytest.fixture
def trained(tmp_path):
    """An output directory holding a real 20-step checkpoint."""
    train(tmp_path)
    return tmp_path


def test_save_checkpoint_leaves_no_temporary_file(tmp_path):
    state = {"format": FORMAT, "step": 3, "weights": np.arange(6.0).reshape(2, 3)}
    for step in (3, 4):
        save_checkpoint(tmp_path / "sub" / CHECKPOINT, {**state, "step": step})
    assert os.listdir(tmp_path / "sub") == [CHECKPOINT]
    loaded = load_checkpoint(tmp_path / "sub")
    assert loaded["step"] == 4 and np.array_equal(loaded["weights"], state["weights"])


@pytest.mark.parametrize("error", [OSError("No space left on device"), KeyboardInterrupt()],
                         ids=["disk full", "Ctrl-C"])
def test_a_save_that_fails_midway_keeps_the_previous_checkpoint(trained, monkeypatch, error):
    """pickle.dump writes part of the new checkpoint and then raises: the old file is untouched
    and loadable, and the half-written temporary file is gone."""
    path = trained / CHECKPOINT
    before = path.read_bytes()
    state = load_checkpoint(path)

    def dump_then_fail(obj, f, protocol=None):
        f.write(pickle.dumps(obj, protocol)[:1000])
        raise error
    monkeypatch.setattr(pickle, "dump", dump_then_fail)
    with pytest.raises(type(error)):
        save_checkpoint(path, {**state, "step": 21})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 20
    assert sorted(os.listdir(trained)) == [CHECKPOINT, METRICS]


def no_space(*args):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_at_a_checkpoint_is_one_line_naming_the_file_and_the_intact_one(tmp_path, monkeypatch):
    """The save of step 15 runs out of space midway: one line naming ckpt.pkl and the reason,
    saying step 10's checkpoint is intact, which it is; nothing half-written is left; resume goes on."""
    dump = pickle.dump

    def dump_out_of_space_at_step_15(obj, f, protocol=None):
        if isinstance(obj, dict) and obj.get("step") == 15:
            f.write(pickle.dumps(obj, protocol)[:1000])
            raise no_space()
        dump(obj, f, protocol)
    monkeypatch.setattr(pickle, "dump", dump_out_of_space_at_step_15)
    ckpt = re.escape(str(tmp_path / CHECKPOINT))
    with pytest.raises(TrainingError, match=rf"^could not save the checkpoint of step 15 to {ckpt}: No space left on "
                                            rf"device; the previous checkpoint \(step 10\) in {ckpt} is intact$"):
        train(tmp_path)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)["step"] == 10
    assert sorted(os.listdir(tmp_path)) == [CHECKPOINT, METRICS]
    assert train(tmp_path, resume=True)[0]["step"] == 20


def test_a_full_disk_at_a_metrics_line_is_one_line_naming_the_file_and_the_intact_checkpoint(tmp_path, monkeypatch):
    real_open = open

    def open_out_of_space_for_step_10(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if Path(path).name == METRICS and "a" in mode:
            write = f.write

            def write_or_fail(text):
                if json.loads(text)["step"] == 10:
                    write(text[:7])
                    raise no_space()
                return write(text)
            f.write = write_or_fail
        return f
    monkeypatch.setattr(gpt.train, "open", open_out_of_space_for_step_10, raising=False)
    metrics, ckpt = re.escape(str(tmp_path / METRICS)), re.escape(str(tmp_path / CHECKPOINT))
    with pytest.raises(TrainingError, match=rf"^could not append step 10's evaluation to {metrics}: No space left on "
                                            rf"device; the last checkpoint \(step 5\) in {ckpt} is intact$"):
        train(tmp_path)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)["step"] == 5
    result, lines = train(tmp_path, resume=True)          # the partial line is dropped, with a warning
    assert result["step"] == 20 and any(line.startswith(f"warning: {tmp_path / METRICS}:3:") for line in lines)
    assert [m["step"] for m in read_metrics(tmp_path)] == [0, 5, 10, 15, 20]


def test_a_full_disk_while_resuming_the_metrics_log_is_one_line(tmp_path, monkeypatch):
    train(tmp_path, max_iters=10)
    before = (tmp_path / METRICS).read_bytes()
    write_text = Path.write_text

    def write_text_out_of_space(self, data, *args, **kwargs):
        write_text(self, data[:5], *args, **kwargs)
        raise no_space()
    monkeypatch.setattr(Path, "write_text", write_text_out_of_space)
    with pytest.raises(TrainingError, match=rf"^could not rewrite {re.escape(str(tmp_path / METRICS))} for the resume: "
                                            r"No space left on device; the checkpoint \(step 10\) in .* and that file "
                                            r"are intact$"):
        train(tmp_path, resume=True)
    monkeypatch.undo()
    assert (tmp_path / METRICS).read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [CHECKPOINT, METRICS]


# ---- a run killed at any moment, Ctrl-C and SIGTERM -----------------------------------------

TINY_FLAGS = ["--device", "cpu", "--no-progress", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
              "--block-size", "16", "--batch-size", "4", "--eval-interval", "3", "--eval-iters", "1",
              "--checkpoint-interval", "1", "--sample-chars", "0"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text(made_up_text(20_000, seed=1))
    return path


@pytest.fixture
def start_training():
    """start_training(data, out, *flags): train_shakespeare.py in the background, its output in a
    file (no pipe to fill); whatever a failing test leaves running is killed afterwards."""
    started = []

    def start(data, out, *flags):
        log = out.parent / f"{out.name}.log"
        cmd = [sys.executable, TRAIN_SCRIPT, "--data", str(data), "--out", str(out), *TINY_FLAGS, *flags]
        with open(log, "w") as f:
            proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=f, stderr=subprocess.STDOUT)
        proc.log_path = log
        started.append(proc)
        return proc
    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def evaluations(out):
    path = out / METRICS
    return path.read_text().count("\n") if path.exists() else 0


def wait_until(proc, condition, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"training exited ({proc.returncode}) before {what}:\n{proc.log_path.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}:\n{proc.log_path.read_text()}")
        time.sleep(0.02)


def resume_to(data, out, max_iters, *flags):
    cmd = [sys.executable, TRAIN_SCRIPT, "--data", str(data), "--out", str(out), *TINY_FLAGS,
           "--resume", "--max-iters", str(max_iters), *flags]
    return subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60)


def test_a_file_size_limit_on_resume_is_one_error_line(data_file, tmp_path):
    """A real failed write: RLIMIT_FSIZE (ulimit -f) half a checkpoint, so the first save of the
    resumed run fails with EFBIG. One line, exit status 1, the checkpoint still step 3's."""
    import resource
    out = tmp_path / "out"
    first = subprocess.run([sys.executable, TRAIN_SCRIPT, "--data", str(data_file), "--out", str(out), *TINY_FLAGS,
                            "--max-iters", "3"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    limit = (out / CHECKPOINT).stat().st_size // 2
    cmd = [sys.executable, TRAIN_SCRIPT, "--resume", "--out", str(out), "--max-iters", "6", "--no-progress"]
    done = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert done.returncode == 1
    assert done.stderr == (f"error: could not save the checkpoint of step 4 to {out / CHECKPOINT}: File too large; "
                           f"the previous checkpoint (step 3) in {out / CHECKPOINT} is intact\n")
    assert load_checkpoint(out)["step"] == 3


def assert_consistent_checkpoint(out, text):
    """The checkpoint loads, its weights went through exactly `step` updates, and its model runs."""
    state = load_checkpoint(out)
    step = state["step"]
    assert all(moments["step"] == step for moments in state["optimizer"]["state"].values())
    model, tokenizer = model_from_checkpoint(state)
    logits, loss = model(tokenizer.encode(text[:16])[None], tokenizer.encode(text[1:17])[None])
    assert logits.shape == (1, 16, tokenizer.vocab_size) and math.isfinite(loss.item())
    return step


def assert_resumes_from(data, out, step, done=None):
    """--resume (or the finished process `done`) continued the run in out from step to step + 6."""
    done = done or resume_to(data, out, step + 6)
    assert done.returncode == 0, done.stderr
    assert f"resuming from {out / CHECKPOINT} at step {step}" in done.stdout
    later = [int(m[1]) for m in map(STEP_LINE.match, done.stdout.splitlines()) if m]
    assert later and min(later) > step and max(later) == step + 6
    assert load_checkpoint(out)["step"] == step + 6


def test_sigkill_at_any_moment_leaves_a_checkpoint_to_resume_from(start_training, data_file, tmp_path):
    """Five runs (all but the first resumed ones) killed a random 0-0.3 s after their second
    evaluation, checkpointing every step: each leaves a loadable, consistent checkpoint that
    --resume continues from. About a third of such kills land inside a save; with a save that
    writes ckpt.pkl in place this test fails most times."""
    out, text = tmp_path / "out", data_file.read_text()
    delays = random.Random(0).sample(range(0, 300, 10), 5)
    for kill, delay in enumerate(delays):
        before = evaluations(out)
        proc = start_training(data_file, out, "--max-iters", "100000", *(["--resume"] if kill else []))
        wait_until(proc, lambda: (out / CHECKPOINT).exists() and evaluations(out) >= before + 2,
                   "two evaluations")
        time.sleep(delay / 1000)
        proc.kill()
        assert proc.wait(timeout=10) == -signal.SIGKILL
        step = assert_consistent_checkpoint(out, text)
        assert all(json.loads(line) for line in (out / METRICS).read_text().splitlines())
        assert_resumes_from(data_file, out, step)


def test_one_run_per_out_and_a_killed_run_leaves_no_stuck_lock(start_training, data_file, tmp_path):
    """A second run on a folder in use is refused, naming it and the holder's pid, and changes
    nothing; once the holder is killed (SIGKILL: no clean-up), --resume goes on."""
    out = tmp_path / "out"
    first = start_training(data_file, out, "--max-iters", "100000")
    wait_until(first, lambda: (out / CHECKPOINT).exists() and evaluations(out) >= 1, "an evaluation")
    second = resume_to(data_file, out, 100000)
    assert second.returncode == 1, second.stdout + second.stderr
    assert second.stderr == (f"error: {out} is in use by another training run (pid {first.pid}); "
                             "wait for it to finish or stop it, or pass another --out\n")
    seen = evaluations(out)
    wait_until(first, lambda: evaluations(out) > seen, "the first run's next evaluation")   # it goes on
    first.kill()
    assert first.wait(timeout=10) == -signal.SIGKILL
    from gpt.checkpoint import LOCK
    assert (out / LOCK).exists()   # left behind, but the kernel released the lock with the process
    step = assert_consistent_checkpoint(out, data_file.read_text())
    assert_resumes_from(data_file, out, step)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_and_sigterm_save_a_checkpoint_and_exit_128_plus_the_signal(start_training, data_file, tmp_path, sig):
    """Exit 130 (SIGINT) or 143 (SIGTERM), so `train && sample` stops; no `done:` line; one line
    saying the run was interrupted, with the command that continues it, which does."""
    out = tmp_path / "out"
    proc = start_training(data_file, out, "--max-iters", "100000")
    wait_until(proc, lambda: evaluations(out) >= 2, "two evaluations")
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 128 + sig, proc.log_path.read_text()
    output = proc.log_path.read_text()
    assert "Traceback" not in output and "done:" not in output
    saved = re.search(rf"^{sig.name}: interrupted at step (\d+), saved a checkpoint in (.+); continue with: (.+)$",
                      output, re.MULTILINE)
    assert saved, output
    step = int(saved[1])
    assert Path(saved[2]) == out / CHECKPOINT
    assert assert_consistent_checkpoint(out, data_file.read_text()) == step
    command = shlex.split(saved[3])
    assert command[:2] == ["python", TRAIN_SCRIPT] and "--resume" in command
    assert "--data" not in command and "--n-embd" not in command  # the checkpoint holds them
    done = subprocess.run([sys.executable, *command[1:], "--max-iters", str(step + 6)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=60)
    assert_resumes_from(data_file, out, step, done)


# ---- non-finite losses ----------------------------------------------------------------------

def poisoned_gpt(parameter, at_step=None, after_update=None, inf_gradient_at_update=None, value=np.nan,
                 then=None, inf_gradient_at_step=None):
    """gpt.train.GPT, but `parameter` is filled with NaN (or `value`) just before the training
    forward pass of step `at_step`, or just after the optimizer update number `after_update`
    (and then `then()` is called); or its gradient is filled with Inf just before update number
    `inf_gradient_at_update`, or as step `inf_gradient_at_step` gathers its gradients (the loss
    stays finite).

    A huge learning rate does produce NaN, but after a number of steps that depends on every
    op's rounding; poisoning a chosen weight at a chosen step is exact, and chooses which op
    first meets the NaN (the one that reads that weight)."""
    class PoisonedGPT(GPT):
        def forward(self, idx, targets=None, cache=None):
            if self.training and tl.is_grad_enabled():               # a training step, not evaluation
                self.steps_seen = getattr(self, "steps_seen", 0) + 1
                if at_step is not None and self.steps_seen == at_step + 1:
                    dict(self.named_parameters())[parameter].data[...] = value
            return super().forward(idx, targets, cache)

        def configure_optimizer(self, *args, **kwargs):
            optimizer = super().configure_optimizer(*args, **kwargs)
            update, updates, gather = optimizer.step, [], optimizer.gather_grads

            def gather_grads():
                if inf_gradient_at_step is not None and getattr(self, "steps_seen", 0) == inf_gradient_at_step + 1:
                    dict(self.named_parameters())[parameter].grad[...] = np.inf
                return gather()
            optimizer.gather_grads = gather_grads

            def step():
                if len(updates) + 1 == inf_gradient_at_update:
                    dict(self.named_parameters())[parameter].grad[...] = np.inf
                update()
                updates.append(1)
                if len(updates) == after_update:
                    dict(self.named_parameters())[parameter].data[...] = value
                    if then is not None:
                        then()
            optimizer.step = step
            return optimizer
    return PoisonedGPT


def test_a_nan_loss_stops_training_naming_the_step_and_the_last_good_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(gpt.train, "GPT", poisoned_gpt("lm_head.weight", at_step=7))
    with pytest.raises(TrainingError) as error:
        train(tmp_path)
    message = str(error.value)
    assert message.startswith("step 7: the loss is nan")
    assert str(tmp_path / CHECKPOINT) in message and "--debug-nan" in message
    state = load_checkpoint(tmp_path)
    assert state["step"] == 5
    assert all(np.isfinite(w).all() for w in state["model"].values())


@pytest.mark.parametrize("parameter, op", [
    ("transformer.wte.weight", "Embedding"),
    ("transformer.h.0.ln_1.weight", "LayerNorm"),
    ("lm_head.weight", "Linear"),
])
def test_debug_nan_names_the_op_that_first_produced_it(tmp_path, monkeypatch, parameter, op):
    monkeypatch.setattr(gpt.train, "GPT", poisoned_gpt(parameter, at_step=7))
    with pytest.raises(TrainingError, match=rf"^step 7: the loss is nan \({op}\.forward produced NaN\); "
                                            rf"the last good checkpoint \(step 5\) is .*{CHECKPOINT}$"):
        train(tmp_path, debug_nan=True)


def test_a_nan_gradient_norm_stops_training_with_grad_clip(tmp_path, monkeypatch):
    """A finite loss with a non-finite gradient (an overflow in backward): the norm says so."""
    clip, calls = tl.optim.clip_grad_norm_, []

    def clip_overflowing_at_step_7(params, max_norm):
        calls.append(1)
        norm = clip(params, max_norm)
        return norm * float("nan") if len(calls) == 8 else norm    # a 0-d Tensor, as clip's
    monkeypatch.setattr(tl.optim, "clip_grad_norm_", clip_overflowing_at_step_7)
    last_good = re.escape(str(tmp_path / CHECKPOINT))
    with pytest.raises(TrainingError,
                       match=rf"^step 7: the gradient norm is nan.*checkpoint \(step 5\) is {last_good}$"):
        train(tmp_path, grad_clip=1.0)
    assert load_checkpoint(tmp_path)["step"] == 5


def test_debug_nan_names_the_op_with_grad_clip_on(tmp_path, monkeypatch):
    monkeypatch.setattr(gpt.train, "GPT", poisoned_gpt("lm_head.weight", at_step=7))
    with pytest.raises(TrainingError, match=r"Linear\.forward produced NaN"):
        train(tmp_path, grad_clip=1.0, debug_nan=True)


def test_a_nan_evaluation_does_not_overwrite_the_last_good_checkpoint(tmp_path, monkeypatch):
    """The weights turn NaN in the update before step 10, an evaluation step (as an overflowing
    update does with a huge learning rate)."""
    monkeypatch.setattr(gpt.train, "GPT", poisoned_gpt("lm_head.weight", after_update=10))
    with pytest.raises(TrainingError, match=r"^step 10: .*nan"):
        train(tmp_path)
    state = load_checkpoint(tmp_path)
    assert state["step"] == 5
    assert all(np.isfinite(w).all() for w in state["model"].values())


POISONS = {  # name: (the poison, what the error says about step 7)
    "weights made NaN by update 7": (dict(after_update=7), r"the loss is nan"),
    "an infinite gradient in update 7, with a finite loss": (dict(inf_gradient_at_update=7), r"the loss is nan"),
    "an optimizer moment made NaN by update 7": (dict(after_update=7, moment=True),
                                                 r"the optimizer's exp_avg of parameter \d+ is not finite after "
                                                 r"the update of step 6"),
}


@pytest.mark.parametrize("poison, said", POISONS.values(), ids=POISONS.keys())
def test_checkpoint_interval_never_saves_a_non_finite_state(tmp_path, monkeypatch, poison, said):
    """With a checkpoint every step, the state after a bad update (step 7) is refused before it
    is written: the checkpoint the error names is step 6's, finite, and it resumes. A NaN the
    loss does not read yet (an optimizer moment) is caught by the check of what is saved."""
    if poison.pop("moment", False):
        update, updates = tl.optim.AdamW.step, []

        def step(self):
            update(self)
            updates.append(1)
            if len(updates) == poison["after_update"]:
                self.param_groups[0]["exp_avg"][...] = np.nan
        monkeypatch.setattr(tl.optim.AdamW, "step", step)
    else:
        monkeypatch.setattr(gpt.train, "GPT", poisoned_gpt("lm_head.weight", **poison))
    last_good = re.escape(str(tmp_path / CHECKPOINT))
    with pytest.raises(TrainingError, match=rf"^step 7: {said}.*the last good checkpoint \(step 6\) is {last_good}$"):
        train(tmp_path, checkpoint_interval=1)
    state = load_checkpoint(tmp_path)
    assert state["step"] == 6
    assert all(np.isfinite(w).all() for w in state["model"].values())
    assert all(np.isfinite(m["exp_avg_sq"]).all() for m in state["optimizer"]["state"].values())
    monkeypatch.undo()
    result, _ = train(tmp_path, resume=True, checkpoint_interval=1)
    assert result["step"] == 20 and math.isfinite(result["val_loss"])


def test_a_huge_learning_rate_never_leaves_a_diverged_checkpoint(tmp_path):
    """Learning rate 1e20, a checkpoint every step: update 0 makes the weights finite but about
    1e20, and step 1's loss is NaN. The checkpoint the error names is step 0's, with the weights
    as initialised; before, step 1's state was saved before its loss was computed."""
    last_good = re.escape(str(tmp_path / CHECKPOINT))
    with pytest.raises(TrainingError, match=rf"^step 1: the loss is nan.*the last good checkpoint \(step 0\) is "
                                            rf"{last_good}$"):
        train(tmp_path, learning_rate=1e20, warmup_iters=0, checkpoint_interval=1, grad_clip=1.0)
    state = load_checkpoint(tmp_path)
    assert state["step"] == 0
    assert max(np.abs(w).max() for w in state["model"].values()) < 10


def test_divergence_stops_with_no_numpy_warnings_and_leaves_them_on_elsewhere(tmp_path):
    """The loop checks for NaN and Inf itself, so NumPy's overflow warnings (several lines each,
    with source lines) are off inside a step and an evaluation, and only there."""
    before = np.geterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # a RuntimeWarning would be raised instead
        with pytest.raises(TrainingError, match=r"^step 1: the loss is nan"):
            train(tmp_path, learning_rate=1e20, warmup_iters=0, grad_clip=1.0)
    assert np.geterr() == before
    with pytest.warns(RuntimeWarning, match="overflow"):
        np.float32(1e30) * np.float32(1e30)


def test_a_diverging_run_prints_one_error_line(data_file, tmp_path):
    done = subprocess.run([sys.executable, TRAIN_SCRIPT, "--data", str(data_file), "--out", str(tmp_path / "out"),
                           *TINY_FLAGS, "--max-iters", "5", "--learning-rate", "1e20", "--warmup-iters", "0",
                           "--no-lr-decay"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert re.fullmatch(r"error: step 1: the loss is nan \(run with --debug-nan [^\n]*\(step 0\) is [^\n]*\n",
                        done.stderr), done.stderr


@pytest.mark.parametrize("bad_step, last_good, settings", [
    (7, 6, dict(checkpoint_interval=1)),
    (10, 5, dict()),
    (20, 15, dict()),
], ids=["an interval checkpoint", "an evaluation's checkpoint", "the final checkpoint"])
def test_a_checkpoint_of_step_s_waits_for_step_s_gradients(tmp_path, monkeypatch, bad_step, last_good, settings):
    """The gradient of step `bad_step` (a checkpoint step) is NaN, with a finite loss and finite
    weights: its state is not saved, the error names the checkpoint before it. The last step
    (max_iters 20) computes its loss and gradients for this too, though it takes no update."""
    clip, calls = tl.optim.clip_grad_norm_, []

    def clip_overflowing(params, max_norm):
        calls.append(1)
        norm = clip(params, max_norm)
        return norm * float("nan") if len(calls) == bad_step + 1 else norm
    monkeypatch.setattr(tl.optim, "clip_grad_norm_", clip_overflowing)
    with pytest.raises(TrainingError, match=rf"^step {bad_step}: the gradient norm is nan.*checkpoint "
                                            rf"\(step {last_good}\) is "):
        train(tmp_path, grad_clip=1.0, **settings)
    assert load_checkpoint(tmp_path)["step"] == last_good


def test_a_gradient_overflow_is_caught_without_clipping(tmp_path, monkeypatch):
    """grad_clip 0 computes no norm to clip with, but the gradients are still checked: an
    infinite gradient with a finite loss at step 7 stops the run there, naming step 5's
    checkpoint (before, the update made the weights NaN and step 8's loss said so)."""
    monkeypatch.setattr(gpt.train, "GPT", poisoned_gpt("lm_head.weight", inf_gradient_at_step=7))
    with pytest.raises(TrainingError, match=r"^step 7: the gradient norm is inf.*checkpoint \(step 5\) is "):
        train(tmp_path, grad_clip=0.0)
    assert load_checkpoint(tmp_path)["step"] == 5


def test_a_signal_saves_only_a_state_whose_step_was_finite(tmp_path, monkeypatch):
    """Ctrl-C arrives just after update 7 made lm_head finite but huge (1e30): step 7's gradient
    overflows, so step 7 is not the state saved on the signal (before, it was); the run stops with the error, naming
    step 5's checkpoint, which holds the weights before the damage."""
    handler_before = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(gpt.train, "GPT", poisoned_gpt("lm_head.weight", after_update=7, value=1e30,
                                                       then=lambda: signal.raise_signal(signal.SIGINT)))
    with pytest.raises(TrainingError, match=r"^step 7: the (loss|gradient norm) is (nan|inf).*checkpoint \(step 5\) "
                                            r"is "):
        train(tmp_path)
    assert signal.getsignal(signal.SIGINT) is handler_before
    state = load_checkpoint(tmp_path)
    assert state["step"] == 5 and np.abs(state["model"]["lm_head.weight"]).max() < 10


# ---- a folder holds one run -----------------------------------------------------------------

def test_a_new_run_refuses_a_folder_holding_a_checkpoint(trained):
    """Neither the checkpoint nor the metrics of the run already there are touched."""
    before = {name: (trained / name).read_bytes() for name in (CHECKPOINT, METRICS)}
    with pytest.raises(TrainingError, match=r"already holds a training run \(ckpt\.pkl, at step 20, on this data\): "
                                            r"pass --resume to continue it, --overwrite to replace it with a new run, "
                                            r"or another --out$"):
        train(trained, max_iters=10)
    assert {name: (trained / name).read_bytes() for name in before} == before


def test_a_new_run_on_other_data_in_an_occupied_default_out_names_the_data_there(tmp_path):
    """Two files called mytext.txt share the default folder out/mytext-cpu: the refusal names
    the run there, its step and its data file, and suggests another --out first."""
    (tmp_path / "sub").mkdir()
    first, second = tmp_path / "mytext.txt", tmp_path / "sub" / "mytext.txt"
    first.write_text(TEXT)
    second.write_text(made_up_text(4000, seed=3))
    run(*configs(max_iters=2), TEXT, tmp_path / "out" / "mytext-cpu", progress=False, log=lambda line: None,
        data_path=first)
    before = (tmp_path / "out" / "mytext-cpu" / CHECKPOINT).read_bytes()
    done = subprocess.run([sys.executable, str(REPO / TRAIN_SCRIPT), "--device", "cpu", "--data", "sub/mytext.txt"],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""     # the one line, no settings printed first
    assert done.stderr == (f"error: {Path('out') / 'mytext-cpu'} already holds a training run (ckpt.pkl, at step 2, "
                           f"trained on other data: {str(first)!r}): pass another --out for the new run, --overwrite "
                           "to replace that run, or --resume to continue it on its own data\n")
    assert (tmp_path / "out" / "mytext-cpu" / CHECKPOINT).read_bytes() == before


def test_a_second_run_in_a_locked_folder_is_refused_naming_the_holder(trained):
    from gpt.checkpoint import LOCK, RunLock
    before = {name: (trained / name).read_bytes() for name in (CHECKPOINT, METRICS)}
    (trained / (CHECKPOINT + ".x1.tmp")).write_bytes(b"the holder's save in flight")
    with RunLock(trained):
        assert (trained / LOCK).read_text() == f"{os.getpid()}\n"
        with pytest.raises(TrainingError, match=rf"^{re.escape(str(trained))} is in use by another training "
                                                rf"run \(pid {os.getpid()}\)"):
            train(trained, resume=True, max_iters=25)
        assert (trained / (CHECKPOINT + ".x1.tmp")).exists()   # the holder's temporary file is left alone
        assert {name: (trained / name).read_bytes() for name in before} == before
    assert not (trained / LOCK).exists()
    assert train(trained, resume=True, max_iters=25)[0]["step"] == 25  # released: the folder is usable again


# ---- a damaged metrics log ------------------------------------------------------------------

DAMAGE = {  # name: (damage to the log of steps 0, 5, 10; the damaged line's number; steps left after resuming)
    "a truncated last line": (lambda log: log + '{"step": 15, "train_lo', 4, [0, 5, 10, 15, 20]),
    "garbage appended": (lambda log: log + "\x00\x00\x00 not json at all\n", 4, [0, 5, 10, 15, 20]),
    "a damaged line among good ones": (lambda log: log.replace('{"step": 5,', '{"step": 5 x', 1), 2,
                                       [0, 10, 15, 20]),
    "a line with no step": (lambda log: log + '{"train_loss": 1.0}\n', 4, [0, 5, 10, 15, 20]),
    "a boolean step": (lambda log: log + '{"step": true, "train_loss": 1.0}\n', 4, [0, 5, 10, 15, 20]),
}


@pytest.mark.parametrize("damage, line, steps", DAMAGE.values(), ids=DAMAGE.keys())
def test_damaged_metrics_lines_are_dropped_with_a_warning_and_resume_goes_on(tmp_path, damage, line, steps):
    train(tmp_path, max_iters=10)
    path = tmp_path / METRICS
    path.write_text(damage(path.read_text()))
    result, lines = train(tmp_path, resume=True)
    assert result["step"] == 20
    warnings = [text for text in lines if text.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {path}:{line}: dropped a damaged line")
    assert [m["step"] for m in read_metrics(tmp_path)] == steps


# ---- memory ---------------------------------------------------------------------------------

@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="no /proc/meminfo to read MemAvailable from")
def test_a_model_too_big_for_memory_is_refused_before_allocating(tmp_path, monkeypatch):
    """block_size 100000: 300 GiB of attention matrices for this tiny model. Refused at once,
    naming what it needs and what there is, without building the model (whose mask is 10 GB)."""
    def no_model(config):
        raise AssertionError("the model was built")
    monkeypatch.setattr(gpt.train, "GPT", no_model)
    size = r"[\d.]+ [GT]iB"
    with pytest.raises(TrainingError, match=rf"^block_size 100000 with batch_size 4 \(n_layer 1, n_head 2, n_embd 16\) "
                                            rf"needs at least {size} to train \(activations {size}, .*attention mask "
                                            rf"{size}\), but the machine has available \(MemAvailable\) {size}"):
        train(tmp_path, block_size=100_000)
    assert not any(tmp_path.iterdir())


def test_the_gpu_memory_check_counts_free_memory_and_cupys_pool(monkeypatch):
    from types import SimpleNamespace

    from gpt.train import available_memory, check_memory
    fake = SimpleNamespace(cuda=SimpleNamespace(runtime=SimpleNamespace(memGetInfo=lambda: (3 << 30, 80 << 30))),
                           get_default_memory_pool=lambda: SimpleNamespace(free_bytes=lambda: 1 << 30))
    monkeypatch.setattr(tl.backend, "cp", fake)
    assert available_memory("cuda") == 4 << 30
    check_memory(*preset("lecture", vocab_size=65), "cuda")    # about 3 GiB: fits
    with pytest.raises(TrainingError, match=r"needs at least 1[\d.]+ GiB .*but the GPU has free 4\.0 GiB"):
        check_memory(*preset("lecture", vocab_size=65, block_size=1024), "cuda")
    monkeypatch.setattr(tl.backend, "cp", None)
    assert available_memory("cuda") is None                     # unknown: no refusal on a guess


@pytest.mark.parametrize("overrides", [dict(), dict(block_size=128, n_embd=16, n_head=4, n_layer=2)],
                         ids=["cpu preset", "attention-heavy"])
def test_the_memory_estimate_is_a_lower_bound_of_a_measured_step(overrides):
    """The refusal must never stop a run that fits: the estimate stays below the traced peak of
    building the model and taking one training step (NumPy reports its arrays to tracemalloc)."""
    import tracemalloc

    from gpt.config import memory_estimate
    model_cfg, train_cfg = preset("cpu", vocab_size=65, **overrides)
    x = np.random.default_rng(0).integers(0, 65, (train_cfg.batch_size, model_cfg.block_size))
    tracemalloc.start()
    try:
        tl.manual_seed(0)
        model = GPT(model_cfg)
        optimizer = model.configure_optimizer(1e-3, 0.1, (0.9, 0.99))
        _, loss = model(x, x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    estimate = sum(memory_estimate(model_cfg, train_cfg.batch_size).values())
    assert peak / 3 < estimate <= peak, (estimate, peak)


# ---- clear errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("bad_id", [11, 40, -1, -12])
def test_token_ids_out_of_range_are_named(bad_id):
    tl.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    with pytest.raises(IndexError, match=rf"id {bad_id} is out of range .*11 rows"):
        model(np.array([[0, 3, bad_id, 2]]))
    with pytest.raises(IndexError, match=rf"id {bad_id} is out of range"):
        F.embedding(np.array([[1, bad_id]]), model.transformer.wte.weight)


def test_a_sequence_longer_than_block_size_is_refused():
    tl.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    with pytest.raises(ValueError, match=r"9 positions but block_size is 8"):
        model(np.zeros((2, 9), dtype=np.int64))


@pytest.mark.parametrize("op, a, b", [
    (lambda a, b: a @ b, (2, 3), (4, 5)),
    (lambda a, b: a @ b, (7, 2, 3), (7, 4, 5)),
    (F.matmul, (3,), (4, 2)),
    (lambda a, b: a + b, (2, 3), (4,)),
    (lambda a, b: a * b, (5, 2, 3), (4, 3)),
], ids=["matmul", "batched matmul", "vector matmul", "add", "mul"])
def test_shape_mismatches_name_both_shapes(op, a, b):
    x, y = tl.tensor(np.ones(a), requires_grad=True), tl.tensor(np.ones(b))
    with pytest.raises(ValueError) as error:
        op(x, y)
    assert str(a) in str(error.value) and str(b) in str(error.value)


def test_backward_on_a_non_scalar_asks_for_a_gradient():
    y = tl.tensor(np.ones((2, 3)), requires_grad=True) * 3.0
    with pytest.raises(RuntimeError, match=r"non-scalar tensor of shape \(2, 3\) needs a gradient"):
        y.backward()


def pretend_on_cuda(monkeypatch, *arrays):
    """Make tensorlite report these arrays as living on "cuda" (no GPU needed)."""
    real = tl.backend.device_of
    fake = lambda x: "cuda" if any(x is a for a in arrays) else real(x)  # noqa: E731
    monkeypatch.setattr(tl.backend, "device_of", fake)
    monkeypatch.setattr(sys.modules["tensorlite.tensor"], "device_of", fake)  # tl.tensor is the function


@pytest.mark.parametrize("op, name", [(lambda a, b: a + b, "Add"), (lambda a, b: a @ b, "MatMul")])
def test_ops_refuse_inputs_on_different_devices(monkeypatch, op, name):
    a, b = tl.tensor(np.ones((2, 2)), requires_grad=True), tl.tensor(np.ones((2, 2)))
    pretend_on_cuda(monkeypatch, b.data)
    with pytest.raises(tl.DeviceError, match=rf"{name}: inputs are on different devices \(cpu, cuda\)"):
        op(a, b)


def test_embedding_refuses_ids_on_another_device(monkeypatch):
    weight, ids = tl.tensor(np.ones((5, 3)), requires_grad=True), np.array([[0, 1]])
    pretend_on_cuda(monkeypatch, ids)
    with pytest.raises(tl.DeviceError, match="ids are on cuda but the weights on cpu"):
        F.embedding(tl.Tensor(ids), weight)


@pytest.mark.parametrize("n_chars, split", [(15, "train"), (60, "val")])
def test_a_dataset_too_short_for_block_size_names_the_split(tmp_path, n_chars, split):
    text = made_up_text(n_chars)
    with pytest.raises(ValueError, match=rf"the {split} split has \d+ characters, too few for block_size 16"):
        train(tmp_path, text=text)


def test_a_refused_run_leaves_no_empty_folders_behind(tmp_path):
    """out/mytext-cpu, as the default --out: both folders go when the run is refused, not only
    the last one; a folder that was there before stays."""
    (tmp_path / "kept").mkdir()
    for out in (tmp_path / "out" / "mytext-cpu", tmp_path / "kept" / "a" / "b"):
        with pytest.raises(ValueError, match="too few for block_size"):
            train(out, text=made_up_text(15))
    assert sorted(os.listdir(tmp_path)) == ["kept"] and not any((tmp_path / "kept").iterdir())


def test_an_empty_dataset_is_refused(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        run(*configs(), "", tmp_path, progress=False, log=print)


CORRUPTIONS = {
    "truncated to half": lambda data: data[:len(data) // 2],
    "truncated to 1 byte": lambda data: data[:1],
    "empty": lambda data: b"",
    "garbage": lambda data: b"this is not a pickle\n" * 10,
    "random bytes": lambda data: np.random.default_rng(0).bytes(1000),
    "a huge length field": lambda data: b"\x80\x05\x8e" + b"\xff" * 8,
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_a_damaged_checkpoint_is_reported_as_truncated_or_corrupt(trained, corrupt):
    path = trained / CHECKPOINT
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(TrainingError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_a_pickle_that_is_not_a_checkpoint_is_refused(tmp_path):
    (tmp_path / CHECKPOINT).write_bytes(pickle.dumps({"step": 3}))
    with pytest.raises(TrainingError, match="not a tensorlite-gpt checkpoint"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("other, named", [
    (dict(n_embd=32), r"shape mismatch: transformer\.wte\.weight: checkpoint \(\d+, 32\) vs model \(\d+, 16"),
    (dict(n_layer=2), r"unexpected keys: transformer\.h\.1\."),
    (dict(bias=False), r"missing keys: transformer\.h\.0\.ln_1\.bias"),
    (dict(block_size=8), r"transformer\.wpe\.weight: checkpoint \(8, 16\) vs model \(16, 16\)"),
], ids=["n_embd", "n_layer", "bias", "block_size"])
def test_loading_another_configs_weights_names_the_mismatch_and_changes_nothing(other, named):
    model_cfg = configs()[0]
    tl.manual_seed(0)
    model = GPT(model_cfg)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    tl.manual_seed(1)
    other_state = GPT(GPTConfig(**{**asdict(model_cfg), **other})).state_dict()
    with pytest.raises(ValueError, match=named):
        model.load_state_dict(other_state)
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("field, value", [("n_embd", 32), ("dropout", 0.1), ("learning_rate", 0.5),
                                          ("batch_size", 8), ("seed", 7), ("grad_clip", 1.0)])
def test_resuming_with_a_setting_that_cannot_change_midway_names_it(trained, field, value):
    before = (trained / CHECKPOINT).read_bytes()
    with pytest.raises(TrainingError, match=rf"^cannot resume with {field} = {value}: the checkpoint was "
                                            rf"trained with {field} = .*max_iters, eval_interval"):
        train(trained, resume=True, **{field: value})
    assert (trained / CHECKPOINT).read_bytes() == before


def test_resume_may_change_how_long_and_how_often(trained):
    """max_iters, eval_interval, eval_iters and checkpoint_interval change mid-run."""
    _, lines = train(trained, resume=True, max_iters=26, eval_interval=3, eval_iters=1, checkpoint_interval=2)
    assert [int(STEP_LINE.match(line)[1]) for line in step_lines(lines)] == [21, 24, 26]
    state = load_checkpoint(trained)
    assert state["step"] == 26 and state["train_config"]["eval_interval"] == 3


def test_resuming_a_finished_run_says_so_in_one_line(trained):
    """Resumed at its max_iters, a run trains nothing: one line saying it finished and how to
    train longer; the checkpoint and the log are untouched."""
    before = {name: (trained / name).read_bytes() for name in (CHECKPOINT, METRICS)}
    result, lines = train(trained, resume=True)
    assert lines == [f"nothing to do: the run in {trained} already finished at step 20 (max_iters 20); to train "
                     "it longer, resume with a larger --max-iters (e.g. --max-iters 40)"]
    assert result["step"] == 20 and result["already_finished"] and result["val_loss"] is None
    assert {name: (trained / name).read_bytes() for name in before} == before


def test_resuming_a_finished_run_from_the_command_line_exits_0_with_that_line(tmp_path):
    """Exit status 0: the run is complete, so `train --resume && sample` goes on to sample it."""
    data, out = tmp_path / "mytext.txt", tmp_path / "out"
    data.write_text(TEXT)
    run(*configs(max_iters=3), TEXT, out, progress=False, log=lambda line: None, data_path=data)
    done = subprocess.run([sys.executable, TRAIN_SCRIPT, "--resume", "--out", str(out), "--device", "cpu",
                           "--no-progress"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.splitlines()[-1] == (f"nothing to do: the run in {out} already finished at step 3 "
                                            "(max_iters 3); to train it longer, resume with a larger --max-iters "
                                            "(e.g. --max-iters 6)")
    assert not any(line.startswith(("done:", "resuming from")) for line in done.stdout.splitlines())


def test_resume_to_fewer_steps_than_the_checkpoint_has_is_refused(trained):
    with pytest.raises(TrainingError, match=r"^cannot resume with max_iters = 10: the checkpoint is already at "
                                            r"step 20"):
        train(trained, resume=True, max_iters=10)


def test_resume_keeps_the_schedule_ending_where_it_did(tmp_path):
    """lr_decay with lr_decay_iters 0 ends the cosine at max_iters: resuming 10 steps to 20 keeps it
    ending at 10 (then min_lr), as one run with lr_decay_iters=10 does, instead of bending it."""
    settings = dict(lr_decay=True, warmup_iters=2, min_lr=1e-4)
    train(tmp_path / "one-go", lr_decay_iters=10, **settings)
    train(tmp_path / "resumed", max_iters=10, **settings)
    _, lines = train(tmp_path / "resumed", resume=True, **settings)
    assert "the learning-rate schedule still ends at step 10, the checkpoint's max_iters" in lines[1]
    assert_same_state(load_checkpoint(tmp_path / "one-go"), load_checkpoint(tmp_path / "resumed"))
    assert load_checkpoint(tmp_path / "resumed")["train_config"]["lr_decay_iters"] == 10


def test_resume_refuses_another_text(trained):
    """The checkpoint records its text's sha256: a changed file is refused, naming both digests."""
    changed = TEXT[:-1] + ("a" if TEXT[-1] != "a" else "b")
    with pytest.raises(TrainingError, match=r"^the text is not the one this checkpoint was trained on \(its "
                                            r"sha256 is [0-9a-f]{12}"):
        train(trained, text=changed, resume=True)


def test_resume_without_a_checkpoint_says_so(tmp_path):
    with pytest.raises(TrainingError, match=rf"^nothing to resume: {re.escape(str(tmp_path))} holds no checkpoint"):
        train(tmp_path, resume=True)


@pytest.mark.parametrize("field, value", [
    ("learning_rate", 0.0), ("eval_iters", 0), ("warmup_iters", -1), ("checkpoint_interval", -1),
] + [
    (field, value)
    for field, value, consequence in [
        ("grad_clip", -1.0, "clip_grad_norm_ then multiplies every gradient by a negative factor "
                            "(gradient ascent); require grad_clip >= 0"),
        ("weight_decay", -5.0, "configure_optimizer passes it per group, which AdamW does not check; "
                               "require weight_decay >= 0"),
        ("learning_rate", float("nan"), "'nan <= 0' is False; require math.isfinite and > 0"),
        ("min_lr", -1.0, "the cosine schedule then goes negative; require min_lr >= 0"),
    ]
], ids=["learning_rate=0", "eval_iters=0", "warmup_iters<0", "checkpoint_interval<0",
        "grad_clip<0", "weight_decay<0", "learning_rate=nan", "min_lr<0"])
def test_invalid_train_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_resume_cleans_up_after_a_kill_during_a_save(tmp_path):
    """A kill between the metrics line and the checkpoint, or inside a save, leaves a metrics
    line the checkpoint never saw and a temporary file: resume drops both, then redoes them."""
    train(tmp_path, max_iters=10)                      # evaluations at 0, 5, 10; checkpoint at 10
    one_go = metric_losses(tmp_path)
    state = load_checkpoint(tmp_path)
    with open(tmp_path / "metrics.jsonl", "a") as f:  # as if killed after logging step 15
        f.write(json.dumps({"step": 15, "train_loss": 9.0, "val_loss": 9.0}) + "\n")
    (tmp_path / (CHECKPOINT + ".abc123.tmp")).write_bytes(b"half a pickle")
    train(tmp_path, resume=True, max_iters=20)
    assert state["step"] == 10
    steps = [s for s, _, _ in metric_losses(tmp_path)]
    assert steps == [0, 5, 10, 15, 20]                  # step 15 once, from the resumed run
    assert metric_losses(tmp_path)[:3] == one_go
    assert not list(tmp_path.glob("*.tmp"))


def test_the_progress_bar_is_drawn_only_on_a_terminal(monkeypatch):
    from gpt.train import _progress_bar
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert _progress_bar(10, 0, True) is None            # a log file or a pipe: step lines only
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bar = _progress_bar(10, 0, True)
    assert bar is not None and _progress_bar(10, 0, False) is None
    bar.close()
