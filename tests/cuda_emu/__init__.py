"""Run CUDA C kernels on the CPU: compile a .cu with g++ against cuda_emu.h, launch by name.

    module = build("tensorlite/kernels/gelu.cu", options=("-DfloatX=float",))
    gelu = module.get_function("gelu_forward")
    gelu((blocks,), (256,), (y, x, np.int64(n)))            # as cupy.RawKernel is called
    gelu((blocks,), (256,), (y, x, np.int64(n)), shared_mem=0)

The calls mirror cupy.RawModule / cupy.RawKernel: grid and block are tuples of 1 to 3 ints,
args a tuple; an array argument passes its data pointer (NumPy arrays, or anything with
__array_interface__ or CuPy's .data.ptr), None a null pointer, a NumPy scalar its bytes, and a
Python int or float becomes int64 or float64 as CuPy converts them. Unlike CuPy, an argument
whose size differs from the kernel's parameter, or a scalar given for a pointer (or an array
for a value), raises TypeError instead of launching with shifted arguments.

build(..., sanitizer="thread" | "address") builds a standalone driver program instead (TSan or
ASan with one OS thread per CUDA thread; a TSan library loaded into Python can crash): a launch
writes its arguments to a file, runs the program, and copies the buffers back into the arrays;
inside `with module.batch():` launches run together in one run of the program. A sanitizer
report raises SanitizerError.

set_block_order("reverse" | "shuffle", seed) runs the blocks of later launches in that order,
for every module of the process (the stand-in's too), to show a kernel does not depend on it.

Compiled libraries are cached by a hash of everything that goes into them, in
$TENSORLITE_EMU_CACHE or a directory under the system's temp dir.
"""
import contextlib
import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
import threading
import weakref
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
HEADER = HERE / "cuda_emu.h"
DRIVER = HERE / "driver.h"

ORDERS = {"forward": 0, "reverse": 1, "shuffle": 2}
_order = ("forward", 0)          # the block order of every module, unless one sets its own
_modules = weakref.WeakSet()


class EmulationError(RuntimeError):
    """A launch failed: a deadlock, a bad shuffle, __trap, or invalid launch dimensions."""


class SanitizerError(RuntimeError):
    """A sanitizer build reported an error (a data race, an out-of-bounds access, ...)."""


class CompileError(RuntimeError):
    """g++ rejected the source."""


def cache_dir():
    d = os.environ.get("TENSORLITE_EMU_CACHE") or os.path.join(
        tempfile.gettempdir(), f"tensorlite-cuda-emu-{os.getuid() if hasattr(os, 'getuid') else 0}")
    os.makedirs(d, exist_ok=True)
    return d


# ---- turning CUDA C into a C++ translation unit ----------------------------------------------

_EXTERN_SHARED = re.compile(
    r"extern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s*)?([A-Za-z_][\w\s\*]*?)\s*(\w+)\s*\[\s*\]\s*;")
_STATIC_SHARED = re.compile(
    r"__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s*)?([A-Za-z_][\w\s]*?)\s+(\w+)\s*"
    r"((?:\[[^\]\n]+\]\s*)*);")
_KERNEL = re.compile(
    r'extern\s+"C"\s+__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+'
    r'(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(')


def kernel_names(source):
    """The extern "C" __global__ kernels a source defines, in order."""
    return list(dict.fromkeys(_KERNEL.findall(_strip_comments(source))))


def _strip_comments(source):
    source = re.sub(r"/\*.*?\*/", lambda m: re.sub(r"[^\n]", " ", m.group(0)), source, flags=re.S)
    return re.sub(r"//[^\n]*", "", source)


def _static_shared(match, counter):
    type_, name, dims = match.group(1).strip(), match.group(2), re.sub(r"\s+", "", match.group(3))
    ref = f"(&{name}){dims}" if dims else f"&{name}"
    return f"{type_} {ref} = ::emu::static_shared<{type_}{dims}, {next(counter)}>();"


_LOCAL_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$')


def inline_includes(source, filename="kernel.cu", include_dirs=(), _seen=None):
    """The source with each `#include "x"` found in include_dirs replaced by x's text (once,
    recursively), with #line markers so messages still name each file's own lines. The
    translation below then sees the headers' __shared__ declarations too."""
    seen = set() if _seen is None else _seen
    out = []
    for number, line in enumerate(source.split("\n"), 1):
        m = _LOCAL_INCLUDE.match(line)
        found = m and next((Path(d) / m.group(1) for d in include_dirs
                            if (Path(d) / m.group(1)).is_file()), None)
        if not found:
            out.append(line)
            continue
        found = found.resolve()
        if found not in seen:
            seen.add(found)
            name = str(found).replace("\\", "/").replace('"', "")
            out += [f'#line 1 "{name}"',
                    inline_includes(found.read_text(), name, [found.parent, *include_dirs], seen)]
        out.append(f'#line {number + 1} "{filename}"')
    return "\n".join(out)


