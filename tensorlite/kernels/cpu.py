"""Fast CPU kernels: the reference ops of tensorlite.functional, tuned for NumPy on a CPU.

Each class here subclasses the reference op it speeds up, keeps its name, forward arguments and
gradients, and is registered for "cpu" under it; tests/test_kernels.py checks each against its
reference on random inputs. What makes them faster than the textbook version:

- short rows (C = 64..512, T = 64) are summed as one BLAS matrix-vector product with a vector of
  ones (row_sum, leading_sum), about 4x faster than NumPy's reduction over short rows;
- the max of short rows is the value at the argmax (row_max), whose loop NumPy vectorizes;
- sums of products use vecdot / einsum (row_dot, leading_dot), with no (..., C) temporary;
- element-wise ops of many passes run in place, 64K elements at a time (blocks), so the passes
  over a block stay in the L2 cache;
- the embedding's scatter-add is one GEMM with a one-hot matrix instead of np.add.at.

Shape legend as in functional: B batch, T time, C channels, V vocab, N rows (B*T).
Backward never writes into gy; it may write into arrays its forward saved (they are freed next).
"""
import math

import numpy as np

from .. import functional as F
from .. import optim
from . import register


# ===================================== the helpers ==========================================

def row_sum(a, axis=-1):
    """a.sum(axis, keepdims=True); over the last axis, as one matrix-vector product.

    NumPy's reduction over short contiguous rows (C = 64..512) is about 4x slower than a
    BLAS GEMV with a vector of ones; the hot ops (layer norm, softmax) sum rows every call.
    """
    if axis not in (-1, a.ndim - 1):
        return a.sum(axis=axis, keepdims=True)
    rows = a.reshape(-1, a.shape[-1]) @ np.ones(a.shape[-1], dtype=a.dtype)   # (N,)
    return rows.reshape(*a.shape[:-1], 1)


def leading_sum(a):
    """a summed over every axis but the last: (..., C) -> (C,), as one GEMV (see row_sum)."""
    a2 = a.reshape(-1, a.shape[-1])                                            # (N, C)
    return np.ones(a2.shape[0], dtype=a.dtype) @ a2


def row_max(a, axis=-1):
    """a.max(axis, keepdims=True); over the last axis, as the value at each row's argmax.

    NumPy's max over short rows (T = 64) is slow; its argmax has a vectorized loop, so the
    gather of the argmax is about 2x faster. Both give NaN for a row with a NaN.
    """
    if axis not in (-1, a.ndim - 1):
        return a.max(axis=axis, keepdims=True)
    return np.take_along_axis(a, a.argmax(axis=-1)[..., None], axis=-1)


def row_dot(a, b):
    """(a * b).sum(-1, keepdims=True) without the (..., C) temporary: NumPy's vecdot."""
    if hasattr(np, "vecdot"):                        # NumPy >= 2.0
        return np.vecdot(a, b)[..., None]
    return (a * b).sum(axis=-1, keepdims=True)


def leading_dot(a, b):
    """(a * b) summed over every axis but the last, (..., C) -> (C,), without the temporary."""
    return np.einsum("nc,nc->c", a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]))


def blocks(a, size=1 << 16):
    """Slices of a's flattened elements for element-wise kernels of many passes.

    Blocks of 64K elements keep every pass over a block in cache (L2), which is about 1.4x
    faster than whole-array passes over (B, T, 4C) arrays.
    """
    n = a.size
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


# ================================= element-wise: GELU ========================================

@register(F.GELU, "cpu")
class GELU(F.GELU):
    """functional.GELU in place, block by block: forward 8 passes, backward 9, per block of 64K
    elements while it is in cache (the (B, T, 4C) activations are the largest in the model).
    Saves x and s = (1 + tanh(u)) / 2, as the reference does."""
    def forward(self, x):
        x = np.ascontiguousarray(x).reshape(np.shape(x))   # ascontiguousarray makes 0-d arrays 1-d
        s, y = np.empty_like(x), np.empty_like(x)
        for b in blocks(x):
            xb, u, yb = x.reshape(-1)[b], s.reshape(-1)[b], y.reshape(-1)[b]
            np.multiply(xb, xb, out=u)
            u *= F.GELU_C * 0.044715
            u += F.GELU_C
            u *= xb                                  # u = sqrt(2/pi) (x + 0.044715 x^3)
            np.tanh(u, out=u)
            u *= 0.5
            u += 0.5                                 # s = (1 + tanh(u)) / 2
            np.multiply(xb, u, out=yb)               # y = x s
        self.x, self.s = x, s
        return y

    def backward(self, gy):
        gy = np.ascontiguousarray(gy).reshape(np.shape(gy))
        gx = np.empty_like(gy)
        parts = blocks(gx)
        scratch = np.empty(parts[0].stop if parts else 0, dtype=gx.dtype)  # the first block's size, reused
        for b in parts:
            x, s, g, d = self.x.reshape(-1)[b], self.s.reshape(-1)[b], gy.reshape(-1)[b], gx.reshape(-1)[b]
            np.multiply(x, x, out=d)
            d *= 6 * F.GELU_C * 0.044715
            d += 2 * F.GELU_C
            d *= x                                   # d = 2 sqrt(2/pi) x (1 + 3 * 0.044715 x^2)
            ds = scratch[:d.size]
            np.multiply(s, s, out=ds)
            np.subtract(s, ds, out=ds)               # s (1 - s)
            d *= ds
            d += s                                   # s (1 + d (1 - s))
            d *= g
        return gx


