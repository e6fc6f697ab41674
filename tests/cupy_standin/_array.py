"""The stand-in's ndarray, its ufuncs and its functions: NumPy underneath, CuPy's rules on top.

What it enforces as CuPy does (CuPy 14, checked against its sources):
- a device op given a NumPy array raises TypeError("Unsupported type <class 'numpy.ndarray'>")
  (cupy/_core/_kernel.pyx, _preprocess_arg); so does a Python list;
- `device_array[...] = numpy_array` raises ValueError("non-scalar numpy.ndarray cannot be used
  for fill") (_routines_indexing.pyx, _scatter_op -> ndarray.fill);
- `numpy.asarray(device_array)` raises TypeError (no implicit device-to-host conversion);
- reductions and integer indexing give 0-d device arrays, never host scalars;
- NumPy index arrays are accepted (CuPy copies them to the device: counted as a transfer).

What it counts (Counts): one launch per CuPy call that makes new device data (a ufunc, a
reduction, a copy, a matmul, a fill, a RawKernel launch; a view or an empty() launches
nothing); one host synchronisation per call that makes the host wait for the device
(asnumpy, get, item, bool/float/int, tolist, repr, synchronize, and the CuPy routines that
read a size back: nonzero, boolean masks, unique, ...); host<->device copies separately.
A CuPy routine that issues several kernels inside (argsort, einsum) counts as one launch.
"""
import functools
import inspect
import weakref

import numpy as np


class Counts:
    """Launches, host synchronisations and transfers since the last reset()."""

    FIELDS = ("launches", "syncs", "h2d", "d2h")

    def __init__(self):
        self.trace = None  # a list of (kind, name) while tracing
        self.reset()

    def reset(self):
        for f in self.FIELDS:
            setattr(self, f, 0)

    def snapshot(self):
        return {f: getattr(self, f) for f in self.FIELDS}

    def add(self, kind, name, n=1):
        setattr(self, kind, getattr(self, kind) + n)
        if self.trace is not None:
            self.trace.extend([(kind, name)] * n)


counts = Counts()


def unsupported(x):
    return TypeError(f"Unsupported type {type(x)}")


def implicit_conversion():
    return TypeError("Implicit conversion to a NumPy array is not allowed. "
                     "Please use `.get()` to construct a NumPy array explicitly.")


_SCALARS = (bool, int, float, complex, np.generic)


def _owner(a):
    while isinstance(a, np.ndarray) and a.base is not None:
        a = a.base
    return a


