"""The stand-in's cupy.cuda pieces and RawModule / RawKernel.

RawKernel launches run the CUDA C source on the CPU: it is compiled with g++ against the
project's CUDA-emulation header (tests/cuda_emu) and each launch runs every block's threads.
Arguments are checked as CuPy passes them: device arrays become pointers to their first
element (strides ignored, as CuPy's RawKernel ignores views), Python ints and floats become
int64 and float64 (the C type CuPy gives them), and a NumPy array is refused.
"""
import numpy as np

from ._array import counts, ndarray, unsupported

MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK = (1024, 1024, 64)
MAX_GRID = (2**31 - 1, 65535, 65535)
DEFAULT_SHARED_MEM = 48 * 1024           # dynamic shared memory allowed without opting in
MAX_SHARED_MEM = 227 * 1024              # an H100/H200 block's opt-in maximum
TOTAL_MEM = 141 * 2**30                  # what mem_info reports as the device's memory


# ---- runtime, devices, streams ----------------------------------------------------------------

class _Runtime:
    """cupy.cuda.runtime's few entry points that the library uses."""
    from cupy_backends.cuda.api.runtime import CUDARuntimeError  # the real exception type

    @staticmethod
    def getDeviceCount():
        return 1

    @staticmethod
    def deviceSynchronize():
        counts.add("syncs", "deviceSynchronize")

    @staticmethod
    def getDevice():
        return 0

    @staticmethod
    def runtimeGetVersion():
        return 12080

    @staticmethod
    def driverGetVersion():
        return 12080


class Device:
    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise _Runtime.CUDARuntimeError(101)  # cudaErrorInvalidDevice

    compute_capability = "90"

    @property
    def mem_info(self):
        """(free, total) bytes: the stand-in keeps no account, so all of it is free."""
        return TOTAL_MEM, TOTAL_MEM

    def synchronize(self):
        counts.add("syncs", "Device.synchronize")

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class Stream:
    null = None

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        self.ptr = 0

    def synchronize(self):
        counts.add("syncs", "Stream.synchronize")

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


Stream.null = Stream(null=True)


class _Cublas:
    """cupy.cuda.cublas (cupy_backends.cuda.libs.cublas): the handle's math mode, recorded."""
    CUBLAS_DEFAULT_MATH = 0
    CUBLAS_TENSOR_OP_MATH = 1
    math_mode = {}          # handle -> mode

    @staticmethod
    def setMathMode(handle, mode):
        _Cublas.math_mode[int(handle)] = int(mode)

    @staticmethod
    def getMathMode(handle):
        return _Cublas.math_mode.get(int(handle), _Cublas.CUBLAS_DEFAULT_MATH)


def get_cublas_handle():
    """The current thread's cuBLAS handle of device 0: an opaque integer."""
    return 1


def get_current_stream(device_id=-1):
    return Stream.null


def is_available():
    return True


class Event:
    """Events record nothing to time on the stand-in; synchronize counts as a host wait."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        pass

    def record(self, stream=None):
        pass

    def synchronize(self):
        counts.add("syncs", "Event.synchronize")

    @property
    def done(self):
        return True


def get_elapsed_time(start_event, end_event):
    return 0.0


class MemoryPointer:
    """cupy.cuda.MemoryPointer of a stand-in array: `ptr` is the address of its first element
    (host memory here, which the emulated kernels run in)."""

    def __init__(self, array):
        self._array = array          # keeps the memory alive while the pointer is held
        self.ptr = array.ctypes.data
        self.device_id = 0
        self.size = array.nbytes

    def __int__(self):
        return self.ptr


class MemoryPool:
    """cupy's default pool, as far as its bookkeeping goes (the stand-in allocates with NumPy)."""

    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_bytes(self):
        return 0

    def free_all_blocks(self, stream=None):
        pass

    def set_limit(self, size=None, fraction=None):
        pass

    def get_limit(self):
        return 0


_pool = MemoryPool()


def get_default_memory_pool():
    return _pool


# ---- RawModule / RawKernel ---------------------------------------------------------------------

_built = {}  # (code, options) -> the emulation's module


def _emulated_module(code, options):
    key = (code, tuple(options))
    if key not in _built:
        try:
            from cuda_emu import build   # tests/cuda_emu: g++ against the emulation header
        except ImportError as e:
            raise RuntimeError("the CuPy stand-in runs RawKernel launches through tests/cuda_emu, "
                               f"which is not importable here ({e})") from e
        _built[key] = build(code, options=tuple(options))
    return _built[key]


