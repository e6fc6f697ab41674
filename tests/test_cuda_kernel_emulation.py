"""The CUDA emulation itself (tests/cuda_emu): each emulated feature against a NumPy model,
and each error it must report. The kernels of tensorlite are tested through it elsewhere."""
import shutil

import numpy as np
import pytest

from cuda_emu import EmulationError, build

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is needed to build the CUDA emulation")

SOURCE = r"""
// Each lane publishes its id * 10 + 1; shuffles of every kind read another lane's.
extern "C" __global__ void shuffles(int* out, int kind, int arg, int width) {
    int lane = threadIdx.x % 32;
    int v = (int)threadIdx.x * 10 + 1;
    int r;
    if (kind == 0) r = __shfl_sync(0xffffffffu, v, arg, width);
    else if (kind == 1) r = __shfl_xor_sync(0xffffffffu, v, arg, width);
    else if (kind == 2) r = __shfl_down_sync(0xffffffffu, v, (unsigned)arg, width);
    else r = __shfl_up_sync(0xffffffffu, v, (unsigned)arg, width);
    out[threadIdx.x] = r;
    (void)lane;
}

extern "C" __global__ void shuffle_double(double* out, const double* x) {
    double v = x[threadIdx.x];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    out[threadIdx.x] = v;
}

extern "C" __global__ void votes(unsigned* out, const int* pred) {
    int p = pred[threadIdx.x];
    unsigned b = __ballot_sync(0xffffffffu, p);
    int any = __any_sync(0xffffffffu, p);
    int all = __all_sync(0xffffffffu, p);
    out[3 * threadIdx.x] = b;
    out[3 * threadIdx.x + 1] = (unsigned)any;
    out[3 * threadIdx.x + 2] = (unsigned)all;
}

// Sum of x over a grid-stride loop: warp shuffles, then one value per warp in shared memory.
extern "C" __global__ void block_sum(float* out, const float* x, int n) {
    __shared__ float warp_sums[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    float v = 0.f;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) v += x[i];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < (int)(blockDim.x / 32) ? warp_sums[lane] : 0.f;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) out[blockIdx.x] = v;
    }
}

// 2-D blocks and grids: every thread writes its global (x, y) coordinates.
extern "C" __global__ void coords(int* out, int W) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    out[2 * (y * W + x)] = x;
    out[2 * (y * W + x) + 1] = y;
}

extern "C" __global__ void reverse_dynamic(double* y, const double* x, int n) {
    extern __shared__ double buf[];
    int t = threadIdx.x;
    if (t < n) buf[t] = x[t];
    __syncthreads();
    if (t < n) y[t] = buf[n - 1 - t];
}

extern "C" __global__ void read_dynamic(float* y) {
    extern __shared__ float fresh[];
    y[threadIdx.x] = fresh[threadIdx.x];   // never written: the emulation fills it with NaN
}

// Static shared memory, one variable and one array: each block reads them before writing.
extern "C" __global__ void read_static_shared(int* flags, float* y) {
    __shared__ int flag;
    __shared__ __align__(16) float tile[2][4];
    if (threadIdx.x == 0) flags[blockIdx.x] = flag;
    y[blockIdx.x * 8 + threadIdx.x] = tile[threadIdx.x / 4][threadIdx.x % 4];
    __syncthreads();
    if (threadIdx.x == 0) flag = 7;
    tile[threadIdx.x / 4][threadIdx.x % 4] = 1.f;
}
extern "C" __global__ void histogram(int* counts, const long long* ids, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) atomicAdd(&counts[ids[i]], 1);
}

// Early exits: the exited threads count as arrived at the barrier, as on the GPU.
extern "C" __global__ void early_exit(int* y) {
    __shared__ int s[64];
    if (threadIdx.x >= 40) return;
    s[threadIdx.x] = (int)threadIdx.x;
    __syncthreads();
    y[threadIdx.x] = s[39 - threadIdx.x];
}

// Every block writes the same element: the result is whichever block ran last.
extern "C" __global__ void last_block_wins(int* y) {
    if (threadIdx.x == 0) y[0] = (int)blockIdx.x;
}

extern "C" __global__ void divergent_sync(float* y) {
    if (threadIdx.x < 16) __syncthreads();
    else __syncwarp();
    y[threadIdx.x] = 1.f;
}

extern "C" __global__ void read_exited_lane(int* y) {
    if (threadIdx.x == 31) return;
    y[threadIdx.x] = __shfl_down_sync(0xffffffffu, (int)threadIdx.x, 1);
}

extern "C" __global__ void trap(int* y) {
    if (threadIdx.x == 3) __trap();
    y[threadIdx.x] = 1;
}

extern "C" __global__ void scale(floatX* y, const floatX* x, floatX a, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i];
}
"""


