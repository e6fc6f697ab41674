"""Forward values against plain NumPy formulas, dropout's randomness, and stability at ±1e4,
each with the fast kernels and with the reference ops."""
import math
import operator
from functools import partial

import numpy as np
import pytest

import tensorlite as tl
import tensorlite.functional as F
from tensorlite import kernels
from tensorlite.backend import as_numpy

_rng = np.random.default_rng(99)  # the table below is drawn once, at import
X = _rng.standard_normal((2, 3, 4))
W5, B5 = _rng.standard_normal(5), _rng.standard_normal(5)
IDS = np.array([[1, 3, 1], [6, 0, 3]])
CAUSAL = ~np.tril(np.ones((4, 4), bool))
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}


@pytest.fixture(autouse=True, params=kernels.MODES)
def kernel_mode(request):
    """Every test here runs twice: with the fast kernels and with the reference ops."""
    with tl.use_kernels(request.param):
        yield request.param


# ---- plain NumPy references: the textbook formula, no shifts or fusions -----------------------

def softmax_ref(x, axis):
    return np.exp(x) / np.exp(x).sum(axis, keepdims=True)


def log_softmax_ref(x, axis):
    return x - np.log(np.exp(x).sum(axis, keepdims=True))


def layer_norm_ref(x, w=1.0, b=0.0, eps=1e-5):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * w + b


def gelu_ref(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def cross_entropy_ref(logits, targets):
    logp = log_softmax_ref(logits, -1).reshape(-1, logits.shape[-1])
    return -logp[np.arange(targets.size), targets.ravel()].mean()


# (tensorlite function, NumPy reference, inputs); float inputs are cast to the test's dtype
FORWARD = {
    **{f"softmax-axis{a}": (partial(F.softmax, axis=a), partial(softmax_ref, axis=a), [X])
       for a in (0, 1, 2, -1)},
    **{f"log_softmax-axis{a}": (partial(F.log_softmax, axis=a), partial(log_softmax_ref, axis=a), [X])
       for a in (0, 1, 2, -1)},
    "causal_softmax": (partial(F.causal_softmax, scale=0.5),
                       lambda x: softmax_ref(np.where(CAUSAL, -np.inf, 0.5 * x), -1),
                       [_rng.standard_normal((2, 2, 4, 4))]),
    "layer_norm-weight-bias": (F.layer_norm, layer_norm_ref, [_rng.standard_normal((2, 3, 5)), W5, B5]),
    "layer_norm-weight": (F.layer_norm, layer_norm_ref, [_rng.standard_normal((2, 3, 5)), W5]),
    "layer_norm-plain": (F.layer_norm, layer_norm_ref, [_rng.standard_normal((2, 3, 5))]),
    "layer_norm-eps": (partial(F.layer_norm, eps=0.1), partial(layer_norm_ref, eps=0.1),
                       [0.3 * _rng.standard_normal((4, 5)), W5, B5]),
    "gelu": (F.gelu, gelu_ref, [3 * X]),
    "cross_entropy-NV": (F.cross_entropy, cross_entropy_ref,
                         [_rng.standard_normal((6, 7)), IDS.ravel()]),
    "cross_entropy-BTV": (F.cross_entropy, cross_entropy_ref, [_rng.standard_normal((2, 3, 7)), IDS]),
    "embedding": (lambda w, ids: F.embedding(ids, w), lambda w, ids: w[ids],
                  [_rng.standard_normal((7, 5)), IDS]),
    "linear-bias": (F.linear, lambda x, w, b: x @ w.T + b, [X, _rng.standard_normal((5, 4)), B5]),
    "linear": (F.linear, lambda x, w: x @ w.T, [X, _rng.standard_normal((5, 4))]),
    "masked_fill": (lambda x, m: F.masked_fill(x, m, -1e9), lambda x, m: np.where(m, -1e9, x),
                    [_rng.standard_normal((2, 2, 4, 4)), CAUSAL]),
    "matmul-broadcast": (operator.matmul, np.matmul,
                         [_rng.standard_normal((2, 1, 3, 4)), _rng.standard_normal((5, 4, 2))]),
    "add": (operator.add, np.add, [X, W5[:4]]),
    "sub": (operator.sub, np.subtract, [X, W5[:4]]),
    "mul": (operator.mul, np.multiply, [X, W5[:4]]),
    "div": (operator.truediv, np.divide, [X, W5[:4]]),
    "neg": (operator.neg, np.negative, [X]),
    "pow": (lambda x: x ** 3, lambda x: x ** 3, [X]),
    "exp": (F.exp, np.exp, [X]),
    "log": (F.log, np.log, [np.abs(X) + 0.1]),
    "tanh": (F.tanh, np.tanh, [X]),
    "sqrt": (F.sqrt, np.sqrt, [np.abs(X)]),
    "relu": (F.relu, lambda x: np.maximum(x, 0), [X]),
    "sum": (partial(F.sum, axis=(0, 2)), partial(np.sum, axis=(0, 2)), [X]),
    "mean": (partial(F.mean, axis=-1, keepdims=True), partial(np.mean, axis=-1, keepdims=True), [X]),
    "max": (partial(F.max, axis=1), partial(np.max, axis=1), [X]),
    "reshape": (lambda x: x.reshape(4, -1), lambda x: x.reshape(4, -1), [X]),
    "transpose": (lambda x: x.transpose(2, 0, 1), lambda x: x.transpose(2, 0, 1), [X]),
    "getitem": (lambda x: x[..., None, ::-2], lambda x: x[..., None, ::-2], [X]),
    "concatenate": (lambda a, b: F.concatenate([a, b], axis=1), lambda a, b: np.concatenate([a, b], 1),
                    [X, X[:, :1]]),
    "stack": (lambda a, b: F.stack([a, b], axis=-1), lambda a, b: np.stack([a, b], -1), [X, 2 * X]),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", FORWARD)
def test_forward_matches_numpy(name, dtype, device):
    fn, ref, arrays = FORWARD[name]
    inputs = [tl.tensor(a.astype(dtype) if a.dtype.kind == "f" else a, device=device) for a in arrays]
    out = fn(*inputs)
    assert out.dtype == dtype and out.device == device
    np.testing.assert_allclose(out.numpy(), ref(*arrays), **TOL[dtype])


@pytest.mark.parametrize("sections, axis", [(3, 1), ([1, 3], -1)])
def test_split_matches_numpy(sections, axis, device):
    x = _rng.standard_normal((2, 6))
    parts = F.split(tl.tensor(x, device=device), sections, axis=axis)
    expected = np.split(x, sections, axis=axis)
    assert len(parts) == len(expected)
    for part, want in zip(parts, expected):
        np.testing.assert_array_equal(part.numpy(), want)


# ========================================= dropout ============================================

@pytest.mark.parametrize("kwargs", [dict(p=0.5, training=False), dict(p=0.0)], ids=["eval", "p=0"])
def test_dropout_is_the_identity(kwargs, device):
    x = tl.tensor(X, requires_grad=True, device=device)
    y = F.dropout(x, **kwargs)
    np.testing.assert_array_equal(y.numpy(), X)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.75])
