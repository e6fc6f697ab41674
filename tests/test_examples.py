"""The example scripts as a user runs them: flags made from the dataclasses, one-line errors
without a traceback or usage dump, what --resume restores, and short end-to-end runs (on the real
Tiny Shakespeare when it is here: $TINYSHAKESPEARE_PATH, or where training caches its download).
"""
import dataclasses
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tensorlite as tl
from gpt import GPTConfig, TrainConfig
from gpt import preset as gpt_preset
from gpt import data as gpt_data
from gpt.train import CHECKPOINT, METRICS, TrainingError, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
STEP_LINE = re.compile(r"^step (\d+): train loss (\d+\.\d{4}), val loss (\d+\.\d{4})$")
TINY_FLAGS = ["--device", "cpu", "--no-progress", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
              "--block-size", "16", "--batch-size", "4", "--eval-iters", "1", "--sample-chars", "0"]


SHARED_COPY = REPO.parent / "shared/data/tinyshakespeare/input.txt"  # beside a checkout, if anywhere


def shakespeare_path():
    """$TINYSHAKESPEARE_PATH, else the download training caches (gpt.data.default_cache_dir()),
    else a copy beside the checkout; the skip says which variable to set."""
    path = gpt_data.find_tinyshakespeare() or (SHARED_COPY if SHARED_COPY.is_file() else None)
    if path is None:
        pytest.skip("Tiny Shakespeare not found: set TINYSHAKESPEARE_PATH=/path/to/input.txt, or run "
                    "python examples/train_shakespeare.py once to download it into the cache")
    return path


