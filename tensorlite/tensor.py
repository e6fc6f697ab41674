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
        if a is None or a.dtype.kind != "f":
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

    def forward(self, *xs, **kwargs):
        raise NotImplementedError  # abstract

    def backward(self, gy):
        raise NotImplementedError  # abstract

    @classmethod
    def apply(cls, *inputs, **kwargs):
        inputs = [x if isinstance(x, Tensor) else _constant_like(x, inputs) for x in inputs]
        device = inputs[0].device
        for x in inputs[1:]:
            if x.device != device:
                raise DeviceError(f"{cls.__name__}: inputs are on different devices "
                                  f"({', '.join(t.device for t in inputs)}); move them with .to(device)")
        arrays = [x.data for x in inputs]
        fast = kernels._active.get((cls, device))       # the one place ops choose (kernels/)
        if fast is not None:
            supports = kernels._supports.get((cls, device))
            if supports is None or supports(*arrays, **kwargs):
                cls = fast
        fn = cls()
        try:
            if _profiler is None:
                y = fn.forward(*arrays, **kwargs)
            else:
                t0 = time.perf_counter()
                y = fn.forward(*arrays, **kwargs)
                _profiler.record(cls.__name__, "forward", time.perf_counter() - t0, y)
        except ValueError as e:
            shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
            raise ValueError(f"{cls.__name__}: {e} (input shapes {shapes})") from e
        if _anomaly:
            _check_finite(fn, "forward", (y,), arrays)
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


def _constant_like(x, inputs):
    """A Python scalar or raw array used beside Tensors becomes a constant on their device.

    Scalars take the dtype of the first floating tensor, so `x * 2.0` stays float32.
    """
    ref = next(t for t in inputs if isinstance(t, Tensor))
    xp = ref.xp
    if isinstance(x, (int, float, bool)):
        dtype = ref.dtype if xp.issubdtype(ref.dtype, xp.floating) else None
        return Tensor(xp.asarray(x, dtype=dtype))
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
        return self.data.shape

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self):
        return device_of(self.data)

    @property
    def xp(self):
        return get_array_module(self.data)

    @property
    def is_leaf(self):
        return self.creator is None

    def __len__(self):
        return len(self.data)

    def __bool__(self):
        return bool(self.data)

    def numpy(self):
        """The data as a NumPy array (copied from the GPU if needed)."""
        return as_numpy(self.data)

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def item(self):
        return self.data.item()

    def __float__(self):
        """float(t) for a one-element tensor, so float(norm) and math.isfinite(norm) work."""
        return float(self.item())

    def tolist(self):
        return self.numpy().tolist()

    def detach(self):
        """A new leaf tensor sharing this one's data, outside any graph."""
        return Tensor(self.data)

    def to(self, device=None, dtype=None):
        """A copy on another device and/or dtype; self when nothing changes."""
        data = self.data
        if device is not None and device != self.device:
            data = backend.to_device(data, device)
        if dtype is not None and np.dtype(dtype) != self.dtype:
            data = data.astype(dtype)
        if data is self.data:
            return self
        return Tensor(data, requires_grad=self.requires_grad and self.is_leaf)

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
                t0 = time.perf_counter()
                gxs = fn.backward(g)
                _profiler.record(type(fn).__name__, "backward", time.perf_counter() - t0, None)
            if not isinstance(gxs, tuple):
                gxs = (gxs,)
            if _anomaly:
                _check_finite(fn, "backward", [gx.dense() if isinstance(gx, ScatterGrad) else gx for gx in gxs])
            returned = Counter(id(gx) for gx in gxs)  # an array returned twice is shared
            for x, gx in zip(fn.inputs, gxs):
                if gx is None or not x.requires_grad:
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
                gx = sum_to(gx, x.shape)
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

    def exp(self): return F.exp(self)
    def log(self): return F.log(self)
    def tanh(self): return F.tanh(self)
    def sqrt(self): return F.sqrt(self)
    def relu(self): return F.relu(self)
    def gelu(self): return F.gelu(self)
    def softmax(self, axis=-1): return F.softmax(self, axis)
    def log_softmax(self, axis=-1): return F.log_softmax(self, axis)
    def sum(self, axis=None, keepdims=False): return F.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return F.mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return F.max(self, axis, keepdims)
    def matmul(self, other): return F.matmul(self, other)
    def masked_fill(self, mask, value): return F.masked_fill(self, mask, value)
    def reshape(self, *shape): return F.reshape(self, *shape)
    def transpose(self, *axes): return F.transpose(self, *axes)
    def split(self, sections, axis=0): return F.split(self, sections, axis)

    @property
    def T(self):
        return F.transpose(self)

    def argmax(self, axis=None):
        return Tensor(self.data.argmax(axis=axis))


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
        xp = get_array_module(self.value)
        out = xp.zeros(self.shape, dtype=self.dtype)
        if _is_basic_index(self.index):
            out[self.index] = self.value       # into zeros: the same as adding, one read less
        else:
            self.add_into(out)
        return out

    def add_into(self, buf):
        if _is_basic_index(self.index):
            buf[self.index] += self.value      # each element picked at most once
        else:
            xp = get_array_module(buf)
            xp.add.at(buf, self.index, self.value)  # an integer index may repeat: accumulate


def _is_basic_index(index):
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, slice)) or i is None or i is Ellipsis for i in items)


def _accumulate(old, g, owned):
    """old + g for a .grad slot, never writing into an array the engine does not own."""
    if old is None:
        return g if owned else g.copy()
    return old + g


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