def translate(source, filename="kernel.cu"):
    """The C++ that g++ compiles: the source with each `extern __shared__ T name[];` turned
    into a pointer to the launch's dynamic shared memory and each `__shared__ T name[N];` into
    a reference to storage that every block start fills with 0xff (same line count, so g++,
    TSan and ASan name the .cu's own lines), then one registration per kernel."""
    body = _EXTERN_SHARED.sub(
        lambda m: f"{m.group(1).strip()}* {m.group(2)} = "
                  f"static_cast<{m.group(1).strip()}*>(::emu::dynamic_smem());",
        source)
    counter = iter(range(1 << 30))
    body = _STATIC_SHARED.sub(lambda m: _static_shared(m, counter), body)
    left = re.search(r"\b__shared__\b[^;\n]*", _strip_comments(body))
    if left:
        raise ValueError(f"cuda_emu: {filename}: {left.group(0)!r} is a __shared__ declaration "
                         f"this translator does not handle (it takes `__shared__ T name[N]...;` "
                         f"and `extern __shared__ T name[];`)")
    names = kernel_names(source)
    regs = "\n".join(f"EMU_KERNEL({n})" for n in names)
    name = str(filename).replace("\\", "/").replace('"', "")
    return f'#line 1 "{name}"\n{body}\n#line 1 "cuda_emu registrations"\n{regs}\n', names


_NVRTC_ONLY = re.compile(r"^(-arch|--gpu-architecture|-std|--std|-lineinfo|--generate-line-info|"
                         r"-use_fast_math|--use_fast_math|-ftz|--ftz|-prec-div|--prec-div|-prec-sqrt|--prec-sqrt|--device-as-default-execution-space|"
                         r"-default-device|--fmad|-fmad|-G|--device-debug|-restrict|--restrict|"
                         r"-Xptxas|--ptxas-options|-dopt|--dopt)")


def gxx_options(options):
    """NVRTC options as g++ flags: -D, -U and -I carry over; NVRTC's code-generation options
    (-arch, -std, -lineinfo, fast math, ...) have no meaning here and are dropped."""
    out = []
    options = list(options)
    i = 0
    while i < len(options):
        o = str(options[i])
        if o.startswith(("-D", "-U", "-I")):
            if o in ("-D", "-U", "-I"):
                out += [o, str(options[i + 1])]
                i += 1
            else:
                out.append(o)
        elif o.startswith("--define-macro="):
            out.append("-D" + o.split("=", 1)[1])
        elif o.startswith("--include-path="):
            out.append("-I" + o.split("=", 1)[1])
        elif not _NVRTC_ONLY.match(o):
            raise ValueError(f"cuda_emu: compile option {o!r} has no g++ equivalent here")
        i += 1
    return out


def _compiler_id():
    if not hasattr(_compiler_id, "v"):
        _compiler_id.v = subprocess.run(["g++", "--version"], capture_output=True, text=True).stdout
    return _compiler_id.v


def _compile(source, options, sanitizer, threads, include_dirs, filename):
    name = str(filename).replace("\\", "/").replace('"', "")
    text, names = translate(inline_includes(f'#line 1 "{name}"\n' + source, name, include_dirs),
                            filename)
    flags = ["-std=c++20", "-fPIC", "-fvisibility=hidden", "-fno-strict-aliasing", "-Wall",
             "-Wno-unused-function", "-Wno-unused-variable", "-Wno-unknown-pragmas", f"-I{HERE}"]
    flags += [f"-I{d}" for d in include_dirs] + gxx_options(options)
    if sanitizer:
        if sanitizer not in ("thread", "address"):
            raise ValueError(f"sanitizer must be 'thread' or 'address', not {sanitizer!r}")
        flags += ["-O1", "-g", "-fno-omit-frame-pointer", f"-fsanitize={sanitizer}",
                  "-DEMU_THREADS", "-pthread"]
        tail, kind = '#include "driver.h"\n', "exe"
    else:
        flags += ["-O2", "-shared"] + (["-DEMU_THREADS", "-pthread"] if threads else [])
        tail, kind = "EMU_ENTRY_POINTS\n", "so"
    text = '#include "cuda_emu.h"\n' + text + tail
    key = hashlib.sha256("\0".join([text, *flags, HEADER.read_text(), DRIVER.read_text(),
                                    _compiler_id(), kind]).encode()).hexdigest()[:24]
    out = Path(cache_dir()) / f"{Path(filename).stem}-{key}.{kind}"
    if out.exists():
        return out, names
    src = out.with_suffix(".cpp")
    tag = f"{os.getpid()}-{threading.get_ident()}"
    tmp_src, tmp_out = out.with_suffix(f".{tag}.cpp"), out.with_suffix(f".{tag}.tmp")
    tmp_src.write_text(text)
    proc = subprocess.run(["g++", *flags, str(tmp_src), "-o", str(tmp_out)], capture_output=True, text=True)
    if proc.returncode != 0:
        tmp_src.unlink(missing_ok=True)
        raise CompileError(f"g++ could not compile {filename} for the emulation:\n{proc.stderr}")
    os.replace(tmp_src, src)
    os.replace(tmp_out, out)   # atomic: a concurrent build of the same key is harmless
    return out, names


