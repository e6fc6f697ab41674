"""Train the character-level GPT of "Let's build GPT" on Tiny Shakespeare.

    python examples/train_shakespeare.py                    # a GPU if CuPy sees one, else the CPU
    python examples/train_shakespeare.py --device cpu       # the `cpu` preset: minutes on a laptop
    python examples/train_shakespeare.py --device cuda      # the `lecture` preset: 10.8M parameters
    python examples/train_shakespeare.py --resume           # continue from OUT/ckpt.pkl

Every model and training setting has a flag (--n-layer, --learning-rate, ...), made from
the GPTConfig and TrainConfig dataclasses; a flag overrides the preset.
"""
import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import tensorlite as tl  # noqa: E402
from gpt import PRESETS, GPTConfig, TrainConfig, load_text, preset  # noqa: E402
from gpt.cli import run as run_script  # noqa: E402
from gpt.train import run  # noqa: E402

SKIP = {"vocab_size"}  # comes from the data


def add_dataclass_flags(parser, cls, title):
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(cls):
        if f.name in SKIP:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                               help=f"(preset or {f.default})")
        else:
            kind = {"int": int, "float": float, "str": str}.get(f.type, f.type)
            group.add_argument(flag, type=kind, default=None, metavar=f.name.upper(),
                               help=f"(preset or {f.default})")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: cuda when CuPy sees a GPU, else cpu")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="lecture on cuda, cpu on cpu by default")
    p.add_argument("--data", default=None, help="path to input.txt (else $TINYSHAKESPEARE_PATH or a download)")
    p.add_argument("--out", default=None, help="output directory (default out/shakespeare-PRESET)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/ckpt.pkl")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dataclass_flags(p, GPTConfig, "model (GPTConfig)")
    add_dataclass_flags(p, TrainConfig, "training (TrainConfig)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device = args.device
    if device == "auto":
        device = "cuda" if tl.gpu_available() else "cpu"
    tl.backend.check_device(device)
    name = args.preset or ("lecture" if device == "cuda" else "cpu")
    text = load_text(args.data)
    overrides = {k: v for k, v in vars(args).items()
                 if v is not None and k in {f.name for f in dataclasses.fields(GPTConfig)}
                 | {f.name for f in dataclasses.fields(TrainConfig)}}
    overrides["vocab_size"] = len(set(text))
    model_cfg, train_cfg = preset(name, **overrides)
    out = Path(args.out or f"out/shakespeare-{name}")
    print(f"preset {name} on {device}: {model_cfg}")
    print(f"training: {train_cfg}")
    result = run(model_cfg, train_cfg, text, out, device=device, resume=args.resume,
                 progress=not args.no_progress)
    if result["val_loss"] is not None:
        print(f"done: step {result['step']}, train loss {result['train_loss']:.4f}, "
              f"val loss {result['val_loss']:.4f}, {result['seconds']:.1f} s; checkpoint in {out}")
    return 0


if __name__ == "__main__":
    run_script(main)
