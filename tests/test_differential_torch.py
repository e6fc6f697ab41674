"""Differential tests against PyTorch, in float64: every op's forward and gradients, and the
optimizers' trajectories, must give PyTorch's numbers.

Each op runs on the same float64 arrays in tensorlite and in PyTorch (CPU); the outputs must
agree, then both run backward with the same random upstream gradient (a gradient of sum(y)
hides bugs: softmax's would be 0) and every input's gradient must agree. Shapes are drawn by
hypothesis, with 0-d tensors and axes of size 1 (and of size 0 for element-wise ops), broadcasting,
integer indexing with repeated indices, and reductions over tuples of axes. Every test runs with
the fast kernels and with the reference ops (tl.use_kernels).

Where the two libraries differ on purpose, the test says so and compares with the PyTorch op
that means the same: F.max splits the gradient evenly between tied maxima, as torch.amax does;
torch.max(x, dim) gives it all to the one index it returns (test_max_ties_split_as_amax).

Needs torch, which CI does not install: .ci/run installs only ".[test]", and PyPI's Linux torch
is a multi-GB CUDA build. To run them, install the CPU wheel, as README.md says (PyTorch 2.13.0
here), then run this file:

    pip install torch --index-url https://download.pytorch.org/whl/cpu
    python -m pytest tests/test_differential_torch.py

Without torch the whole file is skipped, with the reason "PyTorch is not installed: ..." and
that pip command.
"""
import math
import operator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tensorlite as tl
import tensorlite.functional as F
from tensorlite import kernels

torch = pytest.importorskip("torch", reason="PyTorch is not installed: the differential tests against it "
                                            "are skipped (its CPU wheel is enough: pip install torch "
                                            "--index-url https://download.pytorch.org/whl/cpu)")
TF = torch.nn.functional

RTOL, ATOL = 1e-10, 1e-12          # float64; the two libraries sum in different orders
HYPOTHESIS = settings(max_examples=25, deadline=None, derandomize=True,   # the same examples in every CI run
                      suppress_health_check=[HealthCheck.function_scoped_fixture])
EACH = settings(HYPOTHESIS, max_examples=10)   # for tests parametrized over many ops
seeds = st.integers(0, 2**32 - 1)


@pytest.fixture(autouse=True, params=kernels.MODES)
def kernel_mode(request):
    """Every test here runs twice: with the fast kernels and with the reference ops."""
    with tl.use_kernels(request.param):
        yield request.param


# ==================================== the comparison ===========================================

def close(ours, theirs, what):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape}, PyTorch's {theirs.shape}"
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL, err_msg=what)


def compare(ours_fn, torch_fn, *arrays, seed=0):
    """ours_fn on tensorlite tensors and torch_fn on torch tensors of the same float64 arrays:
    the outputs agree, and after backward with one random upstream gradient, so does the
    gradient of every input. Returns the tensorlite output."""
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    ours = [tl.tensor(a.copy(), requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    y, yt = ours_fn(*ours), torch_fn(*theirs)
    close(y.numpy(), yt, "forward")
    gy = np.random.default_rng(seed).standard_normal(y.shape)
    y.backward(gy)
    yt.backward(torch.from_numpy(gy))
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if b.grad is None:                 # the output does not depend on this input
            assert a.grad is None or not np.asarray(a.grad).any(), f"input {i}: a gradient PyTorch has not"
            continue
        assert a.grad is not None, f"input {i} got no gradient, PyTorch's is {b.grad}"
        close(a.grad, b.grad, f"gradient of input {i}")
    return y


def randn(shape, rng, low=None):
    """Standard normal values; with low, magnitudes in [low, low + 2) of either sign (a divisor,
    a kink) or, for low='positive', values in [0.5, 2] (log, sqrt, fractional powers)."""
    if low == "positive":
        return rng.uniform(0.5, 2.0, shape)
    x = rng.standard_normal(shape)
    if low is not None:
        x = (low + 2 * rng.random(shape)) * rng.choice([-1.0, 1.0], shape)
    return x


def distinct(shape, rng):
    """Values 0.1 apart in random order: no ties."""
    n = math.prod(shape)
    return (rng.permutation(n) * 0.1 - 0.05 * n).reshape(shape)


shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=4)       # 0-d and size-1 axes
shapes_with_empty = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)


# ====================================== element-wise ===========================================

