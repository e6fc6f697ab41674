"""Tensor, Function and the reverse-mode engine.

A Tensor wraps one raw NumPy or CuPy array (`.data`). Every op is a Function: `forward`
takes raw arrays and returns a raw array, `backward` takes the output's gradient (a raw
array) and returns one raw gradient per input. Function.apply wires Tensors to that and
records the graph; Tensor.backward walks it in reverse topological order.
"""
import time
import weakref
from collections import Counter

import numpy as np

from . import backend, kernels
from .backend import DeviceError, as_numpy, device_of, get_array_module

_grad_enabled = True
_profiler = None  # set by tensorlite.profile(); None costs one global read per op
_anomaly = False  # set by tensorlite.detect_anomaly()


class no_grad:
    """Context manager (and decorator) inside which no graph is recorded."""

    def __enter__(self):
        global _grad_enabled
        self.prev, _grad_enabled = _grad_enabled, False

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self.prev

    def __call__(self, fn):
        def wrapper(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)
        wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
        return wrapper


def is_grad_enabled():
    """False inside no_grad(), where ops record no graph."""
    return _grad_enabled


class detect_anomaly:
    """Inside this block every op checks its output, and every backward its gradients, and
    raises FloatingPointError naming the first op that produced a NaN or an Inf.

    An Inf in a forward output counts only when the op's inputs were finite, and ops that
    fill values on purpose (MaskedFill with -inf) are exempt. Slow: for debugging."""

    def __enter__(self):
        global _anomaly
        self.prev, _anomaly = _anomaly, True

    def __exit__(self, *exc):
        global _anomaly
        _anomaly = self.prev


def _check_finite(fn, phase, arrays, inputs=()):
    for i, a in enumerate(arrays):
        if getattr(a, "dtype", None) is None or a.dtype.kind != "f":   # None, or not an array
            continue
        xp = get_array_module(a)
        where = f" in the gradient of input {i}" if phase == "backward" else ""
        if bool(xp.isnan(a).any()):
            raise FloatingPointError(f"{type(fn).__name__}.{phase} produced NaN{where}")
        if bool(xp.isinf(a).any()) and not fn.makes_inf and all(
                bool(xp.isfinite(x).all()) for x in inputs if x.dtype.kind == "f"):
            raise FloatingPointError(f"{type(fn).__name__}.{phase} produced Inf{where}")


def sum_to(g, shape):
    """Undo broadcasting: sum g down to `shape` (leading axes, then axes of size 1)."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape) if n == 1 and g.shape[i + lead] != 1)
    g = g.sum(axis=axes, keepdims=True) if axes else g
    return g.reshape(shape)


class Function:
    """Base class of every op. Subclasses define forward and backward on raw arrays.

    Tensors are passed positionally; everything else (axis, p, eps, masks, index
    arrays) as keyword arguments, which go straight to forward. Anything forward
    stores on `self` is freed once backward has run.
    """
    makes_inf = False  # True for ops whose output may hold +-inf on purpose (detect_anomaly)
    float_input = False  # True for ops whose first input must be floating point, as PyTorch's

    def forward(self, *xs, **kwargs):
        """Raw arrays in (the tensors' data, then keyword options), the raw output array out;
        saves on self what backward needs."""
        raise NotImplementedError(
            f"{type(self).__name__} defines no forward(): a Function subclass needs "
            "`def forward(self, *arrays, **options)` returning the output array")

    def backward(self, gy):
        """The gradient of the output gy (a raw array) in, one gradient per input out (None for
        an input that is not differentiable), each of its input's shape or of a shape that
        broadcasting the input gives (the engine sums it back)."""
        raise NotImplementedError(
            f"{type(self).__name__} defines no backward(): a Function subclass needs "
            "`def backward(self, gy)` returning one gradient per input (None for an input "
            "that is not differentiable) to be used with .backward()")

    @classmethod
    def apply(cls, *inputs, **kwargs):
        """Run the op on tensors: `F.Softmax.apply(x, axis=-1)`, `MyOp.apply(a, b)`.

        Tensors go positionally (a Python number or raw array beside them becomes a constant
        tensor on their device), options by keyword. forward runs on the inputs' arrays (the
        registered fast kernel for their device, unless tl.use_kernels("reference")); when an
        input requires grad and no_grad() is off, the output records this op for backward.
        Returns the output Tensor."""
        inputs = [x if isinstance(x, Tensor) else _constant_like(x, inputs) for x in inputs]
        device = inputs[0].device
        for x in inputs[1:]:
            if x.device != device:
                raise DeviceError(f"{cls.__name__}: inputs are on different devices "
                                  f"({', '.join(t.device for t in inputs)}); move them with .to(device)")
        arrays = [x.data for x in inputs]
        if cls.float_input and arrays[0].dtype.kind != "f":
            raise TypeError(f"{cls.__name__}: needs a floating-point tensor, got {arrays[0].dtype}; "
                            f"convert it first with .float() or .double()")
        cls = kernels.resolve(cls, device, *arrays, **kwargs)   # the one place ops choose
        fn = cls()
        try:
            if _profiler is None:
                y = fn.forward(*arrays, **kwargs)
            else:
                t0 = _profiler.start()                  # waits for the device's queued work
                y = fn.forward(*arrays, **kwargs)
                _profiler.record(cls.__name__, "forward", time.perf_counter() - t0, y)
        except ValueError as e:
            shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
            raise ValueError(f"{cls.__name__}: {e} (input shapes {shapes})") from e
        if getattr(y, "shape", None) is None or getattr(y, "dtype", None) is None:
            shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
            hint = " (a missing `return`?)" if y is None else ""
            raise TypeError(f"{cls.__name__}.forward returned {type(y).__name__}{hint}, not an array: it must "
                            f"return the output array (input shapes {shapes})")
        if _anomaly:
            _check_finite(fn, "forward", (y,), arrays)
        if isinstance(y, np.generic):  # NumPy gives 0-d results as scalars: keep an array
            y = np.asarray(y)
        out = Tensor(y)
        if _grad_enabled and any(x.requires_grad for x in inputs):
            out.requires_grad = True
            out.creator = fn
            # the graph keeps leaves, and of other inputs only their Edge: no data
            fn.inputs = [x if x.creator is None else x.edge() for x in inputs]
        return out

    def release(self):
        """Drop everything forward saved; keep only the graph edges."""
        inputs = self.inputs
        self.__dict__.clear()
        self.inputs, self.released = inputs, True

    def __repr__(self):
        return f"<{type(self).__name__}>"


def _dim_in_range(dim, n):
    """dim as an index of n axes (negative counts from the end), or PyTorch's IndexError."""
    if not -n <= dim < n:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-n}, {n - 1}], "
                         f"but got {dim})")
    return dim % n


