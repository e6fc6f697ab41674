"""Train the character-level GPT of "Let's build GPT" on Tiny Shakespeare, or on your own text.

    python examples/train_shakespeare.py                    # a GPU if CuPy sees one, else the CPU
    python examples/train_shakespeare.py --device cpu       # the `cpu` preset: minutes on a laptop
    python examples/train_shakespeare.py --device cuda      # the `lecture` preset: 10.8M parameters
    python examples/train_shakespeare.py --data mytext.txt  # your text, in out/mytext-PRESET
    python examples/train_shakespeare.py --resume           # continue from OUT/ckpt.pkl
    mpirun -n 4 python examples/train_shakespeare.py        # data-parallel: 4 processes, batch 4x

Every model and training setting has a flag (--n-layer, --learning-rate, ...), made from the
GPTConfig and TrainConfig dataclasses; a flag overrides the preset. --resume takes the
settings, the data file and the vocabulary from the checkpoint; flags may then change only
how long the run goes, how it evaluates and saves, and where the schedule ends.

Under mpirun each process trains on batches of its own and the gradients are averaged
(gpt/distributed.py: MPI on CPUs, NCCL on GPUs, one process per GPU); --batch-size is per
process. Rank 0 alone prints and writes; --resume needs the same number of processes.

Exit status: 0 done, 1 an error, 2 a mistaken flag, 130 stopped by Ctrl-C and 143 by SIGTERM
(both save a checkpoint first and print the command that continues the run).
"""
import argparse
import contextlib
import dataclasses
import os
import shlex
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import tensorlite as tl  # noqa: E402
from gpt import PRESETS, GPTConfig, TrainConfig, distributed, preset  # noqa: E402
from gpt.checkpoint import (CHANGEABLE_ON_RESUME, CHECKPOINT, TrainingError, load_checkpoint,  # noqa: E402
                            resume_settings)
from gpt.cli import ArgumentParser  # noqa: E402
from gpt.cli import run as run_script  # noqa: E402
from gpt.data import data_path, dataset_name, load_text  # noqa: E402
from gpt.train import check_new_run, run  # noqa: E402

SKIP = {"vocab_size"}  # comes from the data
MODEL_FIELDS = {f.name for f in dataclasses.fields(GPTConfig)} - SKIP
TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def preset_values(field, part):
    """What each preset sets a field to: "cpu preset: 64, lecture preset: 256", or one default."""
    default = {f.name: f.default for f in dataclasses.fields(GPTConfig if part == "model" else TrainConfig)}[field]
    values = {name: p[part].get(field, default) for name, p in sorted(PRESETS.items())}
    if len(set(map(repr, values.values()))) == 1:
        return f"(default: {default})"
    return "(" + ", ".join(f"{name} preset: {value}" for name, value in values.items()) + ")"


HELP = {  # what a flag does, where its name does not say it
    "tf32": "--no-tf32: float32 matmuls on cuda without TF32 tensor cores for this run (slower, full "
            "float32); the default, --tf32, leaves TF32 on for Ampere and newer GPUs unless "
            "TENSORLITE_TF32=0. Recorded in the checkpoint; may change on --resume. No effect on the CPU",
}


def add_dataclass_flags(parser, cls, part, title):
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(cls):
        if f.name in SKIP:
            continue
        flag = "--" + f.name.replace("_", "-")
        help = " ".join(filter(None, [HELP.get(f.name), preset_values(f.name, part)]))
        if f.type in (bool, "bool"):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help)
        else:
            kind = {"int": int, "float": float, "str": str}.get(f.type, f.type)
            group.add_argument(flag, type=kind, default=None, metavar=f.name.upper(), help=help)


def parse_args(argv=None):
    auto = "cuda" if tl.gpu_available() else "cpu"
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=f"Defaults come from the preset that runs, as listed beside each setting: cpu\n"
                              f"on the CPU, lecture on cuda, or --preset's. On this machine --device auto\n"
                              f"picks {auto}, so the {'lecture' if auto == 'cuda' else 'cpu'} preset runs.")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: cuda when CuPy sees a GPU, else cpu")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="the settings to start from (default: lecture on cuda, cpu on cpu); with --resume "
                        "the checkpoint's are used, and a preset that disagrees with them is refused")
    p.add_argument("--data", default=None,
                   help="the text file to train on (default: $TINYSHAKESPEARE_PATH or a download of Tiny "
                        "Shakespeare; with --resume, the checkpoint's)")
    p.add_argument("--out", default=None,
                   help="output folder (default: out/NAME-PRESET, NAME from the data: out/shakespeare-cpu "
                        "for Tiny Shakespeare, out/mytext-cpu for mytext.txt)")
    fresh_or_not = p.add_mutually_exclusive_group()
    fresh_or_not.add_argument("--resume", action="store_true",
                              help="continue the run in OUT, with its settings, data and vocabulary")
    fresh_or_not.add_argument("--overwrite", action="store_true",
                              help="start a new run in OUT even though it holds one (which is replaced)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (there is none anyway when stderr is not a terminal)")
    add_dataclass_flags(p, GPTConfig, "model", "model (GPTConfig)")
    add_dataclass_flags(p, TrainConfig, "train", "training (TrainConfig)")
    return p.parse_args(argv)