UNARY = {  # name: (ours, PyTorch's, domain of the input)
    "neg": (operator.neg, operator.neg, None),
    "exp": (F.exp, torch.exp, None),
    "log": (F.log, torch.log, "positive"),
    "tanh": (F.tanh, torch.tanh, None),
    "sqrt": (F.sqrt, torch.sqrt, "positive"),
    "relu": (F.relu, torch.relu, 0.05),       # away from the kink at 0 (tested on its own below)
    "gelu": (F.gelu, lambda x: TF.gelu(x, approximate="tanh"), None),
    **{f"pow{p}": (lambda x, p=p: x ** p, lambda x, p=p: x ** p, None) for p in (0, 1, 2, 3, -1)},
    **{f"pow{p}": (lambda x, p=p: x ** p, lambda x, p=p: x ** p, "positive") for p in (0.5, -1.5, 2.5)},
    "dropout-mask": (lambda x: F.dropout(x, 0.25, mask=DROP[x.shape]),       # a fixed draw: x * mask
                     lambda x: x * torch.from_numpy(DROP[tuple(x.shape)]), None),
}


class Masks(dict):
    """A fixed dropout mask per shape (kept entries scaled by 1 / (1 - p)), drawn on first use."""

    def __missing__(self, shape):
        rng = np.random.default_rng(len(shape))
        self[shape] = mask = np.asarray((rng.random(shape) >= 0.25) / 0.75)
        return mask


DROP = Masks()


@pytest.mark.parametrize("name", UNARY)
@EACH
@given(shape=shapes_with_empty, seed=seeds)
def test_unary_ops(name, shape, seed):
    ours, theirs, domain = UNARY[name]
    compare(ours, theirs, randn(shape, np.random.default_rng(seed), domain), seed=seed)


def test_relu_and_pow_at_their_special_points():
    """relu: at 0 both give gradient 0; at -inf 0, at inf inf. x ** 0: gradient 0 also at 0
    (0 * 0^-1 would be NaN); x ** 2 and x ** 3: gradient 0 at 0; x ** 1: gradient 1 at 0."""
    x = np.array([0.0, -0.0, -np.inf, np.inf, -1.0, 2.0])
    ours, theirs = F.relu(tl.tensor(x)), torch.relu(torch.tensor(x))
    close(ours.numpy(), theirs, "relu forward")
    compare(F.relu, torch.relu, x[[0, 1, 4, 5]])
    for p in (0, 1, 2, 3):
        compare(lambda t: t ** p, lambda t: t ** p, np.array([0.0, -0.0, 1.5, -2.0]))


BINARY = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv}


@pytest.mark.parametrize("name", BINARY)
@HYPOTHESIS
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, min_side=1, max_side=3),
       seed=seeds)
def test_binary_ops_broadcast(name, shapes, seed):
    rng = np.random.default_rng(seed)
    a, b = shapes.input_shapes
    y = compare(BINARY[name], BINARY[name], randn(a, rng), randn(b, rng, 0.2), seed=seed)
    assert y.shape == shapes.result_shape


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("side", ["left", "right"])
def test_binary_ops_with_a_python_number(name, side):
    f = BINARY[name]
    fn = (lambda x: f(2.5, x)) if side == "left" else (lambda x: f(x, 2.5))
    compare(fn, fn, randn((3, 1, 2), np.random.default_rng(0), 0.2))


# ======================================== reductions ===========================================

@st.composite
def shape_and_axes(draw, min_dims=0):
    """A shape and an axis spec: None, one axis (maybe negative), or a tuple of axes in any order."""
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=4, min_side=1, max_side=4))
    ndim = len(shape)
    if ndim == 0:
        return shape, None
    axis = draw(st.none() | st.integers(-ndim, ndim - 1) | hnp.valid_tuple_axes(ndim, min_size=1))
    return shape, axis


def torch_dims(axis, ndim):
    """Our axis spec as PyTorch's dim: every axis for None (PyTorch's dim=None)."""
    return tuple(range(ndim)) if axis is None else axis