@pytest.fixture(scope="module", params=["fibers", "threads"])
def mod(request):
    return build(SOURCE, ("-DfloatX=float",), threads=request.param == "threads")


def shuffle_model(kind, arg, width, n=32):
    """CUDA's __shfl_*_sync on lanes 0..31 holding lane * 10 + 1."""
    out = []
    for lane in range(n):
        base = lane & ~(width - 1)
        if kind == 0:
            src = base + (arg & (width - 1))
        elif kind == 1:
            src = lane ^ arg
            src = lane if src >= base + width else src
        elif kind == 2:
            src = lane + arg
            src = lane if src >= base + width else src
        else:
            src = lane - arg
            src = lane if src < base else src
        out.append(src * 10 + 1)
    return np.array(out, np.int32)


@pytest.mark.parametrize("kind", [0, 1, 2, 3])
@pytest.mark.parametrize("arg,width", [(1, 32), (5, 32), (3, 8), (16, 32), (2, 4)])
def test_shuffles_match_cuda_semantics(mod, kind, arg, width):
    out = np.zeros(64, np.int32)
    mod.get_function("shuffles")((1,), (64,), (out, np.int32(kind), np.int32(arg), np.int32(width)))
    want = np.concatenate([shuffle_model(kind, arg, width), shuffle_model(kind, arg, width) + 320])
    np.testing.assert_array_equal(out, want)


def test_double_shuffle_butterfly_gives_every_lane_the_same_bits(mod):
    x = np.random.default_rng(0).standard_normal(32)
    out = np.zeros(32)
    mod.get_function("shuffle_double")((1,), (32,), (out, x))
    assert len(set(out.tobytes()[i:i + 8] for i in range(0, 256, 8))) == 1
    np.testing.assert_allclose(out[0], x.sum(), rtol=1e-14)


def test_votes(mod):
    pred = (np.random.default_rng(1).random(64) < 0.5).astype(np.int32)
    pred[32:] = 1
    out = np.zeros(3 * 64, np.uint32)
    mod.get_function("votes")((1,), (64,), (out, pred))
    out = out.reshape(64, 3)
    ballot0 = sum(1 << i for i in range(32) if pred[i])
    assert (out[:32, 0] == ballot0).all() and (out[32:, 0] == 0xffffffff).all()
    assert (out[:32, 1] == 1).all() and (out[:32, 2] == int(pred[:32].all())).all()
    assert (out[32:, 2] == 1).all()


@pytest.mark.parametrize("n,grid,block", [(100_003, 7, 96), (1, 1, 32), (1000, 3, 512)])
def test_block_sum_with_shuffles_and_shared_memory(mod, n, grid, block):
    x = np.random.default_rng(n).random(n).astype(np.float32)
    out = np.zeros(grid, np.float32)
    mod.get_function("block_sum")((grid,), (block,), (out, x, np.int32(n)))
    np.testing.assert_allclose(out.sum(dtype=np.float64), x.sum(dtype=np.float64), rtol=1e-5)


def test_two_dimensional_grid_and_block(mod):
    W, H = 12, 10
    out = np.full(2 * W * H, -1, np.int32)
    mod.get_function("coords")((3, 5), (4, 2), (out, np.int32(W)))
    yy, xx = np.mgrid[0:H, 0:W]
    np.testing.assert_array_equal(out.reshape(H, W, 2)[..., 0], xx)
    np.testing.assert_array_equal(out.reshape(H, W, 2)[..., 1], yy)


def test_dynamic_shared_memory(mod):
    x, y = np.arange(40.0), np.zeros(40)
    mod.get_function("reverse_dynamic")((1,), (64,), (y, x, np.int32(40)), shared_mem=40 * 8)
    np.testing.assert_array_equal(y, x[::-1])


def test_uninitialised_dynamic_shared_memory_reads_nan(mod):
    y = np.zeros(32, np.float32)
    mod.get_function("read_dynamic")((1,), (32,), (y,), shared_mem=32 * 4)
    assert np.isnan(y).all()


def test_uninitialised_static_shared_memory_reads_nan_in_every_block(mod):
    # a block must not see what the block before it left there
    flags, y = np.zeros(3, np.int32), np.zeros(24, np.float32)
    mod.get_function("read_static_shared")((3,), (8,), (flags, y))
    np.testing.assert_array_equal(flags, [-1, -1, -1])
    assert np.isnan(y).all()


