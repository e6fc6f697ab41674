"""Every op: one Function with a hand-written forward and backward, then the name people call.

Shape legend: B batch, T time, C channels, V vocab, N rows (B*T), nh heads, hs head size.
`gy` is the gradient of the loss with respect to the op's output; backward returns the
gradient for each input, in order (None where an input is not differentiable). The engine
sums each gradient back to its input's shape, so broadcasting needs no code here.
Backward never writes into gy: it may be shared with other ops.
Derivations: docs/backward.md.

These are the reference ops: each is the textbook formula, written to be read. Some have a
faster twin in tensorlite/kernels/ (NumPy tuned for the CPU, CUDA C for the GPU), tested equal
to the op here; Function.apply runs the fast one unless tl.use_kernels("reference") is set.
"""
import math

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
    """y = x^p for a constant p.   dx = gy * p * x^(p-1)   (0 for p = 0, also at x = 0)"""
    def forward(self, x, p):
        self.x, self.p = x, p
        return x ** p

    def backward(self, gy):
        if self.p == 0:    # y = 1: p * x^(p-1) would be 0 * inf = NaN at x = 0
            return get_array_module(gy).zeros_like(gy)
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
        return get_array_module(x).maximum(x, 0)   # not x * mask: -inf * 0 would be NaN

    def backward(self, gy):
        return gy * self.mask


GELU_C = math.sqrt(2.0 / math.pi)


class GELU(Function):
    """GPT-2's tanh approximation: y = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3).

    Written y = x s with s = (1 + tanh(u)) / 2, whose slope is ds/dx = 2 s (1 - s) du/dx:
    dx = gy * s * (1 + d (1 - s)),   d = 2 sqrt(2/pi) x (1 + 3 * 0.044715 x^2)
    """
    float_input = True

    def forward(self, x):
        xp = get_array_module(x)
        u = GELU_C * (x + 0.044715 * x * x * x)      # x * x * x: NumPy's x ** 3 is a slow pow()
        s = 0.5 * (1 + xp.tanh(u))
        self.x, self.s = x, s                        # saved: dx needs x and s
        return x * s

    def backward(self, gy):
        x, s = self.x, self.s
        d = 2 * GELU_C * x * (1 + 3 * 0.044715 * x * x)
        return gy * s * (1 + d * (1 - s))


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
        self.count = self.mask.sum(axis=self.axes, keepdims=True).astype(x.dtype)  # ties share the gradient
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
        gb = gy2.sum(axis=0) if self.has_bias else None  # (out,)
        return gx, gw, gb


# ================================ softmax and friends =====================================

class Softmax(Function):
    """y = exp(x - max) / sum(exp(x - max)) along axis.

    dx = y * (gy - sum(gy * y, axis))      (the Jacobian-vector product, never the Jacobian)
    """
    float_input = True

    def forward(self, x, axis=-1):
        xp = get_array_module(x)
        self.axis = axis
        e = xp.exp(x - x.max(axis=axis, keepdims=True))
        e /= e.sum(axis=axis, keepdims=True)
        self.y = e  # the output is all backward needs
        return e

    def backward(self, gy):
        y = self.y
        return y * (gy - (gy * y).sum(axis=self.axis, keepdims=True))


class CausalSoftmax(Function):
    """Attention weights: y = softmax(masked_fill(x * scale, future, -inf)) along the last axis.

    x is (..., T, T) scores, future = column > row.
    dx = scale * y * (gy - sum(gy * y))     (softmax's backward; future entries have y = 0)
    """
    float_input = True

    def forward(self, x, scale=1.0):
        xp = get_array_module(x)
        T = x.shape[-1]
        if x.ndim < 2 or x.shape[-2] != T:
            raise ValueError(f"causal_softmax needs square (..., T, T) scores, got {tuple(x.shape)}")
        scale = float(scale)                          # a NumPy float64 scale would promote z
        future = xp.triu(xp.ones((T, T), dtype=bool), k=1)            # (T, T) column > row
        z = xp.where(future, x.dtype.type(-math.inf), x * scale)        # (..., T, T)
        e = xp.exp(z - z.max(axis=-1, keepdims=True))  # the diagonal is never masked: max is finite
        y = e / e.sum(axis=-1, keepdims=True)
        self.y, self.scale = y, scale                 # softmax's backward needs y; then * scale
        return y

    def backward(self, gy):
        y = self.y
        return self.scale * y * (gy - (gy * y).sum(axis=-1, keepdims=True))