@pytest.mark.parametrize("name", ["sum", "mean", "max"])
@HYPOTHESIS
@given(shape_axis=shape_and_axes(), keepdims=st.booleans(), seed=seeds)
def test_reductions_over_axes_and_tuples_of_axes(name, shape_axis, keepdims, seed):
    """max without ties here, compared with torch.amax (ties: the next test)."""
    shape, axis = shape_axis
    rng = np.random.default_rng(seed)
    x = distinct(shape, rng) if name == "max" else randn(shape, rng)
    ours = {"sum": F.sum, "mean": F.mean, "max": F.max}[name]
    theirs = {"sum": torch.sum, "mean": torch.mean, "max": torch.amax}[name]
    dims = torch_dims(axis, len(shape))
    compare(lambda t: ours(t, axis=axis, keepdims=keepdims),
            lambda t: theirs(t) if dims == () else theirs(t, dim=dims, keepdim=keepdims), x, seed=seed)


TIES = np.array([[[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]],
                 [[3.0, -1.0, 0.5], [0.5, 3.0, 3.0]]])     # (2, 2, 3): ties along every axis


@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2), (2, 1, 0)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_max_ties_split_as_amax(axis, keepdims):
    """F.max gives each tied maximum an equal share of the gradient: torch.amax's rule. (With
    ties, torch.max(x, dim).values gives the whole gradient to the index it returns instead;
    without ties the two agree: test_max_over_one_dim_without_ties_is_torch_max.)"""
    compare(lambda t: F.max(t, axis=axis, keepdims=keepdims),
            lambda t: torch.amax(t, dim=torch_dims(axis, 3), keepdim=keepdims), TIES)
    compare(lambda t: t.max(axis=axis, keepdims=keepdims),          # the Tensor method too
            lambda t: torch.amax(t, dim=torch_dims(axis, 3), keepdim=keepdims), TIES)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_max_over_one_dim_without_ties_is_torch_max(dim):
    x = distinct((3, 4, 2), np.random.default_rng(dim + 5))
    compare(lambda t: t.max(dim=dim).values, lambda t: torch.max(t, dim=dim).values, x)
    ours, theirs = tl.tensor(x).max(dim=dim, keepdim=True), torch.tensor(x).max(dim=dim, keepdim=True)
    np.testing.assert_array_equal(ours.indices.numpy(), theirs.indices.numpy())


@pytest.mark.parametrize("dim, correction", [(None, 1), (-1, 1), (0, 0), ((0, 2), 1), (1, 2)])
def test_var_and_std(dim, correction):
    x = randn((3, 4, 5), np.random.default_rng(1))
    for name in ("var", "std"):
        compare(lambda t: getattr(t, name)(dim=dim, correction=correction),
                lambda t: getattr(torch, name)(t, dim=dim, correction=correction), x)
    compare(lambda t: t.var(dim=dim, keepdim=True, unbiased=False),
            lambda t: torch.var(t, dim=dim, keepdim=True, unbiased=False), x)


# ==================================== shapes and indexing ======================================

@HYPOTHESIS
@given(shape=shapes, data=st.data(), seed=seeds)
def test_reshape_and_transpose(shape, data, seed):
    x = randn(shape, np.random.default_rng(seed))
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    compare(lambda t: t.transpose(*perm) if len(perm) != 2 else t.permute(perm),
            lambda t: t.permute(perm), x, seed=seed)
    new = tuple(reversed(shape)) + (1,)
    compare(lambda t: t.reshape(new), lambda t: t.reshape(new), x, seed=seed)
    compare(lambda t: t.reshape(-1), lambda t: t.reshape(-1), x, seed=seed)
    if len(shape) >= 2:
        compare(lambda t: t.transpose(0, -1), lambda t: t.transpose(0, -1), x, seed=seed)   # PyTorch's swap


INDEXES = {  # name: (shape, index): basic slices, and integer arrays whose indices repeat
    "int": ((4, 3), 2),
    "negative-int": ((4, 3), (-1, 0)),
    "slice": ((5, 4), (slice(1, 4), slice(None, None, 2))),
    "negative-bounds": ((5, 4), (slice(-4, -1), slice(-3, None, 2))),   # PyTorch has no negative steps
    "none-ellipsis": ((3, 4, 2), (None, Ellipsis, 1)),
    "repeated-rows": ((4, 3), np.array([1, 1, 3, 1, 0])),
    "repeated-2d-index": ((4, 3), np.array([[0, 2], [2, 2]])),
    "repeated-pairs": ((4, 3), (np.array([0, 3, 0, 0]), np.array([1, 2, 1, 1]))),
    "slice-and-repeats": ((2, 5, 3), (slice(None), np.array([4, 4, 0]))),
    "negative-repeats": ((5,), np.array([-1, 4, -1, 0])),
    "boolean-mask": ((3, 4), np.array([[True, False, True, True], [False] * 4, [True, True, False, True]])),
}


