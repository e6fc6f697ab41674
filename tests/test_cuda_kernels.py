"""The CUDA C kernels of tensorlite/kernels/*.cu, run on the CPU through the CUDA emulation
(tests/cuda_emu), against the reference ops of tensorlite.functional and tensorlite.optim.

Each kernel is launched directly, with the grids and blocks the launchers use and others
(ragged sizes: rows of C or T not a multiple of 32, element counts not a multiple of the block,
grid-stride loops that wrap), forward and backward with a random upstream gradient, in float32
and float64. The sources are compiled exactly as kernels/cuda.py hands them to CuPy's
RawModule (same text, same options), so the CuPy stand-in reuses these builds.

Determinism: the kernels that say they are deterministic give the same bits twice, and with
their blocks run in reverse or shuffled order; the embedding's gradient equals np.add.at's
bit for bit (the same sums in the same order).
"""
import contextlib
import shutil

import numpy as np
import pytest

import cuda_emu
from cuda_emu import build, prebuild
from tensorlite import backend, optim
from tensorlite import functional as F
from tensorlite.kernels import cuda

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is needed to build the CUDA emulation")

DTYPES = [np.float32, np.float64]
# The kernels compute each reference formula in another order (lane-strided sums, butterflies),
# so they differ by rounding: 1e-5 in float32 (84 eps; GELU's backward at x ~ -4 cancels terms
# of ~1e-4 from an s = (1 + tanh u) / 2 known to eps, an absolute error ~2e-6), 1e-12 in float64.
TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-13)}
dtype_ids = pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])


@pytest.fixture(scope="module")
def mods():
    """Every source, compiled for both element types, as the launchers compile them."""
    prebuild([(cuda.source(f), cuda.options(d)) for f in cuda.SOURCES for d in DTYPES])
    return {(f, np.dtype(d)): build(cuda.source(f), cuda.options(d)) for f in cuda.SOURCES for d in DTYPES}


def kern(mods, filename, name, dtype):
    return mods[(filename, np.dtype(dtype))].get_function(name)


