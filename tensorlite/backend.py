"""The one place that decides between NumPy (device "cpu") and CuPy (device "cuda").

Ops call `xp = get_array_module(x)` and then use only what both libraries provide,
so the same op code runs on both. The cuda device also gets, from here:
- a clear error when CuPy is missing or cannot use the GPU, with CuPy's own reason;
- TF32 matrix products for float32 (on by default; set_tf32(False) or TENSORLITE_TF32=0);
- deferred checks: errors found on the device (an id out of range) raise at the next host
  synchronisation the program makes anyway (defer_check, flush_checks, item);
- a counter-based dropout generator whose state is two integers, so a checkpoint restores it.
Device memory comes from CuPy's default memory pool, which keeps freed blocks for the next
step's arrays (as PyTorch's caching allocator does); nothing here returns them to the driver.
"""
import atexit
import os
import sys

import numpy as np

try:  # CuPy is an optional extra: pip install -e ".[cuda12]" (or ".[cuda13]")
    import cupy as cp
    _CUPY_IMPORT_ERROR = None
except ModuleNotFoundError as e:  # not installed
    cp, _CUPY_IMPORT_ERROR = None, None if e.name == "cupy" else e
except Exception as e:  # installed, but it cannot load (a missing CUDA library, say)
    cp, _CUPY_IMPORT_ERROR = None, e

DEVICES = ("cpu", "cuda")
CUDA_HELP = ('device "cuda" needs CuPy and a GPU: install the extra that matches your CUDA, '
             'pip install -e ".[cuda12]" or pip install -e ".[cuda13]"')
CUDA_HELP_INSTALLED = ('device "cuda" needs an NVIDIA GPU with a driver recent enough for CuPy\'s CUDA '
                       '(nvidia-smi shows both), and CuPy built for that CUDA: pip install -e ".[cuda12]" '
                       'or pip install -e ".[cuda13]"; without a GPU, use the cpu device')


class DeviceError(RuntimeError):
    """A device was asked for that is not available, or two devices were mixed."""


# ---- is the cuda device usable? ---------------------------------------------------------------

_cuda = {}  # for the current cp: "reason" (None when usable), "ready" once checked and set up


def _cuda_changed():
    """Forget what was learnt about the cuda device (tests swap `cp` for a stand-in)."""
    _cuda.clear()
    _pending.clear()


def _probe():
    """Why cuda cannot be used, in CuPy's own words, or None when it works.

    Beyond counting devices, one small product and sum run on the GPU: that loads the
    libraries a training step needs (the CUDA runtime, NVRTC for CuPy's kernels, cuBLAS),
    so a missing one is reported here and not in the middle of the first op.
    """
    if cp is None:
        if _CUPY_IMPORT_ERROR is not None:
            return f"CuPy is installed but cannot be imported ({_CUPY_IMPORT_ERROR})"
        return "CuPy is not installed"
    try:
        if cp.cuda.runtime.getDeviceCount() == 0:
            return "CuPy sees no GPU"
        a = cp.ones((2, 2), dtype=np.float32)
        if float((a @ a).sum()) != 8.0:
            return "CuPy's first product on the GPU gave a wrong result"
    except Exception as e:  # CUDARuntimeError, a library that fails to load, ...
        return f"CuPy cannot use the GPU: {type(e).__name__}: {e}"
    return None


def cuda_unavailable_reason():
    """None when the cuda device works; otherwise why not (checked once, then remembered)."""
    if "reason" not in _cuda:
        _cuda["reason"] = _probe()
    return _cuda["reason"]


def gpu_available():
    """True when CuPy is installed and can run on a GPU."""
    return cuda_unavailable_reason() is None


def check_device(device):
    """Validate a device name and return it ("cpu" or "cuda")."""
    if device == "cpu":
        return device
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}: expected one of {DEVICES}")
    if "ready" not in _cuda:   # the first use of cuda: check it, then set TF32 once
        reason = cuda_unavailable_reason()
        if reason is not None:
            raise DeviceError(f"{reason}; {CUDA_HELP if cp is None else CUDA_HELP_INSTALLED}")
        _apply_tf32()
        _cuda["ready"] = True
    return device