@pytest.mark.parametrize("name", INDEXES)
def test_indexing(name):
    """x[index]: repeated integer indices add their gradients, as PyTorch's index backward does."""
    shape, index = INDEXES[name]
    x = randn(shape, np.random.default_rng(2))
    torch_index = tuple(torch.from_numpy(i) if isinstance(i, np.ndarray) else i for i in index) \
        if isinstance(index, tuple) else (torch.from_numpy(index) if isinstance(index, np.ndarray) else index)
    compare(lambda t: t[index], lambda t: t[torch_index], x)


def test_the_same_tensor_indexed_several_times_adds_up():
    """q, k, v-style slices of one tensor and repeated picks: one gradient buffer, every part."""
    x = randn((4, 6), np.random.default_rng(3))
    idx = np.array([2, 2, 0])

    def f(t, lib_index):
        a, b = t[:, :3], t[:, 3:]
        return (a * b).sum(-1) + t[lib_index].sum() + t[1:3, ::2].sum()
    compare(lambda t: f(t, idx), lambda t: f(t, torch.from_numpy(idx)), x)


@HYPOTHESIS
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3), data=st.data(), seed=seeds)
def test_concatenate_stack_and_split(shape, data, seed):
    rng = np.random.default_rng(seed)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    other = list(shape)
    other[axis] = data.draw(st.integers(1, 3))
    a, b = randn(shape, rng), randn(tuple(other), rng)
    compare(lambda x, y: F.concatenate([x, y, x], axis=axis), lambda x, y: torch.cat([x, y, x], dim=axis),
            a, b, seed=seed)
    new_axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    compare(lambda x, y: F.stack([x, y * 2.0], axis=new_axis), lambda x, y: torch.stack([x, y * 2.0], dim=new_axis),
            a, a + 1, seed=seed)
    for parts in (lambda x: x.split(1, dim=axis), lambda x: x.chunk(2, dim=axis)):   # PyTorch's split and chunk
        compare(lambda x: F.concatenate([p * (i + 1.0) for i, p in enumerate(parts(x))], axis=axis),
                lambda x: torch.cat([p * (i + 1.0) for i, p in enumerate(parts(x))], dim=axis), a, seed=seed)


# ====================================== linear algebra =========================================

@HYPOTHESIS
@given(shapes=hnp.mutually_broadcastable_shapes(signature=np.matmul.signature, max_dims=3, max_side=4),
       seed=seeds)
def test_matmul_with_broadcasting_and_vectors(shapes, seed):
    rng = np.random.default_rng(seed)
    a, b = shapes.input_shapes
    compare(operator.matmul, operator.matmul, randn(a, rng), randn(b, rng), seed=seed)


@HYPOTHESIS
@given(lead=hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3),
       fan=st.tuples(st.integers(1, 5), st.integers(1, 5)), bias=st.booleans(), seed=seeds)
def test_linear(lead, fan, bias, seed):
    rng = np.random.default_rng(seed)
    n_in, n_out = fan
    arrays = [randn(lead + (n_in,), rng), randn((n_out, n_in), rng)] + ([randn((n_out,), rng)] if bias else [])
    compare(F.linear, TF.linear, *arrays, seed=seed)


# ============================== softmax, normalization, losses =================================

@HYPOTHESIS
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5), data=st.data(), seed=seeds)
def test_softmax_and_log_softmax(shape, data, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = 3 * randn(shape, np.random.default_rng(seed))
    compare(lambda t: F.softmax(t, axis), lambda t: torch.softmax(t, dim=axis), x, seed=seed)
    compare(lambda t: F.log_softmax(t, axis), lambda t: torch.log_softmax(t, dim=axis), x, seed=seed)
    compare(lambda t: t.softmax(dim=axis), lambda t: t.softmax(dim=axis), x, seed=seed)


@HYPOTHESIS
@given(lead=hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3), T=st.integers(1, 6),
       scale=st.floats(0.1, 2.0), seed=seeds)
def test_causal_softmax_is_masked_fill_then_softmax(lead, T, scale, seed):
    x = randn(lead + (T, T), np.random.default_rng(seed))
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    compare(lambda t: F.causal_softmax(t, scale=scale),
            lambda t: torch.softmax((t * scale).masked_fill(future, float("-inf")), dim=-1), x, seed=seed)