# ============================ softmax, its variants, cross-entropy ===========================

def _softmax_backward(y, gy, axis):
    """y * (gy - sum(gy * y, axis)), with one temporary."""
    gx = gy * y
    s = row_sum(gx, axis)
    np.subtract(gy, s, out=gx)
    gx *= y
    return gx


@register(F.Softmax, "cpu")
class Softmax(F.Softmax):
    """functional.Softmax with row_max and row_sum, the exp and the division in place."""
    def forward(self, x, axis=-1):
        self.axis = axis
        e = x - row_max(x, axis)                     # shift: exp never overflows
        np.exp(e, out=e)
        e /= row_sum(e, axis)
        self.y = e
        return e

    def backward(self, gy):
        return _softmax_backward(self.y, gy, self.axis)


_causal_bias = {}


def causal_bias(T, dtype):
    """(T, T) additive mask: 0 where a position may attend (column <= row), -inf above."""
    key = (T, np.dtype(dtype).str)
    if key not in _causal_bias:
        future = np.triu(np.ones((T, T), dtype=bool), k=1)
        _causal_bias[key] = np.where(future, -np.inf, 0).astype(dtype)
    return _causal_bias[key]


@register(F.CausalSoftmax, "cpu")
class CausalSoftmax(F.CausalSoftmax):
    """functional.CausalSoftmax in one (..., T, T) array: scale, a cached -inf bias for the
    mask, the shift, exp and division in place."""
    def forward(self, x, scale=1.0):
        T = x.shape[-1]
        if x.ndim < 2 or x.shape[-2] != T:
            raise ValueError(f"causal_softmax needs square (..., T, T) scores, got {tuple(x.shape)}")
        scale = float(scale)                          # a NumPy float64 scale would promote z
        z = x * scale
        z += causal_bias(T, x.dtype)                 # -inf above the diagonal
        z -= row_max(z)                              # the diagonal is never masked: max is finite
        np.exp(z, out=z)
        z /= row_sum(z)
        self.y, self.scale = z, scale
        return z

    def backward(self, gy):
        gx = _softmax_backward(self.y, gy, -1)
        gx *= self.scale
        return gx


@register(F.LogSoftmax, "cpu")
class LogSoftmax(F.LogSoftmax):
    """functional.LogSoftmax with row_max and row_sum over the last axis."""
    def forward(self, x, axis=-1):
        self.axis = axis
        z = x - row_max(x, axis)
        self.y = z - np.log(row_sum(np.exp(z), axis))
        return self.y

    def backward(self, gy):
        return gy - np.exp(self.y) * row_sum(gy, self.axis)


@register(F.CrossEntropy, "cpu")
class CrossEntropy(F.CrossEntropy):
    """functional.CrossEntropy with row_max, the softmax made in place, and backward writing
    p - onehot into the saved p (it is freed right after)."""
    def forward(self, logits, targets):
        x, t = self.rows_and_targets(logits, targets)           # (N, V), (N,)
        rows = np.arange(t.size)
        z = x - row_max(x)                                       # shift: exp never overflows
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)                         # (N, 1)
        loss = (np.log(s[:, 0]) - z[rows, t]).mean()
        e /= s
        self.p, self.t, self.rows, self.shape = e, t, rows, logits.shape
        return loss.astype(logits.dtype)

    def backward(self, gy):
        gx = self.p                          # owned by this op and freed after, so reuse it
        gx[self.rows, self.t] -= 1
        gx *= gy / self.t.size
        return gx.reshape(self.shape)


# ==================================== layer norm, linear =====================================

