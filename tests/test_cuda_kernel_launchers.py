"""kernels/cuda.py's launchers, run on the NumPy-backed CuPy stand-in (tests/cupy_standin), whose
RawModule runs the .cu sources through the CUDA emulation: the glue between the ops and the
kernels (argument order and sizes, grids, dtypes, contiguity, the deferred id checks, the
dropout key) against the reference ops computed by NumPy on the CPU.

The stand-in checks every kernel argument's size against the kernel's parameter, so a wrong
argument type in a launcher fails here.
"""
import shutil

import numpy as np
import pytest

import cupy_standin
import tensorlite as tl
from cuda_emu import kernel_names
from tensorlite import backend, kernels, optim
from tensorlite import functional as F
from tensorlite.kernels import cuda

pytestmark = [
    pytest.mark.skipif(cupy_standin.real_cupy() is None, reason="the stand-in needs the cupy package (no GPU needed)"),
    pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is needed to build the CUDA emulation"),
]

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-13)}
dtype_ids = pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])


@pytest.fixture
def cp():
    with cupy_standin.installed() as module:
        yield module
        backend.flush_checks()


def randn(rng, dtype, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def run(op, arrays, kwargs, gy, to_device):
    """op's forward and backward on arrays moved by to_device: [y, grads...] as NumPy arrays."""
    arrays = [to_device(a) for a in arrays]
    kwargs = {k: to_device(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    fn = op()
    y = fn.forward(*arrays, **kwargs)
    grads = fn.backward(to_device(gy))
    grads = grads if isinstance(grads, tuple) else (grads,)
    return [backend.as_numpy(a) for a in (y, *grads) if a is not None]


CASES = {
    "gelu": (cuda.GELU, lambda r, d: ([randn(r, d, 3, 77, scale=3)], {})),
    "gelu-transposed": (cuda.GELU, lambda r, d: ([randn(r, d, 40, 9, scale=3).T], {})),
    "causal_softmax": (cuda.CausalSoftmax, lambda r, d: ([randn(r, d, 2, 3, 37, 37, scale=3)], {"scale": 0.3})),
    "causal_softmax-2d": (cuda.CausalSoftmax, lambda r, d: ([randn(r, d, 5, 5)], {})),
    "layernorm": (cuda.LayerNorm, lambda r, d: ([randn(r, d, 5, 7, 45) + 1, randn(r, d, 45), randn(r, d, 45)], {})),
    "layernorm-weight": (cuda.LayerNorm, lambda r, d: ([randn(r, d, 9, 33), randn(r, d, 33)], {"eps": 0.01})),
    "layernorm-plain": (cuda.LayerNorm, lambda r, d: ([randn(r, d, 5, 45)], {})),
    "cross_entropy": (cuda.CrossEntropy, lambda r, d: ([randn(r, d, 3, 5, 11, scale=2)], {"targets": r.integers(0, 11, (3, 5))})),
    "cross_entropy-wide": (cuda.CrossEntropy, lambda r, d: ([randn(r, d, 4, 1500, scale=2)], {"targets": r.integers(0, 1500, 4)})),
    "embedding": (cuda.Embedding, lambda r, d: ([randn(r, d, 13, 40)], {"ids": r.integers(0, 13, (4, 300))})),
    "embedding-int32": (cuda.Embedding, lambda r, d: ([randn(r, d, 5, 3)], {"ids": r.integers(0, 5, 7).astype(np.int32)})),
}


@dtype_ids
@pytest.mark.parametrize("case", list(CASES))
def test_each_cuda_kernel_equals_its_reference(cp, dtype, case):
    fast, make = CASES[case]
    reference = kernels.reference_of(fast)
    rng = np.random.default_rng(len(case))
    arrays, kwargs = make(rng, dtype)
    assert fast.supports(*[cp.asarray(a) for a in arrays],
                         **{k: cp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()})
    with tl.use_kernels("reference"):
        want_y = reference().forward(*arrays, **kwargs)
    gy = randn(rng, dtype, *np.shape(want_y))
    want = run(reference, arrays, kwargs, gy, lambda a: a)
    before = [a.copy() for a in arrays]
    got = run(fast, arrays, kwargs, gy, cp.asarray)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        np.testing.assert_allclose(g, w, **TOL[dtype])
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)


def kernel_launches(trace):
    """The RawKernel names launched, in order (the stand-in names a RawKernel launch by its kernel)."""
    names = {n for f in cuda.SOURCES for n in kernel_names(cuda.source(f))}
    return [name for kind, name in trace if kind == "launches" and name in names]


def test_the_ops_dispatch_to_the_kernels_in_fast_mode_only(cp):
    x = tl.tensor(np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32), device="cuda",
                  requires_grad=True)
    for mode, expected in [("fast", ["gelu_forward", "gelu_backward"]), ("reference", [])]:
        with tl.use_kernels(mode), cupy_standin.counting(trace=True) as counts:
            F.gelu(x).sum().backward()
            assert kernel_launches(counts.trace) == expected


def test_launches_per_op(cp):
    """What the module docstring promises: one launch each way for GELU, softmax and dropout,
    one forward and two backward for layer norm, ..., and no host synchronisation."""
    rng = np.random.default_rng(0)
    d = lambda *s: cp.asarray(randn(rng, np.float32, *s))
    cases = [
        (cuda.GELU, [d(4, 50)], {}, 1, 1),
        (cuda.CausalSoftmax, [d(2, 9, 9)], {"scale": 0.5}, 1, 1),
        (cuda.LayerNorm, [d(6, 40), d(40), d(40)], {}, 1, 2),
        (cuda.CrossEntropy, [d(6, 11)], {"targets": cp.asarray(rng.integers(0, 11, 6))}, 2, 1),
        (cuda.Embedding, [d(7, 5)], {"ids": cp.asarray(rng.integers(0, 7, 30))}, 1, 4),
        (cuda.Dropout, [d(50)], {"p": 0.1}, 1, 1),
    ]
    for fast, arrays, kwargs, n_forward, n_backward in cases:
        fn = fast()
        with cupy_standin.counting(trace=True) as counts:
            y = fn.forward(*arrays, **kwargs)
            forward = kernel_launches(counts.trace)
            assert counts.syncs == 0, f"{fast.__name__}.forward synchronised with the host"
        gy = cp.ones(y.shape, dtype=y.dtype)
        with cupy_standin.counting(trace=True) as counts:
            fn.backward(gy)
            backward = kernel_launches(counts.trace)
            assert counts.syncs == 0, f"{fast.__name__}.backward synchronised with the host"
        assert (len(forward), len(backward)) == (n_forward, n_backward), (fast.__name__, forward, backward)


@dtype_ids
def test_dropout_keeps_what_the_reference_keeps(cp, dtype):
    """Both draw backend's counter-based numbers for one key per call: the same mask, bit for bit,
    forward and backward, and the generator advances the same."""
    x = cp.asarray(randn(np.random.default_rng(0), dtype, 8, 129))
    gy = cp.asarray(randn(np.random.default_rng(1), dtype, 8, 129))
    results = []
    for op in (F.Dropout, cuda.Dropout):
        tl.manual_seed(5)
        fn = op()
        y = fn.forward(x, p=0.25)
        results.append((backend.as_numpy(y), backend.as_numpy(fn.backward(gy)), dict(backend.rng("cuda"))))
    (y0, g0, s0), (y1, g1, s1) = results
    assert y0.tobytes() == y1.tobytes() and g0.tobytes() == g1.tobytes() and s0 == s1
    assert 0.15 < (y1 == 0).mean() < 0.35


def test_dropout_applies_a_given_mask_as_the_reference_does(cp):
    x = cp.asarray(np.array([1, -2, 3, -4], np.float32))
    mask = cp.asarray(np.array([0, 2, 2, 0], np.float32))
    assert cuda.Dropout.supports(x, p=0.5, mask=mask)
    fn = cuda.Dropout()
    with cupy_standin.counting(trace=True) as counts:
        y, gx = fn.forward(x, p=0.5, mask=mask), fn.backward(cp.ones(4, dtype=np.float32))
        assert kernel_launches(counts.trace) == []              # no draw: the given mask
    assert backend.as_numpy(y).tobytes() == np.array([0.0, -4, 6, -0.0], np.float32).tobytes()
    np.testing.assert_array_equal(backend.as_numpy(gx), [0, 2, 2, 0])


@pytest.mark.parametrize("op,arrays,kwargs,message", [
    (F.embedding, lambda cp: (cp.asarray(np.array([[1, 5], [0, 2]])), tl.tensor(np.ones((5, 3), np.float32), device="cuda")),
     {}, "embedding: id 5 is out of range for a table of 5 rows (valid ids are 0..4)"),
    (F.cross_entropy, lambda cp: (tl.tensor(np.ones((2, 4), np.float32), device="cuda"), cp.asarray(np.array([3, -1]))),
     {}, "cross_entropy: targets must lie in 0..3, found -1..3"),
])
def test_ids_out_of_range_raise_at_the_next_synchronisation(cp, op, arrays, kwargs, message):
    a, b = arrays(cp)
    with cupy_standin.counting() as counts:
        out = op(a, b)                                     # nothing waits for the device here
        assert counts.syncs == 0
    with pytest.raises(IndexError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        float(out.sum().numpy())


def test_the_kernels_decline_what_they_cannot_do(cp):
    h = cp.ones((3, 4), dtype=np.float16)
    assert not cuda.GELU.supports(h)
    assert not cuda.LayerNorm.supports(cp.ones((2, 4), np.float32), cp.ones(4, np.float64))
    assert not cuda.LayerNorm.supports(cp.ones((2, 8192), np.float64))        # 2C accumulators > 48 KiB
    assert not cuda.Embedding.supports(cp.ones((2, 3, 4), np.float32))
    y = F.gelu(tl.tensor(np.ones((3, 4), np.float16), device="cuda"))       # runs the reference
    assert y.dtype == np.float16


@dtype_ids
def test_adamw_and_grad_norm_equal_the_references(cp, dtype):
    rng = np.random.default_rng(3)
    n = 1001
    bufs = [randn(rng, dtype, n), randn(rng, dtype, n), randn(rng, dtype, n, scale=0.1), np.abs(randn(rng, dtype, n, scale=0.1))]
    hp = dict(step=4, lr=3e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)
    want = [b.copy() for b in bufs]
    optim.adamw_update(*want, **hp)
    dev = [cp.asarray(b) for b in bufs]
    impl = kernels.resolve(optim.adamw_update, "cuda")
    assert impl is cuda.adamw_update
    with cupy_standin.counting(trace=True) as counts:
        impl(*dev, **hp)
        assert kernel_launches(counts.trace) == ["adamw_update"] and counts.syncs == 0
    for i in (0, 2, 3):
        np.testing.assert_allclose(backend.as_numpy(dev[i]), want[i], **TOL[dtype])

    grads = [randn(rng, dtype, 3, 4), randn(rng, dtype, 7000), randn(rng, dtype, 1)]
    impl = kernels.resolve(optim.grad_norm, "cuda")
    assert impl is cuda.grad_norm
    dgrads = [cp.asarray(g) for g in grads]
    with cupy_standin.counting(trace=True) as counts:
        norm = impl(dgrads)
        assert kernel_launches(counts.trace) == ["grad_norm_squares", "grad_norm_finish"] and counts.syncs == 0
    with cupy_standin.counting() as counts:
        impl(dgrads)                                       # the pointer table is reused: no copy
        assert counts.h2d == 0
    assert norm.shape == () and norm.dtype == np.float64
    np.testing.assert_allclose(backend.as_numpy(norm), optim.grad_norm(grads), **TOL[dtype])


def test_clip_grad_norm_runs_on_the_device(cp):
    rng = np.random.default_rng(4)
    params = [tl.tensor(randn(rng, np.float32, 5, 3), device="cuda", requires_grad=True) for _ in range(3)]
    grads = [randn(rng, np.float32, 5, 3) for _ in params]
    for p, g in zip(params, grads):
        p.grad = cp.asarray(g)
    total = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
    with cupy_standin.counting() as counts:
        norm = optim.clip_grad_norm_(params, 0.5)
        assert counts.syncs == 0
    np.testing.assert_allclose(float(norm), total, rtol=1e-6)
    for p, g in zip(params, grads):
        np.testing.assert_allclose(backend.as_numpy(p.grad), g * (0.5 / (total + 1e-6)), rtol=1e-5)


def test_a_wrong_launcher_is_caught(cp):
    """A launcher that hands the kernel a 4-byte count for its 8-byte parameter, and one that
    passes its arguments in the wrong order: the first fails at launch, the second the check."""
    class ShortCount(cuda.GELU):
        def forward(self, x):
            y = cp.empty_like(x)
            cuda.kernel("gelu.cu", "gelu_forward", x.dtype)((1,), (256,), (y, x, np.int32(x.size)))
            return y

    class SwappedBackward(cuda.GELU):
        def backward(self, gy):
            gx = cp.empty_like(gy)
            cuda.kernel("gelu.cu", "gelu_backward", gy.dtype)((1,), (256,), (gx, gy, self.x, np.int64(gy.size)))
            return gx
    x = randn(np.random.default_rng(0), np.float64, 50, scale=3)
    with pytest.raises(TypeError, match="argument 2 is a 8-byte parameter; got int32"):
        ShortCount().forward(cp.asarray(x))
    gy = randn(np.random.default_rng(1), np.float64, 50)
    want = run(F.GELU, [x], {}, gy, lambda a: a)
    got = run(SwappedBackward, [x], {}, gy, cp.asarray)
    np.testing.assert_allclose(got[0], want[0], **TOL[np.float64])
    assert not np.allclose(got[1], want[1], **TOL[np.float64])
