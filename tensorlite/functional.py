"""Every op: one Function with a hand-written forward and backward, then the name people call.

Shape legend: B batch, T time, C channels, V vocab, N rows (B*T), nh heads, hs head size.
`gy` is the gradient of the loss with respect to the op's output; backward returns the
gradient for each input, in order (None where an input is not differentiable). The engine
sums each gradient back to its input's shape, so broadcasting needs no code here.
Backward never writes into gy: it may be shared with other ops.
Derivations: docs/backward.md.
"""
import math

import numpy as np

from . import backend
from .backend import get_array_module
from .tensor import Function, ScatterGrad, Tensor


# ================================ elementwise arithmetic ==================================

class Add(Function):
    """y = a + b.   da = gy,  db = gy"""
    def forward(self, a, b):
        return a + b

    def backward(self, gy):
        return gy, gy


class Sub(Function):
    """y = a - b.   da = gy,  db = -gy"""
    def forward(self, a, b):
        return a - b

    def backward(self, gy):
        return gy, -gy


class Mul(Function):
    """y = a * b.   da = gy * b,  db = gy * a"""
    def forward(self, a, b):
        self.a, self.b = a, b  # each is the other's derivative
        return a * b

    def backward(self, gy):
        return gy * self.b, gy * self.a


class Div(Function):
    """y = a / b.   da = gy / b,  db = -gy * a / b^2 = -gy * y / b"""
    def forward(self, a, b):
        self.b = b
        self.y = a / b
        return self.y

    def backward(self, gy):
        ga = gy / self.b
        return ga, -ga * self.y


class Neg(Function):
    """y = -x.   dx = -gy"""
    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


class Pow(Function):
    """y = x^p for a constant p.   dx = gy * p * x^(p-1)"""
    def forward(self, x, p):
        self.x, self.p = x, p
        return x ** p

    def backward(self, gy):
        return gy * (self.p * self.x ** (self.p - 1))


# ==================================== elementwise math ====================================

class Exp(Function):
    """y = exp(x).   dx = gy * y"""
    def forward(self, x):
        self.y = get_array_module(x).exp(x)
        return self.y

    def backward(self, gy):
        return gy * self.y


class Log(Function):
    """y = log(x).   dx = gy / x"""
    def forward(self, x):
        self.x = x
        return get_array_module(x).log(x)

    def backward(self, gy):
        return gy / self.x


class Tanh(Function):
    """y = tanh(x).   dx = gy * (1 - y^2)"""
    def forward(self, x):
        self.y = get_array_module(x).tanh(x)
        return self.y

    def backward(self, gy):
        return gy * (1 - self.y * self.y)


class Sqrt(Function):
    """y = sqrt(x).   dx = gy / (2 y)"""
    def forward(self, x):
        self.y = get_array_module(x).sqrt(x)
        return self.y

    def backward(self, gy):
        return gy / (2 * self.y)


class ReLU(Function):
    """y = max(x, 0).   dx = gy * [x > 0]"""
    def forward(self, x):
        self.mask = x > 0  # the only thing backward needs
        return x * self.mask

    def backward(self, gy):
        return gy * self.mask


GELU_C = math.sqrt(2.0 / math.pi)