def _read_source(path_or_source):
    """(source text, file name, include dirs) from a path or from source text."""
    if isinstance(path_or_source, Path) or (
            isinstance(path_or_source, str) and "\n" not in path_or_source
            and os.path.exists(path_or_source)):
        p = Path(path_or_source).resolve()
        return p.read_text(), str(p), [str(p.parent)]
    return str(path_or_source), "kernel.cu", []


def build(path_or_source, options=("-DfloatX=float",), *, sanitizer=None, threads=False,
          include_dirs=()):
    """Compile CUDA C for the emulation and return a Module (or a DriverModule for a sanitizer).

    path_or_source: a path to a .cu file (its directory is on the include path) or source text.
    options: NVRTC-style options; -D/-U/-I are honoured.
    threads: run each CUDA thread on an OS thread instead of a fiber (slow; for checking the
    emulation itself).
    """
    source, filename, dirs = _read_source(path_or_source)
    lib, names = _compile(source, tuple(options), sanitizer, threads, [*dirs, *include_dirs], filename)
    if sanitizer:
        return DriverModule(lib, names, sanitizer)
    return Module(lib)


def prebuild(jobs):
    """Compile several (path_or_source, options[, sanitizer]) jobs at once, one g++ per core, so
    that later build() calls find them cached."""
    from concurrent.futures import ThreadPoolExecutor

    def one(job):
        src, opts, *rest = job
        source, filename, dirs = _read_source(src)
        _compile(source, tuple(opts), rest[0] if rest else None, False, dirs, filename)
    jobs = list(jobs)
    with ThreadPoolExecutor(max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        for _ in pool.map(one, jobs):      # re-raises the first failure
            pass


# ---- arguments as CuPy passes them -----------------------------------------------------------

def _pointer(a):
    if a is None:
        return 0, None
    if isinstance(a, np.ndarray):
        return a.ctypes.data, a
    iface = getattr(a, "__array_interface__", None)
    if iface is not None:
        return iface["data"][0], a
    ptr = getattr(getattr(a, "data", None), "ptr", None)
    if isinstance(ptr, int):
        return ptr, a
    raise TypeError(f"cannot pass {type(a).__name__} as a pointer")


def _scalar(a):
    """A value argument as CuPy converts it: NumPy scalars keep their type, Python int and
    float become int64 and float64."""
    if isinstance(a, np.generic):
        return a
    if isinstance(a, bool):
        raise TypeError("pass a NumPy scalar (e.g. numpy.int32(1)) for a bool, not a Python bool")
    if isinstance(a, int):
        return np.int64(a)
    if isinstance(a, float):
        return np.float64(a)
    raise TypeError(f"unsupported kernel argument type {type(a).__name__}")


def _dims(d, what):
    if not isinstance(d, tuple) or not 1 <= len(d) <= 3:
        raise TypeError(f"{what} must be a tuple of 1 to 3 ints (as cupy.RawKernel takes), got {d!r}")
    d = tuple(int(x) for x in d) + (1,) * (3 - len(d))
    return (ctypes.c_uint * 3)(*d)


class _Kernel:
    def __init__(self, module, index, name, sizes, is_ptr):
        self.module, self.index, self.name = module, index, name
        self.sizes, self.is_ptr = sizes, is_ptr

    @property
    def nargs(self):
        return len(self.sizes)

    def _check(self, args):
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"{self.name}: args must be a tuple")
        if len(args) != self.nargs:
            raise TypeError(f"{self.name} takes {self.nargs} arguments, {len(args)} given")
        out = []
        for i, (a, size, is_ptr) in enumerate(zip(args, self.sizes, self.is_ptr)):
            if is_ptr:
                if isinstance(a, (np.generic, int, float)):
                    raise TypeError(f"{self.name}: argument {i} is a pointer; got the scalar {a!r}")
                out.append(("ptr", a))
            else:
                if a is None or isinstance(a, np.ndarray) or (
                        not isinstance(a, np.generic) and hasattr(a, "__array_interface__")):
                    raise TypeError(f"{self.name}: argument {i} is a {size}-byte value; got an array")
                s = _scalar(a)
                if s.itemsize != size:
                    raise TypeError(f"{self.name}: argument {i} is a {size}-byte parameter; got "
                                    f"{s.dtype} ({s.itemsize} bytes)")
                out.append(("val", s))
        return out


