"""Draw what each attention head looks at, for one prompt and a trained checkpoint.

    python examples/attention_map.py --checkpoint out/shakespeare-cpu --prompt "ROMEO:" --out out/attention

Writes attention_layer{i}.png for every layer: one heatmap per head, a row per character
of the prompt (the query) and a column per character it may attend to (the key). Rows sum
to 1 and the upper triangle is empty: a position never sees the future. Needs matplotlib
(pip install -e ".[viz]").
"""
import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402

import tensorlite as tl  # noqa: E402
from gpt.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from gpt.cli import ArgumentParser, run  # noqa: E402
from tensorlite.backend import as_numpy  # noqa: E402

NEEDS_MATPLOTLIB = 'this script needs matplotlib: pip install -e ".[viz]"'


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no window); ImportError if missing."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def attention_maps(model, ids):
    """One forward of ids (1, T) in eval mode under no_grad; a list of (nh, T, T) arrays, one per layer."""
    blocks = list(model.transformer.h)
    for block in blocks:
        block.attn.record_attention = True
    model.eval()
    try:
        with tl.no_grad():
            model(ids)
        return [as_numpy(block.attn.attention[0]) for block in blocks]   # (nh, T, T) each
    finally:
        for block in blocks:
            block.attn.record_attention, block.attn.attention = False, None


def show(ch):
    """A character as a tick label: newlines and spaces made visible."""
    return {"\n": "\\n", " ": "␣", "\t": "\\t"}.get(ch, ch)


def draw_layer(plt, att, chars, layer, path):
    """Heads in a near-square grid, one shared colour scale; the hidden future left blank."""
    from matplotlib.colors import PowerNorm
    nh, T, _ = att.shape
    cols = math.ceil(math.sqrt(nh))
    rows = math.ceil(nh / cols)
    cell = max(3.0, 0.17 * T)                        # inches per heatmap: room for T tick labels
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols + 1.4, cell * rows + 0.9),
                             squeeze=False, constrained_layout=True)
    labels = [show(c) for c in chars]
    fontsize = 8 if T <= 24 else 6 if T <= 48 else 4
    future = np.triu(np.ones((T, T), bool), k=1)
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)  # a square-root scale: small weights stay visible
    for h, ax in enumerate(axes.flat):
        if h >= nh:
            ax.axis("off")
            continue
        image = ax.imshow(np.ma.masked_array(att[h], future), cmap=cmap, norm=norm)
        ax.set_title(f"head {h}", fontsize=10)
        ax.set_xticks(range(T), labels, fontsize=fontsize, family="monospace")
        ax.set_yticks(range(T), labels, fontsize=fontsize, family="monospace")
        ax.tick_params(length=0)
        if h % cols == 0:
            ax.set_ylabel("query (the position attending)")
        if h + cols >= nh:
            ax.set_xlabel("key (the position attended to)")
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight (square-root scale)")
    fig.suptitle(f"layer {layer}: attention weights per head (white: the future, never seen)")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="an output directory or a ckpt.pkl file")
    p.add_argument("--prompt", default="ROMEO:", help="the text to look at (cropped to the last block_size characters)")
    p.add_argument("--out", default=None, help="where the PNGs go (default: the checkpoint's directory)")
    args = p.parse_args(argv)
    try:
        plt = pyplot()
    except ImportError:
        print(NEEDS_MATPLOTLIB, file=sys.stderr)
        return 1
    if not args.prompt:
        raise ValueError("--prompt must not be empty")

    model, tokenizer = model_from_checkpoint(load_checkpoint(args.checkpoint), "cpu")
    ids = tokenizer.encode(args.prompt)[-model.block_size:]         # (T,)
    chars = tokenizer.decode(ids)
    maps = attention_maps(model, ids[None, :])                      # n_layer x (nh, T, T)

    ckpt = Path(args.checkpoint)
    out = Path(args.out) if args.out else (ckpt if ckpt.is_dir() else ckpt.parent)
    out.mkdir(parents=True, exist_ok=True)
    for layer, att in enumerate(maps):
        path = out / f"attention_layer{layer}.png"
        draw_layer(plt, att, chars, layer, path)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run(main)