class LogSoftmax(Function):
    """y = x - max - log(sum(exp(x - max))) along axis.

    dx = gy - exp(y) * sum(gy, axis)
    """
    float_input = True

    def forward(self, x, axis=-1):
        xp = get_array_module(x)
        self.axis = axis
        z = x - x.max(axis=axis, keepdims=True)
        self.y = z - xp.log(xp.exp(z).sum(axis=axis, keepdims=True))  # softmax is exp(y)
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
        return xp.where(mask, x.dtype.type(value), x)   # a scalar of x's dtype: no copy to the device

    def backward(self, gy):
        xp = get_array_module(gy)
        return xp.where(self.mask, xp.zeros((), dtype=gy.dtype), gy)


class LayerNorm(Function):
    """y = (x - mean) * rstd * w + b over the last axis (C); w and b are optional.

    dx = rstd * (dxh - mean(dxh) - xh * mean(dxh * xh)),   dxh = gy * w
    dw = sum(gy * xh),   db = sum(gy)          (sums over every axis but C)
    """
    float_input = True

    def forward(self, x, w=None, b=None, eps=1e-5):
        xp = get_array_module(x)
        mean = x.mean(-1, keepdims=True)                                       # (..., 1)
        rstd = 1.0 / xp.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps)  # (..., 1)
        xh = (x - mean) * rstd                                                 # (..., C)
        self.xh, self.rstd, self.w = xh, rstd, w  # xh and rstd give dx in three terms; w scales dy
        self.has_b = b is not None
        y = xh * w if w is not None else xh.copy()
        return y + b if b is not None else y

    def backward(self, gy):
        xh, rstd, w = self.xh, self.rstd, self.w
        rows = tuple(range(gy.ndim - 1))                                       # every axis but C
        dxh = gy * w if w is not None else gy
        dx = rstd * (dxh - dxh.mean(-1, keepdims=True) - xh * (dxh * xh).mean(-1, keepdims=True))
        dw = (gy * xh).sum(axis=rows) if w is not None else None              # (C,)
        db = gy.sum(axis=rows) if self.has_b else None                        # (C,)
        return tuple(g for g in (dx, dw, db) if g is not None)


class Embedding(Function):
    """y[..., :] = W[ids[...], :] for integer ids; W is (V, C).

    dW[v] = sum of gy at every position whose id is v   (a scatter-add)
    """
    def forward(self, w, ids):
        xp = get_array_module(w)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"embedding ids must be integers, got dtype {ids.dtype}")
        V = w.shape[0]
        backend.check_ids(ids, V, lambda host: (   # deferred on cuda: no host sync here
            f"embedding: id {int(host[(host < 0) | (host >= V)].ravel()[0])} is out of range "
            f"for a table of {V} rows (valid ids are 0..{V - 1})"))
        self.ids, self.shape = ids, w.shape  # ids say where each row of gy goes
        return xp.take(w, ids, axis=0)       # (..., C)

    def backward(self, gy):
        xp = get_array_module(gy)
        gw = xp.zeros(self.shape, dtype=gy.dtype)     # (V, C)
        xp.add.at(gw, self.ids, gy)                   # gw[ids[n]] += gy[n]; repeated ids add up
        return gw


class CrossEntropy(Function):
    """loss = mean over rows of (logsumexp(x) - x[target]); x is (N, V) or (B, T, V).

    dx = (softmax(x) - onehot(target)) * gy / N     (softmax and log fused: no division by p)
    """
    float_input = True

    def forward(self, logits, targets):
        xp = get_array_module(logits)
        x, t = self.rows_and_targets(logits, targets)           # (N, V), (N,)
        rows = xp.arange(t.size)
        z = x - x.max(axis=1, keepdims=True)                     # shift: exp never overflows
        e = xp.exp(z)
        s = e.sum(axis=1)                                        # (N,)
        loss = (xp.log(s) - z[rows, t]).mean()                   # logsumexp(x) - x[target]
        self.p = e / s[:, None]                                  # softmax, (N, V)
        self.t, self.rows, self.shape = t, rows, logits.shape    # where the onehot's 1s go
        return loss.astype(logits.dtype)

    def backward(self, gy):
        xp = get_array_module(gy)
        onehot = xp.zeros_like(self.p)
        onehot[self.rows, self.t] = 1
        return ((self.p - onehot) * (gy / self.t.size)).reshape(self.shape)

    @staticmethod
    def check_targets(logits, targets):
        """Targets must be integers shaped like the logits without their last axis."""
        if targets.shape != logits.shape[:-1]:
            raise ValueError(f"cross_entropy: targets shape {tuple(targets.shape)} must be the "
                             f"logits shape {tuple(logits.shape)} without its last axis")
        if targets.dtype.kind not in "iu":
            raise TypeError(f"cross_entropy targets must be integers, got dtype {targets.dtype}")

    @classmethod
    def rows_and_targets(cls, logits, targets):
        """Check the targets; logits as (N, V) rows and targets as (N,) ids."""
        V = logits.shape[-1]
        cls.check_targets(logits, targets)
        t = targets.ravel()
        backend.check_ids(t, V, lambda host: (     # deferred on cuda: no host sync here
            f"cross_entropy: targets must lie in 0..{V - 1}, found {int(host.min())}..{int(host.max())}"))
        return logits.reshape(-1, V), t