def test_dropout_scales_kept_entries(p, device):
    tl.manual_seed(0)
    x = tl.tensor(np.ones(200_000, np.float32), requires_grad=True, device=device)
    y = F.dropout(x, p)
    kept = y.numpy() != 0
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y.numpy()[kept], np.float32(1 / (1 - p)))
    assert abs(kept.mean() - (1 - p)) < 0.01  # about 7 standard deviations of the binomial
    gy = _rng.standard_normal(x.shape).astype(np.float32)
    y.backward(gy)
    np.testing.assert_array_equal(as_numpy(x.grad), gy * y.numpy())  # dx = gy * the same mask


def test_dropout_is_reproducible_under_manual_seed(device):
    x = tl.tensor(np.ones((64, 64), np.float32), device=device)
    tl.manual_seed(123)
    first = F.dropout(x, 0.5).numpy()
    second = F.dropout(x, 0.5).numpy()
    tl.manual_seed(123)
    again = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5])
def test_dropout_rejects_bad_p(p, device):
    with pytest.raises(ValueError, match=f"dropout probability must be in \\[0, 1\\), got {p}"):
        F.dropout(tl.tensor(X, device=device), p)


# ======================================== stability ===========================================

# One +1e4 per row, the rest at most 3: exp(3 - 1e4) is exactly 0, so softmax is exactly one-hot
# (also in float32, where every value here is exact).
BIG = np.array([[1e4, -1e4, 0.0, 3.0],
                [-1e4, -1e4, 1e4, -1e4],
                [3.0, 1e4, 0.0, -1e4]])