def xp_for(device):
    """The array module for a device name."""
    return cp if check_device(device) == "cuda" else np


def get_array_module(x):
    """numpy or cupy, whichever owns the array x."""
    if cp is not None and isinstance(x, cp.ndarray):
        return cp
    return np


class device(str):
    """A device name, as `torch.device("cuda")`; it is the string itself ("cpu" or "cuda"), so it
    goes wherever tensorlite takes a device and compares equal to the plain name. `.type` is the
    name, `.index` 0 for "cuda:0". Tensor.device gives one of these."""

    def __new__(cls, type, index=None):
        name = str(type)
        if name.startswith("cuda:"):
            name, index = "cuda", int(name[5:])
        if name not in DEVICES:
            raise DeviceError(f"unknown device {type!r}: expected 'cpu' or 'cuda'")
        if index not in (None, 0):
            raise DeviceError(f"device {type!r} index {index}: only one GPU, 'cuda', is supported")
        self = super().__new__(cls, name)
        self.index = index
        return self

    @property
    def type(self):
        """The device's name: "cpu" or "cuda"."""
        return str(self)

    def __repr__(self):
        return f"device(type='{self}')"

    def __reduce__(self):          # pickled as the plain name: checkpoints need no tensorlite
        return str, (str(self),)


def device_of(x):
    return "cuda" if get_array_module(x) is not np else "cpu"


def as_numpy(x):
    """x as a NumPy array: copied from the GPU if it lives there (a host synchronisation,
    at which the deferred checks are read too)."""
    if cp is not None and isinstance(x, cp.ndarray):
        out = cp.asnumpy(x)
        flush_checks()
        return out
    return np.asarray(x)


def as_cupy(x):
    check_device("cuda")
    return cp.asarray(x)


def to_device(x, device):
    """Move a raw array to a device (no copy when it is already there)."""
    return as_cupy(x) if check_device(device) == "cuda" else as_numpy(x)


def synchronize():
    """Wait for the GPU to finish the work queued so far (nothing to wait for on the CPU, or
    before cuda was first used)."""
    if "ready" in _cuda:
        cp.cuda.get_current_stream().synchronize()


# ---- TF32 matrix products -----------------------------------------------------------------------
#
# On Ampere and newer GPUs a float32 matmul may run on tensor cores in TF32 (10-bit mantissa
# inputs, float32 accumulation): several times faster, about 1e-3 relative error per product,
# which training does not notice (PyTorch's allow_tf32, nanoGPT turns it on). CuPy decides
# per dtype, once: its first float32 matmul reads CUPY_TF32 (cupy/_core/_routines_linalg.pyx,
# get_compute_type) unless set_compute_type was called before. We call it, so the setting here
# holds whenever it is changed. float64 products never use TF32.

def _tf32_default():
    value = os.environ.get("TENSORLITE_TF32", os.environ.get("CUPY_TF32", "1"))
    return value.strip() not in ("0", "", "false", "False")


_tf32 = {"enabled": _tf32_default()}


def set_tf32(enabled):
    """Let float32 matrix products on cuda use TF32 tensor cores (True, the default) or not.

    The default comes from the environment: TENSORLITE_TF32=0 (or CUPY_TF32=0) turns it off.
    Takes effect at once; GPUs older than Ampere (compute capability 8.0) compute in float32
    either way."""
    _tf32["enabled"] = bool(enabled)
    if "ready" in _cuda:
        _apply_tf32()


def tf32_enabled():
    """Whether float32 matrix products on cuda may use TF32 (see set_tf32)."""
    return _tf32["enabled"]


_CUBLAS_TF32_TENSOR_OP_MATH = 3   # cublas_api.h's cublasMath_t; CuPy names only DEFAULT (0) and 1