class GELU(Function):
    """GPT-2's tanh approximation: y = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3).

    Written y = x s with s = (1 + tanh(u)) / 2, whose slope is ds/dx = 2 s (1 - s) du/dx:
    dx = gy * s * (1 + d (1 - s)),   d = 2 sqrt(2/pi) x (1 + 3 * 0.044715 x^2)
    This op runs on the largest activations, (B, T, 4C), so both passes are written in place,
    block by block (see blocks()).
    """
    def forward(self, x):
        xp = get_array_module(x)
        x = xp.ascontiguousarray(x)
        s, y = xp.empty_like(x), xp.empty_like(x)
        for b in blocks(x):
            xb, u, yb = x.reshape(-1)[b], s.reshape(-1)[b], y.reshape(-1)[b]
            xp.multiply(xb, xb, out=u)
            u *= GELU_C * 0.044715
            u += GELU_C
            u *= xb                                  # u = sqrt(2/pi) (x + 0.044715 x^3)
            xp.tanh(u, out=u)
            u *= 0.5
            u += 0.5                                 # s = (1 + tanh(u)) / 2
            xp.multiply(xb, u, out=yb)               # y = x s
        self.x, self.s = x, s                        # saved: dx needs x and s
        return y

    def backward(self, gy):
        xp = get_array_module(gy)
        gy = xp.ascontiguousarray(gy)
        gx = xp.empty_like(gy)
        parts = blocks(gx)
        scratch = xp.empty(parts[0].stop if parts else 0, dtype=gx.dtype)  # the first block's size, reused
        for b in parts:
            x, s, g, d = self.x.reshape(-1)[b], self.s.reshape(-1)[b], gy.reshape(-1)[b], gx.reshape(-1)[b]
            xp.multiply(x, x, out=d)
            d *= 6 * GELU_C * 0.044715
            d += 2 * GELU_C
            d *= x                                   # d = 2 sqrt(2/pi) x (1 + 3 * 0.044715 x^2)
            ds = scratch[:d.size]
            xp.multiply(s, s, out=ds)
            xp.subtract(s, ds, out=ds)               # s (1 - s)
            d *= ds
            d += s                                   # s (1 + d (1 - s))
            d *= g
        return gx


def row_sum(a, axis=-1):
    """a.sum(axis, keepdims=True); over the last axis, as one matrix-vector product.

    NumPy's reduction over short contiguous rows (C = 64..512) is about 4x slower than a
    BLAS GEMV with a vector of ones; the hot ops (layer norm, softmax) sum rows every call.
    """
    if axis not in (-1, a.ndim - 1):
        return a.sum(axis=axis, keepdims=True)
    xp = get_array_module(a)
    rows = a.reshape(-1, a.shape[-1]) @ xp.ones(a.shape[-1], dtype=a.dtype)   # (N,)
    return rows.reshape(*a.shape[:-1], 1)


def leading_sum(a):
    """a summed over every axis but the last: (..., C) -> (C,), as one GEMV (see row_sum)."""
    xp = get_array_module(a)
    a2 = a.reshape(-1, a.shape[-1])                                            # (N, C)
    return xp.ones(a2.shape[0], dtype=a.dtype) @ a2


def row_max(a, axis=-1):
    """a.max(axis, keepdims=True); over the last axis, as the value at each row's argmax.

    NumPy's max over short rows (T = 64) is slow; its argmax has a vectorized loop, so the
    gather of the argmax is about 2x faster. Both give NaN for a row with a NaN.
    """
    xp = get_array_module(a)
    if axis not in (-1, a.ndim - 1):
        return a.max(axis=axis, keepdims=True)
    return xp.take_along_axis(a, a.argmax(axis=-1)[..., None], axis=-1)


def row_dot(a, b):
    """(a * b).sum(-1, keepdims=True) without the (..., C) temporary: NumPy's vecdot."""
    xp = get_array_module(a)
    if hasattr(xp, "vecdot"):
        return xp.vecdot(a, b)[..., None]
    return (a * b).sum(axis=-1, keepdims=True)


def leading_dot(a, b):
    """(a * b) summed over every axis but the last, (..., C) -> (C,), without the temporary."""
    xp = get_array_module(a)
    return xp.einsum("nc,nc->c", a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]))


def blocks(a, size=1 << 16):
    """Slices of a's flattened elements for element-wise kernels of many passes.

    On the CPU, blocks of 64K elements keep every pass over a block in cache (L2), which is
    about 1.4x faster than whole-array passes over (B, T, 4C) arrays. On the GPU one block:
    the whole array, one launch per pass.
    """
    n = a.size
    if get_array_module(a) is not np:
        return [slice(0, n)]
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


# ======================================= reductions =======================================

def _normalize_axis(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, tuple) else (axis,)
    return tuple(a % ndim for a in axes)


def _expand_reduced(gy, axes, keepdims):
    """Reinsert the reduced axes (size 1) so gy broadcasts against the input."""
    if keepdims:
        return gy
    xp = get_array_module(gy)
    return xp.expand_dims(gy, axes) if axes else gy