@register(F.LayerNorm, "cpu")
class LayerNorm(F.LayerNorm):
    """functional.LayerNorm with its row means as GEMVs (row_sum), its sums of products as
    vecdot / einsum (row_dot, leading_dot), and dx's three terms made in one array."""
    def forward(self, x, w=None, b=None, eps=1e-5):
        C = x.shape[-1]
        xh = x - row_sum(x) / C                                      # (..., C) centred
        var = row_dot(xh, xh) / C                                    # (..., 1)
        rstd = 1.0 / np.sqrt(var + eps)                              # (..., 1)
        xh *= rstd                                                   # normalized
        self.xh, self.rstd, self.w = xh, rstd, w
        self.has_b = b is not None
        y = xh * w if w is not None else xh.copy()
        if b is not None:
            y += b
        return y

    def backward(self, gy):
        xh, rstd, w = self.xh, self.rstd, self.w
        C = gy.shape[-1]
        gw = leading_dot(gy, xh) if w is not None else None
        gb = leading_sum(gy) if self.has_b else None
        dxh = gy * w if w is not None else gy.copy()
        m2 = row_dot(dxh, xh) / C                                    # mean(dxh * xh)
        dxh -= row_sum(dxh) / C                                      # - mean(dxh)
        dxh -= xh * m2                                               # - xh * mean(dxh * xh)
        dxh *= rstd                                                  # the three terms
        return tuple(g for g in (dxh, gw, gb) if g is not None)


@register(F.Linear, "cpu")
class Linear(F.Linear):
    """functional.Linear with the bias gradient as one GEMV over the N rows (leading_sum),
    2-3x faster than gy.sum(axis=0) for N = 768 rows."""
    def backward(self, gy):
        gy2 = gy.reshape(-1, gy.shape[-1])               # (N, out)
        gx = (gy2 @ self.w).reshape(*gy.shape[:-1], self.w.shape[1])
        gw = gy2.T @ self.x2                             # (out, in)
        gb = leading_sum(gy2) if self.has_bias else None
        return gx, gw, gb


# ========================================= embedding ==========================================

@register(F.Embedding, "cpu")
class Embedding(F.Embedding):
    """functional.Embedding with the scatter-add as one GEMM with the one-hot matrix,
    onehot(ids)^T @ gy, while that matrix is small: deterministic, and much faster than
    np.add.at (benchmarks/bench_embedding.py). Large vocabularies sort the ids and sum each
    run of equal ids instead."""
    ONEHOT_LIMIT = 1 << 24  # N * V elements

    def backward(self, gy):
        V, C = self.shape
        ids = self.ids.ravel()                  # (N,)
        gy = gy.reshape(-1, C)                  # (N, C)
        if ids.size * V <= self.ONEHOT_LIMIT:
            onehot = ids[None, :] == np.arange(V)[:, None]       # (V, N)
            return onehot.astype(gy.dtype) @ gy                  # (V, C)
        order = np.argsort(ids, kind="stable")
        sorted_ids, rows = ids[order], gy[order]
        starts = np.flatnonzero(np.concatenate([np.ones(1, bool), sorted_ids[1:] != sorted_ids[:-1]]))
        gw = np.zeros((V, C), dtype=gy.dtype)
        gw[sorted_ids[starts]] = np.add.reduceat(rows, starts, axis=0)
        return gw


# ========================================== AdamW =============================================

@register(optim.adamw_update, "cpu")
def adamw_update(param, grad, exp_avg, exp_avg_sq, *, step, lr, beta1, beta2, eps, weight_decay):
    """optim.adamw_update in place, block by block, with one block of scratch: the dozen passes
    over each block stay in cache (1.5x faster than whole-buffer passes for 0.8M parameters)."""
    parts = blocks(param)
    tmp = np.empty(parts[0].stop if parts else 0, dtype=param.dtype)
    bias2 = math.sqrt(1 - beta2 ** step)
    step_size = lr / (1 - beta1 ** step)
    for b in parts:
        p, g, m, v, t = param[b], grad[b], exp_avg[b], exp_avg_sq[b], tmp[:b.stop - b.start]
        if weight_decay:
            p *= 1 - lr * weight_decay                            # decoupled weight decay
        m *= beta1
        np.multiply(g, 1 - beta1, out=t)
        m += t                                                    # m = b1 m + (1 - b1) g
        v *= beta2
        np.multiply(g, g, out=t)
        t *= 1 - beta2
        v += t                                                    # v = b2 v + (1 - b2) g^2
        np.sqrt(v, out=t)
        t /= bias2
        t += eps                                                  # denom
        np.divide(m, t, out=t)
        t *= step_size
        p -= t
