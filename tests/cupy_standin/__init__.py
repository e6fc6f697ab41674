"""A NumPy-backed stand-in for CuPy, to run tensorlite's cuda code path on a machine with no GPU.

    import cupy_standin
    with cupy_standin.installed():           # tensorlite's "cuda" device now runs on it
        x = tl.tensor(data, device="cuda")
    cupy_standin.counts.snapshot()           # {"launches", "syncs", "h2d", "d2h"}

`module()` is a module object named "cupy" that holds only names the real CuPy has, each of
the same kind (function, ufunc, class, submodule, constant): tests/test_cuda_path.py checks
that against the installed cupy package. Its `ndarray` is not a numpy.ndarray, and it
refuses host arrays where CuPy does (see _array.py for the rules and what is counted).
RawModule / RawKernel launches run the CUDA C sources through the g++ emulation in
tests/cuda_emu. `nccl_installed()` puts its cupy.cuda.nccl (a communicator, _nccl.py) where
`import cupy.cuda.nccl` finds it: the real one needs libnccl, which a machine with no GPU
seldom has.

What it cannot show: anything about speed, memory, occupancy, or the numerics of the real
device (TF32, fused multiply-add, fast-math); results are NumPy's, computed on the CPU.
"""
import contextlib
import sys
import types

import numpy as np

from . import _array, _cuda, _nccl
from ._array import counts, ndarray

_module = None
_real = None


def real_cupy():
    """The installed cupy package (imports with no GPU), or None."""
    global _real
    if _real is None:
        try:
            import cupy
        except Exception:   # not installed, or its CUDA libraries are missing
            return None
        _real = cupy
    return _real