@pytest.mark.parametrize("value", [-1e9, float("-inf"), 0.5])
def test_masked_fill_with_a_broadcast_mask(value):
    rng = np.random.default_rng(4)
    x = randn((2, 3, 4), rng)
    mask = rng.random((3, 1)) > 0.5
    compare(lambda t: F.masked_fill(t, mask, value), lambda t: t.masked_fill(torch.from_numpy(mask), value), x)
    compare(lambda t: t.masked_fill(tl.tensor(mask), value), lambda t: t.masked_fill(torch.from_numpy(mask), value), x)


@HYPOTHESIS
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5),
       affine=st.sampled_from(["weight-bias", "weight", "none"]), eps=st.sampled_from([1e-5, 0.1]), seed=seeds)
def test_layer_norm(shape, affine, eps, seed):
    rng = np.random.default_rng(seed)
    C = shape[-1]
    arrays = [randn(shape, rng)] + [randn((C,), rng) for _ in range({"weight-bias": 2, "weight": 1, "none": 0}[affine])]
    compare(lambda x, *p: F.layer_norm(x, *p, eps=eps),
            lambda x, *p: TF.layer_norm(x, (C,), *p, eps=eps), *arrays, seed=seed)


@HYPOTHESIS
@given(ids_shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4),
       V=st.integers(1, 6), C=st.integers(1, 4), seed=seeds)
def test_embedding_with_repeated_ids(ids_shape, V, C, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V, ids_shape)          # with V small, ids repeat: their gradients add up
    compare(lambda w: F.embedding(ids, w), lambda w: TF.embedding(torch.from_numpy(ids), w),
            randn((V, C), rng), seed=seed)


@HYPOTHESIS
@given(lead=hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=4), V=st.integers(1, 7),
       scale=st.sampled_from([1.0, 30.0]), seed=seeds)