def script(name, *args, timeout=120, cwd=REPO):
    return subprocess.run([sys.executable, str(REPO / "examples" / name), *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_one_line_error(proc, *fragments, code=1):
    """Exit code `code`, and stderr is exactly one line `error: ...` holding every fragment."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    return assert_one_line(proc.stderr, *fragments)


def assert_one_line(stderr, *fragments):
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def step_numbers(stdout):
    return [int(m[1]) for m in map(STEP_LINE.match, stdout.splitlines()) if m]


def printed_after_the_step_lines(stdout):
    last = list(re.finditer(r"^step \d+: .*\n", stdout, re.MULTILINE))[-1]
    return stdout[last.end():]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    """20,000 characters of made-up lines (lowercase words, spaces, punctuation, newlines)."""
    rng = np.random.default_rng(0)
    words = "the king and queen of rome shall not go to war with france my lord be still now".split()
    lines = [" ".join(rng.choice(words, rng.integers(3, 9))) + rng.choice([",", ".", ";", "!"])
             for _ in range(800)]
    path = tmp_path_factory.mktemp("data") / "input.txt"
    path.write_text("\n".join(lines)[:20_000])
    return path


@pytest.fixture(scope="module")
def tiny_run(data_file, tmp_path_factory):
    """A 6-step train_shakespeare.py run of the tiny model on data_file."""
    out = tmp_path_factory.mktemp("tiny") / "out"
    proc = script("train_shakespeare.py", "--data", data_file, "--out", out, *TINY_FLAGS,
                  "--max-iters", "6", "--eval-interval", "3")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def shakespeare_run(tmp_path_factory):
    """The cpu preset's real shape on the real data, for 3 steps."""
    data = shakespeare_path()
    out = tmp_path_factory.mktemp("shakespeare") / "out"
    proc = script("train_shakespeare.py", "--device", "cpu", "--data", data, "--out", out, "--no-progress",
                  "--max-iters", "3", "--eval-interval", "3", "--eval-iters", "1")
    return proc, out


# ---- train_shakespeare.py -------------------------------------------------------------------

def test_train_help_lists_a_flag_for_every_setting():
    proc = script("train_shakespeare.py", "--help")
    assert proc.returncode == 0, proc.stderr
    flags = set(re.findall(r"--[a-z][a-z0-9-]*", proc.stdout))
    required = {"--n-layer", "--n-head", "--n-embd", "--block-size", "--batch-size", "--dropout",
                "--max-iters", "--eval-interval", "--eval-iters", "--learning-rate", "--seed",
                "--data", "--out", "--resume", "--overwrite"}
    assert required <= flags
    from_dataclasses = {"--" + f.name.replace("_", "-") for cls in (GPTConfig, TrainConfig)
                        for f in dataclasses.fields(cls) if f.name != "vocab_size"}
    assert from_dataclasses <= flags, from_dataclasses - flags
    assert "--vocab-size" not in flags  # it comes from the data
    # each setting shows what both presets set it to, not the dataclass's (the lecture's) default
    text = " ".join(proc.stdout.split())
    for flag, cpu, lecture in [("--block-size BLOCK_SIZE", 64, 256), ("--n-layer N_LAYER", 4, 6),
                               ("--batch-size BATCH_SIZE", 12, 64), ("--learning-rate LEARNING_RATE", 0.001, 0.0003),
                               ("--dropout DROPOUT", 0.0, 0.2)]:
        assert f"{flag} (cpu preset: {cpu}, lecture preset: {lecture})" in text, flag
    assert "--seed SEED (default: 1337)" in text
    assert f"--device auto picks {'cuda' if tl.gpu_available() else 'cpu'}" in text


@pytest.mark.skipif(tl.gpu_available(), reason="CuPy sees a GPU here: --device cuda works")
def test_train_no_tf32_turns_tf32_off_for_the_run_and_records_it(data_file, tmp_path, monkeypatch):
    """--no-tf32 is parsed into TrainConfig.tf32, the backend's TF32 setting is off while the run
    trains (seen at each evaluation), back as it was afterwards, and the checkpoint records it;
    --resume may turn it on again. On the CPU it changes no number."""
    import gpt.train
    train_script = load_example("train_shakespeare")
    assert train_script.parse_args(["--no-tf32"]).tf32 is False
    assert train_script.parse_args([]).tf32 is None                       # the preset's: True
    assert "No effect on the CPU" in train_script.HELP["tf32"]
    seen, estimate = [], gpt.train.estimate_loss

    def estimate_and_look(*args, **kwargs):
        seen.append(tl.backend.tf32_enabled())
        return estimate(*args, **kwargs)
    monkeypatch.setattr(gpt.train, "estimate_loss", estimate_and_look)
    monkeypatch.setitem(tl.backend._tf32, "enabled", True)
    out = tmp_path / "out"
    flags = ["--data", str(data_file), "--out", str(out), *TINY_FLAGS, "--eval-interval", "2"]
    assert train_script.main([*flags, "--max-iters", "2", "--no-tf32"]) == 0
    assert seen == [False, False] and tl.backend.tf32_enabled()
    assert load_checkpoint(out)["train_config"]["tf32"] is False
    assert train_script.main([*flags, "--max-iters", "4", "--resume", "--tf32"]) == 0
    assert seen[2:] == [True] and load_checkpoint(out)["train_config"]["tf32"] is True


def test_train_on_cuda_without_cupy_says_what_to_install(data_file):
    proc = script("train_shakespeare.py", "--device", "cuda", "--data", data_file)
    assert proc.returncode != 0
    assert_one_line_error(proc, "pip install", "cuda12", code=proc.returncode)


def test_train_end_to_end_on_tiny_shakespeare(shakespeare_run):
    proc, out = shakespeare_run
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert step_numbers(proc.stdout) == [0, 3]
    rest = printed_after_the_step_lines(proc.stdout)
    sample, done = rest.split("\ndone: step 3, ")                  # the sample, then the summary
    assert len(sample) == TrainConfig().sample_chars
    assert done.endswith(f"checkpoint in {out}\n")
    state = load_checkpoint(out / CHECKPOINT)
    assert state["step"] == 3 and len(state["vocab"]) == 65
    assert set(sample) <= set(state["vocab"])
    cfg = state["model_config"]
    shape = (cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["block_size"])
    assert shape == (4, 4, 128, 64)  # the cpu preset
    metrics = [json.loads(line) for line in (out / METRICS).read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 3]


INVALID = [
    (["--n-embd", "15"], ["n_embd (15) must be divisible by n_head (2)"]),
    (["--n-head", "3"], ["n_embd (16) must be divisible by n_head (3)"]),
    (["--dropout", "1.0"], ["dropout", "[0, 1)", "1.0"]),
    (["--dropout", "-0.1"], ["dropout", "-0.1"]),
    (["--n-layer", "0"], ["n_layer", "positive"]),
    (["--block-size", "-1"], ["block_size", "positive"]),
    (["--batch-size", "0"], ["batch_size", "positive"]),
    (["--max-iters", "0"], ["max_iters", "positive"]),
]


@pytest.mark.parametrize("flags, fragments", INVALID, ids=[" ".join(flags) for flags, _ in INVALID])
def test_train_refuses_invalid_settings_in_one_line(data_file, tmp_path, flags, fragments):
    proc = script("train_shakespeare.py", "--data", data_file, "--out", tmp_path, *TINY_FLAGS, *flags)
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / CHECKPOINT).exists()


def test_train_refuses_an_empty_data_file(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    proc = script("train_shakespeare.py", "--data", empty, "--out", tmp_path / "out", *TINY_FLAGS)
    assert_one_line_error(proc, "empty", str(empty))


def test_train_refuses_a_data_file_too_short_for_block_size(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("to be or not to be, that is the question\n")
    proc = script("train_shakespeare.py", "--data", short, "--out", tmp_path / "out", *TINY_FLAGS)
    assert_one_line_error(proc, "split", "block_size 16")


@pytest.mark.parametrize("flag, value, field, saved", [("--n-embd", "32", "n_embd", "16"),
                                                       ("--learning-rate", "0.5", "learning_rate", "0.001")])
def test_train_resume_with_a_setting_that_cannot_change_names_it(tiny_run, tmp_path, flag, value, field, saved):
    out = tmp_path / "out"
    shutil.copytree(tiny_run, out)
    proc = script("train_shakespeare.py", "--out", out, "--resume", flag, value, "--max-iters", "9")
    assert_one_line_error(proc, f"cannot resume with {field} = {value}", f"trained with {field} = {saved}")
    assert load_checkpoint(out)["step"] == 6  # untouched


def test_train_resume_restores_the_settings_data_and_vocabulary(tiny_run, tmp_path, data_file):
    """`--resume --out OUT` alone: the tiny model, its data file and vocabulary come from the
    checkpoint (without them this would build the cpu preset on Tiny Shakespeare)."""
    out = tmp_path / "out"
    shutil.copytree(tiny_run, out)
    before = load_checkpoint(out)
    proc = script("train_shakespeare.py", "--out", out, "--resume", "--device", "cpu", "--no-progress",
                  "--max-iters", "9")
    assert proc.returncode == 0, proc.stderr
    assert f"resuming from {out / CHECKPOINT} at step 6" in proc.stdout
    assert f"data: {data_file}" in proc.stdout
    assert step_numbers(proc.stdout) == [9]
    after = load_checkpoint(out)
    assert after["step"] == 9 and after["model_config"] == before["model_config"]
    assert after["vocab"] == before["vocab"] and after["data"] == before["data"]
    assert after["data"]["path"] == str(data_file.resolve())
    moved = {"max_iters": 9, "lr_decay_iters": 6}  # the cosine still ends where the first run set it
    assert after["train_config"] == {**before["train_config"], **moved}


def test_train_resume_refuses_a_preset_that_disagrees_with_the_checkpoint(tiny_run):
    """--preset was silently ignored with --resume; now a preset whose settings differ from the
    checkpoint's is refused, naming the first field, and one that agrees passes."""
    train_script = load_example("train_shakespeare")
    with pytest.raises(TrainingError, match=r"^cannot resume with --preset cpu: its block_size is 64, but the "
                                            r"checkpoint was trained with block_size = 16; --resume takes the "
                                            r"settings from the checkpoint, so leave out --preset"):
        train_script.main(["--resume", "--out", str(tiny_run), "--device", "cpu", "--preset", "cpu"])
    state = load_checkpoint(tiny_run)
    train_script.check_preset_on_resume("cpu", state, given={"n_layer", "n_head", "n_embd", "block_size",
                                                              "batch_size", "eval_iters", "sample_chars"})
    lecture_model, lecture_train = gpt_preset("lecture", vocab_size=state["model_config"]["vocab_size"],
                                              max_iters=7)
    agreeing = {**state, "model_config": dataclasses.asdict(lecture_model),
                "train_config": dataclasses.asdict(lecture_train)}
    train_script.check_preset_on_resume("lecture", agreeing)   # max_iters may differ: it can change on resume


def test_train_resume_refuses_a_data_file_that_changed_or_is_gone(tmp_path, data_file):
    data = tmp_path / "mytext.txt"
    shutil.copy(data_file, data)
    out = tmp_path / "out"
    first = script("train_shakespeare.py", "--data", data, "--out", out, *TINY_FLAGS, "--max-iters", "3",
                   "--eval-interval", "3")
    assert first.returncode == 0, first.stderr
    before = (out / CHECKPOINT).read_bytes()
    data.write_text(data.read_text()[::-1])                                    # same characters, another text
    changed = script("train_shakespeare.py", "--out", out, "--resume", "--max-iters", "6")
    assert_one_line_error(changed, f"data file '{data}' is not the text this checkpoint was trained on")
    data.unlink()
    gone = script("train_shakespeare.py", "--out", out, "--resume", "--max-iters", "6")
    assert_one_line_error(gone, f"the checkpoint's data file '{data}' is gone: pass --data PATH")
    assert (out / CHECKPOINT).read_bytes() == before


def test_train_resume_without_a_checkpoint_says_so(tmp_path, data_file):
    proc = script("train_shakespeare.py", "--data", data_file, "--out", tmp_path / "none", "--resume")
    assert_one_line_error(proc, f"nothing to resume: {tmp_path / 'none'} holds no checkpoint",
                          "leave out --resume")
    assert not (tmp_path / "none").exists()


def test_train_refuses_an_out_holding_a_run_unless_told_to_overwrite(tiny_run, tmp_path, data_file):
    out = tmp_path / "out"
    shutil.copytree(tiny_run, out)
    before = {name: (out / name).read_bytes() for name in (CHECKPOINT, METRICS)}
    proc = script("train_shakespeare.py", "--data", data_file, "--out", out, *TINY_FLAGS, "--max-iters", "2")
    assert_one_line_error(proc, f"{out} already holds a training run", "--resume", "--overwrite")
    assert {name: (out / name).read_bytes() for name in before} == before
    again = script("train_shakespeare.py", "--data", data_file, "--out", out, *TINY_FLAGS, "--max-iters", "2",
                   "--eval-interval", "2", "--overwrite")
    assert again.returncode == 0, again.stderr
    assert load_checkpoint(out)["step"] == 2 and step_numbers(again.stdout) == [0, 2]


@pytest.mark.parametrize("data", ["mytext", "Tiny Shakespeare"])
def test_the_default_out_is_named_after_the_data(tmp_path, data_file, data):
    """Tiny Shakespeare (known by its checksum, whatever its file is called) trains in
    out/shakespeare-cpu; mytext.txt in out/mytext-cpu."""
    path, folder = tmp_path / "mytext.txt", "mytext-cpu"
    if data == "Tiny Shakespeare":
        path, folder = tmp_path / "input.txt", "shakespeare-cpu"
        shutil.copy(shakespeare_path(), path)
    else:
        shutil.copy(data_file, path)
    proc = script("train_shakespeare.py", "--data", path, *TINY_FLAGS, "--max-iters", "1", "--eval-interval", "1",
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(tmp_path / "out") == [folder]
    assert proc.stdout.rstrip().endswith(f"checkpoint in {Path('out') / folder}")
    assert load_checkpoint(tmp_path / "out" / folder)["data"]["path"] == str(path.resolve())


def test_train_names_a_data_directory(tmp_path):
    proc = script("train_shakespeare.py", "--data", tmp_path, "--out", tmp_path / "out", *TINY_FLAGS)
    assert_one_line_error(proc, f"data path '{tmp_path}' (from --data) is a directory, not a text file")


def test_train_refuses_a_size_that_cannot_fit_before_allocating(tmp_path):
    """block_size 100000 asks for hundreds of GiB: one line at once, no MemoryError a minute later
    (the sizes are checked before the data is split, so a short text does here)."""
    text = tmp_path / "short.txt"
    text.write_text("to be or not to be " * 1_000)
    proc = script("train_shakespeare.py", "--data", text, "--out", tmp_path / "out", *TINY_FLAGS,
                  "--block-size", "100000", timeout=30)
    assert_one_line_error(proc, "block_size 100000 with batch_size 4", "needs at least", "GiB to train",
                          "use a smaller --block-size")
    assert not (tmp_path / "out").exists()


def test_a_misspelt_flag_gets_one_line_with_did_you_mean():
    proc = script("train_shakespeare.py", "--lerning-rate", "0.1")
    assert_one_line_error(proc, "unrecognized argument --lerning-rate (did you mean --learning-rate?)", code=2)


@pytest.mark.parametrize("name, argv, suggestion", [
    ("sample", ["--checkpoint", "x", "--temprature", "0.8"], "--temperature"),
    ("bigram", ["--max-iter=5", "--lerning-rate", "1"], "--learning-rate"),
    ("plot_loss", ["run", "--titel", "x"], "--title"),
    ("attention_map", ["--checkpoint", "x", "--promt", "ROMEO"], "--prompt"),
    ("draw_graph", ["--ot", "graphs"], "--out"),
    ("train_shakespeare", ["--lr", "0.1"], "--learning-rate"),    # was "ambiguous: --lr-decay, --lr-decay-iters"
    ("train_shakespeare", ["--max", "5"], "--max-iters"),         # was taken silently for --max-iters
    ("train_shakespeare", ["--bs", "8"], "--block-size or --batch-size"),
])
def test_every_example_suggests_the_flag_it_knows(capsys, name, argv, suggestion):
    with pytest.raises(SystemExit) as exit:
        load_example(name).main(argv)
    assert exit.value.code == 2
    line = assert_one_line(capsys.readouterr().err, f"(did you mean {suggestion}?)")
    assert line.endswith("; see --help")


def test_train_resume_from_a_truncated_checkpoint_says_so(tiny_run, tmp_path, data_file):
    out = tmp_path / "out"
    shutil.copytree(tiny_run, out)
    data = (out / CHECKPOINT).read_bytes()
    (out / CHECKPOINT).write_bytes(data[:len(data) // 2])
    proc = script("train_shakespeare.py", "--data", data_file, "--out", out, *TINY_FLAGS,
                  "--resume", "--max-iters", "9")
    assert_one_line_error(proc, "truncated or corrupt", CHECKPOINT)


# ---- sample.py ------------------------------------------------------------------------------

def test_sample_continues_the_prompt(shakespeare_run):
    proc, out = shakespeare_run
    assert proc.returncode == 0, proc.stderr
    flags = ["--prompt", "ROMEO:", "--max-new-tokens", "40", "--device", "cpu"]
    sampled = script("sample.py", "--checkpoint", out, *flags)
    assert sampled.returncode == 0, sampled.stderr
    text = sampled.stdout[:-1]  # print's newline
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 40
    again = script("sample.py", "--checkpoint", out / CHECKPOINT, *flags)
    assert again.stdout == sampled.stdout  # the same --seed, the same text


def test_sample_names_a_prompt_character_outside_the_vocabulary(tiny_run):
    proc = script("sample.py", "--checkpoint", tiny_run, "--prompt", "the king@", "--device", "cpu")
    assert_one_line_error(proc, "'@'", "not in the vocabulary")
    assert proc.stdout == ""


def test_sample_without_a_checkpoint_says_where_it_looked(tmp_path):
    proc = script("sample.py", "--checkpoint", tmp_path / "nowhere", "--device", "cpu")
    assert_one_line_error(proc, "no checkpoint", "nowhere")


# ---- bigram.py ------------------------------------------------------------------------------

def test_bigram_trains_and_prints_step_lines(data_file):
    proc = script("bigram.py", "--data", data_file, "--max-iters", "20", "--eval-interval", "10",
                  "--eval-iters", "2")
    assert proc.returncode == 0, proc.stderr
    assert step_numbers(proc.stdout) == [0, 10, 20]
    losses = [float(STEP_LINE.match(line)[3]) for line in proc.stdout.splitlines() if STEP_LINE.match(line)]
    assert losses[-1] < losses[0]  # lr 1e-2 on a (V, V) table: 20 steps already help
    sample = printed_after_the_step_lines(proc.stdout)[:-1]  # print's newline
    assert len(sample) == 301 and set(sample) <= set(data_file.read_text())  # the start token + 300


# ---- benchmarks/bench_train.py: it runs, and its JSON carries what the README tables show ----

def bench_train(*args):
    return subprocess.run([sys.executable, "benchmarks/bench_train.py", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=120)


def test_bench_train_json_times_the_blocks_it_was_asked_for():
    proc = bench_train("--no-torch", "--steps", "3", "--warmup", "0", "--block", "2",
                       "--block-warmup", "0", "--pause", "0", "--gen-tokens", "0", "--json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert (res["steps"], res["block"], res["block_warmup"]) == (3, 2, 0)
    assert res["tl_ms"] > 0 and res["tl_tokens_s"] == pytest.approx(12 * 64 / (res["tl_ms"] / 1e3))
    assert 0 < res["mfu"] < 1 and res["tl_peak_mb"] > 0
    assert res["torch_ms"] is None and res["speedup_vs_torch"] is None  # --no-torch says so
    assert "timing the tensorlite side only" in proc.stderr
    assert res["tl_matmul_ms"] > 0 and res["torch_matmul_ms"] is None and res["step_matmuls"] == 75


def load_bench_train():
    spec = importlib.util.spec_from_file_location("bench_train", REPO / "benchmarks" / "bench_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("preset", ["cpu", "lecture"])
def test_bench_train_matmul_list_has_the_model_flops(preset):
    """The matrix products the benchmark times alone are the ones its MFU counts: same FLOPs."""
    bench = load_bench_train()
    cfg, batch_size = bench.load_config(bench.parse_args(["--preset", preset]))
    shapes = bench.step_matmuls(cfg, batch_size)
    assert sum(2 * b * m * k * n for b, m, k, n in shapes) == bench.flops_per_step(cfg, batch_size)
    assert len(shapes) == 3 * (4 * cfg["n_layer"] + 1) + 6 * cfg["n_layer"]  # 3 per Linear, 6 per attention


@pytest.mark.parametrize("flag, value", [("--block", "0"), ("--steps", "0"), ("--block-warmup", "-1")])
def test_bench_train_rejects_bad_counts(flag, value):
    proc = bench_train(flag, value, "--no-torch")
    assert proc.returncode == 2 and "must be at least" in proc.stderr and "Traceback" not in proc.stderr


def test_the_pytorch_comparisons_say_how_to_run_them():
    """tests/test_differential_torch.py is skipped where torch is missing, CI included: its
    docstring and its skip reason give README's pip command, and claim no CI install."""
    import ast
    path = REPO / "tests" / "test_differential_torch.py"
    source = path.read_text()
    doc = ast.get_docstring(ast.parse(source))
    command = re.search(r"`(pip install torch [^`]+)`", (REPO / "README.md").read_text())[1]
    assert command in doc and "python -m pytest tests/test_differential_torch.py" in doc
    assert "torch" not in (REPO / ".ci" / "run").read_text()
    assert "CI installs" not in doc and "CI does not install" in doc
    reason = re.search(r'importorskip\("torch", reason=((?:"[^"]*"\s*)+)\)', source)[1]
    reason = "".join(re.findall(r'"([^"]*)"', reason))
    assert reason.startswith("PyTorch is not installed: ") and reason.endswith(command + ")")
