"""Every .cu of tensorlite/kernels compiles with NVRTC for sm_80 and sm_90, in float32 and
float64, with no warnings and no register spills, exactly as kernels/cuda.py hands it to
CuPy's RawModule.

NVRTC works without a GPU or driver (the nvidia-cuda-nvrtc-cu12 wheel, through CuPy's
low-level binding), but CuPy's own compile wrapper asks the device for its architecture, so
the architecture is given explicitly. Compiling to sm_XX (not compute_XX) also runs ptxas,
which checks registers and shared memory against the architecture's limits; -Xptxas -v makes
it report registers and spills per kernel into the program log.
"""
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tensorlite.kernels import cuda

try:
    from cupy_backends.cuda.libs import nvrtc
    NVRTC_VERSION = nvrtc.getVersion()
except Exception as e:  # no cupy, or no NVRTC library
    nvrtc, NVRTC_VERSION, WHY = None, None, f"NVRTC is not available: {type(e).__name__}: {e}"

pytestmark = pytest.mark.skipif(nvrtc is None, reason=WHY if nvrtc is None else "")

ARCHS = ("sm_80", "sm_90")
DTYPES = (np.float32, np.float64)
PTXAS_INFO = re.compile(r"^ptxas (info    :|        \.)")   # -v's report lines, not warnings


def compile_source(text, name, options):
    """(ok, log) of one NVRTC compilation."""
    prog = nvrtc.createProgram(text, name, [], [])
    try:
        nvrtc.compileProgram(prog, list(options))
        ok = True
    except nvrtc.NVRTCError:
        ok = False
    log = nvrtc.getProgramLog(prog).rstrip("\x00")
    nvrtc.destroyProgram(prog)
    return ok, log


def gpu_options(arch, dtype):
    # -ftz=true: CuPy adds it to every NVRTC compilation (cupy/cuda/compiler.py)
    return [f"-arch={arch}", *cuda.options(dtype), "-ftz=true",
            "-Xptxas", "-v", "-Xptxas", "--warn-on-spills"]


def warnings_in(log):
    """The log without ptxas's -v report: what is left is a warning or an error."""
    return "\n".join(line for line in log.splitlines() if line.strip() and not PTXAS_INFO.match(line))


def resources(log):
    """{kernel: (registers, spill store bytes, spill load bytes)} from ptxas -v."""
    out = {}
    for m in re.finditer(r"Compiling entry function '(\w+)'.*?(\d+) bytes spill stores, (\d+) bytes spill loads"
                         r".*?Used (\d+) registers", log, re.S):
        out[m.group(1)] = (int(m.group(4)), int(m.group(2)), int(m.group(3)))
    return out


@pytest.fixture(scope="module")
def compiled():
    """{(file, arch, dtype): (ok, log)} for every combination, two compilations at a time."""
    jobs = [(f, a, np.dtype(d)) for f in cuda.SOURCES for a in ARCHS for d in DTYPES]
    with ThreadPoolExecutor(2) as pool:
        results = pool.map(lambda j: compile_source(cuda.source(j[0]), j[0], gpu_options(j[1], j[2])), jobs)
        return dict(zip(jobs, results))


@pytest.mark.parametrize("filename", cuda.SOURCES)
def test_compiles_for_sm80_and_sm90_in_both_dtypes_without_warnings(compiled, filename):
    from cuda_emu import kernel_names
    names = set(kernel_names(cuda.source(filename)))
    assert names, f"{filename} defines no extern \"C\" __global__ kernel"
    for arch in ARCHS:
        for dtype in DTYPES:
            ok, log = compiled[(filename, arch, np.dtype(dtype))]
            what = f"{filename} for {arch}, floatX={cuda.FLOAT_TYPES[np.dtype(dtype)]}"
            assert ok, f"{what} does not compile:\n{log}"
            assert warnings_in(log) == "", f"{what} compiles with warnings:\n{warnings_in(log)}"
            found = resources(log)
            assert set(found) == names, f"{what}: ptxas compiled {sorted(found)}, the source has {sorted(names)}"
            spills = {k: v[1:] for k, v in found.items() if v[1] or v[2]}
            assert not spills, f"{what}: register spills (store, load bytes): {spills}"
            # a block has 64K registers on sm_80 and sm_90; launches use up to 1024 threads
            heavy = {k: v[0] for k, v in found.items() if v[0] * 1024 > 65536}
            assert not heavy, f"{what}: too many registers for a 1024-thread block: {heavy}"


def test_every_source_is_listed():
    import os
    on_disk = sorted(f for f in os.listdir(cuda.KERNEL_DIR) if f.endswith(".cu"))
    assert on_disk == sorted(cuda.SOURCES)


def test_the_gate_sees_a_warning_and_an_error():
    text = cuda.source("gelu.cu").replace("floatX xi = x[i];\n        y[i]", "int unused;\n        floatX xi = x[i];\n        y[i]")
    ok, log = compile_source(text, "gelu.cu", gpu_options("sm_90", np.float32))
    assert ok and 'variable "unused" was declared but never referenced' in warnings_in(log)
    ok, log = compile_source(cuda.source("gelu.cu"), "gelu.cu", ["-arch=sm_90", "--std=c++17"])
    assert not ok and "compile with -DfloatX=float or -DfloatX=double" in log


def test_resource_limits_are_checked_by_ptxas():
    """Compiling to sm_90 runs ptxas: a kernel over the shared-memory limit fails here, not at
    launch time on a user's GPU."""
    text = 'extern "C" __global__ void big(float* y) { __shared__ float s[64 * 1024]; s[threadIdx.x] = 1; y[0] = s[5]; }'
    ok, log = compile_source(text, "big.cu", ["-arch=sm_90"])
    assert not ok and "shared data" in log.lower()


def register_table():
    """Registers per thread of every kernel, for sm_80 and sm_90 in both dtypes, as ptxas
    reports them: `python tests/test_cuda_kernel_nvrtc.py` prints it."""
    rows = []
    for f in cuda.SOURCES:
        logs = {(a, np.dtype(d)): compile_source(cuda.source(f), f, gpu_options(a, d))[1]
                for a in ARCHS for d in DTYPES}
        for name in resources(next(iter(logs.values()))):
            rows.append((f, name, *(resources(logs[(a, np.dtype(d))])[name][0]
                                    for a in ARCHS for d in DTYPES)))
    return rows


if __name__ == "__main__":
    if nvrtc is None:
        raise SystemExit(WHY)
    heads = [f"{a} {cuda.FLOAT_TYPES[np.dtype(d)]}" for a in ARCHS for d in DTYPES]
    print(f"{'file':16} {'kernel':34} " + " ".join(f"{h:>12}" for h in heads))
    for f, name, *regs in register_table():
        print(f"{f:16} {name:34} " + " ".join(f"{r:>12}" for r in regs))