def _constant_like(x, inputs):
    """A Python scalar or raw array used beside Tensors becomes a constant on their device.

    Scalars take the dtype of the first floating tensor, so `x * 2.0` stays float32.
    """
    ref = next(t for t in inputs if isinstance(t, Tensor))
    xp = ref.xp
    if isinstance(x, (int, float, bool)):
        dtype = ref.dtype if xp.issubdtype(ref.dtype, xp.floating) else None
        if xp is np:
            return Tensor(np.asarray(x, dtype=dtype))
        return Tensor(xp.full((), x, dtype=dtype))   # filled on the device: no host-to-device copy
    return Tensor(xp.asarray(x))


class Tensor:
    """An n-dimensional array that can record the ops applied to it."""
    __array_priority__ = 1000  # so numpy_array + tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad=False):
        self.data = data
        self.grad = None
        self.requires_grad = requires_grad
        self.creator = None       # the Function that made this tensor, if any
        self.name = None          # set for parameters, shown in graphs and errors
        self._retain_grad = False
        self._edge = None

    # ---- attributes --------------------------------------------------------------------
    @property
    def shape(self):
        """The shape, a tuple: `B, T, C = x.shape`."""
        return self.data.shape

    @property
    def ndim(self):
        """The number of axes."""
        return self.data.ndim

    @property
    def size(self):
        """The number of elements, as NumPy's `a.size`; also callable as PyTorch's `x.size()`
        (the shape) and `x.size(dim)` (one axis): see ElementCount."""
        return ElementCount(self.data.size, self.data.shape)

    @property
    def dtype(self):
        """The NumPy dtype: `x.dtype == np.float32`, `x.dtype == torch.long`."""
        return self.data.dtype

    @property
    def device(self):
        """"cpu" (a NumPy array) or "cuda" (a CuPy array): a str, with PyTorch's `.type` and
        `.index` (backend.device)."""
        return _DEVICE[device_of(self.data)]

    @property
    def is_cuda(self):
        """True when the data is on the GPU (PyTorch's name)."""
        return device_of(self.data) == "cuda"

    @property
    def xp(self):
        """numpy or cupy, whichever holds the data."""
        return get_array_module(self.data)

    @property
    def is_leaf(self):
        """True when no op made this tensor (an input or a parameter): backward leaves .grad here."""
        return self.creator is None

    def __len__(self):
        return len(self.data)

    def __bool__(self):
        if self.data.size == 1:
            return bool(self.item())   # through backend.item, as every read of a value
        return bool(self.data)         # NumPy's error for an ambiguous truth value

    def numpy(self):
        """The data as a NumPy array (copied from the GPU if needed)."""
        return as_numpy(self.data)

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def item(self):
        """The value of a one-element tensor as a Python number.

        On cuda this is a host synchronisation, and the one transfer also reads the checks
        deferred on the device (an id out of range raises here: backend.item)."""
        return backend.item(self.data)

    def __float__(self):
        """float(t) for a one-element tensor, so float(norm) and math.isfinite(norm) work."""
        return float(self.item())

    def tolist(self):
        """The data as nested Python lists."""
        return self.numpy().tolist()

    def detach(self):
        """A new leaf tensor sharing this one's data, outside any graph."""
        return Tensor(self.data)

    def clone(self):
        """A copy of the data. In a recorded graph the copy is part of it, so gradients flow
        back through it to this tensor (PyTorch's clone); otherwise it is a new leaf."""
        if self.requires_grad and _grad_enabled:
            return self + 0
        return Tensor(self.data.copy())

    def requires_grad_(self, requires_grad=True):
        """Set requires_grad in place and return self (PyTorch's name): only floating-point
        tensors can require gradients, and only a leaf can stop requiring them."""
        if requires_grad and self.dtype.kind != "f":
            raise TypeError(f"requires_grad_: only floating-point tensors can require gradients, "
                            f"not {self.dtype}")
        if not requires_grad and not self.is_leaf:
            raise RuntimeError("requires_grad_(False): only a leaf tensor can stop requiring "
                               "gradients; use .detach() for a tensor outside the graph")
        self.requires_grad = bool(requires_grad)
        return self

    def to(self, *args, device=None, dtype=None, non_blocking=False, copy=False):
        """This tensor on another device and/or dtype: `t.to("cuda")`, `t.to(np.float64)`,
        `t.to("cuda", "float64")`, `t.to(other_tensor)`, or the keywords. Returns self when
        nothing changes (and copy is False).

        The copy is a new leaf: a leaf that requires grad gives a leaf that requires grad
        (its gradient stays with the copy), and a tensor made by ops under a recorded graph is
        refused, since no gradient would flow back through the move. Move or cast inputs and
        parameters (`model.to(...)`) before the forward pass."""
        device, dtype = parse_to_args(args, device, dtype)
        if device is not None:
            backend.check_device(device)
        if dtype is not None:
            dtype = np.dtype(dtype)
        same_device = device is None or device == self.device
        same_dtype = dtype is None or dtype == self.dtype
        if same_device and same_dtype and not copy:
            return self
        if self.requires_grad and not self.is_leaf and _grad_enabled:
            raise RuntimeError(
                f"to({device or dtype}) of a tensor made by {type(self.creator).__name__} inside a graph: "
                "the gradient would not flow back through the copy; move or cast the inputs and "
                "parameters before the forward pass, or .detach() first")
        data = self.data if same_device else backend.to_device(self.data, device)
        data = data if same_dtype else data.astype(dtype)
        if data is self.data:
            data = data.copy()
        return Tensor(data, requires_grad=self.requires_grad and self.is_leaf)

    def cpu(self):
        """`self.to("cpu")`."""
        return self.to("cpu")

    def cuda(self):
        """`self.to("cuda")` (needs CuPy and a GPU)."""
        return self.to("cuda")

    def edge(self):
        """This tensor as the graph holds it (see Edge); made once, on first use."""
        if self._edge is None:
            self._edge = Edge(self)
        return self._edge

    def retain_grad(self):
        """Keep .grad on this non-leaf tensor after backward (leaves always keep it)."""
        self._retain_grad = True
        return self

    def __repr__(self):
        made_by = f", grad_fn={type(self.creator).__name__}" if self.creator is not None else ""
        req = ", requires_grad=True" if self.requires_grad and self.creator is None else ""
        body = np.array2string(self.numpy(), separator=", ", threshold=20, edgeitems=2,
                               prefix="tensor(")
        return (f"tensor({body}, shape={tuple(self.shape)}, dtype={self.dtype}, "
                f"device={self.device}{req}{made_by})")

    # ---- the backward pass ---------------------------------------------------------------
    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf) * grad into .grad of every leaf that requires grad."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad: no input "
                               "had requires_grad=True, or it was made under no_grad()")
        xp = self.xp
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward() on a non-scalar tensor of shape {tuple(self.shape)} "
                                   "needs a gradient of that shape: t.backward(grad)")
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad)
            if grad.shape != self.shape:
                raise ValueError(f"backward(): gradient shape {tuple(grad.shape)} does not match "
                                 f"the tensor's shape {tuple(self.shape)}")
            grad = grad.astype(self.dtype, copy=False)

        root = self if self.creator is None else self.edge()
        grads = {id(root): grad}  # id(node) -> the gradient summed so far
        owned = set()  # ids of nodes whose gradient array the engine may add into in place
        for node in _topological_order(root):
            g = grads.pop(id(node), None)
            if g is None:  # every path to it returned None (not differentiable)
                continue
            fn = node.creator
            if fn is None:                       # a leaf: its .grad is the result
                node.grad = _accumulate(node.grad, g, id(node) in owned)
                continue
            kept = node.tensor()                  # alive only if the program still holds it
            if kept is not None and kept._retain_grad:
                kept.grad = _accumulate(kept.grad, g, id(node) in owned)
            if getattr(fn, "released", False):
                raise RuntimeError("backward() through a graph a second time: its saved arrays "
                                   "were freed by the first backward; recompute the forward pass")
            if _profiler is None:
                gxs = fn.backward(g)
            else:
                t0 = _profiler.start()
                gxs = fn.backward(g)
                _profiler.record(type(fn).__name__, "backward", time.perf_counter() - t0, None)
            if not isinstance(gxs, tuple):
                gxs = tuple(gxs) if isinstance(gxs, list) else (gxs,)
            if len(gxs) != len(fn.inputs):
                gxs = _gradient_count(fn, gxs)
            if _anomaly:
                _check_finite(fn, "backward", [gx.dense() if isinstance(gx, ScatterGrad) else gx for gx in gxs])
            returned = Counter(id(gx) for gx in gxs)  # an array returned twice is shared
            for i, (x, gx) in enumerate(zip(fn.inputs, gxs)):
                if gx is None:
                    continue
                shape = getattr(gx, "shape", None)        # checked for every input, used or not
                if shape != x.shape and (shape is None or isinstance(gx, ScatterGrad)
                                         or not _broadcasts_to(x.shape, shape)):
                    _raise_wrong_gradient(fn, i, gx, x)   # names the op, the input and both shapes
                if not x.requires_grad:
                    continue
                key = id(x)
                if isinstance(gx, ScatterGrad):    # add the slice into one buffer, no dense zeros
                    if key not in grads:
                        grads[key] = gx.dense()
                    else:
                        if key not in owned:
                            grads[key] = grads[key].copy()
                        gx.add_into(grads[key])
                    owned.add(key)
                    continue
                if gx.shape != x.shape:
                    gx = sum_to(gx, x.shape)       # a broadcast input: sum back to its shape
                # a fresh array (not gy, not a view, not returned twice) is ours to add into
                fresh = gx is not g and gx.base is None and returned[id(gx)] == 1
                if key not in grads:
                    grads[key] = gx
                    if fresh:
                        owned.add(key)
                elif key in owned:
                    grads[key] += gx
                else:
                    grads[key] = grads[key] + gx
                    owned.add(key)
            fn.release()

    # ---- operators and methods: thin wrappers around tensorlite.functional -----------------
    def __add__(self, other): return F.add(self, other)
    def __radd__(self, other): return F.add(other, self)
    def __sub__(self, other): return F.sub(self, other)
    def __rsub__(self, other): return F.sub(other, self)
    def __mul__(self, other): return F.mul(self, other)
    def __rmul__(self, other): return F.mul(other, self)
    def __truediv__(self, other): return F.div(self, other)
    def __rtruediv__(self, other): return F.div(other, self)
    def __neg__(self): return F.neg(self)
    def __pow__(self, exponent): return F.pow(self, exponent)
    def __matmul__(self, other): return F.matmul(self, other)
    def __rmatmul__(self, other): return F.matmul(other, self)
    def __getitem__(self, index): return F.getitem(self, index)

    # comparisons give plain boolean tensors (no gradient), for masks
    def __eq__(self, other): return Tensor(self.data == _raw(other))
    def __ne__(self, other): return Tensor(self.data != _raw(other))
    def __lt__(self, other): return Tensor(self.data < _raw(other))
    def __le__(self, other): return Tensor(self.data <= _raw(other))
    def __gt__(self, other): return Tensor(self.data > _raw(other))
    def __ge__(self, other): return Tensor(self.data >= _raw(other))
    __hash__ = object.__hash__

    def exp(self):
        """e ** x, elementwise."""
        return F.exp(self)

    def log(self):
        """The natural logarithm, elementwise."""
        return F.log(self)

    def tanh(self):
        """tanh(x), elementwise."""
        return F.tanh(self)

    def sqrt(self):
        """The square root, elementwise."""
        return F.sqrt(self)

    def relu(self):
        """max(x, 0), elementwise."""
        return F.relu(self)

    def abs(self):
        """|x|, elementwise: x times its sign, so the gradient is sign(x) (0 at 0, as PyTorch's)."""
        return self * Tensor(self.xp.sign(self.data))

    __abs__ = abs

    def gelu(self):
        """GPT-2's GELU (the tanh approximation), elementwise."""
        return F.gelu(self)

    def matmul(self, other):
        """The matrix product `self @ other`, batched over leading axes."""
        return F.matmul(self, other)

    def masked_fill(self, mask, value):
        """self with `value` wherever the boolean mask is True: `wei.masked_fill(tril == 0, float('-inf'))`."""
        return F.masked_fill(self, mask, value)

    def reshape(self, *shape):
        """The same elements in a new shape: `x.reshape(B, T, nh, hs)` or `x.reshape((B, -1))`."""
        return F.reshape(self, *shape)

    # ---- axes: NumPy's `axis=`/`keepdims=` and PyTorch's `dim=`/`keepdim=` ------------------
    # The one rule (docs/pytorch.md): a call spelled the PyTorch way (dim=, keepdim=, two axes
    # to transpose) means what it means in PyTorch; a call spelled the NumPy way (axis=,
    # keepdims=, a full permutation) what it means in NumPy. Both spellings work everywhere.

    def softmax(self, axis=-1, *, dim=None):
        """exp(x) / sum(exp(x)) along an axis (`axis=` or `dim=`)."""
        return F.softmax(self, _axis(axis, dim, "softmax", -1))

    def log_softmax(self, axis=-1, *, dim=None):
        """log(softmax(x)) along an axis, computed stably."""
        return F.log_softmax(self, _axis(axis, dim, "log_softmax", -1))

    def sum(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """The sum over an axis or axes (all when None); `keepdims=`/`keepdim=` keeps them as size 1."""
        return F.sum(self, _axis(axis, dim, "sum"), _keep(keepdims, keepdim))

    def mean(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """The mean over an axis or axes (all when None)."""
        return F.mean(self, _axis(axis, dim, "mean"), _keep(keepdims, keepdim))

    def max(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """NumPy's max: the values (`x.max(axis=-1)`, `x.max(-1)`). Spelled with `dim=`, PyTorch's:
        a (values, indices) pair (`x.max(dim=-1).values`)."""
        if dim is None:
            return F.max(self, axis, _keep(keepdims, keepdim))
        keep = _keep(keepdims, keepdim)
        return MaxResult(F.max(self, _axis(axis, dim, "max"), keep), self.argmax(dim=dim, keepdim=keep))

    def var(self, axis=None, keepdims=False, *, dim=None, keepdim=None, unbiased=True, correction=None):
        """Variance over an axis. Unbiased (divides by n - 1) by default, as PyTorch's `var`
        (NumPy's `var` divides by n: pass unbiased=False or correction=0)."""
        axis, keep = _axis(axis, dim, "var"), _keep(keepdims, keepdim)
        correction = (1 if unbiased else 0) if correction is None else correction
        axes = tuple(range(self.ndim)) if axis is None else tuple(np.atleast_1d(axis))
        n = int(np.prod([self.shape[a] for a in axes]))
        d = self - self.mean(axis=axis, keepdims=True)
        return (d * d).sum(axis=axis, keepdims=keep) / max(n - correction, 0)

    def std(self, axis=None, keepdims=False, *, dim=None, keepdim=None, unbiased=True, correction=None):
        """Standard deviation: the square root of var (unbiased by default, as PyTorch's)."""
        return self.var(axis, keepdims, dim=dim, keepdim=keepdim, unbiased=unbiased,
                        correction=correction).sqrt()

    def argmax(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """Indices of the maxima (an integer tensor, no gradient)."""
        axis, keep = _axis(axis, dim, "argmax"), _keep(keepdims, keepdim)
        out = self.data.argmax(axis=axis)
        if keep and axis is not None:
            out = self.xp.expand_dims(out, axis)
        return Tensor(out)

    def transpose(self, *axes):
        """Two axes swap them, as PyTorch's `x.transpose(-2, -1)`; a full permutation
        (`x.transpose(0, 2, 1, 3)`, `x.transpose((1, 0))`) or none at all (reverse every axis)
        is NumPy's. The one call the two libraries read differently, `transpose(0, 1)` on a
        2-D tensor (NumPy: unchanged), swaps here."""
        if len(axes) == 2 and all(isinstance(a, (int, np.integer)) for a in axes):
            return F.transpose(self, _swap(self.ndim, *axes))
        return F.transpose(self, *axes)

    def swapaxes(self, axis0, axis1):
        """Swap two axes (NumPy's name for PyTorch's two-axis transpose)."""
        return F.transpose(self, _swap(self.ndim, axis0, axis1))

    def permute(self, *dims):
        """Reorder the axes: `x.permute(0, 2, 1, 3)` or `x.permute((0, 2, 1, 3))`."""
        return F.transpose(self, *dims)

    @property
    def T(self):
        """Every axis reversed (NumPy's `.T`; for a matrix, its transpose)."""
        return F.transpose(self)

    @property
    def mT(self):
        """The last two axes swapped: a batch of matrices, each transposed (PyTorch's `.mT`)."""
        return F.transpose(self, _swap(self.ndim, -2, -1))

    def split(self, size_or_sections, axis=0, *, dim=None):
        """NumPy's split with `axis=` (or no axis): `x.split(3, axis=2)` makes 3 equal parts, or
        cuts at a list of indices. PyTorch's with `dim=`: `x.split(64, dim=2)` makes parts of
        64 along dim (the last may be shorter), or parts of the listed sizes."""
        if dim is None:
            return F.split(self, size_or_sections, axis)
        n = self.shape[dim]
        if isinstance(size_or_sections, (int, np.integer)):
            sizes = [size_or_sections] * (n // size_or_sections) + ([n % size_or_sections] if n % size_or_sections else [])
        else:
            sizes = list(size_or_sections)
            if sum(sizes) != n:
                raise ValueError(f"split: sizes {sizes} do not add up to {n}, the size of dim {dim}")
        return F.split(self, list(np.cumsum(sizes)[:-1]), dim) if len(sizes) > 1 else [self]

    def chunk(self, chunks, dim=0):
        """PyTorch's chunk: `chunks` parts of equal size along dim (the last may be smaller)."""
        n = self.shape[dim]
        return self.split(-(-n // chunks), dim=dim)

    # ---- shapes, PyTorch's names -----------------------------------------------------------
    def view(self, *shape):
        """PyTorch's view: the same elements in a new shape (-1 is inferred), `x.view(B * T, C)`.
        Here always a reshape: it never refuses a non-contiguous tensor."""
        return F.reshape(self, *shape)

    def contiguous(self):
        """self: every op here accepts any memory layout."""
        return self

    def unsqueeze(self, dim):
        """A new axis of size 1 at dim: (B, T) -> (B, 1, T) for dim=1."""
        dim = _dim_in_range(dim, self.ndim + 1)
        return F.reshape(self, self.shape[:dim] + (1,) + self.shape[dim:])

    def squeeze(self, dim=None):
        """Drop axes of size 1 (only `dim`, when given and of size 1)."""
        if dim is None:
            shape = tuple(n for n in self.shape if n != 1)
        elif self.ndim == 0:
            _dim_in_range(dim, 1)                  # a 0-d tensor takes dim 0 or -1, as PyTorch's
            shape = ()
        else:
            dim = _dim_in_range(dim, self.ndim)
            shape = self.shape[:dim] + self.shape[dim + 1:] if self.shape[dim] == 1 else self.shape
        return F.reshape(self, shape)

    def flatten(self, start_dim=0, end_dim=-1):
        """The axes start_dim..end_dim merged into one."""
        start, end = start_dim % max(self.ndim, 1), end_dim % max(self.ndim, 1)
        merged = int(np.prod(self.shape[start:end + 1]))
        return F.reshape(self, self.shape[:start] + (merged,) + self.shape[end + 1:])

    def numel(self):
        """The number of elements (PyTorch's name for `x.size`)."""
        return int(self.data.size)

    def dim(self):
        """The number of axes (PyTorch's name for `x.ndim`)."""
        return self.data.ndim

    # ---- dtypes, PyTorch's names -----------------------------------------------------------
    def float(self):
        """This tensor as float32 (a copy, as `to`)."""
        return self.to(dtype=np.float32)

    def double(self):
        """This tensor as float64."""
        return self.to(dtype=np.float64)

    def long(self):
        """This tensor as int64 (no gradient)."""
        return Tensor(self.data.astype(np.int64))

    def int(self):
        """This tensor as int32 (no gradient)."""
        return Tensor(self.data.astype(np.int32))

    def bool(self):
        """This tensor as booleans (no gradient)."""
        return Tensor(self.data.astype(bool))

    # ---- Python protocols --------------------------------------------------------------------
    def __iter__(self):
        """Tensors along the first axis, as PyTorch and NumPy iterate."""
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(len(self)))

    def __int__(self):
        return int(self.item())

    def __index__(self):
        """A one-element integer tensor can index and slice: `data[i:i + block_size]`."""
        if self.data.size != 1 or self.dtype.kind not in "iu":
            raise TypeError(f"only integer tensors of a single element can be used as an index, "
                            f"not shape {tuple(self.shape)} dtype {self.dtype}")
        return int(self.item())

    def __format__(self, spec):
        """A 0-d tensor formats as its number (`f"{loss:.4f}"`); others only with an empty spec."""
        if self.ndim == 0:
            return format(self.item(), spec)
        if spec:
            raise TypeError(f"unsupported format string {spec!r} for a tensor of shape {tuple(self.shape)}; "
                            "format .item() of a one-element tensor, or .tolist()")
        return str(self)

    def __setitem__(self, index, value):
        """Write into this tensor in place: `losses[k] = loss.item()`, `x[:, 0] = 0`.

        Only a tensor outside any graph can be written, or a leaf (a parameter) under no_grad:
        writing into values the graph used would make its gradients wrong."""
        if self.requires_grad and (_grad_enabled or not self.is_leaf):
            raise RuntimeError(
                f"in-place assignment into a tensor that requires grad (shape {tuple(self.shape)}): "
                "the graph would use the new values. Assign into a tensor made without "
                "requires_grad, or into a parameter under no_grad()")
        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        if isinstance(value, Tensor):
            if value.device != self.device:
                raise DeviceError(f"assignment of a {value.device} tensor into a {self.device} tensor; "
                                  "move it with .to(device)")
            value = value.data
        self.data[index] = value


class ElementCount(int):
    """`x.size`: an int, the number of elements (NumPy's `a.size`), that can also be called as
    PyTorch's `x.size()` (the shape, a tuple) or `x.size(dim)` (the length of one axis)."""

    def __new__(cls, n, shape):
        self = super().__new__(cls, n)
        self.shape = tuple(shape)
        return self

    def __call__(self, dim=None):
        """The shape (a tuple), or the length of axis `dim`."""
        return self.shape if dim is None else self.shape[dim]


class MaxResult(tuple):
    """(values, indices) of `x.max(dim=...)`, as PyTorch's `torch.return_types.max`."""

    def __new__(cls, values, indices):
        return super().__new__(cls, (values, indices))

    @property
    def values(self):
        """The maxima."""
        return self[0]

    @property
    def indices(self):
        """Where the maxima are (int64)."""
        return self[1]


def parse_to_args(args, device=None, dtype=None):
    """(device, dtype) from `.to()`'s positional arguments: device names ("cpu", "cuda",
    "cuda:0"), dtypes (np.float64, "float64", torch.float64) or a tensor to match."""
    for a in args:
        if a is None:
            continue
        if isinstance(a, Tensor):
            device, dtype = a.device, a.dtype
        elif isinstance(a, str) and (a in backend.DEVICES or a.startswith("cuda:")):
            device = a
        else:
            try:
                dtype = np.dtype(a)
            except TypeError:
                raise TypeError(f".to(): {a!r} is neither a device ('cpu', 'cuda') nor a dtype") from None
    if isinstance(device, str) and device.startswith("cuda:"):
        if device != "cuda:0":
            raise DeviceError(f"device {device!r}: only one GPU, 'cuda' (or 'cuda:0'), is supported")
        device = "cuda"
    return (None if device is None else str(device)), dtype


def _axis(axis, dim, name, default=None):
    """The axis of a call that may spell it `axis` (NumPy) or `dim` (PyTorch), not both."""
    if dim is None:
        return axis
    if axis is not default:
        raise TypeError(f"{name}() got both axis={axis} and dim={dim}: pass one")
    return dim


def _keep(keepdims, keepdim):
    return keepdims if keepdim is None else keepdim


def _swap(ndim, a, b):
    """The permutation of ndim axes that swaps a and b."""
    perm = list(range(ndim))
    a, b = a % ndim, b % ndim
    perm[a], perm[b] = perm[b], perm[a]
    return tuple(perm)


def _raw(x):
    return x.data if isinstance(x, Tensor) else x


class Edge:
    """What the graph keeps of a non-leaf tensor: the op that made it, and its shape and dtype,
    but not its data. An intermediate result that no op saved for backward is then freed as
    soon as the program drops it, as in PyTorch; ops keep what they need themselves.
    """
    __slots__ = ("creator", "shape", "dtype", "tensor")
    requires_grad, is_leaf, name = True, False, None

    def __init__(self, t):
        self.creator, self.shape, self.dtype = t.creator, t.shape, t.dtype
        self.tensor = weakref.ref(t)  # for retain_grad, while the program holds t

    def __repr__(self):
        return f"<Edge of {type(self.creator).__name__} output, shape {tuple(self.shape)}>"


class ScatterGrad:
    """A gradient that is zero except for `value` at x[index], returned by indexing ops.

    The engine adds it into the input's gradient buffer in place, so slicing a tensor into
    parts (q, k, v) costs one buffer, not one dense array of zeros per part.
    """
    __slots__ = ("shape", "dtype", "index", "value")

    def __init__(self, shape, dtype, index, value):
        self.shape, self.dtype, self.index, self.value = shape, dtype, index, value

    def dense(self):
        """The gradient as a dense array: zeros of `shape`, with value added at index."""
        xp = get_array_module(self.value)
        out = xp.zeros(self.shape, dtype=self.dtype)
        if _is_basic_index(self.index):
            out[self.index] = self.value       # into zeros: the same as adding, one read less
        else:
            self.add_into(out)
        return out

    def add_into(self, buf):
        """Add value into buf[index] in place (where an integer index repeats, every copy adds)."""
        if _is_basic_index(self.index):
            buf[self.index] += self.value      # each element picked at most once
        else:
            xp = get_array_module(buf)
            xp.add.at(buf, self.index, self.value)  # an integer index may repeat: accumulate


def _is_basic_index(index):
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, slice)) or i is None or i is Ellipsis for i in items)


def _accumulate(old, g, owned):
    """old + g for a .grad slot, never writing into an array the engine does not own.

    Always an array: NumPy gives the sum or product of 0-d arrays as a scalar (np.float64),
    which in-place updates (`p.grad *= coef` in clipping) would silently not reach."""
    out = (g if owned else g.copy()) if old is None else old + g
    return np.asarray(out) if isinstance(out, np.generic) else out


def _gradient_count(fn, gxs):
    """The gradients of fn's backward, one per input; extra ones are allowed only as None (a
    backward may list a gradient for an optional input that was not given), as in PyTorch."""
    n = len(fn.inputs)
    if len(gxs) > n and all(g is None for g in gxs[n:]):
        return gxs[:n]
    raise RuntimeError(f"{type(fn).__name__}.backward returned {len(gxs)} gradient"
                       f"{'s' if len(gxs) != 1 else ''} for {n} input{'s' if n != 1 else ''}: "
                       f"expected {n}, one per input in order (None for an input that needs none)")


def _broadcasts_to(shape, target):
    """Whether broadcasting an array of `shape` can give one of shape `target`."""
    lead = len(target) - len(shape)
    if lead < 0:
        return False
    if target[lead:] == shape:         # only leading axes added (a bias, a scalar): the usual case
        return True
    return all(n == 1 or n == m for n, m in zip(shape, target[lead:]))


def _raise_wrong_gradient(fn, i, gx, x):
    """The error for a gradient of input i that is not an array of the input's shape, nor of a
    shape that broadcasting the input gives (the output's, for an input that was broadcast),
    which the engine would sum back to the input's shape."""
    op, what = type(fn).__name__, f"input {i}" + (f" ({x.name})" if x.name else "")
    shape = getattr(gx, "shape", None)
    if shape is None:
        raise TypeError(f"{op}.backward returned a {type(gx).__name__} as the gradient of {what}: "
                        "expected an array (or None)")
    if isinstance(gx, ScatterGrad) or not _broadcasts_to(x.shape, shape):
        raise ValueError(f"{op}.backward returned a gradient of shape {tuple(shape)} for {what} "
                         f"of shape {tuple(x.shape)}: a gradient has its input's shape, or a shape "
                         "that broadcasting the input gives (which the engine sums back)")


def _topological_order(root):
    """Nodes (leaf tensors and Edges) that need a gradient, outputs before inputs, built
    without recursion."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if node.creator is not None:
            for x in node.creator.inputs:
                if x.requires_grad and id(x) not in visited:
                    stack.append((x, False))
    order.reverse()
    return order


def tensor(data, requires_grad=False, dtype=None, device="cpu"):
    """Make a Tensor. Python floats and lists become float32; NumPy arrays keep their dtype;
    integer data stays integer (token ids)."""
    if isinstance(data, Tensor):
        data = data.data
    xp = backend.xp_for(device)
    if dtype is None and not hasattr(data, "dtype"):
        probe = np.asarray(data)
        dtype = np.float32 if probe.dtype.kind == "f" else None
    arr = xp.asarray(data, dtype=dtype)
    if requires_grad and arr.dtype.kind != "f":
        raise TypeError(f"only floating tensors can require grad, got dtype {arr.dtype}")
    return Tensor(arr, requires_grad=requires_grad)


from . import functional as F  # noqa: E402  (functional imports Tensor from here)

_DEVICE = {name: backend.device(name) for name in backend.DEVICES}   # what Tensor.device gives
