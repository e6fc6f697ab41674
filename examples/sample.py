r"""Sample text from a trained checkpoint.

    python examples/sample.py --checkpoint out/shakespeare-cpu --prompt "ROMEO:" \
        --max-new-tokens 500 --temperature 0.8 --top-k 40
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402

import tensorlite as tl  # noqa: E402
from gpt.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from gpt.cli import ArgumentParser, run  # noqa: E402


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="an output directory or a ckpt.pkl file")
    p.add_argument("--prompt", default="\n", help="text to continue (every character must be in the vocabulary)")
    p.add_argument("--max-new-tokens", type=int, default=500)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = p.parse_args(argv)
    if args.max_new_tokens < 0:
        raise ValueError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    device = ("cuda" if tl.gpu_available() else "cpu") if args.device == "auto" else args.device
    model, tokenizer = model_from_checkpoint(load_checkpoint(args.checkpoint), device)
    if not args.prompt:
        raise ValueError("--prompt must not be empty")
    context = tokenizer.encode(args.prompt)[None, :]                # (1, T0)
    ids = model.generate(context, args.max_new_tokens, temperature=args.temperature,
                         top_k=args.top_k, seed=args.seed)
    print(tokenizer.decode(np.asarray(ids)[0]))
    return 0


if __name__ == "__main__":
    run(main)