class ndarray:
    """A device array: wraps a NumPy array that only the stand-in's own operations may touch."""
    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 100   # cupy.ndarray's
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("the CuPy stand-in makes arrays only from a shape and dtype")
        self._a = np.empty(shape, dtype=dtype, order=order)

    # ---- attributes ------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    dtype = property(lambda self: self._a.dtype)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: _wrap(self._a.T))
    mT = property(lambda self: _wrap(np.swapaxes(self._a, -1, -2)))
    real = property(lambda self: _wrap(self._a.real))
    imag = property(lambda self: _wrap(self._a.imag))

    @shape.setter
    def shape(self, value):
        self._a.shape = value

    @property
    def base(self):
        return None if self._a.base is None else _wrap(self._a.base)

    @property
    def device(self):
        from ._cuda import Device
        return Device(0)

    @property
    def data(self):
        """A MemoryPointer to the first element: the address emulated kernels read and write."""
        from ._cuda import MemoryPointer
        return MemoryPointer(self._a)

    def __len__(self):
        return len(self._a)

    # ---- to the host: each is a synchronisation ------------------------------------------------
    def get(self, stream=None, order="C", out=None, blocking=True):
        counts.add("syncs", "get")
        counts.add("d2h", "get")
        a = np.array(self._a, order=order, copy=True)
        if out is not None:
            out[...] = a
            return out
        return a

    def set(self, arr, stream=None):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr)}")
        if arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError("shape or dtype mismatch in ndarray.set")
        counts.add("h2d", "set")
        self._a[...] = arr

    def item(self):
        counts.add("syncs", "item")
        counts.add("d2h", "item")
        return self._a.item()

    def tolist(self):
        counts.add("syncs", "tolist")
        counts.add("d2h", "tolist")
        return self._a.tolist()

    def _scalar(self, kind):
        if self.size != 1:
            raise TypeError(f"only length-1 arrays can be converted to Python scalars")
        counts.add("syncs", kind)
        counts.add("d2h", kind)
        return self._a.reshape(()).item()

    def __bool__(self):
        if self.size != 1:
            raise ValueError("The truth value of an array with more than one element is "
                             "ambiguous. Use a.any() or a.all()")
        return bool(self._scalar("bool"))

    def __float__(self): return float(self._scalar("float"))
    def __int__(self): return int(self._scalar("int"))
    def __complex__(self): return complex(self._scalar("complex"))

    def __index__(self):
        if self.dtype.kind not in "iub" or self.ndim != 0:
            raise TypeError("only integer scalar arrays can be converted to a scalar index")
        return int(self._scalar("index"))

    def __repr__(self):
        counts.add("syncs", "repr")
        counts.add("d2h", "repr")
        return repr(self._a).replace("array(", "array(", 1)

    def __str__(self):
        counts.add("syncs", "str")
        counts.add("d2h", "str")
        return str(self._a)

    def __format__(self, spec):
        return format(self._scalar("format") if self.ndim == 0 else str(self), spec)

    def __array__(self, dtype=None, copy=None):
        raise implicit_conversion()

    def __reduce__(self):
        return (_from_host, (self.get(),))

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (_wrap(self._a[i, ...]) for i in range(self.shape[0]))

    # ---- NumPy protocols: numpy.exp(device_array) runs CuPy's exp, as with CuPy -----------------
    def __array_ufunc__(self, ufunc_, method, *inputs, **kwargs):
        from . import module
        mine = getattr(module(), ufunc_.__name__, None)
        if not isinstance(mine, ufunc):
            return NotImplemented
        return getattr(mine, method)(*inputs, **kwargs) if method != "__call__" else mine(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        from . import module
        mine = getattr(module(), func.__name__, None)
        if mine is None or mine is func:
            return NotImplemented
        return mine(*args, **kwargs)

    # ---- indexing --------------------------------------------------------------------------
    def __getitem__(self, index):
        index, kind = _index(index, self.shape)
        out = self._a[index]
        if kind == "mask":
            counts.add("syncs", "getitem[mask]")   # CuPy reads the number of True back
        return _result(out, "getitem", [self._a])

    def __setitem__(self, index, value):
        index, kind = _index(index, self.shape)
        if isinstance(value, np.ndarray):
            if value.ndim:
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            value = value.item()
        elif isinstance(value, ndarray):
            value = value._a
        elif not isinstance(value, _SCALARS):
            raise unsupported(value)
        if kind == "mask":
            counts.add("syncs", "setitem[mask]")
        self._a[index] = value
        counts.add("launches", "setitem")

    # ---- methods ---------------------------------------------------------------------------
    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        out = self._a.astype(dtype, order=order, copy=copy, **({"casting": casting} if casting else {}))
        return _result(out, "astype", [self._a])

    def copy(self, order="C"):
        return _result(self._a.copy(order=order), "copy", [])

    def fill(self, value):
        if isinstance(value, np.ndarray):
            if value.ndim:
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            value = value.item()
        elif isinstance(value, ndarray):
            raise unsupported(value)
        self._a.fill(value)
        counts.add("launches", "fill")

    def reshape(self, *shape, order="C"):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return _result(self._a.reshape(shape, order=order), "reshape", [self._a])

    def view(self, dtype=None):
        return _wrap(self._a.view() if dtype is None else self._a.view(dtype))

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    def __matmul__(self, other):
        return _binary(np.matmul, self, other, "matmul")

    def __rmatmul__(self, other):
        return _binary(np.matmul, other, self, "matmul", reflected=True)

    def __imatmul__(self, other):
        raise TypeError("In-place matrix multiplication is not (yet) supported")


def _from_host(a):
    counts.add("h2d", "unpickle")
    return _wrap(np.array(a))


def _wrap(x):
    if isinstance(x, np.ndarray):
        out = ndarray.__new__(ndarray)
        out._a = x
        return out
    if isinstance(x, np.generic):
        out = ndarray.__new__(ndarray)
        out._a = np.asarray(x)
        return out
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


def _result(out, name, inputs):
    """Wrap a NumPy result; one launch unless every array in it is a view of an input."""
    owners = {id(_owner(a)) for a in inputs if isinstance(a, np.ndarray)}
    arrays = out if isinstance(out, (tuple, list)) else (out,)
    if any(isinstance(a, np.generic) or (isinstance(a, np.ndarray) and id(_owner(a)) not in owners)
           for a in arrays):
        counts.add("launches", name)
    return _wrap(out)


def _index(index, shape, views=True):
    """A device-array index in NumPy terms; NumPy index arrays travel to the device.

    Integer index arrays wrap around, as CuPy's do (it cannot check them without reading
    them back; NumPy raises IndexError). With views, an integer index keeps a 0-d view, as
    CuPy gives, not a host scalar."""
    items = index if isinstance(index, tuple) else (index,)
    out, kind = [], "basic"
    for i in items:
        if isinstance(i, ndarray):
            i = i._a
            kind = "mask" if i.dtype == bool else "advanced"
        elif isinstance(i, (np.ndarray, list)):
            counts.add("h2d", "index")
            i = np.asarray(i)
            kind = "mask" if i.dtype == bool else "advanced"
        out.append(i)
    # the axis each item indexes, to wrap integer arrays by that axis's length
    consumed = [0 if i is None else i.ndim if isinstance(i, np.ndarray) and i.dtype == bool else 1
                for i in out if i is not Ellipsis]
    axis = 0
    for k, i in enumerate(out):
        if i is Ellipsis:
            axis += len(shape) - sum(consumed)
            continue
        if isinstance(i, np.ndarray) and i.dtype.kind in "iu" and axis < len(shape) and shape[axis]:
            out[k] = i % shape[axis]
        axis += 0 if i is None else i.ndim if isinstance(i, np.ndarray) and i.dtype == bool else 1
    if views and kind == "basic" and not any(i is Ellipsis for i in out):
        out.append(Ellipsis)
    return tuple(out), kind


def _operand(x, op):
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, _SCALARS):
        return x
    raise unsupported(x)


