"""The functions of `tensorlite.torch`: PyTorch's factory functions, random draws and a few
math functions, over tensorlite Tensors. (Kept apart from the package's __init__, which binds
PyTorch's dtype names `float`, `int`, `bool` and `long` and so cannot use Python's builtins.)
"""
import numpy as np

import tensorlite.functional as TF
from tensorlite import backend
from tensorlite.tensor import Tensor, is_grad_enabled, no_grad  # noqa: F401  (re-exported)

DEFAULT_FLOAT = np.float32  # PyTorch's default dtype


device = backend.device    # torch.device: a str with .type and .index


def _device(device_):
    """'cpu' when no device is given, else the validated name ('cuda:0' -> 'cuda')."""
    return "cpu" if device_ is None else str(device(device_))


def _size(size):
    """f(2, 3), f((2, 3)) and f([2, 3]) all mean the shape (2, 3), as in PyTorch."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        return tuple(size[0])
    return tuple(size)


def _make(data, requires_grad=False):
    if requires_grad and data.dtype.kind != "f":
        raise TypeError(f"only floating tensors can require grad, got dtype {data.dtype}")
    return Tensor(data, requires_grad=requires_grad)


def _on(values, device_):
    """A NumPy array moved to the device (no copy on the CPU)."""
    return backend.to_device(values, _device(device_))


def _xp(device_):
    """numpy or cupy for a device: factories make their arrays there, with no copy from the host."""
    return backend.xp_for(_device(device_))


# ---- making tensors ------------------------------------------------------------------------

def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new tensor from data (a list, a number, a NumPy array or a tensor): Python floats
    become float32 and ints int64, as in PyTorch; `torch.tensor(ids, dtype=torch.long)`."""
    if isinstance(data, Tensor):
        data = data.data
    elif isinstance(data, (list, tuple)) and any(isinstance(x, Tensor) for x in data):
        data = [x.item() if isinstance(x, Tensor) else x for x in data]
    if backend.device_of(data) == "cuda":               # a CuPy array: copy it on its device
        arr = backend.xp_for("cuda").array(data, dtype=dtype)
        return _make(arr if device is None else backend.to_device(arr, _device(device)), requires_grad)
    arr = np.array(data, dtype=dtype)
    if dtype is None and arr.dtype == np.float64 and not isinstance(data, (np.ndarray, np.generic)):
        arr = arr.astype(DEFAULT_FLOAT)                  # Python floats: PyTorch's default float32
    return _make(_on(arr, device), requires_grad)


def as_tensor(data, dtype=None, device=None):
    """A tensor sharing data's memory when it is already an array of that dtype and device."""
    if isinstance(data, Tensor):
        return data.to(device=device, dtype=dtype)
    if isinstance(data, np.ndarray) and (dtype is None or np.dtype(dtype) == data.dtype):
        return Tensor(_on(data, device))
    return tensor(data, dtype=dtype, device=device)


def from_numpy(array):
    """A tensor sharing the NumPy array's memory (no copy), as `torch.from_numpy`."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy expects a numpy.ndarray, got {type(array).__name__}")
    return Tensor(array)


def is_tensor(obj):
    """True for a tensorlite Tensor."""
    return isinstance(obj, Tensor)


def zeros(*size, dtype=None, device=None, requires_grad=False):
    """A tensor of zeros: `torch.zeros(3)`, `torch.zeros((1, 1), dtype=torch.long)`."""
    return _make(_xp(device).zeros(_size(size), dtype=dtype or DEFAULT_FLOAT), requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False):
    """A tensor of ones: `torch.ones(block_size, block_size)`."""
    return _make(_xp(device).ones(_size(size), dtype=dtype or DEFAULT_FLOAT), requires_grad)


empty = zeros  # PyTorch's empty leaves memory uninitialised; zeros is one valid such memory


def full(size, fill_value, dtype=None, device=None, requires_grad=False):
    """A tensor of one value; its dtype follows the value (float32, int64, bool) unless given."""
    if dtype is None:
        dtype = (np.bool_ if isinstance(fill_value, (bool, np.bool_)) else
                 np.int64 if isinstance(fill_value, (int, np.integer)) else DEFAULT_FLOAT)
    return _make(_xp(device).full(_size((size,)), fill_value, dtype=dtype), requires_grad)


def zeros_like(input, dtype=None, device=None, requires_grad=False):
    """Zeros of input's shape, dtype and device (unless given)."""
    return _like(input, 0, dtype, device, requires_grad)


