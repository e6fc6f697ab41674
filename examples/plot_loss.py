"""Plot the train and validation loss of a run from its OUT/metrics.jsonl.

    python examples/plot_loss.py out/shakespeare-cpu                # writes out/shakespeare-cpu/loss.png
    python examples/plot_loss.py out/shakespeare-cpu --out loss.png

Each evaluation of gpt.train.run appends one line {"step", "train_loss", "val_loss", ...}.
Needs matplotlib (pip install -e ".[viz]").
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from gpt.checkpoint import read_metrics as read_metrics_lines  # noqa: E402
from gpt.cli import ArgumentParser  # noqa: E402
from gpt.cli import run as run_script  # noqa: E402

NEEDS_MATPLOTLIB = 'this script needs matplotlib: pip install -e ".[viz]"'


def read_metrics(path):
    """The evaluations in a metrics.jsonl, sorted by step (a step logged twice keeps its last line).
    A damaged line is dropped with a warning on stderr, as resuming the run drops it
    (gpt.checkpoint.read_metrics, the one reader of the log)."""
    if not path.is_file():
        raise FileNotFoundError(f"no metrics at {str(path)!r}: train first "
                                "(python examples/train_shakespeare.py --out DIR) and pass DIR")
    lines = read_metrics_lines(path, warn=lambda line: print(line, file=sys.stderr),
                               require=("train_loss", "val_loss"))
    rows = {int(row["step"]): (float(row["train_loss"]), float(row["val_loss"])) for row in lines}
    if not rows:
        if path.read_text().strip():
            raise ValueError(f"{str(path)!r} holds no good metrics line (the damaged ones are named above)")
        raise ValueError(f"{str(path)!r} is empty: the run has not finished its first evaluation yet")
    return sorted((step, tr, va) for step, (tr, va) in rows.items())


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a training output directory (or its metrics.jsonl)")
    p.add_argument("--out", default=None, help="the PNG to write (default RUN/loss.png)")
    p.add_argument("--title", default=None, help="the plot's title (default: the run's directory name)")
    args = p.parse_args(argv)
    run = Path(args.run)
    path = run if run.suffix == ".jsonl" else run / "metrics.jsonl"
    rows = read_metrics(path)                     # first, so a bad path fails without matplotlib
    try:
        import matplotlib
        matplotlib.use("Agg")                     # files only, no window
        import matplotlib.pyplot as plt
    except ImportError:
        print(NEEDS_MATPLOTLIB, file=sys.stderr)
        return 1

    steps, train, val = zip(*rows)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), constrained_layout=True)
    marker = "o" if len(steps) <= 30 else None
    ax.plot(steps, train, marker=marker, markersize=4, label="train")
    ax.plot(steps, val, marker=marker, markersize=4, label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (cross-entropy, nats per character)")
    title = args.title or path.resolve().parent.name
    ax.set_title(f"{title}: final val loss {val[-1]:.4f} at step {steps[-1]}")
    ax.grid(alpha=0.3)
    ax.legend()
    out = Path(args.out) if args.out else path.parent / "loss.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    run_script(main)