class Sum(Function):
    """y = sum(x, axis).   dx = gy broadcast back over the summed axes"""
    def forward(self, x, axis=None, keepdims=False):
        self.shape, self.axes, self.keepdims = x.shape, _normalize_axis(axis, x.ndim), keepdims
        return x.sum(axis=self.axes, keepdims=keepdims)

    def backward(self, gy):
        xp = get_array_module(gy)
        return xp.broadcast_to(_expand_reduced(gy, self.axes, self.keepdims), self.shape)


class Mean(Function):
    """y = sum(x, axis) / n.   dx = gy / n broadcast back over the axes"""
    def forward(self, x, axis=None, keepdims=False):
        self.shape, self.axes, self.keepdims = x.shape, _normalize_axis(axis, x.ndim), keepdims
        self.n = math.prod(x.shape[a] for a in self.axes)
        return x.mean(axis=self.axes, keepdims=keepdims)

    def backward(self, gy):
        xp = get_array_module(gy)
        return xp.broadcast_to(_expand_reduced(gy, self.axes, self.keepdims) / self.n, self.shape)


class Max(Function):
    """y = max(x, axis).   dx = gy at the position of the max (split evenly between ties)"""
    def forward(self, x, axis=None, keepdims=False):
        self.axes, self.keepdims = _normalize_axis(axis, x.ndim), keepdims
        y = x.max(axis=self.axes, keepdims=True)
        self.mask = x == y                                   # where the max was taken
        self.count = self.mask.sum(axis=self.axes, keepdims=True)  # ties share the gradient
        return y if keepdims else y.reshape([n for i, n in enumerate(x.shape) if i not in self.axes])

    def backward(self, gy):
        gy = _expand_reduced(gy, self.axes, self.keepdims)
        return self.mask * (gy / self.count)


# ==================================== shape and indexing ==================================

def _shape_args(args):
    """Accept f(2, 3) and f((2, 3)) as NumPy does."""
    return tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else args


class Reshape(Function):
    """y = x viewed with a new shape.   dx = gy reshaped back"""
    def forward(self, x, shape):
        self.shape = x.shape
        return x.reshape(shape)

    def backward(self, gy):
        return gy.reshape(self.shape)


class Transpose(Function):
    """y = x with axes permuted.   dx = gy with the inverse permutation"""
    def forward(self, x, axes=None):
        self.axes = tuple(reversed(range(x.ndim))) if axes is None else tuple(a % x.ndim for a in axes)
        return x.transpose(self.axes)

    def backward(self, gy):
        inverse = [0] * len(self.axes)
        for i, a in enumerate(self.axes):
            inverse[a] = i
        return gy.transpose(inverse)


class GetItem(Function):
    """y = x[index] (basic slicing or integer arrays).   dx = zeros, with gy added at index

    Backward returns a ScatterGrad: the engine adds gy into x's gradient buffer at index,
    so the zeros are made once however many slices of x are taken.
    """
    def forward(self, x, index):
        self.shape, self.dtype, self.index = x.shape, x.dtype, index
        return x[index]

    def backward(self, gy):
        return ScatterGrad(self.shape, self.dtype, self.index, gy)


class Concatenate(Function):
    """y = concatenate(xs, axis).   dx_i = the slice of gy that came from x_i"""
    def forward(self, *xs, axis=0):
        xp = get_array_module(xs[0])
        self.axis = axis
        self.bounds = [0]
        for x in xs:
            self.bounds.append(self.bounds[-1] + x.shape[axis])
        return xp.concatenate(xs, axis=axis)

    def backward(self, gy):
        index = [slice(None)] * gy.ndim
        grads = []
        for lo, hi in zip(self.bounds[:-1], self.bounds[1:]):
            index[self.axis] = slice(lo, hi)
            grads.append(gy[tuple(index)])
        return tuple(grads)


class Stack(Function):
    """y = stack(xs, axis) (a new axis).   dx_i = gy taken at position i of that axis"""
    def forward(self, *xs, axis=0):
        xp = get_array_module(xs[0])
        self.axis = axis % (xs[0].ndim + 1)
        return xp.stack(xs, axis=self.axis)

    def backward(self, gy):
        xp = get_array_module(gy)
        return tuple(xp.take(gy, i, axis=self.axis) for i in range(gy.shape[self.axis]))


# ====================================== linear algebra ====================================

