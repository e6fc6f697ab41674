"""python -m tensorlite.gradcheck [--device cpu|cuda] [--op NAME] [--seed N]

Checks every op's backward against central differences, in float64, with random shapes
and random upstream gradients, prints a table and exits non-zero if any check fails.
"""
import sys

import numpy as np

from .. import functional as F
from .._cli import ArgumentParser
from ..backend import DeviceError, check_device
from ..tensor import tensor
from . import gradcheck_report


def op_cases(rng):
    """One check per op: name -> (Function subclass, fn, inputs), random shapes drawn from rng.

    Inputs are float64 arrays (checked) or ("const", array) pairs (not differentiated).
    Values stay away from each op's non-differentiable points: ReLU's kink, Max's ties, the
    poles of log, sqrt and division.
    """
    def dim():
        return int(rng.integers(2, 6))

    def randn(*shape):
        return rng.standard_normal(shape)

    def away(*shape):                       # |x| in [0.2, 2]
        return rng.uniform(0.2, 2.0, shape) * rng.choice([-1.0, 1.0], shape)

    def positive(*shape):
        return rng.uniform(0.5, 2.0, shape)

    B, T, C, V = dim(), dim(), dim(), dim()
    ids = ("const", rng.integers(0, V, (B, T)))
    future = ("const", np.triu(np.ones((T, T), dtype=bool), k=1))
    ties_free = (rng.permutation(B * T * C) * 0.1).reshape(B, T, C)
    return {
        "add": (F.Add, F.add, [randn(B, T, C), randn(T, C)]),
        "sub": (F.Sub, F.sub, [randn(B, 1, C), randn(T, C)]),
        "mul": (F.Mul, F.mul, [randn(B, T, C), randn(C)]),
        "div": (F.Div, F.div, [randn(B, T, C), away(T, 1)]),
        "neg": (F.Neg, F.neg, [randn(B, C)]),
        "pow": (F.Pow, lambda x: F.pow(x, 3), [randn(B, C)]),
        "exp": (F.Exp, F.exp, [randn(B, C)]),
        "log": (F.Log, F.log, [positive(B, C)]),
        "tanh": (F.Tanh, F.tanh, [randn(B, C)]),
        "sqrt": (F.Sqrt, F.sqrt, [positive(B, C)]),
        "relu": (F.ReLU, F.relu, [away(B, C)]),
        "gelu": (F.GELU, F.gelu, [2 * randn(B, T, C)]),
        "sum": (F.Sum, lambda x: F.sum(x, axis=(0, 2), keepdims=True), [randn(B, T, C)]),
        "mean": (F.Mean, lambda x: F.mean(x, axis=1), [randn(B, T, C)]),
        "max": (F.Max, lambda x: F.max(x, axis=-1), [ties_free]),
        "reshape": (F.Reshape, lambda x: F.reshape(x, (T, B * C)), [randn(B, T, C)]),
        "transpose": (F.Transpose, lambda x: F.transpose(x, 2, 0, 1), [randn(B, T, C)]),
        "getitem": (F.GetItem, lambda x: x[np.array([0, 0, 1])][:, ::2], [randn(B, T, C)]),
        "concatenate": (F.Concatenate, lambda a, b: F.concatenate([a, b], axis=1), [randn(B, T), randn(B, C)]),
        "stack": (F.Stack, lambda a, b: F.stack([a, b], axis=1), [randn(B, C), randn(B, C)]),
        "matmul": (F.MatMul, F.matmul, [randn(B, 1, T, C), randn(2, C, V)]),
        "linear": (F.Linear, F.linear, [randn(B, T, C), randn(V, C), randn(V)]),
        "softmax": (F.Softmax, lambda x: F.softmax(x, axis=1), [randn(B, T, C)]),
        "log_softmax": (F.LogSoftmax, F.log_softmax, [randn(B, T, C)]),
        "causal_softmax": (F.CausalSoftmax, lambda x: F.causal_softmax(x, 0.5), [randn(B, 2, T, T)]),
        "masked_fill": (F.MaskedFill, lambda x, m: F.softmax(F.masked_fill(x, m, float("-inf"))),
                        [randn(B, T, T), future]),
        "layer_norm": (F.LayerNorm, F.layer_norm, [randn(B, T, C), randn(C), randn(C)]),
        "embedding": (F.Embedding, lambda w, i: F.embedding(i, w), [randn(V, C), ids]),
        "cross_entropy": (F.CrossEntropy, F.cross_entropy, [randn(B, T, V), ("const", rng.integers(0, V, (B, T)))]),
        "dropout": (F.Dropout, lambda x, m: F.dropout(x, 0.5, mask=m.data),
                    [randn(B, C), ("const", (rng.random((B, C)) >= 0.5) * 2.0)]),
    }


def main(argv=None):
    p = ArgumentParser(prog="python -m tensorlite.gradcheck",
                       description="Finite-difference checks of every op's backward, in float64 "
                                   "with random shapes and random upstream gradients.")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--op", action="append", help="check only this op (repeatable); default all")
    p.add_argument("--seed", type=int, default=0, help="seed of the shapes, values and upstream gradients")
    args = p.parse_args(argv)
    try:
        check_device(args.device)
    except DeviceError as e:   # no CuPy, or no GPU: one line, not a traceback from the first op
        print(f"error: {e}", file=sys.stderr)
        return 1

    cases = op_cases(np.random.default_rng(args.seed))
    names = args.op or sorted(cases)
    unknown = [n for n in names if n not in cases]
    if unknown:
        p.error(f"unknown op(s) {', '.join(unknown)}; choose from {', '.join(sorted(cases))}")
    print(f"{'op':<16}{'input':<8}{'shape':<16}{'mode':<12}{'max abs err':>13}{'max rel err':>13}  result")
    failed = 0
    for name in names:
        _, fn, raw = cases[name]
        inputs = [tensor(a[1], device=args.device) if isinstance(a, tuple)
                  else tensor(a, requires_grad=True, device=args.device) for a in raw]
        for r in gradcheck_report(fn, *inputs, seed=args.seed):
            failed += not r.passed
            print(f"{name:<16}{r.index:<8}{str(r.shape):<16}{r.mode:<12}{r.max_abs_err:>13.2e}"
                  f"{r.max_rel_err:>13.2e}  {'pass' if r.passed else 'FAIL at ' + r.worst}")
    print(f"{len(names)} ops, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