def _kernel_arg(a):
    """A RawKernel argument as cupy/cuda/function.pyx (_pointer) passes it."""
    if a is None:
        return None                      # a null pointer
    if isinstance(a, ndarray):
        return a._a                      # its first element's address; strides ignored
    if isinstance(a, MemoryPointer):
        return a._array
    if isinstance(a, np.ndarray):
        if a.size == 1:
            return a.reshape(-1)[0]      # a one-element host array is passed by value
        raise TypeError(f"You are trying to pass a numpy.ndarray of shape {a.shape} as a kernel "
                        "parameter. Only numpy.ndarrays of size one can be passed by value. If you "
                        "meant to pass a pointer to __global__ function, you need to pass a "
                        "cupy.ndarray instead.")
    if isinstance(a, bool):
        return np.bool_(a)
    if isinstance(a, int):
        return np.int64(a)               # CuPy passes a Python int as a 64-bit integer
    if isinstance(a, float):
        return np.float64(a)
    if isinstance(a, np.generic):
        return a
    raise unsupported(a)


def _dims(d, limits, what):
    if not isinstance(d, tuple) or not 1 <= len(d) <= 3:
        raise TypeError(f"{what} must be a tuple of 1 to 3 ints, got {d!r}")
    if not 1 <= len(d) <= 3:
        raise ValueError(f"{what} must have 1 to 3 dimensions, got {d}")
    d = d + (1,) * (3 - len(d))
    for n, limit in zip(d, limits):
        if not 1 <= int(n) <= limit:
            raise ValueError(f"{what} {d} is outside the device's limits {limits}")
    return tuple(int(n) for n in d)


class RawKernel:
    """cupy.RawKernel: one launch per call, run by the CUDA emulation."""

    def __init__(self, code, name, options=(), backend="nvrtc", translate_cucomplex=False, *,
                 enable_cooperative_groups=False, jitify=None):
        self.code, self.name, self.options, self.backend = code, name, tuple(options), backend
        self.max_dynamic_shared_size_bytes = DEFAULT_SHARED_MEM
        self._module = None

    def _function(self):
        if self._module is None:
            self._module = _emulated_module(self.code, self.options)
        return self._module.get_function(self.name)

    def compile(self, log_stream=None):
        self._function()

    @property
    def max_threads_per_block(self):
        return MAX_THREADS_PER_BLOCK

    def __call__(self, grid, block, args, *, shared_mem=0):
        grid = _dims(grid, MAX_GRID, "grid")
        block = _dims(block, MAX_BLOCK, "block")
        if block[0] * block[1] * block[2] > MAX_THREADS_PER_BLOCK:
            raise ValueError(f"block {block} has more than {MAX_THREADS_PER_BLOCK} threads")
        if shared_mem > self.max_dynamic_shared_size_bytes:
            raise ValueError(f"{self.name}: {shared_mem} bytes of dynamic shared memory exceed the "
                             f"{self.max_dynamic_shared_size_bytes} allowed (set "
                             "max_dynamic_shared_size_bytes to opt in to more)")
        if not isinstance(args, tuple):
            raise TypeError(f"RawKernel args must be a tuple, got {type(args)}")
        counts.add("launches", self.name)
        self._function()(grid, block, tuple(_kernel_arg(a) for a in args), shared_mem=shared_mem)


class RawModule:
    """cupy.RawModule: kernels compiled from one source, fetched by get_function."""

    def __init__(self, code=None, *, path=None, options=(), backend="nvrtc", translate_cucomplex=False,
                 enable_cooperative_groups=False, name_expressions=None, jitify=None):
        if (code is None) == (path is None):
            raise TypeError("One of `code` and `path` should be given.")
        if path is not None:
            with open(path) as f:
                code = f.read()
        self.code, self.options, self.backend = code, tuple(options), backend
        self._kernels = {}

    def compile(self, log_stream=None):
        _emulated_module(self.code, self.options)

    def get_function(self, name):
        if name not in self._kernels:
            kernel = RawKernel(self.code, name, self.options, self.backend)
            kernel._function()   # an unknown name fails here, as CuPy's does
            self._kernels[name] = kernel
        return self._kernels[name]