def test_cross_entropy(lead, V, scale, seed):
    """(N, V) and (B, T, V) logits, the mean over every row as PyTorch's default reduction;
    scale 30 makes the softmax nearly one-hot."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, V, lead)
    compare(lambda x: F.cross_entropy(x, targets),
            lambda x: TF.cross_entropy(x.reshape(-1, V), torch.from_numpy(targets).reshape(-1)),
            scale * randn(lead + (V,), rng), seed=seed)


# ================================ every op has a case here =====================================

COVERED = {F.Add, F.Sub, F.Mul, F.Div, F.Neg, F.Pow, F.Exp, F.Log, F.Tanh, F.Sqrt, F.ReLU, F.GELU,
           F.Sum, F.Mean, F.Max, F.Reshape, F.Transpose, F.GetItem, F.Concatenate, F.Stack,
           F.MatMul, F.Linear, F.Softmax, F.CausalSoftmax, F.LogSoftmax, F.MaskedFill, F.LayerNorm,
           F.Embedding, F.CrossEntropy, F.Dropout}


def test_every_op_is_compared_with_pytorch():
    """Fails when an op is added to tensorlite.functional without a differential case here."""
    ops = {f for f in vars(F).values()
           if isinstance(f, type) and issubclass(f, tl.Function) and f.__module__ == F.__name__}
    assert {F.Add, F.LayerNorm} <= ops
    missing = sorted(f.__name__ for f in ops - COVERED)
    assert not missing, f"ops without a differential case against PyTorch: {missing}"


# ========================================== optimizers ==========================================

def problem(rng):
    """Parameters of several shapes (a 0-d one and axes of size 1 among them) and a loss of
    them that the two libraries compute alike; a new batch x each step."""
    params = {"w": randn((4, 3), rng), "b": randn((3,), rng), "s": np.array(0.7), "u": randn((1, 3), rng)}

    def loss(p, x, lib):
        h = lib.tanh(x @ p["w"] + p["b"]) * p["s"] + p["u"]          # (5, 3)
        return (h * h).sum() / 5 + (p["w"] * p["w"]).mean() + p["s"] * p["s"] * 0.5   # s alone: 0-d ops
    return params, loss


def run_both(make_ours, make_theirs, steps=6, clip=None, skip=None):
    """The same training loop in both libraries: each step's loss, clip norm and parameters
    must agree. skip=(step, name): that parameter has no gradient then."""
    rng = np.random.default_rng(7)
    init, loss = problem(rng)
    ours = {k: tl.tensor(v.copy(), requires_grad=True) for k, v in init.items()}
    theirs = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}
    opt, topt = make_ours(list(ours.values())), make_theirs(list(theirs.values()))
    for step in range(steps):
        x = rng.standard_normal((5, 4))
        opt.zero_grad()
        topt.zero_grad()
        l_ours = loss(ours, tl.tensor(x), tl.Tensor)
        l_theirs = loss(theirs, torch.from_numpy(x), torch)
        close(l_ours.numpy(), l_theirs, f"loss at step {step}")
        l_ours.backward()
        l_theirs.backward()
        if skip is not None and skip[0] == step:
            ours[skip[1]].grad, theirs[skip[1]].grad = None, None
        if clip is not None:
            n_ours = tl.optim.clip_grad_norm_(list(ours.values()), clip)
            n_theirs = torch.nn.utils.clip_grad_norm_(list(theirs.values()), clip)
            close(n_ours.numpy(), n_theirs, f"clip norm at step {step}")
        opt.step()
        topt.step()
        for k in ours:
            close(ours[k].numpy(), theirs[k], f"{k} after step {step}")


@pytest.mark.parametrize("clip", [None, 0.5], ids=["no-clip", "clip-0.5"])
def test_adamw_trajectory(clip):
    kw = dict(lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)
    run_both(lambda p: tl.optim.AdamW(p, **kw), lambda p: torch.optim.AdamW(p, **kw), clip=clip)


def test_adamw_skips_a_parameter_without_gradient_as_pytorch():
    """A parameter whose .grad is None is left alone that step, and its step count stays."""
    kw = dict(lr=0.05, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01)
    run_both(lambda p: tl.optim.AdamW(p, **kw), lambda p: torch.optim.AdamW(p, **kw), skip=(2, "b"))


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.9, 0.05), (0.5, 0.2)])
@pytest.mark.parametrize("clip", [None, 0.3], ids=["no-clip", "clip-0.3"])
def test_sgd_trajectory(momentum, weight_decay, clip):
    kw = dict(lr=0.1, momentum=momentum, weight_decay=weight_decay)
    run_both(lambda p: tl.optim.SGD(p, **kw), lambda p: torch.optim.SGD(p, **kw), clip=clip)


def test_clip_grad_norm_leaves_small_gradients_alone_and_returns_the_norm():
    grads = [np.full((2, 2), 0.01), np.array(-0.02)]
    ours = [tl.tensor(np.zeros_like(g), requires_grad=True) for g in grads]
    theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for o, t, g in zip(ours, theirs, grads):
        o.grad, t.grad = g.copy(), torch.from_numpy(g.copy())
    close(tl.optim.clip_grad_norm_(ours, 1.0).numpy(), torch.nn.utils.clip_grad_norm_(theirs, 1.0), "norm")
    for o, t in zip(ours, theirs):
        close(o.grad, t.grad, "unclipped gradient")


OPTIMIZERS = {"AdamW": (tl.optim.AdamW, torch.optim.AdamW),
              "SGD": (lambda p: tl.optim.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1))}


@pytest.mark.parametrize("set_to_none", [True, False])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_zero_grad_as_pytorch(set_to_none, name):
    """True sets .grad to None; False zeros it in place (the same array), and None stays None."""
    ours = [tl.tensor(np.ones((2, 3)), requires_grad=True), tl.tensor(np.array(2.0), requires_grad=True),
            tl.tensor(np.ones(3), requires_grad=True)]
    theirs = [torch.tensor(p.numpy(), requires_grad=True) for p in ours]
    opt, topt = OPTIMIZERS[name][0](ours), OPTIMIZERS[name][1](theirs)
    for group in (ours, theirs):
        ((group[0] * group[1]).sum() * 3.0).backward()     # the third gets no gradient
    kept = ours[0].grad
    opt.zero_grad(set_to_none=set_to_none)
    topt.zero_grad(set_to_none=set_to_none)
    for o, t in zip(ours, theirs):
        assert (o.grad is None) == (t.grad is None)
        if t.grad is not None:
            close(o.grad, t.grad, "zeroed gradient")
    assert set_to_none or ours[0].grad is kept               # in place
    assert ours[2].grad is None