def randn(rng, dtype, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def close(got, want, dtype, what=""):
    np.testing.assert_allclose(got, want, **TOL[dtype], err_msg=what)


@contextlib.contextmanager
def block_order(order, seed=0):
    previous = cuda_emu.set_block_order(order, seed)
    try:
        yield
    finally:
        cuda_emu.set_block_order(*previous)


def assert_same_bits_in_any_block_order(run):
    """run() -> arrays; the same bits again, and with the blocks reversed or shuffled."""
    first = [a.copy() for a in run()]
    for order, seed in [("forward", 0), ("reverse", 0), ("shuffle", 1), ("shuffle", 2)]:
        with block_order(order, seed):
            again = run()
        for a, b in zip(first, again):
            assert a.tobytes() == b.tobytes(), f"different bits with the blocks in {order} order"


# ========================================== GELU ==============================================

def gelu(mods, x, gy, blocks):
    n = np.int64(x.size)
    y, gx = np.empty_like(x), np.empty_like(x)
    kern(mods, "gelu.cu", "gelu_forward", x.dtype)((blocks,), (256,), (y, x, n))
    kern(mods, "gelu.cu", "gelu_backward", x.dtype)((blocks,), (256,), (gx, x, gy, n))
    return y, gx


@dtype_ids
@pytest.mark.parametrize("n,blocks", [(1, 1), (517, 1), (5000, 3), (1000, 8)])
def test_gelu_matches_the_reference(mods, dtype, n, blocks):
    rng = np.random.default_rng(n)
    x, gy = randn(rng, dtype, n, scale=3), randn(rng, dtype, n)
    y, gx = gelu(mods, x, gy, blocks)
    ref = F.GELU()
    close(y, ref.forward(x), dtype, "forward")
    close(gx, ref.backward(gy), dtype, "backward")


# ===================================== causal softmax =========================================

def causal_softmax(mods, x, gy, scale, rows_per_block=8):
    T = x.shape[-1]
    rows = x.size // T
    y, gx = np.empty_like(x), np.empty_like(x)
    grid, block = (-(-rows // rows_per_block),), (32 * rows_per_block,)
    s = x.dtype.type(scale)
    kern(mods, "softmax.cu", "causal_softmax_forward", x.dtype)(grid, block, (y, x, s, np.int64(rows), np.int32(T)))
    kern(mods, "softmax.cu", "causal_softmax_backward", x.dtype)(grid, block, (gx, y, gy, s, np.int64(rows), np.int32(T)))
    return y, gx


@dtype_ids
@pytest.mark.parametrize("shape,scale", [((2, 3, 37, 37), 0.3), ((3, 64, 64), 1.0), ((1, 1), 2.0), ((4, 5, 5), 0.125)])
def test_causal_softmax_matches_the_reference(mods, dtype, shape, scale):
    rng = np.random.default_rng(shape[-1])
    x, gy = randn(rng, dtype, *shape, scale=3), randn(rng, dtype, *shape)
    y, gx = causal_softmax(mods, x, gy, scale)
    ref = F.CausalSoftmax()
    close(y, ref.forward(x, scale=scale), dtype, "forward")
    close(gx, ref.backward(gy), dtype, "backward")
    assert (np.triu(y.reshape(-1, *shape[-2:]), 1) == 0).all() and (np.triu(gx.reshape(-1, *shape[-2:]), 1) == 0).all()


@dtype_ids
def test_causal_softmax_rows_do_not_depend_on_the_block_size(mods, dtype):
    rng = np.random.default_rng(1)
    x, gy = randn(rng, dtype, 2, 37, 37), randn(rng, dtype, 2, 37, 37)
    a, b = causal_softmax(mods, x, gy, 0.5, rows_per_block=8), causal_softmax(mods, x, gy, 0.5, rows_per_block=1)
    assert all(u.tobytes() == v.tobytes() for u, v in zip(a, b))


def test_causal_softmax_is_stable_for_large_scores(mods):
    x = np.array([[[1e4, -1e4], [-1e4, 1e4]]], np.float32)
    y, _ = causal_softmax(mods, x, np.ones_like(x), 1.0)
    np.testing.assert_array_equal(y, [[[1, 0], [0, 1]]])


# ======================================= layer norm ===========================================

def layernorm(mods, x, w, b, gy, eps=1e-5, warps=None, G=None):
    """The launchers' sequence: forward (one warp per row), backward (G blocks of `warps`
    warps), the partial sums' reduce. Returns y, mean, rstd, dx, dw, db."""
    N, C = x.shape
    dt = x.dtype
    y, mean, rstd = np.empty_like(x), np.empty(N, dt), np.empty(N, dt)
    kern(mods, "layernorm.cu", "layernorm_forward", dt)(
        (-(-N // 8),), (256,), (y, mean, rstd, x, w, b, np.int64(N), np.int32(C), dt.type(eps)))
    warps = warps or cuda._ln_warps(C, dt.itemsize)
    G = G or min(-(-N // warps), cuda.LN_MAX_BLOCKS)
    dx, partial = np.empty_like(x), np.empty((G, 2, C), dt)
    kern(mods, "layernorm.cu", "layernorm_backward", dt)(
        (G,), (32 * warps,), (dx, partial, gy, x, w, mean, rstd, np.int64(N), np.int32(C)),
        shared_mem=warps * 2 * C * dt.itemsize)
    dw, db = np.empty(C, dt), np.empty(C, dt)
    kern(mods, "layernorm.cu", "layernorm_backward_reduce", dt)(
        (-(-2 * C // 256),), (256,), (dw, db, partial, np.int32(G), np.int32(C)))
    return y, mean, rstd, dx, dw, db


@dtype_ids
@pytest.mark.parametrize("N,C", [(37, 45), (8, 16), (5, 96), (1, 1), (70, 33)])
@pytest.mark.parametrize("params", ["weight-bias", "weight", "none"])
def test_layernorm_matches_the_reference(mods, dtype, N, C, params):
    rng = np.random.default_rng(N * C)
    x, gy = randn(rng, dtype, N, C, scale=2) + 1, randn(rng, dtype, N, C)
    w = randn(rng, dtype, C) if params != "none" else None
    b = randn(rng, dtype, C) if params == "weight-bias" else None
    y, mean, rstd, dx, dw, db = layernorm(mods, x, w, b, gy)
    ref = F.LayerNorm()
    close(y, ref.forward(x, *[p for p in (w, b) if p is not None]), dtype, "forward")
    want = ref.backward(gy)
    close(dx, want[0], dtype, "dx")
    close(mean, x.mean(-1), dtype, "mean")
    close(rstd, 1 / np.sqrt(x.var(-1) + 1e-5), dtype, "rstd")
    if w is not None:
        close(dw, want[1], dtype, "dw")
    close(db, gy.sum(0), dtype, "db")                     # computed whether or not there is a bias


@dtype_ids
@pytest.mark.parametrize("warps,G", [(1, 1), (8, 3), (3, 5), (2, 40)])
def test_layernorm_backward_any_grid_gives_the_reference(mods, dtype, warps, G):
    """The partial-sum layout (blocks, warps per block, rows per warp) changes only the order of
    dw's and db's sums, and dx not at all."""
    rng = np.random.default_rng(warps * G)
    x, gy, w, b = randn(rng, dtype, 70, 45), randn(rng, dtype, 70, 45), randn(rng, dtype, 45), randn(rng, dtype, 45)
    base = layernorm(mods, x, w, b, gy)
    other = layernorm(mods, x, w, b, gy, warps=warps, G=G)
    assert base[3].tobytes() == other[3].tobytes()
    close(other[4], base[4], dtype, "dw")
    close(other[5], base[5], dtype, "db")


def test_layernorm_eps_reaches_the_kernel(mods):
    x = np.random.default_rng(0).standard_normal((4, 16)) * 1e-3
    y = layernorm(mods, x, None, None, np.zeros_like(x), eps=0.01)[0]
    np.testing.assert_allclose(y, F.LayerNorm().forward(x, eps=0.01), rtol=1e-12)


# ===================================== cross-entropy ==========================================

def cross_entropy(mods, x, t, gy, block=None, mean_threads=1024):
    N, V = x.shape
    dt = x.dtype
    losses, stats, error = np.empty(N, dt), np.empty((N, 2), dt), np.full((), -7, np.int32)
    kern(mods, "crossentropy.cu", "crossentropy_forward", dt)(
        (N,), (block or cuda._ce_block(V),), (losses, stats, x, t, np.int64(N), np.int32(V)))
    loss = np.empty((), dt)
    kern(mods, "crossentropy.cu", "crossentropy_mean", dt)(
        (1,), (mean_threads,), (loss, error, losses, t, np.int64(N), np.int32(V)))
    dx = np.empty_like(x)
    kern(mods, "crossentropy.cu", "crossentropy_backward", dt)(
        (3,), (256,), (dx, x, stats, t, np.asarray(gy, dt).reshape(1), np.int64(N), np.int32(V)))
    return loss, dx, losses, error


@dtype_ids
@pytest.mark.parametrize("N,V,block", [(15, 11, None), (7, 1000, None), (7, 1000, 32), (1, 65, None), (40, 3, 64)])
def test_cross_entropy_matches_the_reference(mods, dtype, N, V, block):
    rng = np.random.default_rng(N * V)
    x, t = randn(rng, dtype, N, V, scale=3), rng.integers(0, V, N)
    gy = dtype(rng.standard_normal())
    loss, dx, losses, error = cross_entropy(mods, x, t, gy, block)
    ref = F.CrossEntropy()
    close(loss, ref.forward(x, t), dtype, "loss")
    close(dx, ref.backward(np.asarray(gy)), dtype, "dlogits")
    assert error == 0


def test_cross_entropy_is_stable_for_large_logits(mods):
    x = np.array([[1e4, -1e4, 0], [0, 0, 1e4]], np.float32)
    loss, dx, _, _ = cross_entropy(mods, x, np.array([0, 1]), np.float32(1))
    np.testing.assert_allclose(loss, 5e3, rtol=1e-6)
    assert np.isfinite(dx).all()


def test_cross_entropy_flags_targets_out_of_range(mods):
    rng = np.random.default_rng(0)
    x = randn(rng, np.float64, 4, 5)
    for bad in (-1, 5, 1 << 40):
        t = np.array([0, bad, 4, 2])
        _, _, losses, error = cross_entropy(mods, x, t, 1.0)
        assert error == 1
        assert np.isnan(losses[1]) and np.isfinite(losses[[0, 2, 3]]).all()


# ======================================== embedding ===========================================

def embedding(mods, w, ids, gy, offset_threads=1024):
    V, C = w.shape
    N = ids.size
    dt = w.dtype
    y, error = np.empty((N, C), dt), np.full((), -7, np.int32)      # the kernel writes the flag
    kern(mods, "embedding.cu", "embedding_forward", dt)(
        (cuda.blocks_for(N * C),), (256,), (y, error, w, ids, np.int64(N), np.int32(C), np.int32(V)))
    tiles = -(-N // cuda.EMB_TILE)
    counts, before = np.zeros((tiles, V), np.int32), np.empty((tiles, V), np.int32)
    start, order = np.empty(V + 1, np.int32), np.empty(N, np.int32)
    k = lambda name: kern(mods, "embedding.cu", name, dt)
    k("embedding_backward_count")((tiles,), (256,), (counts, ids, np.int64(N), np.int32(V)))
    k("embedding_backward_offsets")((1,), (offset_threads,), (before, start, counts, np.int32(tiles), np.int32(V)),
                                    shared_mem=offset_threads * 4)
    k("embedding_backward_fill")((tiles,), (256,), (order, ids, before, start, np.int64(N), np.int32(V)))
    gw = np.full((V, C), np.nan, dt)
    threads = min(256, 32 * -(-C // 32))
    k("embedding_backward_sum")((V, -(-C // threads)), (threads,), (gw, gy, order, start, np.int32(V), np.int32(C)))
    return y, gw, error, order, start


@dtype_ids
@pytest.mark.parametrize("N,V,C", [(2500, 13, 40), (300, 3000, 7), (1, 1, 1), (1024, 5, 300), (2049, 2, 3)])
def test_embedding_matches_the_reference_bit_for_bit(mods, dtype, N, V, C):
    """dW sums each id's rows of gy in increasing position order, as np.add.at does."""
    rng = np.random.default_rng(N + V)
    w, ids, gy = randn(rng, dtype, V, C), rng.integers(0, V, N), randn(rng, dtype, N, C)
    y, gw, error, order, start = embedding(mods, w, ids, gy)
    np.testing.assert_array_equal(y, w[ids])
    want = np.zeros_like(w)
    np.add.at(want, ids, gy)
    np.testing.assert_array_equal(gw, want)
    np.testing.assert_array_equal(order, np.argsort(ids, kind="stable"))   # a stable counting sort
    np.testing.assert_array_equal(start, np.concatenate([[0], np.cumsum(np.bincount(ids, minlength=V))]))
    assert error == 0


def test_embedding_flags_ids_out_of_range_and_skips_them(mods):
    rng = np.random.default_rng(0)
    w, gy = randn(rng, np.float32, 6, 4), randn(rng, np.float32, 5, 4)
    ids = np.array([0, 6, 2, -1, 2])
    y, gw, error, _, _ = embedding(mods, w, ids, gy)
    assert error == 1
    assert np.isnan(y[[1, 3]]).all()
    np.testing.assert_array_equal(y[[0, 2, 4]], w[[0, 2, 2]])
    want = np.zeros_like(w)
    np.add.at(want, ids[[0, 2, 4]], gy[[0, 2, 4]])
    np.testing.assert_array_equal(gw, want)


# ========================================= dropout ============================================

@dtype_ids
@pytest.mark.parametrize("n,blocks,p", [(1000, 2, 0.3), (77, 1, 0.9), (5000, 1, 0.1)])
def test_dropout_draws_backends_numbers_and_backward_draws_them_again(mods, dtype, n, blocks, p):
    rng = np.random.default_rng(n)
    x, gy = randn(rng, dtype, n), randn(rng, dtype, n)
    key = backend.mix64(12345 + n)
    scale = dtype(1 / (1 - p))
    y, gx = np.empty_like(x), np.empty_like(x)
    args = (np.uint64(key), dtype(p), scale, np.int64(n))
    kern(mods, "dropout.cu", "dropout_forward", dtype)((blocks,), (256,), (y, x, *args))
    kern(mods, "dropout.cu", "dropout_backward", dtype)((blocks,), (256,), (gx, gy, *args))
    keep = backend.counter_uniform(np, n, key, dtype) >= p            # what the reference op draws
    want = x * keep
    want *= scale
    np.testing.assert_array_equal(y, want)
    assert y.tobytes() == want.tobytes()                              # signs of zeros too
    gwant = gy * keep
    gwant *= scale
    assert gx.tobytes() == gwant.tobytes()
    assert abs((~keep).mean() - p) < 4 * np.sqrt(p * (1 - p) / n) + 1 / n


# ================================= AdamW and the gradient norm ================================

@dtype_ids
@pytest.mark.parametrize("n,step,weight_decay", [(1000, 1, 0.1), (70001, 7, 0.0), (1, 3, 0.01)])
def test_adamw_matches_the_reference(mods, dtype, n, step, weight_decay):
    rng = np.random.default_rng(n)
    param, grad, m = randn(rng, dtype, n), randn(rng, dtype, n), randn(rng, dtype, n, scale=0.1)
    v = np.abs(randn(rng, dtype, n, scale=0.1))
    hp = dict(lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=weight_decay)
    want = [a.copy() for a in (param, grad, m, v)]
    optim.adamw_update(*want, step=step, **hp)
    f = dtype
    kern(mods, "adamw.cu", "adamw_update", dtype)(
        (cuda.blocks_for(n),), (256,),
        (param, m, v, grad, np.int64(n), f(1 - hp["lr"] * weight_decay), f(0.9), f(1 - 0.9), f(0.99),
         f(1 - 0.99), f(np.sqrt(1 - 0.99 ** step)), f(1e-8), f(hp["lr"] / (1 - 0.9 ** step))))
    for got, w, what in zip((param, m, v), (want[0], want[2], want[3]), ("param", "exp_avg", "exp_avg_sq")):
        close(got, w, dtype, what)


def grad_norm(mods, grads, G=cuda.NORM_BLOCKS):
    dt = grads[0].dtype
    table = np.array([g.ctypes.data for g in grads] + [g.size for g in grads], np.uint64)
    ptrs, lengths = table[:len(grads)], table[len(grads):].view(np.int64)
    partial = np.empty((len(grads), G), dt)
    kern(mods, "adamw.cu", "grad_norm_squares", dt)((G, len(grads)), (256,), (partial, ptrs, lengths, np.int32(len(grads))))
    norm = np.empty((), np.float64)
    kern(mods, "adamw.cu", "grad_norm_finish", dt)((1,), (32,), (norm, partial, np.int32(G), np.int32(len(grads))))
    return norm


@dtype_ids
@pytest.mark.parametrize("G", [cuda.NORM_BLOCKS, 1, 45])
def test_grad_norm_matches_the_reference(mods, dtype, G):
    rng = np.random.default_rng(G)
    grads = [randn(rng, dtype, 3, 4), randn(rng, dtype, 5), np.empty(0, dtype), randn(rng, dtype, 70001), randn(rng, dtype, 1)]
    np.testing.assert_allclose(grad_norm(mods, grads, G), optim.grad_norm(grads), **TOL[dtype])


# ============================== determinism: any block order ==================================

def determinism_cases(mods, dtype):
    rng = np.random.default_rng(7)
    x, gy, w, b = randn(rng, dtype, 70, 45), randn(rng, dtype, 70, 45), randn(rng, dtype, 45), randn(rng, dtype, 45)
    logits, t = randn(rng, dtype, 33, 70, scale=3), rng.integers(0, 70, 33)
    wte, ids, gyy = randn(rng, dtype, 13, 40), rng.integers(0, 13, 2500), randn(rng, dtype, 2500, 40)
    scores, gs = randn(rng, dtype, 3, 37, 37), randn(rng, dtype, 3, 37, 37)
    grads = [randn(rng, dtype, 3000), randn(rng, dtype, 77)]
    xs = randn(rng, dtype, 5000)
    return {
        "layernorm": lambda: layernorm(mods, x, w, b, gy, G=4),
        "cross_entropy": lambda: cross_entropy(mods, logits, t, dtype(0.7))[:2],
        "embedding": lambda: embedding(mods, wte, ids, gyy)[:2],
        "causal_softmax": lambda: causal_softmax(mods, scores, gs, 0.3),
        "grad_norm": lambda: [grad_norm(mods, grads)],
        "gelu": lambda: gelu(mods, xs, xs, 3),
    }


@dtype_ids
@pytest.mark.parametrize("case", ["layernorm", "cross_entropy", "embedding", "causal_softmax", "grad_norm", "gelu"])
def test_same_bits_twice_and_in_any_block_order(mods, dtype, case):
    assert_same_bits_in_any_block_order(determinism_cases(mods, dtype)[case])


def test_the_block_order_check_catches_an_order_dependent_kernel():
    """A kernel whose blocks accumulate into one float (with atomics, in launch order) gives
    different bits when its blocks run in another order: the check above would fail."""
    m = build(r'''
    extern "C" __global__ void float_atomic_sum(float* out, const float* x, int n) {
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i < n) atomicAdd(out, x[i]);
    }''', ("-DfloatX=float",))
    x = np.random.default_rng(0).standard_normal(4096).astype(np.float32) * 1e3

    def run():
        out = np.zeros(1, np.float32)
        m.get_function("float_atomic_sum")((32,), (128,), (out, x, np.int32(x.size)))
        return [out]
    with pytest.raises(AssertionError, match="different bits"):
        assert_same_bits_in_any_block_order(run)


# ============================ the gate catches wrong kernels ==================================

def planted(filename, old, new, count=1):
    """cuda.source(filename) with `old` replaced by `new` (which must occur `count` times)."""
    text = cuda.source(filename)
    assert text.count(old) == count, f"{old!r} occurs {text.count(old)} times in {filename}"
    return text.replace(old, new)


def test_a_missing_syncthreads_gives_wrong_layernorm_gradients():
    """layernorm_backward without the __syncthreads before its cross-warp sum: the warps that
    finish first add rows that other warps are still writing. The emulation interleaves warps
    at every shuffle, so the result check sees it (ThreadSanitizer names the race as well:
    tests/test_cuda_kernel_sanitizers.py)."""
    src = planted("layernorm.cu", "    __syncthreads();                               // every warp's",
                  "    // every warp's")
    m = {("layernorm.cu", np.dtype(np.float64)): build(src, cuda.options(np.float64))}
    rng = np.random.default_rng(0)
    x, gy, w = randn(rng, np.float64, 64, 40), randn(rng, np.float64, 64, 40), randn(rng, np.float64, 40)
    _, _, _, dx, dw, db = layernorm(m, x, w, None, gy, warps=8, G=2)
    ref = F.LayerNorm()
    ref.forward(x, w)
    want = ref.backward(gy)
    close(dx, want[0], np.float64)                       # dx does not need the barrier
    assert not np.allclose(dw, want[1], **TOL[np.float64])


@pytest.mark.parametrize("bug,old,new", [
    ("gelu without the (1 - s) factor", "dx[i] = (d * (s - s * s) + s) * dy[i];", "dx[i] = (d * s + s) * dy[i];"),
    ("softmax normalizer one column short", "for (int j = lane; j <= t; j += WARP_SIZE) sum +=",
     "for (int j = lane; j < t; j += WARP_SIZE) sum +="),
])
def test_the_result_check_catches_a_wrong_formula(bug, old, new):
    filename = "gelu.cu" if bug.startswith("gelu") else "softmax.cu"
    m = {(filename, np.dtype(np.float64)): build(planted(filename, old, new), cuda.options(np.float64))}
    rng = np.random.default_rng(0)
    if filename == "gelu.cu":
        x, gy = randn(rng, np.float64, 300, scale=3), randn(rng, np.float64, 300)
        ref = F.GELU()
        ref.forward(x)
        got, want = gelu(m, x, gy, 2)[1], ref.backward(gy)
    else:
        x, gy = randn(rng, np.float64, 2, 9, 9, scale=3), randn(rng, np.float64, 2, 9, 9)
        got, want = causal_softmax(m, x, gy, 1.0)[0], F.CausalSoftmax().forward(x)
    with pytest.raises(AssertionError):
        close(got, want, np.float64)


def test_a_shared_flag_left_unset_raises_a_false_error():
    """crossentropy_mean without `any_bad = 0`: on a GPU its shared flag starts as whatever the
    last block left there. The emulation fills static shared memory with 0xff at every block
    start, so valid targets come back flagged (test_cross_entropy_matches_the_reference checks
    that the real kernel reports no error)."""
    src = planted("crossentropy.cu", "    if (threadIdx.x == 0) any_bad = 0;\n", "\n")
    m = {("crossentropy.cu", np.dtype(np.float64)): build(src, cuda.options(np.float64))}
    rng = np.random.default_rng(0)
    x = randn(rng, np.float64, 6, 5)
    _, _, _, error = cross_entropy(m, x, rng.integers(0, 5, 6), 1.0)
    assert error != 0
