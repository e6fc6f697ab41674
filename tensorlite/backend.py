"""The one place that decides between NumPy (device "cpu") and CuPy (device "cuda").

Ops call `xp = get_array_module(x)` and then use only what both libraries provide,
so the same op code runs on both.
"""
import numpy as np

try:  # CuPy is an optional extra: pip install -e ".[cuda12]" (or ".[cuda13]")
    import cupy as cp
except Exception:  # ImportError, or a CuPy that cannot find its CUDA libraries
    cp = None

DEVICES = ("cpu", "cuda")
CUDA_HELP = ('device "cuda" needs CuPy and a GPU: install the extra that matches your CUDA, '
             'pip install -e ".[cuda12]" or pip install -e ".[cuda13]"')


class DeviceError(RuntimeError):
    """A device was asked for that is not available, or two devices were mixed."""


def gpu_available():
    """True when CuPy is installed and sees at least one GPU."""
    if cp is None:
        return False
    try:
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def check_device(device):
    """Validate a device name and return it ("cpu" or "cuda")."""
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}: expected one of {DEVICES}")
    if device == "cuda" and not gpu_available():
        reason = "CuPy is not installed" if cp is None else "CuPy sees no GPU"
        raise DeviceError(f"{reason}; {CUDA_HELP}")
    return device


def xp_for(device):
    """The array module for a device name."""
    return cp if check_device(device) == "cuda" else np


def get_array_module(x):
    """numpy or cupy, whichever owns the array x."""
    if cp is not None and isinstance(x, cp.ndarray):
        return cp
    return np


def device_of(x):
    return "cuda" if get_array_module(x) is not np else "cpu"


def as_numpy(x):
    if cp is not None and isinstance(x, cp.ndarray):
        return cp.asnumpy(x)
    return np.asarray(x)


def as_cupy(x):
    if cp is None:
        raise DeviceError(CUDA_HELP)
    return cp.asarray(x)


def to_device(x, device):
    """Move a raw array to a device (no copy when it is already there)."""
    return as_cupy(x) if check_device(device) == "cuda" else as_numpy(x)


# ---- random numbers: one generator per device, seeded by manual_seed ----------------------

_rngs = {}


def manual_seed(seed):
    """Seed the generators used by dropout and by tensorlite's random helpers."""
    _rngs.clear()
    _rngs["cpu"] = np.random.default_rng(seed)
    if cp is not None:
        _rngs["seed"] = seed  # the cuda generator is made lazily, on first use
    return seed


def rng(device="cpu"):
    """The generator for a device: numpy.random.Generator, or cupy.random.RandomState."""
    if device not in _rngs:
        if device == "cuda":
            _rngs["cuda"] = cp.random.RandomState(_rngs.get("seed"))
        else:
            _rngs["cpu"] = np.random.default_rng()
    return _rngs[device]


def get_rng_state():
    """A picklable snapshot of the CPU generator (saved in checkpoints for exact resume).
    CuPy's RandomState cannot be snapshotted, so a resumed GPU run reseeds dropout."""
    return {"cpu": rng("cpu").bit_generator.state}


def set_rng_state(state):
    rng("cpu").bit_generator.state = state["cpu"]


def uniform(shape, dtype, device):
    """Uniform [0, 1) samples of the given shape and dtype on a device."""
    if device == "cuda":
        return rng("cuda").random_sample(shape, dtype=dtype)
    return rng("cpu").random(shape, dtype=dtype)


# ---- host memory: keep freed blocks for the next step ---------------------------------------
#
# A training step allocates and frees the same few hundred activation and gradient arrays
# every step. By default glibc's malloc serves large arrays with fresh mmap()s, unmaps them
# when they are freed, and returns free memory at the top of its heap to the OS, so every
# step the kernel maps and zeroes the same memory again: 4,500 page faults per cpu-preset
# step, and on the lecture preset 40,000, 5.4 of its 12.3 s in the kernel. Serving every
# array from the heap (no mmap) and never trimming it lets the next step reuse the blocks.
# PyTorch's and CuPy's caching allocators keep freed memory the same way; NumPy has none.

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameter numbers, from <malloc.h>


def keep_freed_memory():
    """Make glibc's malloc keep freed arrays in the process for reuse (see above).

    Called once when tensorlite is imported, unless the environment sets
    TENSORLITE_KEEP_FREED_MEMORY=0. Returns True when the setting took effect, False where
    there is no glibc (macOS, Windows, musl) and nothing changed. The cost: memory the
    program frees stays in the process, for its later allocations, instead of going back to
    the OS; its resident size stays at its peak.
    """
    import ctypes
    import ctypes.util
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt, _ = libc.mallopt, libc.gnu_get_libc_version  # glibc only
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # M_TRIM_THRESHOLD -1: never trim (mallopt(3)); M_MMAP_MAX 0: never mmap
    return bool(mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, -1))