class Function(_Kernel):
    """One kernel of a Module; call it as cupy.RawKernel is called."""

    def __call__(self, grid, block, args, shared_mem=0):
        g, b = _dims(grid, "grid"), _dims(block, "block")
        checked = self._check(args)
        keep, slots = [], (ctypes.c_void_p * max(1, self.nargs))()
        for i, (kind, a) in enumerate(checked):
            if kind == "ptr":
                p, owner = _pointer(a)
                buf = ctypes.c_void_p(p)
                keep.append(owner)
            else:
                buf = ctypes.create_string_buffer(a.tobytes(), 16)
            keep.append(buf)
            slots[i] = ctypes.cast(ctypes.byref(buf), ctypes.c_void_p)
        err = ctypes.create_string_buffer(1024)
        rc = self.module.lib.emu_launch(self.index, g, b, ctypes.c_size_t(int(shared_mem)), slots, err, 1024)
        if rc:
            raise EmulationError(err.value.decode(errors="replace"))


class Module:
    """A compiled source: get_function(name) as cupy.RawModule.get_function."""

    def __init__(self, path):
        self.path = str(path)
        self.lib = ctypes.CDLL(self.path)
        lib = self.lib
        lib.emu_kernel_name.restype = ctypes.c_char_p
        lib.emu_kernel_sizes.restype = ctypes.POINTER(ctypes.c_size_t)
        lib.emu_kernel_is_ptr.restype = ctypes.POINTER(ctypes.c_ubyte)
        lib.emu_launch.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
                                   ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_size_t]
        lib.emu_set_block_order.argtypes = [ctypes.c_int, ctypes.c_ulonglong]
        self.functions = {}
        for k in range(lib.emu_kernel_count()):
            name = lib.emu_kernel_name(k).decode()
            n = lib.emu_kernel_nargs(k)
            sizes, ptrs = lib.emu_kernel_sizes(k), lib.emu_kernel_is_ptr(k)
            self.functions[name] = Function(self, k, name, [sizes[i] for i in range(n)],
                                            [bool(ptrs[i]) for i in range(n)])
        self.set_block_order(*_order)
        _modules.add(self)

    def get_function(self, name):
        try:
            return self.functions[name]
        except KeyError:
            raise KeyError(f"no kernel named {name!r} (this module has {sorted(self.functions)})") from None

    def set_block_order(self, order="forward", seed=0):
        """Run the blocks of this module's later launches in this order: forward, reverse or
        shuffle (seeded). Modules built from the same source and options share one loaded
        library, and so this setting."""
        self.lib.emu_set_block_order(ORDERS[order], seed)


def set_block_order(order="forward", seed=0):
    """Run the blocks of every module's later launches, in this process, in this order
    (forward, reverse or shuffle with a seed), including modules built later and those the
    CuPy stand-in builds. Returns the previous (order, seed)."""
    global _order
    if order not in ORDERS:
        raise ValueError(f"block order must be one of {sorted(ORDERS)}, not {order!r}")
    previous, _order = _order, (order, int(seed))
    for m in list(_modules):
        m.set_block_order(order, seed)
    return previous


# ---- sanitizer builds: a program run per launch, or per batch of launches ---------------------

class DriverFunction(_Kernel):
    def __call__(self, grid, block, args, shared_mem=0):
        g, b = _dims(grid, "grid"), _dims(block, "block")
        checked = self._check(args)
        self.module._queue(self.index, tuple(g), tuple(b), int(shared_mem), checked)


class _Batch:
    """Launches queued for one run of the driver program, and the arrays they touch."""

    def __init__(self):
        self.arrays, self.index_of, self.launches = [], {}, []

    def buffer(self, a, name):
        arr = a if isinstance(a, np.ndarray) else np.asarray(a)
        if not arr.flags.c_contiguous:
            raise ValueError(f"{name}: the sanitizer driver takes C-contiguous arrays")
        key = (arr.ctypes.data, arr.nbytes)
        if key in self.index_of:
            return self.index_of[key]
        for (p, n) in self.index_of:
            if p < key[0] + key[1] and key[0] < p + n:
                raise ValueError(f"{name}: overlapping (but not identical) arrays are not supported "
                                 "by the sanitizer driver")
        self.index_of[key] = len(self.arrays)
        self.arrays.append(arr)
        return self.index_of[key]