def _binary(fn, a, b, name, reflected=False):
    other = a if reflected else b
    if not isinstance(other, (ndarray, np.ndarray) + _SCALARS) and \
            getattr(other, "__array_priority__", 0) > ndarray.__array_priority__:
        return NotImplemented   # e.g. a Tensor on the other side: its reflected operator runs
    return _result(fn(_operand(a, name), _operand(b, name)), name, [])


def _inplace(fn, a, b, name):
    if not isinstance(b, (ndarray, np.ndarray) + _SCALARS) and \
            getattr(b, "__array_priority__", 0) > ndarray.__array_priority__:
        return NotImplemented
    fn(a._a, _operand(b, name), out=a._a)
    counts.add("launches", name)
    return a


def _unary(fn, name):
    return lambda self: _result(fn(self._a), name, [])


_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "truediv": np.true_divide,
           "floordiv": np.floor_divide, "mod": np.remainder, "pow": np.power, "and": np.bitwise_and,
           "or": np.bitwise_or, "xor": np.bitwise_xor, "lshift": np.left_shift,
           "rshift": np.right_shift}
for _name, _fn in _BINARY.items():
    setattr(ndarray, f"__{_name}__",
            lambda self, other, _fn=_fn, _n=_name: _binary(_fn, self, other, _n))
    setattr(ndarray, f"__r{_name}__",
            lambda self, other, _fn=_fn, _n=_name: _binary(_fn, other, self, _n, reflected=True))
    setattr(ndarray, f"__i{_name}__",
            lambda self, other, _fn=_fn, _n=_name: _inplace(_fn, self, other, _n))
