"""The lecture's baseline: a bigram model, where each character predicts the next from a
(V, V) table alone. It reaches a val loss of about 2.5, the mark the GPT has to beat.

    python examples/bigram.py --data path/to/input.txt
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402

import tensorlite as tl  # noqa: E402
from gpt import (  # noqa: E402
    BigramLanguageModel,
    CharTokenizer,
    get_batch,
    load_text,
    train_val_split,
)
from gpt.cli import ArgumentParser, run  # noqa: E402
from gpt.train import estimate_loss  # noqa: E402


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="path to input.txt (else $TINYSHAKESPEARE_PATH or a download)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--block-size", type=int, default=8)
    p.add_argument("--max-iters", type=int, default=3000)
    p.add_argument("--eval-interval", type=int, default=300)
    p.add_argument("--eval-iters", type=int, default=200)
    p.add_argument("--learning-rate", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=1337)
    args = p.parse_args(argv)

    text = load_text(args.data)
    tokenizer = CharTokenizer(text)
    train_data, val_data = train_val_split(tokenizer.encode(text))
    tl.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = BigramLanguageModel(tokenizer.vocab_size)
    optimizer = tl.optim.AdamW(model.parameters(), lr=args.learning_rate)
    for step in range(args.max_iters + 1):
        if step % args.eval_interval == 0 or step == args.max_iters:
            losses = estimate_loss(model, {"train": train_data, "val": val_data}, args.eval_iters,
                                   args.batch_size, args.block_size, seed=args.seed + step)
            print(f"step {step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        if step == args.max_iters:
            break
        x, y = get_batch(train_data, args.batch_size, args.block_size, rng)
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    ids = model.generate(np.zeros((1, 1), dtype=np.int64), 300, seed=args.seed)
    print(tokenizer.decode(ids[0]))
    return 0


if __name__ == "__main__":
    run(main)
