"""Embedding backward on NumPy: which scatter-add is fastest?

    python benchmarks/bench_embedding.py [--repeats 7]

The gradient of y = W[ids] is dW[v] = sum of gy[n] over every n with ids[n] == v:
ids (N,) int64, gy (N, C) float32, dW (V, C) float32. Each method below computes that;
all are checked against np.add.at with np.allclose, then timed (median of --repeats runs).
"""
import argparse
import functools
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root

SHAPES = [  # (name, N = B*T, V, C)
    ("cpu preset", 768, 65, 128),
    ("lecture preset", 16384, 65, 384),
    ("GPT-2-like", 8192, 50304, 768),
]


def add_at(ids, gy, V):
    dW = np.zeros((V, gy.shape[1]), dtype=gy.dtype)
    np.add.at(dW, ids, gy)  # unbuffered scatter-add, one element at a time
    return dW


def bincount_per_column(ids, gy, V):
    dW = np.empty((V, gy.shape[1]), dtype=gy.dtype)
    for c in range(gy.shape[1]):  # C calls, each a float64 histogram of one column
        dW[:, c] = np.bincount(ids, weights=gy[:, c], minlength=V)
    return dW


def bincount_flat(ids, gy, V):
    C = gy.shape[1]
    flat = (ids[:, None] * C + np.arange(C)).ravel()  # (N*C,) index of dW.ravel() for each gy element
    return np.bincount(flat, weights=gy.ravel(), minlength=V * C).reshape(V, C).astype(gy.dtype)


def sort_reduceat(ids, gy, V):
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]                                                  # (N,)
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])  # first n of each run
    dW = np.zeros((V, gy.shape[1]), dtype=gy.dtype)
    dW[sorted_ids[starts]] = np.add.reduceat(gy[order], starts, axis=0)     # one sum per distinct id
    return dW


def onehot_matmul(ids, gy, V):
    onehot = (ids[None, :] == np.arange(V)[:, None]).astype(gy.dtype)  # (V, N)
    return onehot @ gy                                                 # (V, C)


def tensorlite_embedding_backward(ids, V, C):
    """tensorlite's Embedding.backward (it picks a method by size), as gy -> dW. Its forward
    runs here, once, so that only the backward is timed."""
    import tensorlite.functional as F
    fn = F.Embedding()
    fn.forward(np.zeros((V, C), dtype=np.float32), ids)
    return fn.backward


METHODS = [("np.add.at", add_at), ("bincount per column", bincount_per_column),
           ("bincount flat index", bincount_flat), ("argsort + add.reduceat", sort_reduceat),
           ("one-hot matmul", onehot_matmul)]


def median_ms(run, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'shape':<34}{'method':<24}{'median ms':>11}{'vs add.at':>11}")
    for name, N, V, C in SHAPES:
        ids = rng.integers(0, V, size=N)                         # (N,) int64
        gy = rng.standard_normal((N, C), dtype=np.float32)      # (N, C)
        runs = [(method, functools.partial(fn, ids, gy, V)) for method, fn in METHODS]
        try:
            backward = tensorlite_embedding_backward(ids, V, C)
            runs.append(("tensorlite Embedding", functools.partial(backward, gy)))
        except ImportError:  # tensorlite not importable: no row for it
            pass
        ref = add_at(ids, gy, V)
        base = None
        for method, run in runs:
            assert np.allclose(run(), ref, rtol=1e-4, atol=1e-4), f"{method} disagrees with np.add.at on {name}"
            ms = median_ms(run, args.repeats)
            base = base or ms
            label = f"{name} N={N} V={V} C={C}"
            print(f"{label:<34}{method:<24}{ms:>11.2f}{base / ms:>10.2f}x")
        print()
    print("vs add.at = add.at time / method time (higher is faster). All methods agree with "
          "np.add.at (np.allclose, rtol=atol=1e-4).")


if __name__ == "__main__":
    main()