BIG_ARGMAX = BIG.argmax(-1)
BIG_ONEHOT = np.eye(4)[BIG_ARGMAX]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_of_huge_logits(dtype, device, rng):
    x = tl.tensor(BIG.astype(dtype), requires_grad=True, device=device)
    y = F.softmax(x)
    np.testing.assert_array_equal(y.numpy(), BIG_ONEHOT)
    y.backward(rng.standard_normal(BIG.shape))
    np.testing.assert_array_equal(as_numpy(x.grad), 0)  # y * (gy - gy[argmax]) vanishes everywhere


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_softmax_of_huge_logits(dtype, device, rng):
    x = tl.tensor(BIG.astype(dtype), requires_grad=True, device=device)
    y = F.log_softmax(x)
    np.testing.assert_array_equal(y.numpy(), BIG - 1e4)  # log-sum-exp is the max exactly
    gy = rng.standard_normal(BIG.shape).astype(dtype)
    y.backward(gy)
    np.testing.assert_allclose(as_numpy(x.grad), gy - BIG_ONEHOT * gy.sum(-1, keepdims=True), **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("targets", [BIG_ARGMAX, np.array([1, 0, 0])], ids=["right", "wrong"])
def test_cross_entropy_of_huge_logits(targets, dtype, device):
    x = tl.tensor(BIG.astype(dtype), requires_grad=True, device=device)
    loss = F.cross_entropy(x, targets)
    expected = (1e4 - BIG[np.arange(3), targets]).mean()  # -log p[target] = max - x[target]
    np.testing.assert_allclose(loss.item(), expected, **TOL[dtype])
    loss.backward()
    np.testing.assert_allclose(as_numpy(x.grad), (BIG_ONEHOT - np.eye(4)[targets]) / 3, **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_norm_of_constant_rows(dtype, device, rng):
    """Variance 0: rstd = 1/sqrt(eps) stays finite, x - mean is 0, so y is the bias."""
    x = tl.tensor(np.repeat([[3.0], [0.1], [-7.3]], 5, axis=1).astype(dtype), requires_grad=True,
                  device=device)
    w = tl.tensor(W5.astype(dtype), requires_grad=True, device=device)
    b = tl.tensor(B5.astype(dtype), requires_grad=True, device=device)
    y = F.layer_norm(x, w, b)
    # 0.1 and -7.3 are inexact: their float32 rows centre to ~1e-8, times rstd ~316
    np.testing.assert_allclose(y.numpy(), np.broadcast_to(B5, (3, 5)), atol=1e-5)
    gy = rng.standard_normal((3, 5)).astype(dtype)
    y.backward(gy)
    for t in (x, w, b):
        assert np.isfinite(as_numpy(t.grad)).all()
    np.testing.assert_allclose(as_numpy(b.grad), gy.sum(0), **TOL[dtype])
    dxh = gy * W5
    np.testing.assert_allclose(as_numpy(x.grad), (dxh - dxh.mean(-1, keepdims=True)) / np.sqrt(1e-5),
                               **TOL[dtype])


@pytest.mark.parametrize("op", [F.softmax, F.log_softmax, partial(F.causal_softmax, scale=0.5)],
                         ids=["softmax", "log_softmax", "causal_softmax"])
def test_a_nan_in_a_row_makes_that_row_nan(op, device):
    """The max that shifts each row is taken per row: a NaN spoils its own row, no other."""
    x = np.ones((2, 3, 3))
    x[0, 2, 1] = np.nan
    y = as_numpy(op(tl.tensor(x, device=device)).data)
    assert np.isnan(y[0, 2]).all() and np.isfinite(y[0, :2]).all() and np.isfinite(y[1]).all()


def test_causal_softmax_keeps_float32_with_a_numpy_scale(device):
    x = tl.tensor(np.zeros((2, 4, 4), dtype=np.float32), device=device)
    assert F.causal_softmax(x, scale=np.float64(0.5)).dtype == np.float32


# ================================ edge values and 0-d tensors =================================

UNARY = {"gelu": F.gelu, "relu": F.relu, "exp": F.exp, "tanh": F.tanh, "neg": operator.neg,
         "sqrt": F.sqrt, "log": F.log, "pow-2": lambda x: x ** 2, "pow-0": lambda x: x ** 0,
         "x*2": lambda x: x * 2.0, "sum": F.sum, "mean": F.mean, "max": F.max,
         "dropout": lambda x: F.dropout(x, 0.5, mask=x.xp.full((), 2.0, x.dtype)),
         "dropout-drawn": lambda x: F.dropout(x, 0.5)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", UNARY)
def test_an_op_of_a_0d_tensor_is_0d_and_so_is_its_gradient(name, dtype, device):
    """The fast CPU GELU once returned shape (1,) here (np.ascontiguousarray makes 0-d 1-d)."""
    x = tl.tensor(np.array(0.7, dtype), requires_grad=True, device=device)
    y = UNARY[name](x)
    assert y.shape == () and y.dtype == dtype
    y.backward()
    assert x.grad.shape == () and x.grad.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_of_infinities_and_nan_is_as_pytorch(dtype, device):
    """max(x, 0): relu(-inf) = 0 (x * [x > 0] gave -inf * 0 = NaN), relu(inf) = inf, NaN stays."""
    x = tl.tensor(np.array([-np.inf, np.inf, np.nan, -0.0, -2.0, 3.0], dtype), device=device)
    np.testing.assert_array_equal(F.relu(x).numpy(), np.array([0, np.inf, np.nan, 0, 0, 3], dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_gradient_of_x_to_the_0_is_0_everywhere_also_at_0(dtype, device, rng):
    """d(x^0)/dx = 0 (PyTorch's too); the general 0 * x^-1 is 0 * inf = NaN at x = 0."""
    x = tl.tensor(np.array([0.0, -0.0, 1.5, -2.0, np.inf], dtype), requires_grad=True, device=device)
    y = x ** 0
    np.testing.assert_array_equal(y.numpy(), 1.0)
    y.backward(rng.standard_normal(5).astype(dtype))
    np.testing.assert_array_equal(as_numpy(x.grad), 0.0)
    assert x.grad.dtype == dtype


# ================================ ids out of range, read late =================================

READERS = {"item": lambda t: t.item(), "float": float, "format": lambda t: f"{t:.3f}",
           "numpy": lambda t: t.numpy(), "bool": lambda t: bool(t > 0), "tolist": lambda t: t.tolist()}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("op", ["embedding", "cross_entropy"])
def test_an_id_out_of_range_raises_by_the_first_read_of_a_value(op, reader, device):
    """On the CPU at once; on cuda (no host sync inside a step) at the first value read, with
    the same message: every way of reading a tensor's value reads the deferred checks too."""
    w = tl.tensor(np.ones((5, 3)), requires_grad=True, device=device)
    bad = np.array([[0, 4], [7, 1]])
    match = {"embedding": r"id 7 is out of range for a table of 5 rows",
             "cross_entropy": r"targets must lie in 0\.\.2, found 0\.\.7"}[op]
    with pytest.raises(IndexError, match=match):
        if op == "embedding":
            out = F.embedding(tl.tensor(bad, device=device), w).sum()
        else:
            out = F.cross_entropy(F.embedding(tl.tensor(np.array([[0, 1], [2, 3]]), device=device), w),
                                  tl.tensor(bad, device=device))
        READERS[reader](out)


def test_the_id_checks_make_no_host_sync_on_cuda(kernel_mode):
    """The checks are computed on the device and read with the next value: a step on cuda does
    not wait for the GPU at each embedding or cross-entropy (counted on the CuPy stand-in)."""
    cupy_standin = pytest.importorskip("cupy_standin")
    if cupy_standin.real_cupy() is None:
        pytest.skip("the cupy package is not installed: the stand-in cannot count")
    with cupy_standin.installed():
        w = tl.tensor(np.ones((5, 3)), requires_grad=True, device="cuda")
        ids, targets = (tl.tensor(np.array(a), device="cuda") for a in ([[0, 4], [2, 1]], [[1, 2], [0, 2]]))
        with cupy_standin.counting() as c:
            loss = F.cross_entropy(F.embedding(ids, w), targets)
            loss.backward()
            assert c.syncs == 0 and c.d2h == 0, c.snapshot()
            loss.item()
            assert c.syncs == 1 and c.d2h == 1, c.snapshot()