def _submodule(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    return m


def _random_module():
    class RandomState:
        """cupy.random.RandomState drawn from NumPy's generator; each draw is one launch."""

        def __init__(self, seed=None, method=None):
            self._rng = np.random.RandomState(seed)

        def seed(self, seed=None):
            self._rng.seed(seed)

        def _draw(self, name, values, dtype=None):
            counts.add("launches", "random." + name)
            values = np.asarray(values)
            return _array._wrap(values.astype(dtype) if dtype is not None else values)

        def random_sample(self, size=None, dtype=float):
            return self._draw("random_sample", self._rng.random_sample(size), dtype)

        def rand(self, *size, dtype=float):
            return self._draw("rand", self._rng.random_sample(size or None), dtype)

        def randn(self, *size, dtype=float):
            return self._draw("randn", self._rng.standard_normal(size or None), dtype)

        def standard_normal(self, size=None, dtype=float):
            return self._draw("standard_normal", self._rng.standard_normal(size), dtype)

        def normal(self, loc=0.0, scale=1.0, size=None, dtype=float):
            return self._draw("normal", self._rng.normal(loc, scale, size), dtype)

        def uniform(self, low=0.0, high=1.0, size=None, dtype=float):
            return self._draw("uniform", self._rng.uniform(low, high, size), dtype)

        def randint(self, low, high=None, size=None, dtype=int):
            return self._draw("randint", self._rng.randint(low, high, size), dtype)

    state = {"rs": RandomState()}

    def get_random_state():
        return state["rs"]

    def seed(seed=None):
        state["rs"] = RandomState(seed)

    def _forward(name):
        def draw(*args, **kwargs):
            return getattr(state["rs"], name)(*args, **kwargs)
        draw.__name__ = name
        return draw

    names = ("random_sample", "rand", "randn", "standard_normal", "normal", "uniform", "randint")
    return _submodule("cupy.random", RandomState=RandomState, get_random_state=get_random_state,
                      seed=seed, random=_forward("random_sample"),
                      **{n: _forward(n) for n in names})


def _core_module():
    """cupy._core's compute-type switch (what CUPY_TF32 sets): recorded, not acted on."""
    real = real_cupy()._core._routines_linalg
    types_by_dtype = {}

    def get_compute_type(dtype):
        return types_by_dtype.get(np.dtype(dtype).char, real.COMPUTE_TYPE_DEFAULT)

    def set_compute_type(dtype, compute_type):
        types_by_dtype[np.dtype(dtype).char] = compute_type

    linalg = _submodule("cupy._core._routines_linalg", get_compute_type=get_compute_type,
                        set_compute_type=set_compute_type,
                        **{n: getattr(real, n) for n in dir(real) if n.startswith("COMPUTE_TYPE_")})
    return _submodule("cupy._core", _routines_linalg=linalg, get_compute_type=get_compute_type,
                      set_compute_type=set_compute_type)


# names of the real cupy that the stand-in provides in its own way, or not at all
_CUSTOM = {"ndarray", "asnumpy", "get_array_module", "matmul", "RawKernel", "RawModule", "ufunc",
           "get_default_memory_pool", "is_available", "cuda", "random"}
_SKIP = {"fuse", "memoize", "clear_memo", "from_dlpack", "fromDlpack", "make_aligned_dtype",
         "ElementwiseKernel", "ReductionKernel", "testing", "fft", "linalg", "polynomial", "lib",
         "typing", "exceptions", "show_config", "get_include", "annotations", "save", "savez",
         "savez_compressed", "load", "fromfile", "loadtxt", "genfromtxt", "frombuffer",
         "fromfunction", "fromiter", "fromstring", "vectorize", "piecewise", "apply_along_axis",
         "apply_over_axes", "einsum_path", "set_printoptions", "get_printoptions", "printoptions",
         "DataSource", "mgrid", "ogrid", "r_", "c_", "s_", "index_exp", "nd_grid"}


def module():
    """The stand-in module object (made once)."""
    global _module
    if _module is not None:
        return _module
    real = real_cupy()
    if real is None:
        raise ImportError("the CuPy stand-in checks its names against the cupy package: "
                          "pip install cupy-cuda12x (it imports with no GPU)")
    _array.install_methods(real.ndarray)
    m = types.ModuleType("cupy")
    m.__doc__ = "A NumPy-backed stand-in for CuPy (tests/cupy_standin)."
    m.__file__ = __file__
    for name in dir(real):
        if name.startswith("_") or name in _CUSTOM or name in _SKIP:
            continue
        value = getattr(real, name)
        if isinstance(value, types.ModuleType):
            continue
        if isinstance(value, real.ufunc):
            if isinstance(getattr(np, name, None), np.ufunc):
                setattr(m, name, _array.ufunc(name, getattr(np, name)))
        elif isinstance(value, type) or not callable(value):
            setattr(m, name, value)           # dtypes, exception classes, constants: CuPy's own
        elif callable(getattr(np, name, None)) and not isinstance(getattr(np, name), type):
            setattr(m, name, _array.function(name, getattr(np, name), value))
    m.ndarray, m.ufunc = ndarray, _array.ufunc
    m.matmul = _array.matmul_gufunc()
    m.asnumpy, m.get_array_module = _array.asnumpy, _array.get_array_module
    m.RawKernel, m.RawModule = _cuda.RawKernel, _cuda.RawModule
    m.get_default_memory_pool, m.is_available = _cuda.get_default_memory_pool, _cuda.is_available
    runtime = _submodule("cupy.cuda.runtime", **{n: v for n, v in vars(_cuda._Runtime).items()
                                                  if not n.startswith("_")})
    for n in ("getDeviceCount", "deviceSynchronize", "getDevice", "runtimeGetVersion", "driverGetVersion"):
        setattr(runtime, n, getattr(_cuda._Runtime, n))
    m.cuda = _submodule("cupy.cuda", runtime=runtime, Device=_cuda.Device, Stream=_cuda.Stream,
                        Event=_cuda.Event, MemoryPool=_cuda.MemoryPool, MemoryPointer=_cuda.MemoryPointer,
                        get_current_stream=_cuda.get_current_stream, get_cublas_handle=_cuda.get_cublas_handle,
                        cublas=_submodule("cupy.cuda.cublas", **{
                            n: getattr(_cuda._Cublas, n) for n in vars(_cuda._Cublas)
                            if not n.startswith("_") and n != "math_mode"}),
                        get_elapsed_time=_cuda.get_elapsed_time, is_available=_cuda.is_available)
    m.random = _random_module()
    m._core = _core_module()
    _module = m
    return m


def kind(value):
    """A name's kind, as the names check compares them."""
    real = real_cupy()
    if isinstance(value, types.ModuleType):
        return "module"
    if isinstance(value, type):
        return "class"
    if isinstance(value, (_array.ufunc, real.ufunc)):
        return "ufunc"
    if callable(value):
        return "function"
    return type(value).__name__


def names_not_in_cupy():
    """Every name the stand-in exposes that the real cupy lacks or has as another kind:
    [(dotted name, problem)]. Empty when the stand-in invents nothing."""
    real = real_cupy()
    problems = []

    def walk(mine, theirs, prefix, public_only):
        for name, value in vars(mine).items():
            if name.startswith("__") or (public_only and name.startswith("_") and name != "_core"):
                continue
            dotted = f"{prefix}.{name}"
            try:
                present = hasattr(theirs, name)
            except ImportError:
                # a CUDA library CuPy loads when first named (cupy.cuda.cublas: libcublas) is not
                # on this machine; its names are those of cupy_backends/cuda/libs/*.pyx
                continue
            if not present:
                problems.append((dotted, "not in cupy"))
                continue
            other = getattr(theirs, name)
            if kind(value) != kind(other):
                problems.append((dotted, f"a {kind(value)} here, a {kind(other)} in cupy"))
            elif isinstance(value, types.ModuleType):
                walk(value, other, dotted, public_only=not name.startswith("_"))
    walk(module(), real, "cupy", public_only=True)
    for name in vars(ndarray):
        if not name.startswith("_") and not hasattr(real.ndarray, name):
            problems.append((f"cupy.ndarray.{name}", "not in cupy.ndarray"))
    return problems


def nccl_module():
    """The stand-in's cupy.cuda.nccl: a module of _nccl's public names (made once)."""
    global _nccl_module
    if _nccl_module is None:
        _nccl_module = _submodule("cupy.cuda.nccl", **{n: v for n, v in vars(_nccl).items()
                                                       if n == "available" or n.startswith(("NCCL_", "Nccl", "get_"))})
    return _nccl_module


_nccl_module = None


@contextlib.contextmanager
def nccl_installed():
    """The stand-in's cupy.cuda.nccl in sys.modules inside the block, with no communicator yet
    and no allReduce recorded; yields _nccl, whose `_calls` lists each allReduce's count."""
    nccl = nccl_module()
    before = sys.modules.get("cupy.cuda.nccl")
    _nccl._calls.clear()
    _nccl._cliques.clear()
    sys.modules["cupy.cuda.nccl"] = nccl
    try:
        yield _nccl
    finally:
        if before is None:
            sys.modules.pop("cupy.cuda.nccl", None)
        else:
            sys.modules["cupy.cuda.nccl"] = before


# ---- installing it in place of cupy ----------------------------------------------------------

_installed = []   # [(module, attribute, previous value)] while installed


def _bound_cupy(value, real):
    return value is real or (isinstance(value, types.ModuleType) and value.__name__ == "cupy")


def install():
    """Make tensorlite's cuda device run on the stand-in: every tensorlite / gpt module
    attribute bound to the cupy module (tensorlite.backend.cp first) now names the stand-in."""
    if _installed:
        return
    m, real = module(), real_cupy()
    import tensorlite.backend as backend
    for name, mod in list(sys.modules.items()):
        if mod is None or not (name == "tensorlite" or name.startswith(("tensorlite.", "gpt"))):
            continue
        for attr, value in list(vars(mod).items()):
            if _bound_cupy(value, real) and value is not m:
                _installed.append((mod, attr, value))
                setattr(mod, attr, m)
    if backend.cp is not m:   # CuPy not importable: backend holds None
        _installed.append((backend, "cp", backend.cp))
        backend.cp = m
    _forget(backend)


def uninstall():
    import tensorlite.backend as backend
    while _installed:
        mod, attr, value = _installed.pop()
        setattr(mod, attr, value)
    _forget(backend)


def _forget(backend):
    """Drop what tensorlite remembers about the array module it saw before."""
    getattr(backend, "_cuda_changed", lambda: None)()
    functional = sys.modules.get("tensorlite.functional")
    getattr(functional, "_causal_bias", {}).clear()   # cached per xp.__name__, "cupy" for both


def is_installed():
    return bool(_installed)


@contextlib.contextmanager
def installed():
    """The stand-in in place of cupy inside the block (nothing changes if already installed)."""
    if _installed:
        yield module()
        return
    install()
    try:
        yield module()
    finally:
        uninstall()


@contextlib.contextmanager
def counting(trace=False):
    """Counts of launches, syncs and transfers from here on: yields the Counts, reset (with
    trace=True, counts.trace lists each event as (kind, name))."""
    counts.reset()
    counts.trace = [] if trace else None
    yield counts