class MatMul(Function):
    """y = a @ b, batched over leading axes with broadcasting (as numpy.matmul).

    da = gy @ b^T,  db = a^T @ gy   (transposes swap the last two axes)
    """
    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("matmul needs at least 1-D operands, not scalars")
        k_a, k_b = a.shape[-1], b.shape[-2] if b.ndim > 1 else b.shape[0]
        if k_a != k_b:
            raise ValueError(f"matmul shapes {tuple(a.shape)} and {tuple(b.shape)} do not align: {k_a} != {k_b}")
        self.a, self.b = a, b  # each is needed for the other's gradient
        return a @ b

    def backward(self, gy):
        xp = get_array_module(gy)
        a, b = self.a, self.b
        a2 = a[None, :] if a.ndim == 1 else a          # treat vectors as (1, n) / (n, 1)
        b2 = b[:, None] if b.ndim == 1 else b
        if b.ndim == 1:                                # restore the axes matmul dropped
            gy = xp.expand_dims(gy, -1)
        if a.ndim == 1:
            gy = xp.expand_dims(gy, -2)
        ga = gy @ xp.swapaxes(b2, -1, -2)
        gb = xp.swapaxes(a2, -1, -2) @ gy
        if a.ndim == 1:
            ga = ga[..., 0, :]
        if b.ndim == 1:
            gb = gb[..., 0]
        return ga, gb


class Linear(Function):
    """y = x @ W^T + b with W stored (out, in) as in PyTorch; x is (..., in).

    The leading axes are folded into one, so forward and both weight products are single
    2-D GEMMs over N = B*T rows:
    dx = gy @ W,  dW = gy^T @ x,  db = sum(gy) over the rows
    """
    def forward(self, x, w, b=None):
        if x.shape[-1] != w.shape[1]:
            raise ValueError(f"linear: input features {x.shape[-1]} (input shape {tuple(x.shape)}) "
                             f"do not match weight shape {tuple(w.shape)} (out, in)")
        self.x2 = x.reshape(-1, x.shape[-1])  # (N, in)   saved for dW
        self.w, self.has_bias = w, b is not None        # W saved for dx
        y = self.x2 @ w.T                                # (N, out)
        if b is not None:
            y += b
        return y.reshape(*x.shape[:-1], w.shape[0])     # (..., out)

    def backward(self, gy):
        gy2 = gy.reshape(-1, gy.shape[-1])               # (N, out)
        gx = (gy2 @ self.w).reshape(*gy.shape[:-1], self.w.shape[1])
        gw = gy2.T @ self.x2                             # (out, in)
        gb = leading_sum(gy2) if self.has_bias else None
        return gx, gw, gb


# ================================ softmax and friends =====================================

class Softmax(Function):
    """y = exp(x - max) / sum(exp(x - max)) along axis.

    dx = y * (gy - sum(gy * y, axis))      (the Jacobian-vector product, never the Jacobian)
    """
    def forward(self, x, axis=-1):
        xp = get_array_module(x)
        self.axis = axis
        e = x - row_max(x, axis)                   # shift: exp never overflows
        xp.exp(e, out=e)
        e /= row_sum(e, axis)
        self.y = e  # the output is all backward needs
        return e

    def backward(self, gy):
        return _softmax_backward(self.y, gy, self.axis)


def _softmax_backward(y, gy, axis):
    """y * (gy - sum(gy * y, axis)), with one temporary."""
    gx = gy * y
    s = row_sum(gx, axis)
    get_array_module(gy).subtract(gy, s, out=gx)
    gx *= y
    return gx


_causal_bias = {}


def causal_bias(T, dtype, xp):
    """(T, T) additive mask: 0 where a position may attend (column <= row), -inf above."""
    key = (T, str(dtype), xp.__name__)
    if key not in _causal_bias:
        future = xp.triu(xp.ones((T, T), dtype=bool), k=1)
        _causal_bias[key] = xp.where(future, -xp.inf, 0).astype(dtype)
    return _causal_bias[key]