class DriverModule:
    """A sanitizer build: the same get_function interface. Each launch runs the program once;
    inside `with module.batch():` launches are queued and run together by one program run at
    the end of the block (the arrays must not change on the host in between; results appear
    when the block ends)."""

    def __init__(self, path, names, sanitizer):
        self.path, self.sanitizer = str(path), sanitizer
        self.order, self.seed = 0, 0
        self.last_stderr = ""
        self._batch = None
        listing = subprocess.run([self.path, "--signatures"], capture_output=True, text=True,
                                 env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0"))
        if listing.returncode != 0:
            raise SanitizerError(f"{self.path} --signatures failed:\n{listing.stderr}")
        self.functions = {}
        for k, line in enumerate(listing.stdout.split("\n")[:-1]):
            name, *fields = line.split()
            sizes = [int(f.rstrip("p")) for f in fields]
            ptrs = [f.endswith("p") for f in fields]
            self.functions[name] = DriverFunction(self, k, name, sizes, ptrs)

    def get_function(self, name):
        try:
            return self.functions[name]
        except KeyError:
            raise KeyError(f"no kernel named {name!r} (this module has {sorted(self.functions)})") from None

    def set_block_order(self, order="forward", seed=0):
        self.order, self.seed = ORDERS[order], seed

    @contextlib.contextmanager
    def batch(self):
        if self._batch is not None:
            raise RuntimeError("batches do not nest")
        self._batch = _Batch()
        try:
            yield self
            batch = self._batch
        finally:
            self._batch = None
        self._run(batch)

    def _queue(self, index, grid, block, shared_mem, checked):
        batch = self._batch or _Batch()
        name = self.functions and list(self.functions)[index]
        args = []
        for kind, a in checked:
            if kind == "val":
                args.append(("val", a.tobytes()))
            elif a is None:
                args.append(("null", None))
            else:
                args.append(("buf", batch.buffer(a, name)))
        batch.launches.append((index, grid, block, shared_mem, self.order, self.seed, args))
        if self._batch is None:
            self._run(batch)

    def _run(self, batch):
        parts = [b"EMU2", np.uint64(len(batch.arrays)).tobytes()]
        for arr in batch.arrays:
            parts += [np.uint64(arr.nbytes).tobytes(), arr.tobytes()]
        parts.append(np.int32(len(batch.launches)).tobytes())
        for index, grid, block, shared_mem, order, seed, args in batch.launches:
            parts += [np.int32(index).tobytes(), np.array(grid, np.uint32).tobytes(),
                      np.array(block, np.uint32).tobytes(), np.uint64(shared_mem).tobytes(),
                      np.int32(order).tobytes(), np.uint64(seed).tobytes(), np.int32(len(args)).tobytes()]
            for kind, v in args:
                if kind == "null":
                    parts.append(b"\x00")
                elif kind == "buf":
                    parts += [b"\x01", np.uint64(v).tobytes()]
                else:
                    parts += [b"\x02", np.uint64(len(v)).tobytes(), v]
        with tempfile.TemporaryDirectory() as d:
            fin, fout = os.path.join(d, "in"), os.path.join(d, "out")
            with open(fin, "wb") as f:
                f.write(b"".join(parts))
            env = dict(os.environ,
                       TSAN_OPTIONS="halt_on_error=1 exitcode=66 report_signal_unsafe=0",
                       ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:exitcode=67")
            proc = subprocess.run([self.path, fin, fout], capture_output=True, text=True, env=env, timeout=600)
            self.last_stderr = proc.stderr
            names = list(self.functions)
            launched = ", ".join(names[launch[0]] for launch in batch.launches)
            if proc.returncode == 3:
                raise EmulationError(proc.stderr.strip())
            if proc.returncode != 0 or "WARNING: ThreadSanitizer" in proc.stderr \
                    or "ERROR: AddressSanitizer" in proc.stderr:
                raise SanitizerError(f"{launched} under the {self.sanitizer} sanitizer "
                                     f"(exit {proc.returncode}):\n{proc.stderr}")
            data = open(fout, "rb").read()
        offset = 0
        for arr in batch.arrays:
            n = arr.nbytes
            if arr.flags.writeable:
                arr.reshape(-1).view(np.uint8)[:] = np.frombuffer(data, np.uint8, n, offset)
            offset += n