def test_a_shared_declaration_the_translator_cannot_take_is_refused():
    with pytest.raises(ValueError, match="__shared__ declaration"):
        build('extern "C" __global__ void k(int* y) { __shared__ int a = 3; y[0] = a; }')


def test_integer_atomics(mod):
    ids = np.random.default_rng(2).integers(0, 7, 1000)
    counts = np.zeros(7, np.int32)
    mod.get_function("histogram")((8,), (128,), (counts, ids, np.int32(1000)))
    np.testing.assert_array_equal(counts, np.bincount(ids, minlength=7))


def test_exited_threads_count_as_arrived(mod):
    y = np.full(64, -1, np.int32)
    mod.get_function("early_exit")((1,), (64,), (y,))
    np.testing.assert_array_equal(y[:40], np.arange(39, -1, -1))
    assert (y[40:] == -1).all()


def test_block_order_is_chosen_by_the_test(mod):
    y = np.zeros(1, np.int32)
    f = mod.get_function("last_block_wins")
    try:
        for order, last in [("forward", 9), ("reverse", 0)]:
            mod.set_block_order(order)
            f((10,), (32,), (y,))
            assert y[0] == last
        seen = set()
        for seed in range(5):
            mod.set_block_order("shuffle", seed)
            f((10,), (32,), (y,))
            seen.add(int(y[0]))
        assert len(seen) > 1
    finally:
        mod.set_block_order("forward")


def test_divergent_syncthreads_is_reported_as_a_deadlock(mod):
    with pytest.raises(EmulationError, match="deadlock"):
        mod.get_function("divergent_sync")((1,), (32,), (np.zeros(32, np.float32),))


def test_reading_an_exited_lane_is_reported(mod):
    with pytest.raises(EmulationError, match="did not take part"):
        mod.get_function("read_exited_lane")((1,), (32,), (np.zeros(32, np.int32),))


def test_trap_is_reported(mod):
    with pytest.raises(EmulationError, match="__trap"):
        mod.get_function("trap")((1,), (32,), (np.zeros(32, np.int32),))


def test_module_still_launches_after_an_error(mod):
    x = np.arange(5, dtype=np.float32)
    y = np.zeros_like(x)
    with pytest.raises(EmulationError):
        mod.get_function("trap")((1,), (32,), (np.zeros(32, np.int32),))
    mod.get_function("scale")((1,), (32,), (y, x, np.float32(2), np.int64(5)))
    np.testing.assert_array_equal(y, 2 * x)


def test_arguments_are_checked_against_the_kernel_parameters(mod):
    f = mod.get_function("scale")
    x = np.arange(5, dtype=np.float32)
    y = np.zeros_like(x)
    with pytest.raises(TypeError, match="4-byte parameter; got float64"):
        f((1,), (32,), (y, x, 2.0, 5))                        # Python float is float64, as in CuPy
    with pytest.raises(TypeError, match="is a pointer"):
        f((1,), (32,), (np.float32(1), x, np.float32(2), 5))
    with pytest.raises(TypeError, match="got an array"):
        f((1,), (32,), (y, x, x, 5))
    with pytest.raises(TypeError, match="takes 4 arguments"):
        f((1,), (32,), (y, x))
    with pytest.raises(TypeError, match="tuple"):
        f(1, (32,), (y, x, np.float32(2), 5))
    f((1,), (32,), (y, x, np.float32(2), 5))                  # a Python int is int64: long long
    np.testing.assert_array_equal(y, 2 * x)


def test_launch_limits(mod):
    f = mod.get_function("scale")
    args = (np.zeros(1, np.float32), np.zeros(1, np.float32), np.float32(1), 1)
    with pytest.raises(EmulationError, match="threads per block"):
        f((1,), (2048,), args)
    with pytest.raises(EmulationError, match="48 KiB"):
        f((1,), (32,), args, shared_mem=64 * 1024)


def test_float_and_double_builds_of_one_source():
    for floatX, dtype in [("float", np.float32), ("double", np.float64)]:
        m = build(SOURCE, (f"-DfloatX={floatX}", "-arch=sm_90", "--std=c++17"))
        x = np.arange(7, dtype=dtype) / 3
        y = np.zeros_like(x)
        m.get_function("scale")((1,), (32,), (y, x, dtype(3), 7))
        np.testing.assert_array_equal(y, dtype(3) * x)