class CausalSoftmax(Function):
    """Attention weights: y = softmax(masked_fill(x * scale, future, -inf)) along the last axis.

    x is (..., T, T) scores, future = column > row. One pass for scale, mask and shift.
    dx = scale * y * (gy - sum(gy * y))     (softmax's backward; future entries have y = 0)
    The unfused composition is the reference it is tested against.
    """
    def forward(self, x, scale=1.0):
        xp = get_array_module(x)
        T = x.shape[-1]
        if x.ndim < 2 or x.shape[-2] != T:
            raise ValueError(f"causal_softmax needs square (..., T, T) scores, got {tuple(x.shape)}")
        scale = float(scale)                          # a NumPy float64 scale would promote z
        z = x * scale
        z += causal_bias(T, x.dtype, xp)             # -inf above the diagonal
        z -= row_max(z)                              # the diagonal is never masked: max is finite
        xp.exp(z, out=z)
        z /= row_sum(z)
        self.y, self.scale = z, scale
        return z

    def backward(self, gy):
        gx = _softmax_backward(self.y, gy, -1)
        gx *= self.scale
        return gx


class LogSoftmax(Function):
    """y = x - max - log(sum(exp(x - max))) along axis.

    dx = gy - exp(y) * sum(gy, axis)
    """
    def forward(self, x, axis=-1):
        xp = get_array_module(x)
        self.axis = axis
        z = x - row_max(x, axis)
        self.y = z - xp.log(xp.exp(z).sum(axis=axis, keepdims=True))
        return self.y

    def backward(self, gy):
        xp = get_array_module(gy)
        return gy - xp.exp(self.y) * gy.sum(axis=self.axis, keepdims=True)


class MaskedFill(Function):
    """y = value where mask else x (mask broadcasts to x, is not differentiable).

    dx = gy with the masked positions zeroed (they no longer depend on x)
    """
    makes_inf = True  # filling with -inf is the point (causal attention)
    def forward(self, x, mask, value):
        xp = get_array_module(x)
        self.mask = mask
        return xp.where(mask, xp.asarray(value, dtype=x.dtype), x)

    def backward(self, gy):
        xp = get_array_module(gy)
        return xp.where(self.mask, xp.zeros((), dtype=gy.dtype), gy)


class LayerNorm(Function):
    """y = (x - mean) * rstd * w + b over the last axis (C); w and b are optional.

    dx = rstd * (dxh - mean(dxh) - xh * mean(dxh * xh)),   dxh = gy * w
    dw = sum(gy * xh),   db = sum(gy)          (sums over every axis but C)
    """
    def forward(self, x, w=None, b=None, eps=1e-5):
        xp = get_array_module(x)
        C = x.shape[-1]
        xh = x - row_sum(x) / C                                      # (..., C) centred
        var = row_dot(xh, xh) / C                                    # (..., 1)
        rstd = 1.0 / xp.sqrt(var + eps)                              # (..., 1)
        xh *= rstd                                                   # normalized
        self.xh, self.rstd, self.w = xh, rstd, w  # xh and rstd give dx in three terms; w scales dy
        self.has_w, self.has_b = w is not None, b is not None
        y = xh * w if w is not None else xh.copy()
        if b is not None:
            y += b
        return y

    def backward(self, gy):
        xp = get_array_module(gy)
        xh, rstd = self.xh, self.rstd
        C = gy.shape[-1]
        gw = leading_dot(gy, xh) if self.has_w else None
        gb = leading_sum(gy) if self.has_b else None
        dxh = gy * self.w if self.has_w else gy.copy()
        m2 = row_dot(dxh, xh) / C                                    # mean(dxh * xh)
        dxh -= row_sum(dxh) / C                                      # - mean(dxh)
        dxh -= xh * m2                                               # - xh * mean(dxh * xh)
        dxh *= rstd                                                  # the three terms
        return (dxh,) + ((gw,) if self.has_w else ()) + ((gb,) if self.has_b else ())


