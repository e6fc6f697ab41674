"""The lecture's ladder: train each stage of "Let's build GPT" in order, with the
hyperparameters of its commit, and print a table of the validation losses beside the lecture's.

    python examples/lecture_ladder.py                           # every stage this device suits
    python examples/lecture_ladder.py --stages bigram,head --max-iters 500
    python examples/lecture_ladder.py --device cuda --stages scaleup --json out/ladder.json

The stages (gpt/lecture.py, karpathy/ng-video-lecture commits): bigram 83f7d22; positional
embeddings + one head 10024b1; multi-head a6e0bee; feed-forward 97dd3f9; residual blocks with
projections 5c3a2d2; layer norm 0016836; dropout and the scale-up 482b15d. The scale-up is the
lecture preset (10.8M parameters, context 256, 5000 steps of 64): on a CPU it is skipped with a
note unless --stages names it. Each stage trains as the lecture's script does: AdamW at the
commit's learning rate, PyTorch's default initialisation, and an evaluation of eval_iters
batches of each split every eval_interval steps and at the last step; the table's val loss is
that last evaluation. The lecture's figures are its commit messages', the bigram's its bigram.py
run in PyTorch (no commit message gives one), the scale-up's its video's; notes under the table
say where a figure needs a word.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402

import tensorlite as tl  # noqa: E402
import tensorlite.torch as torch  # noqa: E402
from gpt.cli import ArgumentParser, run  # noqa: E402
from gpt.data import CharTokenizer, get_batch, load_text, train_val_split  # noqa: E402
from gpt.lecture import STAGE_NAMES, STAGES  # noqa: E402

CPU_STAGES = STAGE_NAMES[:-1]  # the scale-up needs a GPU
OVERRIDES = ("max_iters", "eval_iters", "eval_interval", "batch_size", "block_size", "n_embd", "n_head", "n_layer")


def nanogpt_init(module):
    """The init the lecture's gpt.py adopted after the video (commit d38c865): N(0, 0.02) for
    Linear and Embedding weights, zero biases."""
    if isinstance(module, torch.nn.Linear):
        torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            torch.nn.init.zeros_(module.bias)
    elif isinstance(module, torch.nn.Embedding):
        torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)


def batch(data, stage, rng, device):
    x, y = get_batch(data, stage.batch_size, stage.block_size, rng)   # (B, T) int64 each
    return torch.tensor(x, device=device), torch.tensor(y, device=device)


@torch.no_grad()
def estimate_loss(model, splits, stage, rng, device):
    """The mean loss of eval_iters batches of each split, in eval mode (as the lecture's)."""
    out = {}
    model.eval()
    for split, data in splits.items():
        losses = torch.zeros(stage.eval_iters)
        for k in range(stage.eval_iters):
            X, Y = batch(data, stage, rng, device)
            logits, loss = model(X, Y)
            losses[k] = loss.item()
        out[split] = losses.mean().item()
    model.train()
    return out


def train_stage(stage, splits, vocab_size, args, log):
    """Train one stage from scratch; returns its row of the table."""
    tl.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)            # training batches
    eval_rng = np.random.default_rng(args.seed + 1)   # evaluation batches, apart from training's
    model = stage.model(vocab_size, **({} if args.scale == "commit" else {"scale_by_n_embd": False}))
    if args.init == "nanogpt":
        model.apply(nanogpt_init)
    model.to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"== {stage.name} ({stage.commit}): {stage.title}, {n_params:,} parameters, {stage.max_iters} steps "
        f"of batch {stage.batch_size}, context {stage.block_size}, lr {stage.learning_rate:g}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=stage.learning_rate)
    history = []
    t0 = time.perf_counter()
    for iter in range(stage.max_iters):
        if iter % stage.eval_interval == 0 or iter == stage.max_iters - 1:
            losses = estimate_loss(model, splits, stage, eval_rng, args.device)
            history.append({"step": iter, **losses})
            log(f"step {iter}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        xb, yb = batch(splits["train"], stage, rng, args.device)
        logits, loss = model(xb, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - t0
    sample = None
    if args.sample:
        context = torch.zeros((1, 1), dtype=torch.long, device=args.device)
        sample = model.generate(context, max_new_tokens=args.sample)[0].tolist()
    return {"stage": stage.name, "commit": stage.commit, "title": stage.title, "parameters": n_params,
            "max_iters": stage.max_iters, "batch_size": stage.batch_size, "block_size": stage.block_size,
            "learning_rate": stage.learning_rate, "eval_iters": stage.eval_iters,
            "train_loss": history[-1]["train"], "val_loss": history[-1]["val"],
            "lecture_val_loss": stage.lecture_val_loss, "lecture_source": stage.lecture_source,
            "lecture_note": stage.lecture_note, "seconds": round(seconds, 1), "history": history, "sample_ids": sample}


def table(rows):
    """The table, then a numbered note under it for each stage whose lecture figure needs one
    (the bigram's comes from a run, the single head's commit message rounds)."""
    noted = [r for r in rows if r.get("lecture_note")]
    mark = {r["stage"]: f"[{i}]" for i, r in enumerate(noted, 1)}

    def lecture(r):
        return _fmt(r["lecture_val_loss"]) + mark.get(r["stage"], "")

    lines = [f"{'stage':<12} {'commit':<8} {'parameters':>11} {'steps':>6} {'val loss':>9} {'lecture':>11} {'time':>8}"]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"{r['stage']:<12} {r['commit']:<8} {'':>11} {'':>6} {'skipped':>9} "
                         f"{lecture(r):>11} {'':>8}")
            continue
        lines.append(f"{r['stage']:<12} {r['commit']:<8} {r['parameters']:>11,} {r['max_iters']:>6} "
                     f"{r['val_loss']:>9.4f} {lecture(r):>11} {r['seconds']:>7.1f}s")
    lines += [f"{mark[r['stage']]} {r['stage']}: {r['lecture_note']}" for r in noted]
    return "\n".join(lines)


def _fmt(x):
    return "-" if x is None else f"{x:.2f}"


def parse_stages(text, device):
    """The stages to run, in the lecture's order, and the ones skipped on this device."""
    if text is None:
        wanted = list(STAGE_NAMES) if device == "cuda" else list(CPU_STAGES)
        return wanted, [] if device == "cuda" else ["scaleup"]
    names = list(STAGE_NAMES) if text == "all" else [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in STAGES]
    if unknown or not names:
        raise ValueError(f"--stages: unknown stage(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(STAGE_NAMES)} or 'all'")
    return [s for s in STAGE_NAMES if s in names], []


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="path to input.txt (else $TINYSHAKESPEARE_PATH or a download)")
    p.add_argument("--json", default=None, help="write the table, each stage's losses and settings here")
    p.add_argument("--stages", default=None,
                   help=f"comma-separated, from {', '.join(STAGE_NAMES)}, or 'all' (default: every stage "
                        "on cuda; all but scaleup on the CPU)")
    p.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda if available, else cpu")
    p.add_argument("--max-iters", type=int, default=None, help="steps per stage instead of the commit's (quick runs)")
    p.add_argument("--eval-iters", type=int, default=None, help="batches per evaluation instead of 200")
    p.add_argument("--eval-interval", type=int, default=None, help="steps between evaluations instead of the commit's")
    for name in OVERRIDES[3:]:
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None,
                       help=f"every stage's {name} instead of its commit's (experiments, small runs)")
    p.add_argument("--init", default="pytorch", choices=["pytorch", "nanogpt"],
                   help="PyTorch's default initialisation (the lecture's), or nanoGPT's N(0, 0.02)")
    p.add_argument("--scale", default="commit", choices=["commit", "head_size"],
                   help="attention scores scaled as the commits did (n_embd**-0.5) or by head_size**-0.5")
    p.add_argument("--sample", type=int, default=0, help="print this many sampled characters after each stage")
    p.add_argument("--seed", type=int, default=1337)
    args = p.parse_args(argv)
    for name in OVERRIDES:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tl.backend.check_device(args.device)
    names, skipped = parse_stages(args.stages, args.device)

    text = load_text(args.data)
    tokenizer = CharTokenizer(text)
    train_data, val_data = train_val_split(tokenizer.encode(text))
    splits = {"train": train_data, "val": val_data}
    print(f"{len(text):,} characters, vocabulary {tokenizer.vocab_size}, device {args.device}", flush=True)

    rows = []
    for name in names:
        stage = STAGES[name]
        changes = {k: getattr(args, k) for k in OVERRIDES if getattr(args, k)}
        if changes:
            stage = stage.with_(**changes)
        row = train_stage(stage, splits, tokenizer.vocab_size, args, lambda s: print(s, flush=True))
        if row["sample_ids"] is not None:
            print(tokenizer.decode(row["sample_ids"]))
        rows.append(row)
    for name in skipped:
        stage = STAGES[name]
        rows.append({"stage": name, "commit": stage.commit, "skipped": True,
                     "lecture_val_loss": stage.lecture_val_loss, "lecture_source": stage.lecture_source,
                     "lecture_note": stage.lecture_note})
        print(f"note: {name} is the lecture preset ({stage.n_layer} layers of {stage.n_embd}, context "
              f"{stage.block_size}, {stage.max_iters} steps of batch {stage.batch_size}) and needs a GPU; "
              f"skipped on the CPU. Ask for it with --stages {name}.")

    print()
    print(table(rows))
    print("lecture: its commit messages (head 2.5, multihead 2.28, feedforward 2.24, layernorm 2.06); "
          "bigram 2.49 from its bigram.py run in PyTorch; scaleup 1.48 from its video.")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"settings": settings, "vocab_size": tokenizer.vocab_size, "stages": rows},
                                  indent=1) + "\n")
        tmp.replace(path)                       # a reader never sees half a file
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run(main)
