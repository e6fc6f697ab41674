"""Draw the graph that loss.backward() walks, for a one-layer GPT.

    python examples/draw_graph.py                 # out/graph/graph.dot (+ .svg and .png with graphviz)
    python examples/draw_graph.py --out DIR

Blue boxes are ops (the Function class and its output shape), yellow boxes parameters
(their names in model.named_parameters()); arrows follow the data forward. Rendering needs
Graphviz's `dot` program (apt-get install graphviz, brew install graphviz).
"""
import argparse
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402

import tensorlite as tl  # noqa: E402
import tensorlite.viz  # noqa: E402
from gpt import GPT, GPTConfig  # noqa: E402
from gpt.cli import ArgumentParser, run  # noqa: E402


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out/graph", help="output directory (default out/graph)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    config = GPTConfig(vocab_size=65, block_size=8, n_layer=1, n_head=2, n_embd=16)
    tl.manual_seed(0)
    model = GPT(config)
    rng = np.random.default_rng(0)
    x = rng.integers(0, config.vocab_size, (2, config.block_size))   # (B, T) random ids
    y = rng.integers(0, config.vocab_size, (2, config.block_size))
    _, loss = model(x, y)

    dot_path = out / "graph.dot"
    dot_path.write_text(tensorlite.viz.to_dot(loss, model))
    print(f"wrote {dot_path}")
    if shutil.which("dot") is None:
        print("graphviz's `dot` is not installed, so no SVG or PNG: apt-get install graphviz "
              f"(or brew install graphviz), then `dot -Tsvg {dot_path} -o {out / 'graph.svg'}`")
        return 0
    for fmt in ("svg", "png"):
        subprocess.run(["dot", f"-T{fmt}", str(dot_path), "-o", str(out / f"graph.{fmt}")], check=True)
        print(f"wrote {out / f'graph.{fmt}'}")
    return 0


if __name__ == "__main__":
    run(main)
