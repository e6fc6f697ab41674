"""The CUDA C kernels under ThreadSanitizer and AddressSanitizer.

All sources are compiled into one standalone driver program per sanitizer (float32; the float64
build runs the same code paths with wider elements), with one OS thread per CUDA thread so TSan
sees every pair of threads and the barriers between them, and every array in its own exact-size
allocation so ASan sees a read or write one element past it. Each kernel runs once on small
ragged shapes, all in one run of the program, and its results are checked against the reference
ops too (the driver copies them back). The two single-block kernels the launchers run with 1024
threads (the cross-entropy mean, the embedding's offsets) run here with 256 and 96: they take
any multiple of 32, and a thread costs ~2 ms to create under TSan. Loading a TSan-built library
into Python can crash, hence the separate program.

Negative tests: a copy of layernorm.cu without one __syncthreads is reported as a data race
naming layernorm.cu, and a copy of gelu.cu whose loop bound is off by one as a heap buffer
overflow naming gelu.cu.

Not run here: grad_norm_squares reads a table of device pointers, which the driver cannot
rewrite to its own allocations (it runs in tests/test_cuda_kernels.py, in process).
"""
import shutil

import numpy as np
import pytest

from cuda_emu import SanitizerError, build, prebuild
from tensorlite import functional as F
from tensorlite import optim
from tensorlite.kernels import cuda
from test_cuda_kernels import (causal_softmax, close, cross_entropy, embedding, gelu, layernorm,
                               planted, randn)

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is needed to build the CUDA emulation")

ALL = "\n".join(cuda.source(f) for f in cuda.SOURCES)
F32 = cuda.options(np.float32)
NO_SYNC = planted("layernorm.cu", "    __syncthreads();                               // every warp's",
                  "    // every warp's")
OFF_BY_ONE = planted("gelu.cu", "i < (n); i +=", "i <= (n); i +=")


class AllFiles(dict):
    """The launch functions of test_cuda_kernels look modules up by (file, dtype): one program has all."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def __getitem__(self, key):
        return self.module


@pytest.fixture(scope="module")
def programs():
    prebuild([(ALL, F32, "thread"), (ALL, F32, "address"), (NO_SYNC, F32, "thread"), (OFF_BY_ONE, F32, "address")])
    return {s: AllFiles(build(ALL, F32, sanitizer=s)) for s in ("thread", "address")}


def run_every_kernel(mods):
    """Every kernel but grad_norm_squares, on small ragged shapes, in one run of the program;
    then the results against the references."""
    d = np.float32
    rng = np.random.default_rng(0)
    x1, gy1 = randn(rng, d, 300, scale=3), randn(rng, d, 300)
    s2, gs2 = randn(rng, d, 2, 9, 9), randn(rng, d, 2, 9, 9)
    x3, gy3, w3, b3 = randn(rng, d, 20, 40), randn(rng, d, 20, 40), randn(rng, d, 40), randn(rng, d, 40)
    logits, t = randn(rng, d, 6, 37), rng.integers(0, 37, 6)
    wte, ids, gy5 = randn(rng, d, 7, 2), rng.integers(0, 7, 1100), randn(rng, d, 1100, 2)
    n = 300
    xd, yd, gd = randn(rng, d, n), np.empty(n, d), np.empty(n, d)
    p, g, m, v = randn(rng, d, n), randn(rng, d, n), randn(rng, d, n), np.abs(randn(rng, d, n))
    adamw_want = [a.copy() for a in (p, g, m, v)]
    optim.adamw_update(*adamw_want, step=2, lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1)

    with mods.module.batch():
        gelu_out = gelu(mods, x1, gy1, 2)
        softmax_out = causal_softmax(mods, s2, gs2, 0.5)
        ln_out = layernorm(mods, x3, w3, b3, gy3, warps=4, G=3)
        ce_out = cross_entropy(mods, logits, t, d(1.5), mean_threads=256)   # 1024-thread blocks cost
        emb_out = embedding(mods, wte, ids, gy5, offset_threads=96)          # 2 s of TSan thread setup
        args = (np.uint64(99), d(0.2), d(1.25), np.int64(n))
        mods.module.get_function("dropout_forward")((2,), (256,), (yd, xd, *args))
        mods.module.get_function("dropout_backward")((2,), (256,), (gd, xd, *args))
        mods.module.get_function("adamw_update")(
            (2,), (256,), (p, m, v, g, np.int64(n), d(1 - 1e-3), d(0.9), d(1 - 0.9), d(0.99), d(1 - 0.99),
                           d(np.sqrt(1 - 0.99 ** 2)), d(1e-8), d(1e-2 / (1 - 0.9 ** 2))))

    ref = F.GELU()
    close(gelu_out[0], ref.forward(x1), d)
    close(gelu_out[1], ref.backward(gy1), d)
    ref = F.CausalSoftmax()
    close(softmax_out[0], ref.forward(s2, scale=0.5), d)
    close(softmax_out[1], ref.backward(gs2), d)
    ref = F.LayerNorm()
    close(ln_out[0], ref.forward(x3, w3, b3), d)
    for got, want in zip((ln_out[3], ln_out[4], ln_out[5]), ref.backward(gy3)):
        close(got, want, d)
    ref = F.CrossEntropy()
    close(ce_out[0], ref.forward(logits, t), d)
    close(ce_out[1], ref.backward(np.asarray(d(1.5))), d)
    assert ce_out[3] == 0
    np.testing.assert_array_equal(emb_out[0], wte[ids])
    want = np.zeros_like(wte)
    np.add.at(want, ids, gy5)
    np.testing.assert_array_equal(emb_out[1], want)
    keep = yd != 0
    np.testing.assert_array_equal(yd, xd * keep * d(1.25))
    np.testing.assert_array_equal(gd, yd)
    close(p, adamw_want[0], d)
    close(m, adamw_want[2], d)


@pytest.mark.parametrize("sanitizer", ["thread", "address"])
def test_every_kernel_is_clean_under_the_sanitizer(programs, sanitizer):
    run_every_kernel(programs[sanitizer])


def test_threadsanitizer_names_a_missing_syncthreads():
    mods = AllFiles(build(NO_SYNC, F32, sanitizer="thread"))
    rng = np.random.default_rng(0)
    x, gy, w = randn(rng, np.float32, 32, 40), randn(rng, np.float32, 32, 40), randn(rng, np.float32, 40)
    with pytest.raises(SanitizerError, match="ThreadSanitizer: data race") as e, mods.module.batch():
        layernorm(mods, x, w, None, gy, warps=4, G=2)
    assert "layernorm.cu" in str(e.value)


def test_addresssanitizer_names_an_off_by_one_bound():
    mods = AllFiles(build(OFF_BY_ONE, F32, sanitizer="address"))
    x = np.ones(300, np.float32)
    with pytest.raises(SanitizerError, match="heap-buffer-overflow") as e, mods.module.batch():
        gelu(mods, x, x, 2)
    assert "gelu.cu" in str(e.value)
