"""Shared fixtures: every op test runs once per backend (Chainer's inject_backend_tests).

"cuda" is always listed. With a GPU it runs there. Without one, it runs on the NumPy-backed
CuPy stand-in (tests/cupy_standin), shown as `[cuda-standin]`: the cuda code path, host-array
mix-ups and all, on the CPU. Only when the cupy package is absent too does it skip, saying so.
"""
import numpy as np
import pytest

import cupy_standin
import tensorlite as tl

GPU = tl.gpu_available()
STANDIN = not GPU and cupy_standin.real_cupy() is not None

if GPU:
    tl.backend.set_tf32(False)   # the tests compare float32 products with NumPy's
    CUDA = pytest.param("cuda", id="cuda")
elif STANDIN:
    CUDA = pytest.param("cuda", id="cuda-standin")
else:
    CUDA = pytest.param("cuda", marks=pytest.mark.skipif(
        True, reason=f"no GPU and no cupy package for the stand-in: {tl.backend.cuda_unavailable_reason()}"))


def missing_cuda_gates():
    """What the CPU gates of the CUDA kernels need and this machine lacks: [(gate, why)]."""
    import shutil
    missing = []
    if shutil.which("g++") is None:
        missing.append(("emulation and sanitizers", "g++ is not installed"))
    try:
        from cupy_backends.cuda.libs import nvrtc
        nvrtc.getVersion()
    except Exception as e:
        missing.append(("NVRTC compile", f"NVRTC is not available ({type(e).__name__})"))
    if not (GPU or STANDIN):
        missing.append(("the cuda path", "the cupy package is not installed"))
    return missing


def pytest_report_header(config):
    gates = "; ".join(f"{g} SKIPPED: {why}" for g, why in missing_cuda_gates())
    gates = f"CUDA kernel gates: {gates}" if gates else "CUDA kernel gates: NVRTC, emulation, sanitizers all run"
    if GPU:
        return ["cuda: a GPU, through CuPy", gates]
    if STANDIN:
        return [f"cuda: NumPy-backed CuPy stand-in, tests marked [cuda-standin] "
                f"(no GPU here: {tl.backend.cuda_unavailable_reason()})", gates]
    return ["cuda: skipped (no GPU, and no cupy package for the stand-in)", gates]


def pytest_terminal_summary(terminalreporter):
    """Say last, too, which CUDA kernel gates did not run here: a run without g++ or NVRTC
    passes with them skipped, which must not go unnoticed."""
    for gate, why in missing_cuda_gates():
        terminalreporter.write_line(f"CUDA kernel gate not run: {gate} ({why})", yellow=True, bold=True)


@pytest.fixture(params=["cpu", CUDA])
def device(request):
    """The device name the test builds its inputs on."""
    if request.param == "cuda" and STANDIN:
        with cupy_standin.installed():
            yield "cuda"
            tl.backend.flush_checks()   # a failed deferred check belongs to this test
    else:
        yield request.param
        if request.param == "cuda":
            tl.backend.flush_checks()


@pytest.fixture
def rng():
    """A fresh, fixed-seed NumPy generator, so every test sees the same data on every run."""
    return np.random.default_rng(0)