def _apply_tf32():
    linalg = cp._core._routines_linalg
    on = _tf32["enabled"] and int(cp.cuda.Device().compute_capability) >= 80
    linalg.set_compute_type(np.float32, linalg.COMPUTE_TYPE_TF32 if on else linalg.COMPUTE_TYPE_DEFAULT)
    # CuPy's compute type reaches its 2-D products only: a batched product (attention's q @ k^T
    # and att @ v) calls cublasGemmStridedBatchedEx with float32 as the compute type, which the
    # cuBLAS handle's math mode lets use TF32, as PyTorch's allow_tf32 does.
    cublas = cp.cuda.cublas
    cublas.setMathMode(cp.cuda.get_cublas_handle(),
                       _CUBLAS_TF32_TENSOR_OP_MATH if on else cublas.CUBLAS_DEFAULT_MATH)


# ---- deferred checks: device-side errors read at the next host synchronisation -----------------
#
# Checking token ids on the host (`ids.max() >= V`) makes the CPU wait for the GPU in the
# middle of every step. Instead the check is computed on the device into a 0-d flag, and
# the flags are read together with the next value the program reads anyway (the loss for
# the progress line), as CUDA's own device-side asserts surface at the next synchronisation.

_pending = []  # [(flag, message, error type)] not yet read


def defer_check(flag, message, error=IndexError):
    """Raise error(message) if `flag` (a 0-d array, nonzero when something was wrong) is set.

    On the CPU the flag is read now. On cuda nothing waits now: the flag is read at the next
    host synchronisation made through tensorlite (item(), as_numpy(), Tensor.numpy(),
    flush_checks()). `message` is a string, or a function returning one, called only when
    the check failed (it may read arrays then)."""
    if get_array_module(flag) is np:
        if bool(flag):
            raise error(message() if callable(message) else message)
        return
    _pending.append((flag, message, error))


def flush_checks():
    """Read every pending deferred check (one transfer) and raise the first that failed."""
    if not _pending:
        return
    checks = list(_pending)
    _pending.clear()
    flags = cp.asnumpy(cp.stack([f.reshape(()).astype(bool, copy=False) for f, _, _ in checks]))
    _raise_failed(checks, flags)


def _raise_failed(checks, flags):
    for (_, message, error), failed in zip(checks, flags):
        if failed:
            raise error(message() if callable(message) else message)


def check_ids(ids, n, describe):
    """Integer ids must lie in 0..n-1; otherwise IndexError(describe(ids)), with ids then a
    NumPy array to name the culprit from. Checked now on the CPU, deferred on cuda."""
    if ids.size == 0:
        return
    xp = get_array_module(ids)
    if xp is np:
        if ids.min() < 0 or ids.max() >= n:
            raise IndexError(describe(ids))
        return
    unsigned = ids if ids.dtype.kind == "u" else ids.view(f"u{ids.itemsize}")  # -1 -> 2^64-1
    defer_check((unsigned >= n).any(), lambda: describe(cp.asnumpy(ids)))


def item(*xs):
    """Python numbers of size-1 arrays (or Tensors), read from the device in one transfer
    together with the pending deferred checks: one host synchronisation for all of them.

        loss_value, norm = tl.backend.item(loss, norm)   # a training step's only sync

    One argument gives one number; several give a tuple."""
    arrays = [x if isinstance(x, (np.ndarray, np.generic)) or (cp is not None and isinstance(x, cp.ndarray))
              else x.data for x in xs]   # a Tensor's data (NumPy reductions give np.generic)
    for a in arrays:
        if a.size != 1:
            raise ValueError(f"item: can only convert an array of size 1 to a Python scalar, "
                             f"got shape {tuple(a.shape)}")
    device = [a for a in arrays if get_array_module(a) is not np]
    if not device:
        values = [a.item() for a in arrays]
    else:
        checks = list(_pending)
        _pending.clear()
        parts = [a.reshape(1).view(np.uint8) for a in device]
        parts += [f.reshape(1).astype(bool, copy=False).view(np.uint8) for f, _, _ in checks]
        raw = cp.asnumpy(cp.concatenate(parts)) if len(parts) > 1 else cp.asnumpy(parts[0])
        read, at = {}, 0
        for a in device:
            read[id(a)] = raw[at:at + a.itemsize].view(a.dtype)[0].item()
            at += a.itemsize
        _raise_failed(checks, raw[at:])
        values = [read[id(a)] if id(a) in read else a.item() for a in arrays]
    return values[0] if len(values) == 1 else tuple(values)