class Dropout(Function):
    """Inverted dropout: y = x * mask,  mask = [u >= p] / (1 - p),  u ~ U[0, 1).

    dx = gy * mask   (the same mask, saved as booleans: a quarter of a float32 mask's memory)
    """
    float_input = True

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

def add(a, b):
    """a + b, elementwise with broadcasting (either may be a Python number or an array)."""
    return Add.apply(a, b)


def sub(a, b):
    """a - b, elementwise with broadcasting."""
    return Sub.apply(a, b)


def mul(a, b):
    """a * b, elementwise with broadcasting."""
    return Mul.apply(a, b)


def div(a, b):
    """a / b, elementwise with broadcasting."""
    return Div.apply(a, b)


def neg(x):
    """-x, elementwise."""
    return Neg.apply(x)


def pow(x, p):
    """x ** p for a constant exponent p (a Python number), elementwise."""
    if isinstance(p, Tensor):
        raise TypeError("pow takes a constant exponent (a Python number), not a Tensor")
    return Pow.apply(x, p=p)


def exp(x):
    """e ** x, elementwise."""
    return Exp.apply(x)


def log(x):
    """The natural logarithm, elementwise."""
    return Log.apply(x)


def tanh(x):
    """tanh(x), elementwise."""
    return Tanh.apply(x)


def sqrt(x):
    """The square root, elementwise."""
    return Sqrt.apply(x)


def relu(x):
    """max(x, 0), elementwise; the gradient at 0 is 0, as PyTorch's."""
    return ReLU.apply(x)


def gelu(x):
    """GPT-2's GELU, the tanh approximation, elementwise (PyTorch's gelu(x, approximate="tanh"))."""
    return GELU.apply(x)


def sum(x, axis=None, keepdims=False):
    """The sum over an axis or a tuple of axes (every axis when None); keepdims keeps them as size 1."""
    return Sum.apply(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    """The mean over an axis or a tuple of axes (every axis when None)."""
    return Mean.apply(x, axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=False):
    """The maximum over an axis or a tuple of axes (every axis when None). Tied maxima share
    the gradient equally, as torch.amax's do."""
    return Max.apply(x, axis=axis, keepdims=keepdims)


def reshape(x, *shape):
    """The same elements in a new shape: `reshape(x, B, T, C)` or `reshape(x, (B, -1))`."""
    return Reshape.apply(x, shape=_shape_args(shape))


def transpose(x, *axes):
    """The axes permuted, as numpy.transpose: `transpose(x, 0, 2, 1, 3)` or `transpose(x, (1, 0))`;
    reversed when none are given."""
    axes = _shape_args(axes)
    return Transpose.apply(x, axes=axes or None)


def getitem(x, index):
    """x[index]: basic slicing (ints, slices, None, ...) or integer and boolean arrays, as NumPy
    indexes. The gradient of an index that repeats adds up at that position."""
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return GetItem.apply(x, index=index)


def concatenate(xs, axis=0):
    """Join a list of tensors along an existing axis (numpy.concatenate, torch.cat)."""
    return Concatenate.apply(*xs, axis=axis)


def stack(xs, axis=0):
    """Join a list of tensors of one shape along a new axis."""
    return Stack.apply(*xs, axis=axis)


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


def matmul(a, b):
    """The matrix product a @ b, batched over leading axes with broadcasting; 1-D operands are
    vectors, as in numpy.matmul."""
    return MatMul.apply(a, b)


def linear(x, weight, bias=None):
    """x @ weight.T + bias, as torch.nn.functional.linear."""
    return Linear.apply(x, weight) if bias is None else Linear.apply(x, weight, bias)


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along an axis, computed stably (shifted by the max)."""
    return Softmax.apply(x, axis=axis)


def log_softmax(x, axis=-1):
    """log(softmax(x)) along an axis, computed stably (no log of a tiny probability)."""
    return LogSoftmax.apply(x, axis=axis)


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
    """(x - mean) / sqrt(var + eps) over the last axis, then * weight + bias when given (each of
    shape (C,)), as torch.nn.functional.layer_norm(x, (C,), weight, bias, eps)."""
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
