"""PyTorch's names over tensorlite: code written for PyTorch, such as the "Let's build GPT"
lecture's `gpt.py` and `bigram.py`, runs with its three import lines changed:

    import tensorlite.torch as torch
    import tensorlite.torch.nn as nn
    from tensorlite.torch.nn import functional as F

Everything here is tensorlite underneath: `torch.Tensor` is `tensorlite.Tensor`, `nn.Module` is
`tensorlite.nn.Module`, and the arrays are NumPy's on "cpu" and CuPy's on "cuda". Nothing here
imports PyTorch (nor the `gpt` package, which a script named gpt.py would shadow).

Where PyTorch and tensorlite's NumPy-style API disagree, one rule decides: a call spelled the
PyTorch way means what it means in PyTorch, a call spelled the NumPy way what it means in NumPy,
and both spellings work on every Tensor.

- `x.transpose(-2, -1)` (two axes) swaps them, as in PyTorch; `x.transpose(0, 2, 1, 3)` (a full
  permutation), `x.transpose((1, 0))` and `x.transpose()` are NumPy's.
- `dim=`/`keepdim=` and `axis=`/`keepdims=` are both accepted by sum, mean, max, var, std,
  argmax, softmax and log_softmax. `x.max(dim=1)` returns (values, indices) as in PyTorch;
  `x.max(axis=1)` and `x.max(1)` return the values, as in NumPy.
- `x.split(n, dim=d)` cuts parts of n elements (PyTorch); `x.split(n, axis=d)` and `x.split(n)`
  cut n equal parts (NumPy).
- `x.size` is the number of elements (NumPy), and `x.size()` / `x.size(d)` the shape / one
  axis (PyTorch): both work.
- `tensorlite.functional.softmax(x, axis=-1)` keeps NumPy's keyword; this package's
  `F.softmax(x, dim=-1)` takes PyTorch's. `tensorlite.nn.GELU` is GPT-2's tanh approximation,
  this package's `nn.GELU()` PyTorch's exact one (`approximate="tanh"` for the other).

The full list, with what still behaves differently from PyTorch: docs/pytorch.md.
"""
import numpy as np

from tensorlite.tensor import Tensor

from . import cuda, nn, optim
from ._functions import (
    allclose, arange, argmax, as_tensor, cat, concat, concatenate, device, empty, exp, from_numpy,
    full, full_like, is_grad_enabled, is_tensor, log, log_softmax, manual_seed, matmul,
    multinomial, no_grad, numel, ones, ones_like, rand, randint, randn, randn_like, relu, seed,
    softmax, sqrt, stack, sum, tanh, tensor, transpose, tril, triu, zeros, zeros_like, mean,
)

# dtypes: NumPy's scalar types under PyTorch's names (t.dtype == torch.long works)
float32 = float = np.float32
float64 = double = np.float64
float16 = half = np.float16
int64 = long = np.int64
int32 = int = np.int32
int16 = short = np.int16
int8 = np.int8
uint8 = np.uint8
bool = np.bool_

__all__ = [
    "Tensor", "tensor", "as_tensor", "from_numpy", "is_tensor",
    "zeros", "ones", "empty", "full", "zeros_like", "ones_like", "full_like", "arange", "tril", "triu",
    "manual_seed", "seed", "randint", "randn", "rand", "randn_like", "multinomial",
    "cat", "concat", "concatenate", "stack",
    "softmax", "log_softmax", "exp", "log", "tanh", "sqrt", "relu", "sum", "mean", "matmul",
    "transpose", "argmax", "numel", "allclose",
    "no_grad", "is_grad_enabled", "device", "cuda", "nn", "optim",
    "float32", "float", "float64", "double", "float16", "half", "int64", "long", "int32", "int",
    "int16", "short", "int8", "uint8", "bool",
]