@atexit.register
def _unread_checks():
    """A failed check that no synchronisation read before exit is still reported."""
    try:
        flush_checks()
    except Exception as e:
        print(f"tensorlite: a deferred check failed and was never read: {type(e).__name__}: {e}",
              file=sys.stderr)


# ---- random numbers: one generator per device, seeded by manual_seed ----------------------
#
# The CPU draws from NumPy's PCG64 Generator, whose state a checkpoint saves. The GPU draws
# counter-based numbers: draw number c of a run seeded with s has the 64-bit key
#     key(s, c) = mix64(s + GOLDEN * (c + 1))          (mod 2^64)
# and its element i is
#     u64_i = mix64(key + GOLDEN * (i + 1))             (splitmix64's output function)
#     u_i   = (u64_i >> 40) * 2^-24   (float32)   or   (u64_i >> 11) * 2^-53   (float64)
# so (seed, counter) is the whole state: saved and restored, a resumed run draws the same
# masks as an uninterrupted one, and a fused CUDA kernel can draw the same numbers from the
# key alone (tensorlite/kernels/*.cu use the same mix64).

GOLDEN = 0x9E3779B97F4A7C15
MIX1, MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_MASK64 = (1 << 64) - 1


def mix64(z):
    """splitmix64's output function on a Python int (mod 2^64)."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * MIX2) & _MASK64
    return z ^ (z >> 31)


_rngs = {}


def manual_seed(seed):
    """Seed the generators used by dropout and by tensorlite's random helpers."""
    _rngs.clear()
    _rngs["cpu"] = np.random.default_rng(seed)
    _rngs["cuda"] = {"seed": int(seed) & _MASK64, "counter": 0}
    return seed


def rng(device="cpu"):
    """The CPU's numpy.random.Generator, or the cuda generator's state {"seed", "counter"}."""
    if device not in _rngs:
        if device == "cuda":
            _rngs["cuda"] = {"seed": int.from_bytes(os.urandom(8), "little"), "counter": 0}
        else:
            _rngs["cpu"] = np.random.default_rng()
    return _rngs[device]


def next_key(device="cuda"):
    """The 64-bit key of the next cuda draw, key(seed, counter); advances the counter."""
    state = rng(device)
    key = mix64(state["seed"] + GOLDEN * (state["counter"] + 1))
    state["counter"] += 1
    return key


def get_rng_state():
    """A picklable snapshot of both generators (saved in checkpoints for exact resume)."""
    return {"cpu": rng("cpu").bit_generator.state, "cuda": dict(rng("cuda"))}


def set_rng_state(state):
    """Restore a get_rng_state() snapshot (one without "cuda", from an older checkpoint,
    leaves the cuda generator as it is)."""
    rng("cpu").bit_generator.state = state["cpu"]
    if "cuda" in state:
        _rngs["cuda"] = {"seed": int(state["cuda"]["seed"]), "counter": int(state["cuda"]["counter"])}


def counter_uniform(xp, n, key, dtype):
    """The n numbers u_i of one draw with this key (see above), on xp's device."""
    z = xp.arange(1, n + 1, dtype=np.uint64)
    z *= np.uint64(GOLDEN)
    z += np.uint64(key)                                   # key + GOLDEN * (i + 1)
    z ^= z >> np.uint64(30)
    z *= np.uint64(MIX1)
    z ^= z >> np.uint64(27)
    z *= np.uint64(MIX2)
    z ^= z >> np.uint64(31)                               # mix64
    if np.dtype(dtype) == np.float32:
        return (z >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)
    return (z >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)


def uniform(shape, dtype, device):
    """Uniform [0, 1) samples of the given shape and dtype on a device."""
    if device == "cuda":
        n = int(np.prod(shape))
        return counter_uniform(cp, n, next_key("cuda"), dtype).reshape(shape)
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