def check_preset_on_resume(name, state, given=()):
    """--preset with --resume: the run goes on with the checkpoint's settings, so the preset
    passes only if it agrees with them (a preset also names the default --out). Settings that
    may change on resume, and those given as flags (checked on their own), are not compared."""
    configs = preset(name, vocab_size=state["model_config"]["vocab_size"])
    for part, config in zip(("model_config", "train_config"), configs):
        for field, value in dataclasses.asdict(config).items():
            saved = state[part].get(field)
            if field in CHANGEABLE_ON_RESUME or field in given or saved == value:
                continue
            raise TrainingError(f"cannot resume with --preset {name}: its {field} is {value!r}, but the checkpoint "
                                f"was trained with {field} = {saved!r}; --resume takes the settings from the "
                                f"checkpoint, so leave out --preset (or pass another --out to start a {name} run)")


def resume_command(args, out):
    """The command that continues this run: the checkpoint holds everything else."""
    script = sys.argv[0] if Path(sys.argv[0]).resolve() == Path(__file__).resolve() else __file__
    cmd = ["python", script, "--resume", "--out", str(out)]
    world = distributed.current()
    if world is not None and world.size > 1:
        cmd = ["mpirun", "-n", str(world.size)] + cmd
    if args.device != "auto":
        cmd += ["--device", args.device]
    if args.no_progress:
        cmd += ["--no-progress"]
    return shlex.join(cmd)


def main(argv=None):
    """Under mpirun, ranks other than 0 print nothing (a rank's own error excepted) and an error
    stops every rank: see gpt/distributed.py."""
    try:
        world = distributed.init()    # a world of one process, and no mpi4py, without mpirun
        with contextlib.ExitStack() as quiet:
            if not world.is_main:
                devnull = quiet.enter_context(open(os.devnull, "w"))
                quiet.enter_context(contextlib.redirect_stdout(devnull))
                with contextlib.redirect_stderr(devnull):   # argument errors: rank 0 says them
                    args = parse_args(argv)
            else:
                args = parse_args(argv)
            with world.starting():
                return train(args, world)
    except Exception as e:
        return distributed.finish(e)


def train(args, world):
    device = args.device
    if device == "auto":
        device = "cuda" if tl.gpu_available() else "cpu"
    world.use(device)                 # on cuda: this rank's GPU, before anything runs there
    tl.backend.check_device(device)
    name = args.preset or ("lecture" if device == "cuda" else "cpu")
    given = {k: v for k, v in vars(args).items() if v is not None and k in MODEL_FIELDS | TRAIN_FIELDS}
    model_given = {k: v for k, v in given.items() if k in MODEL_FIELDS}
    train_given = {k: v for k, v in given.items() if k in TRAIN_FIELDS}

    path = text = None
    if args.data is not None or not args.resume:   # a resumed run reads the checkpoint's data
        path = data_path(args.data)
        text = load_text(path)
    out = Path(args.out) if args.out else Path("out") / f"{dataset_name(path, text) if text else 'shakespeare'}-{name}"
    if args.resume:
        if not (out / CHECKPOINT).exists():
            raise TrainingError(f"nothing to resume: {out} holds no checkpoint ({CHECKPOINT}); "
                                "leave out --resume to start a new run there")
        state = load_checkpoint(out / CHECKPOINT)
        if args.preset is not None:
            check_preset_on_resume(args.preset, state, given)
        model_cfg, train_cfg = resume_settings(state, model_given, train_given)
        if text is None:
            recorded = (state.get("data") or {}).get("path")
            if recorded is None:
                raise TrainingError(f"{out / CHECKPOINT} does not record its data file: pass --data PATH")
            if not Path(recorded).is_file():
                raise FileNotFoundError(f"the checkpoint's data file {recorded!r} is gone: pass --data PATH "
                                        "to a copy of it")
            path, text = Path(recorded), load_text(recorded)
        del state
        print(f"on {device}, the checkpoint's settings: {model_cfg}")
    else:
        model_cfg, train_cfg = preset(name, vocab_size=len(set(text)), **model_given, **train_given)
        if distributed.world_size() == 1:   # one line, before the settings (under mpirun: rank 0's, in run)
            check_new_run(out, text, args.overwrite)
        print(f"preset {name} on {device}: {model_cfg}")
    print(f"training: {train_cfg}")
    print(f"data: {path}")
    result = run(model_cfg, train_cfg, text, out, device=device, resume=args.resume, overwrite=args.overwrite,
                 progress=not args.no_progress, data_path=path, resume_command=resume_command(args, out))
    if result["interrupted"]:
        return 128 + signal.Signals[result["interrupted"]].value
    if result["val_loss"] is not None:
        print(f"done: step {result['step']}, train loss {result['train_loss']:.4f}, "
              f"val loss {result['val_loss']:.4f}, {result['seconds']:.1f} s; checkpoint in {out}")
    return 0


if __name__ == "__main__":
    run_script(main)