for _name, _fn in {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
                   "gt": np.greater, "ge": np.greater_equal}.items():
    setattr(ndarray, f"__{_name}__", lambda self, other, _fn=_fn, _n=_name: _binary(_fn, self, other, _n))
for _name, _fn in {"neg": np.negative, "pos": np.positive, "abs": np.absolute, "invert": np.invert}.items():
    setattr(ndarray, f"__{_name}__", _unary(_fn, _name))


# CuPy wraps out-of-range indices around where NumPy raises (or clips): take's indices, put's
WRAPPING = {"take", "put"}


def _method(name):
    """ndarray.<name> run by NumPy's method of that name, CuPy's rules on the arguments."""
    def method(self, *args, **kwargs):
        args = [_unwrap(a, name) for a in args]
        kwargs = {k: _unwrap(v, name) for k, v in kwargs.items()}
        if name in WRAPPING:
            kwargs.setdefault("mode", "wrap")
        out_arg = kwargs.get("out")
        out = getattr(self._a, name)(*args, **kwargs)
        if name in _SYNCING_METHODS:
            counts.add("syncs", name)
        if out_arg is not None:
            counts.add("launches", name)
            return _wrap(out_arg)
        return _result(out, name, [self._a])
    method.__name__ = name
    return method


_SYNCING_METHODS = {"nonzero", "compress"}