class Embedding(Function):
    """y[..., :] = W[ids[...], :] for integer ids; W is (V, C).

    dW[v] = sum of gy at every position whose id is v   (a scatter-add)
    The scatter-add is one GEMM with the one-hot matrix, onehot(ids)^T @ gy, when that
    matrix is small; it is deterministic (no atomics) and much faster than np.add.at.
    Large vocabularies sort the ids and sum each run instead.
    """
    ONEHOT_LIMIT = 1 << 24  # N * V elements

    def forward(self, w, ids):
        xp = get_array_module(w)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"embedding ids must be integers, got dtype {ids.dtype}")
        V = w.shape[0]
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= V):
            bad = ids[(ids < 0) | (ids >= V)].ravel()[0]
            raise IndexError(f"embedding: id {int(bad)} is out of range for a table of {V} rows "
                             f"(valid ids are 0..{V - 1})")
        self.ids, self.shape = ids, w.shape  # ids say where each row of gy goes
        return xp.take(w, ids, axis=0)       # (..., C)

    def backward(self, gy):
        xp = get_array_module(gy)
        V, C = self.shape
        ids = self.ids.ravel()                  # (N,)
        gy = gy.reshape(-1, C)                  # (N, C)
        if ids.size * V <= self.ONEHOT_LIMIT:
            onehot = ids[None, :] == xp.arange(V)[:, None]       # (V, N)
            return onehot.astype(gy.dtype) @ gy                  # (V, C)
        order = xp.argsort(ids, kind="stable")
        sorted_ids, rows = ids[order], gy[order]
        starts = xp.flatnonzero(xp.concatenate([xp.ones(1, bool), sorted_ids[1:] != sorted_ids[:-1]]))
        gw = xp.zeros((V, C), dtype=gy.dtype)
        gw[sorted_ids[starts]] = xp.add.reduceat(rows, starts, axis=0)
        return gw


class CrossEntropy(Function):
    """loss = mean over rows of (logsumexp(x) - x[target]); x is (N, V) or (B, T, V).

    dx = (softmax(x) - onehot(target)) * gy / N     (softmax and log fused: no division by p)
    """
    def forward(self, logits, targets):
        xp = get_array_module(logits)
        V = logits.shape[-1]
        if targets.shape != logits.shape[:-1]:
            raise ValueError(f"cross_entropy: targets shape {tuple(targets.shape)} must be the "
                             f"logits shape {tuple(logits.shape)} without its last axis")
        if targets.dtype.kind not in "iu":
            raise TypeError(f"cross_entropy targets must be integers, got dtype {targets.dtype}")
        x = logits.reshape(-1, V)                                # (N, V)
        t = targets.ravel()                                      # (N,)
        if t.size and (int(t.min()) < 0 or int(t.max()) >= V):
            raise IndexError(f"cross_entropy: targets must lie in 0..{V - 1}, "
                             f"found {int(t.min())}..{int(t.max())}")
        rows = xp.arange(t.size)
        z = x - row_max(x)                                       # shift: exp never overflows
        e = xp.exp(z)
        s = e.sum(axis=1, keepdims=True)                         # (N, 1)
        loss = (xp.log(s[:, 0]) - z[rows, t]).mean()
        e /= s
        self.p, self.t, self.rows, self.shape = e, t, rows, logits.shape  # softmax and targets
        return loss.astype(logits.dtype)

    def backward(self, gy):
        gx = self.p                          # owned by this op and freed after, so reuse it
        gx[self.rows, self.t] -= 1
        gx *= gy / self.t.size
        return gx.reshape(self.shape)


class Dropout(Function):
    """Inverted dropout: y = x * mask,  mask = [u >= p] / (1 - p),  u ~ U[0, 1).

    dx = gy * mask   (the same mask, saved as booleans: a quarter of a float32 mask's memory)
    """
    def forward(self, x, p, mask=None):
        if mask is None:
            self.keep = backend.uniform(x.shape, x.dtype, backend.device_of(x)) >= p
            self.scale = x.dtype.type(1.0 / (1.0 - p))
        else:  # a given mask, already scaled (gradcheck fixes the draw this way)
            self.keep, self.scale = mask, x.dtype.type(1.0)
        y = x * self.keep
        y *= self.scale
        return y

    def backward(self, gy):
        gx = gy * self.keep
        gx *= self.scale
        return gx


# ============================ the names people call ======================================

def add(a, b): return Add.apply(a, b)
def sub(a, b): return Sub.apply(a, b)
def mul(a, b): return Mul.apply(a, b)
def div(a, b): return Div.apply(a, b)
def neg(x): return Neg.apply(x)