def ones_like(input, dtype=None, device=None, requires_grad=False):
    """Ones of input's shape, dtype and device (unless given)."""
    return _like(input, 1, dtype, device, requires_grad)


def full_like(input, fill_value, dtype=None, device=None, requires_grad=False):
    """fill_value in input's shape, dtype and device (unless given)."""
    return _like(input, fill_value, dtype, device, requires_grad)


def _like(input, value, dtype, device_, requires_grad):
    xp = backend.xp_for(input.device if device_ is None else _device(device_))
    return _make(xp.full(input.shape, value, dtype=dtype or input.dtype), requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    """start, start + step, ... below end (`torch.arange(T)`): int64 for integers, float32 when
    any bound is a float, as in PyTorch."""
    if end is None:
        start, end = 0, start
    if dtype is None:
        floats = any(isinstance(v, (float, np.floating)) for v in (start, end, step))
        dtype = DEFAULT_FLOAT if floats else np.int64
    return _make(_xp(device).arange(start, end, step, dtype=dtype), requires_grad)


def tril(input, diagonal=0):
    """input with everything above the diagonal (column > row + diagonal) set to zero.
    Differentiable: the gradient of the zeroed entries is zero."""
    return _triangle(input, diagonal, lower=True)


def triu(input, diagonal=0):
    """input with everything below the diagonal (column < row + diagonal) set to zero."""
    return _triangle(input, diagonal, lower=False)


def _triangle(input, diagonal, lower):
    xp = input.xp
    rows, cols = input.shape[-2:]
    keep = xp.tri(rows, cols, k=diagonal, dtype=bool)               # column <= row + diagonal
    if not lower:
        keep = ~xp.tri(rows, cols, k=diagonal - 1, dtype=bool)      # column >= row + diagonal
    if input.requires_grad and is_grad_enabled():
        return TF.masked_fill(input, ~keep, 0)
    return Tensor(xp.where(keep, input.data, xp.zeros((), dtype=input.dtype)))


# ---- random numbers (tensorlite's generator: torch.manual_seed seeds it) ----------------------
# randint, randn and rand draw on the CPU and copy to the device, so a seed gives the same
# numbers on every device; multinomial draws on its input's device (it runs in generation loops).

def manual_seed(seed):
    """Seed tensorlite's generators (weights, dropout, randint, randn, multinomial)."""
    return backend.manual_seed(int(seed))


def seed():
    """Seed the generators from the operating system's entropy; returns the seed."""
    s = int(np.random.SeedSequence().entropy % (2 ** 63))
    backend.manual_seed(s)
    return s


def randint(*args, size=None, dtype=None, device=None, requires_grad=False):
    """Uniform integers in [low, high): `torch.randint(high, size)` or
    `torch.randint(low, high, size)`, int64 unless dtype is given."""
    if size is not None:
        args = args + (size,)
    if len(args) == 2:
        low, (high, size) = 0, args
    elif len(args) == 3:
        low, high, size = args
    else:
        raise TypeError("randint(high, size) or randint(low, high, size), e.g. randint(10, (4,))")
    size = (size,) if isinstance(size, (int, np.integer)) else tuple(size)
    values = backend.rng("cpu").integers(int(low), int(high), size).astype(dtype or np.int64)
    return _make(_on(values, device), requires_grad)


def randn(*size, dtype=None, device=None, requires_grad=False):
    """Standard normal samples, float32 unless dtype is given."""
    values = backend.rng("cpu").standard_normal(_size(size)).astype(dtype or DEFAULT_FLOAT)
    return _make(_on(values, device), requires_grad)


def rand(*size, dtype=None, device=None, requires_grad=False):
    """Uniform samples in [0, 1), float32 unless dtype is given."""
    values = backend.rng("cpu").random(_size(size)).astype(dtype or DEFAULT_FLOAT)
    return _make(_on(values, device), requires_grad)


def randn_like(input, dtype=None, device=None, requires_grad=False):
    """Standard normal samples of input's shape, dtype and device."""
    return randn(*input.shape, dtype=dtype or input.dtype, device=device or input.device,
                 requires_grad=requires_grad)


def multinomial(input, num_samples, replacement=False):
    """Sample category indices from the rows of input, (V,) or (B, V) non-negative weights
    (they need not sum to one): int64 of shape (num_samples,) or (B, num_samples).

    With replacement (or one sample), inverse-CDF draws; without, the Gumbel top-k trick, which
    draws as sampling one by one and removing each pick does. Drawn on input's device."""
    p = input.data if isinstance(input, Tensor) else np.asarray(input)
    xp = backend.get_array_module(p)
    if p.ndim not in (1, 2) or p.dtype.kind != "f":
        raise ValueError(f"multinomial: input must be floating weights of shape (V,) or (B, V), "
                         f"got shape {tuple(p.shape)} dtype {p.dtype}")
    rows = p.reshape(-1, p.shape[-1]).astype(np.float64)               # (B, V)
    bad = xp.any(~xp.isfinite(rows)) | xp.any(rows < 0) | xp.any(rows.sum(axis=1) <= 0)
    if xp is np:
        if bad:
            raise RuntimeError("multinomial: probability tensor contains inf, nan, a negative "
                               "element, or a row that sums to zero")
    elif hasattr(backend, "defer_check"):
        backend.defer_check(bad, "multinomial: probability tensor contains inf, nan, a negative "
                                 "element, or a row that sums to zero")
    B, V = rows.shape
    if not replacement and num_samples > V:
        raise RuntimeError(f"multinomial: cannot draw {num_samples} samples without replacement "
                           f"from {V} categories")
    u = backend.uniform((B, num_samples), np.float64, backend.device_of(rows))   # [0, 1)
    if replacement or num_samples == 1:
        cdf = xp.cumsum(rows, axis=1)                                    # (B, V)
        u = u * cdf[:, -1:]
        picks = (cdf[:, None, :] <= u[:, :, None]).sum(axis=-1)          # (B, n): first cdf > u
        picks = xp.minimum(picks, V - 1)
    else:
        u = backend.uniform((B, V), np.float64, backend.device_of(rows))
        with np.errstate(divide="ignore"):
            keys = xp.log(rows) - xp.log(-xp.log(u))                     # log p + Gumbel noise
        picks = xp.argsort(-keys, axis=1)[:, :num_samples]
    picks = picks.astype(np.int64)
    return Tensor(picks[0] if p.ndim == 1 else picks)


# ---- joining ---------------------------------------------------------------------------------

def cat(tensors, dim=0):
    """Join tensors along an existing axis: `torch.cat((idx, idx_next), dim=1)`."""
    return TF.concatenate(list(tensors), axis=dim)


concat = concatenate = cat


def stack(tensors, dim=0):
    """Join tensors along a new axis: `torch.stack([data[i:i + 8] for i in ix])`."""
    return TF.stack(list(tensors), axis=dim)


# ---- math (as functions; each is also a Tensor method) -------------------------------------

def softmax(input, dim, dtype=None):
    """exp(x) / sum(exp(x)) along dim."""
    return TF.softmax(input if dtype is None else input.to(dtype=dtype), axis=dim)


def log_softmax(input, dim, dtype=None):
    """log(softmax(x)) along dim, computed stably."""
    return TF.log_softmax(input if dtype is None else input.to(dtype=dtype), axis=dim)


def exp(input):
    """e ** x, elementwise."""
    return TF.exp(input)


def log(input):
    """The natural logarithm, elementwise."""
    return TF.log(input)


def tanh(input):
    """tanh(x), elementwise."""
    return TF.tanh(input)


def sqrt(input):
    """The square root, elementwise."""
    return TF.sqrt(input)


def relu(input):
    """max(x, 0), elementwise."""
    return TF.relu(input)


def sum(input, dim=None, keepdim=False):
    """The sum over dim (every axis when None)."""
    return input.sum(dim=dim, keepdim=keepdim) if dim is not None else input.sum(keepdims=keepdim)


def mean(input, dim=None, keepdim=False):
    """The mean over dim (every axis when None)."""
    return input.mean(dim=dim, keepdim=keepdim) if dim is not None else input.mean(keepdims=keepdim)


def matmul(input, other):
    """The matrix product, batched over leading axes: `input @ other`."""
    return TF.matmul(input, other)


def transpose(input, dim0, dim1):
    """input with axes dim0 and dim1 swapped."""
    return input.transpose(dim0, dim1)


def argmax(input, dim=None, keepdim=False):
    """Indices of the maxima along dim (of the flattened tensor when None)."""
    return input.argmax(dim=dim, keepdim=keepdim) if dim is not None else input.argmax()


def numel(input):
    """The number of elements."""
    return input.numel()


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """True when |input - other| <= atol + rtol * |other| everywhere."""
    a = input.data if isinstance(input, Tensor) else input
    b = other.data if isinstance(other, Tensor) else other
    return bool(backend.get_array_module(a).allclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan))