def _unwrap(x, name):
    """A CuPy function's argument in NumPy terms: device arrays unwrapped, host arrays refused."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        raise unsupported(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v, name) for v in x)
    return x


def install_methods(real_ndarray):
    """Give ndarray every public method that both cupy.ndarray and numpy.ndarray have."""
    for name in dir(real_ndarray):
        if name.startswith("_") or name in vars(ndarray) or not hasattr(np.ndarray, name):
            continue
        if callable(getattr(np.ndarray, name)):
            setattr(ndarray, name, _method(name))


class ufunc:
    """cupy.ufunc: elementwise over device arrays and scalars; one launch per call."""

    def __init__(self, name, np_ufunc):
        self.__name__ = self.name = name
        self._np = np_ufunc
        self.nin, self.nout, self.nargs = np_ufunc.nin, np_ufunc.nout, np_ufunc.nargs
        self.__doc__ = f"The CuPy stand-in's {name} (NumPy's, on device arrays)."

    @property
    def types(self):
        return self._np.types

    def _args(self, args):
        return [_operand(a, self.name) for a in args]

    def _out(self, kwargs):
        out = kwargs.get("out")
        if out is None:
            return kwargs, None
        outs = out if isinstance(out, tuple) else (out,)
        for o in outs:
            if not isinstance(o, ndarray):
                raise TypeError(f"Output argument must be a cupy.ndarray, got {type(o)}")
        kwargs = {**kwargs, "out": tuple(o._a for o in outs) if isinstance(out, tuple) else out._a}
        return kwargs, out

    def __call__(self, *args, **kwargs):
        kwargs, out = self._out(kwargs)
        result = self._np(*self._args(args), **kwargs)
        counts.add("launches", self.name)
        return out if out is not None else _wrap(result)

    def reduce(self, array, axis=0, dtype=None, out=None, keepdims=False):
        kwargs, out = self._out({"out": out} if out is not None else {})
        result = self._np.reduce(_operand(array, self.name), axis=axis, dtype=dtype, keepdims=keepdims, **kwargs)
        counts.add("launches", self.name + ".reduce")
        return out if out is not None else _wrap(result)

    def accumulate(self, array, axis=0, dtype=None, out=None):
        kwargs, out = self._out({"out": out} if out is not None else {})
        result = self._np.accumulate(_operand(array, self.name), axis=axis, dtype=dtype, **kwargs)
        counts.add("launches", self.name + ".accumulate")
        return out if out is not None else _wrap(result)

    def reduceat(self, array, indices, axis=0, dtype=None, out=None):
        kwargs, out = self._out({"out": out} if out is not None else {})
        result = self._np.reduceat(_operand(array, self.name), _operand(indices, self.name),
                                   axis=axis, dtype=dtype, **kwargs)
        counts.add("launches", self.name + ".reduceat")
        return out if out is not None else _wrap(result)

    # what CuPy's scatter kernels take (cupy/_core/_routines_indexing.pyx, _scatter_op_single)
    AT_DTYPES = {"add": "int32 float16 float32 float64 uint32 uint64",
                 "subtract": "int32 uint32", "maximum": "int32 float32 float64 uint32 uint64",
                 "minimum": "int32 float32 float64 uint32 uint64", "bitwise_and": "int32 int64 uint32 uint64",
                 "bitwise_or": "int32 int64 uint32 uint64", "bitwise_xor": "int32 int64 uint32 uint64"}

    def at(self, a, indices, b=None):
        if not isinstance(a, ndarray):
            raise TypeError(f"cupy.ufunc.at: the first argument must be a cupy.ndarray, got {type(a)}")
        if self.name not in self.AT_DTYPES:
            raise NotImplementedError(f"cupy.{self.name}.at is not supported")
        if a.dtype.name not in self.AT_DTYPES[self.name].split():
            raise TypeError(f"cupy.{self.name}.at only supports {', '.join(self.AT_DTYPES[self.name].split())}, "
                            "as data type")
        index, _ = _index(indices, a.shape, views=False)
        if len(index) == 1:
            index = index[0]
        if b is None:
            self._np.at(a._a, index)
        else:
            self._np.at(a._a, index, _operand(b, self.name))
        counts.add("launches", self.name + ".at")

    def outer(self, a, b, **kwargs):
        result = self._np.outer(_operand(a, self.name), _operand(b, self.name), **kwargs)
        counts.add("launches", self.name + ".outer")
        return _wrap(result)

    def __repr__(self):
        return f"<ufunc '{self.name}'>"


class matmul_gufunc:
    """cupy.matmul (a generalized ufunc in CuPy). One cuBLAS call; batched products copy
    operands that are not C-contiguous first (CuPy's _routines_linalg.matmul)."""
    __name__ = "matmul"

    def __call__(self, a, b, out=None, **kwargs):
        x, y = _operand(a, "matmul"), _operand(b, "matmul")
        if max(np.ndim(x), np.ndim(y)) > 2:
            for z in (x, y):
                if isinstance(z, np.ndarray) and not z.flags.c_contiguous:
                    counts.add("launches", "matmul.copy")
        elif isinstance(x, np.ndarray) and isinstance(y, np.ndarray):
            for z in (x, y):   # 2-D: cuBLAS takes C- or F-contiguous operands as they are
                if z.ndim == 2 and not (z.flags.c_contiguous or z.flags.f_contiguous):
                    counts.add("launches", "matmul.copy")
        if out is not None:
            if not isinstance(out, ndarray):
                raise TypeError(f"Output argument must be a cupy.ndarray, got {type(out)}")
            np.matmul(x, y, out=out._a, **kwargs)
            counts.add("launches", "matmul")
            return out
        counts.add("launches", "matmul")
        return _wrap(np.matmul(x, y, **kwargs))


# ---- functions ---------------------------------------------------------------------------------

FROM_HOST = {"array", "asarray", "asanyarray"}
NO_LAUNCH = {"empty", "empty_like", "ndim", "shape", "size", "isscalar", "result_type",
             "can_cast", "min_scalar_type", "promote_types", "issubdtype", "common_type",
             "broadcast_shapes", "iinfo", "finfo", "dtype", "may_share_memory", "shares_memory",
             "isfortran", "iscomplexobj", "isrealobj", "binary_repr", "base_repr", "typename",
             "mintypecode", "ix_", "get_include", "show_config", "set_printoptions",
             "get_printoptions", "printoptions", "format_float_positional",
             "format_float_scientific", "array_repr", "array_str", "array2string", "save",
             "savez", "savez_compressed", "load", "fromfile", "loadtxt", "genfromtxt"}
SYNCING = {"nonzero", "flatnonzero", "argwhere", "unique", "compress", "extract", "trim_zeros",
           "union1d", "intersect1d", "setdiff1d", "setxor1d", "array_repr", "array_str",
           "array2string"}
DEVICE_BOOL = {"array_equal", "array_equiv", "allclose"}   # CuPy returns 0-d device arrays


def function(name, np_fn, real_fn):
    """cupy.<name> run by numpy.<name>: arguments bound to CuPy's own signature (a keyword
    CuPy does not take fails here as on a GPU), device arrays in, device arrays out."""
    try:
        signature = inspect.signature(real_fn)
    except (TypeError, ValueError):
        signature = None

    @functools.wraps(real_fn)
    def wrapper(*args, **kwargs):
        if signature is not None:
            try:
                signature.bind(*args, **kwargs)
            except TypeError as e:
                raise TypeError(f"cupy.{name}(): {e}") from None
        if name in FROM_HOST:
            return _from_host_call(name, np_fn, args, kwargs)
        args = [_unwrap(a, name) for a in args]
        kwargs = {k: _unwrap(v, name) for k, v in kwargs.items()}
        if name in WRAPPING:
            kwargs.setdefault("mode", "wrap")
        elif name == "take_along_axis":
            bound = signature.bind(*args, **kwargs).arguments
            a, indices, axis = bound["a"], bound["indices"], bound["axis"]
            args, kwargs = [a, indices % a.shape[axis] if a.shape[axis] else indices, axis], {}
        if name == "where" and len(args) == 1 or name == "repeat" and isinstance(
                kwargs.get("repeats", args[1] if len(args) > 1 else 0), np.ndarray) or name in SYNCING:
            counts.add("syncs", name)
        out_arg = kwargs.get("out")
        out = np_fn(*args, **kwargs)
        if out_arg is not None:
            counts.add("launches", name)
            return _wrap(out_arg)
        if name in DEVICE_BOOL:
            counts.add("launches", name)
            return _wrap(np.asarray(out))
        if name in NO_LAUNCH:
            return _wrap(out) if isinstance(out, np.ndarray) else out
        inputs = [a for a in _flatten(args) if isinstance(a, np.ndarray)] + \
                 [v for v in _flatten(kwargs.values()) if isinstance(v, np.ndarray)]
        return _result(out, name, inputs) if isinstance(out, (np.ndarray, np.generic, tuple, list)) else out
    return wrapper


def _flatten(xs):
    for x in xs:
        if isinstance(x, (list, tuple)):
            yield from _flatten(x)
        else:
            yield x


def _from_host_call(name, np_fn, args, kwargs):
    a, rest = args[0], args[1:]
    kwargs = dict(kwargs)
    kwargs.pop("blocking", None)
    if isinstance(a, ndarray):
        copy = name == "array" and kwargs.get("copy", True) is not False
        out = np.array(a._a, *rest, **kwargs) if copy else np.asarray(a._a, *rest, **kwargs)
        return _result(out, name, [] if copy else [a._a])
    if isinstance(a, (list, tuple)) and any(isinstance(v, ndarray) for v in _flatten(a)):
        raise unsupported(a)   # CuPy refuses a list holding device arrays in array()
    counts.add("h2d", name)
    out = np.array(a, *rest, **kwargs)
    return _wrap(out)


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    """cupy.asnumpy: a device array copied to the host (a synchronisation); other input as is."""
    if isinstance(a, ndarray):
        return a.get(order=order, out=out)
    return np.asarray(a, order=order)


def get_array_module(*args):
    from . import module
    return module() if any(isinstance(a, ndarray) for a in args) else np


_alive = weakref.WeakSet()