def pow(x, p):
    if isinstance(p, Tensor):
        raise TypeError("pow takes a constant exponent (a Python number), not a Tensor")
    return Pow.apply(x, p=p)


def exp(x): return Exp.apply(x)
def log(x): return Log.apply(x)
def tanh(x): return Tanh.apply(x)
def sqrt(x): return Sqrt.apply(x)
def relu(x): return ReLU.apply(x)
def gelu(x): return GELU.apply(x)


def sum(x, axis=None, keepdims=False): return Sum.apply(x, axis=axis, keepdims=keepdims)
def mean(x, axis=None, keepdims=False): return Mean.apply(x, axis=axis, keepdims=keepdims)
def max(x, axis=None, keepdims=False): return Max.apply(x, axis=axis, keepdims=keepdims)


def reshape(x, *shape): return Reshape.apply(x, shape=_shape_args(shape))


def transpose(x, *axes):
    axes = _shape_args(axes)
    return Transpose.apply(x, axes=axes or None)


def getitem(x, index):
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return GetItem.apply(x, index=index)


def concatenate(xs, axis=0): return Concatenate.apply(*xs, axis=axis)
def stack(xs, axis=0): return Stack.apply(*xs, axis=axis)


def split(x, sections, axis=0):
    """Split into equal parts (an int) or at the given indices (a list), as numpy.split."""
    n = x.shape[axis]
    if isinstance(sections, int):
        if n % sections:
            raise ValueError(f"split: axis {axis} of size {n} does not divide into {sections} equal parts")
        bounds = list(range(0, n + 1, n // sections))
    else:
        bounds = [0, *sections, n]
    index = [slice(None)] * x.ndim
    parts = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        index[axis] = slice(lo, hi)
        parts.append(getitem(x, tuple(index)))
    return parts


def matmul(a, b): return MatMul.apply(a, b)


def linear(x, weight, bias=None):
    """x @ weight.T + bias, as torch.nn.functional.linear."""
    return Linear.apply(x, weight) if bias is None else Linear.apply(x, weight, bias)


def softmax(x, axis=-1): return Softmax.apply(x, axis=axis)
def log_softmax(x, axis=-1): return LogSoftmax.apply(x, axis=axis)


def causal_softmax(x, scale=1.0):
    """softmax(masked_fill(x * scale, future, -inf), axis=-1) for (..., T, T) attention scores."""
    return CausalSoftmax.apply(x, scale=scale)


def masked_fill(x, mask, value):
    """x with `value` wherever the boolean mask (a Tensor or array) is True."""
    mask = mask.data if isinstance(mask, Tensor) else x.xp.asarray(mask)
    if mask.dtype != bool:
        raise TypeError(f"masked_fill: mask must be boolean, got dtype {mask.dtype}")
    if backend.device_of(mask) != x.device:
        raise backend.DeviceError(f"masked_fill: mask is on {backend.device_of(mask)}, x on {x.device}")
    return MaskedFill.apply(x, mask=mask, value=value)


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    params = [p for p in (weight, bias) if p is not None]
    if bias is not None and weight is None:
        raise ValueError("layer_norm: a bias without a weight is not supported")
    return LayerNorm.apply(x, *params, eps=eps)


def _ids(ids, like):
    ids = ids.data if isinstance(ids, Tensor) else like.xp.asarray(ids)
    if backend.device_of(ids) != like.device:
        raise backend.DeviceError(f"ids are on {backend.device_of(ids)} but the weights on {like.device}")
    return ids


def embedding(ids, weight):
    """Rows of weight (V, C) picked by integer ids of any shape: (...) -> (..., C)."""
    return Embedding.apply(weight, ids=_ids(ids, weight))


def cross_entropy(logits, targets):
    """Mean cross-entropy of logits (N, V) or (B, T, V) against integer targets (N,) or (B, T)."""
    return CrossEntropy.apply(logits, targets=_ids(targets, logits))


def dropout(x, p=0.5, training=True, mask=None):
    """Inverted dropout; the identity when not training or when p == 0.
    `mask` (optional, already scaled by 1/(1-p)) fixes the random draw, e.g. for gradcheck."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0:
        return x
    return Dropout.apply(x, p=p, mask=mask)
