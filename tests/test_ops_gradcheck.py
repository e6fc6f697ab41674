"""Gradient checks of every differentiable op, on every input.

Each case is float64 with random inputs and goes through tl.gradcheck, whose upstream gradient
is random (a check of sum(f(x)) would miss bugs: see test_gradcheck_checker.py). tl.gradcheck
checks each case with the fast kernels (tensorlite/kernels) and again with the reference ops
(tensorlite/functional) wherever a fast kernel ran.
test_every_function_has_a_case fails when a Function is added to tensorlite without a case here.
"""
import math
import operator
from functools import partial

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tensorlite as tl
import tensorlite.functional as F
from tensorlite import kernels
from tensorlite.gradcheck import _ops_in_graph as ops_in_graph

_rng = np.random.default_rng(1234)  # the case table below is drawn once, at import


def randn(*shape, rng=_rng):
    return rng.standard_normal(shape)


def positive(*shape, rng=_rng):
    """In [0.5, 2]: the domain of log and sqrt, far from their pole at 0."""
    return rng.uniform(0.5, 2.0, shape)


def away_from_zero(*shape, rng=_rng):
    """Magnitudes in [0.2, 2], either sign: ReLU's kink and a divisor's pole stay far from eps."""
    return rng.uniform(0.2, 2.0, shape) * rng.choice([-1.0, 1.0], shape)


def distinct(*shape, rng=_rng):
    """A shuffled grid 0.1 apart plus small noise: Max has no ties, even after a nudge of eps."""
    grid = rng.permutation(math.prod(shape)) * 0.1 + rng.uniform(0, 0.01, math.prod(shape))
    return (grid - grid.mean()).reshape(shape)


def dropout_mask(p, *shape, rng=_rng):
    """A fixed dropout mask: kept entries scaled by 1 / (1 - p)."""
    return (rng.random(shape) >= p) / (1 - p)


class Const:
    """A case input moved to the test's device as a constant Tensor, not differentiated."""

    def __init__(self, array):
        self.array = np.asarray(array)


def case(op, fn, *args, id, marks=()):
    """fn(*inputs) must exercise op. Float arrays in args become float64 tensors with
    requires_grad=True (each is checked); Const arrays become constant tensors."""
    return pytest.param(op, fn, args, id=id, marks=marks)


def make_inputs(args, device):
    return [tl.tensor(a.array, device=device) if isinstance(a, Const)
            else tl.tensor(a, requires_grad=True, device=device) for a in args]


# ====================================== the case table =======================================

BINARY = {"add": (F.Add, operator.add), "sub": (F.Sub, operator.sub),
          "mul": (F.Mul, operator.mul), "div": (F.Div, operator.truediv)}
BROADCAST_SHAPES = [((3, 4), (3, 4)), ((3, 1, 4), (5, 4)), ((5, 4), (3, 1, 4)),
                    ((2, 1), (1, 3)), ((), (3, 4)), ((3, 4), ())]
REDUCTIONS = {"sum": (F.Sum, F.sum, randn), "mean": (F.Mean, F.mean, randn),
              "max": (F.Max, F.max, distinct)}
AXES = [None, 0, 1, -1, (0, 2), (-1, 0)]
MATMUL_SHAPES = [((3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2)),
                 ((3, 4), (2, 4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (2, 4, 5)),
                 ((2, 3, 4), (4,))]
CAUSAL = ~np.tril(np.ones((4, 4), bool))  # True above the diagonal: the future is hidden

CASES = [
    *[case(op, f, away_from_zero(*sa), away_from_zero(*sb), id=f"{name}-{sa}-{sb}")
      for name, (op, f) in BINARY.items() for sa, sb in BROADCAST_SHAPES],
    *[case(op, lambda b, f=f: f(2.5, b), away_from_zero(3, 4), id=f"{name}-scalar-left")
      for name, (op, f) in BINARY.items()],
    *[case(op, lambda a, f=f: f(a, 2.5), away_from_zero(3, 4), id=f"{name}-scalar-right")
      for name, (op, f) in BINARY.items()],
    *[case(op, lambda b, f=f, c=randn(4): f(c, b), away_from_zero(3, 4), id=f"{name}-numpy-left")
      for name, (op, f) in BINARY.items()],

    case(F.Neg, operator.neg, randn(3, 4), id="neg"),
    case(F.Pow, lambda x: x ** 2, randn(3, 4), id="pow-2"),
    case(F.Pow, lambda x: x ** 3, randn(3, 4), id="pow-3"),
    case(F.Pow, lambda x: x ** 0.5, positive(3, 4), id="pow-0.5"),
    case(F.Pow, lambda x: x ** -1.5, positive(3, 4), id="pow-neg-1.5"),
    case(F.Exp, F.exp, randn(3, 4), id="exp"),
    case(F.Log, F.log, positive(3, 4), id="log"),
    case(F.Tanh, F.tanh, randn(3, 4), id="tanh"),
    case(F.Sqrt, F.sqrt, positive(3, 4), id="sqrt"),
    case(F.ReLU, F.relu, away_from_zero(3, 4), id="relu"),
    case(F.GELU, F.gelu, 2 * randn(3, 4), id="gelu"),

    *[case(op, partial(f, axis=axis, keepdims=keepdims), data(2, 3, 4),
           id=f"{name}-axis={axis}-keepdims={keepdims}")
      for name, (op, f, data) in REDUCTIONS.items() for axis in AXES for keepdims in (False, True)],

    case(F.Reshape, lambda x: x.reshape(4, 6), randn(2, 3, 4), id="reshape-varargs"),
    case(F.Reshape, lambda x: x.reshape((6, -1)), randn(2, 3, 4), id="reshape-tuple"),
    case(F.Reshape, lambda x: F.reshape(x, 24), randn(2, 3, 4), id="reshape-flat"),
    case(F.Transpose, lambda x: x.transpose(2, 0, 1), randn(2, 3, 4), id="transpose-varargs"),
    case(F.Transpose, lambda x: x.transpose((1, 0, 2)), randn(2, 3, 4), id="transpose-tuple"),
    case(F.Transpose, lambda x: x.transpose(), randn(2, 3, 4), id="transpose-none"),
    case(F.Transpose, lambda x: x.transpose(-1, 0, -2), randn(2, 3, 4), id="transpose-negative"),
    case(F.Transpose, lambda x: x.T, randn(3, 4), id="transpose-T"),

    case(F.GetItem, lambda x: x[1], randn(3, 4, 5), id="getitem-int"),
    case(F.GetItem, lambda x: x[:, 1:3], randn(3, 4, 5), id="getitem-slice"),
    case(F.GetItem, lambda x: x[..., ::-2], randn(3, 4, 5), id="getitem-ellipsis-step"),
    case(F.GetItem, lambda x: x[None, 1], randn(3, 4, 5), id="getitem-none"),
    case(F.GetItem, lambda x: x[-1, None, ..., 2], randn(3, 4, 5), id="getitem-mixed-basic"),
    case(F.GetItem, lambda x, i: x[i], randn(3, 4), Const([0, 2, 0, 0]), id="getitem-array-repeats"),
    case(F.GetItem, lambda x, i: x[:, i], randn(3, 4), Const([[1, 1], [3, 1]]),
         id="getitem-2d-array-repeats"),
    case(F.GetItem, lambda x, i, j: x[i, j], randn(3, 4), Const([0, 0, 2, 0]), Const([1, 1, 3, 1]),
         id="getitem-array-pairs-repeats"),
    case(F.GetItem, lambda x: (x[1:] * x[0] + x[:-1]).sum(0) * x, randn(3, 4), id="getitem-slices-and-whole"),
    # split is GetItem per part; reversing the parts checks each gradient goes back to its slice
    case(F.GetItem, lambda x: F.concatenate(F.split(x, 3, axis=1)[::-1], axis=1), randn(2, 6),
         id="split-equal"),
    case(F.GetItem, lambda x: F.concatenate(x.split([1, 3], axis=-1)[::-1], axis=-1), randn(2, 5),
         id="split-indices"),

    case(F.Concatenate, lambda *xs: F.concatenate(xs, axis=1), randn(2, 1, 3), randn(2, 3, 3),
         randn(2, 2, 3), id="concatenate-axis1"),
    case(F.Concatenate, lambda *xs: F.concatenate(xs, axis=-1), randn(2, 3, 1), randn(2, 3, 2),
         id="concatenate-axis-1"),
    case(F.Concatenate, lambda *xs: F.concatenate(xs), randn(1, 3), randn(2, 3), id="concatenate-axis0"),
    *[case(F.Stack, lambda *xs, axis=axis: F.stack(xs, axis=axis), randn(2, 3), randn(2, 3),
           randn(2, 3), id=f"stack-axis{axis}") for axis in (0, 1, -1)],

    *[case(F.MatMul, operator.matmul, randn(*sa), randn(*sb), id=f"matmul-{sa}@{sb}")
      for sa, sb in MATMUL_SHAPES],
    case(F.MatMul, operator.matmul, randn(4), randn(4), id="matmul-(4,)@(4,)"),
    case(F.Linear, F.linear, randn(3, 4), randn(5, 4), randn(5), id="linear-2d-bias"),
    case(F.Linear, F.linear, randn(3, 4), randn(5, 4), id="linear-2d"),
    case(F.Linear, F.linear, randn(2, 3, 4), randn(5, 4), randn(5), id="linear-3d-bias"),
    case(F.Linear, F.linear, randn(2, 3, 4), randn(5, 4), id="linear-3d"),
    case(F.Linear, F.linear, randn(4), randn(5, 4), randn(5), id="linear-1d-bias"),

    *[case(F.Softmax, partial(F.softmax, axis=axis), randn(2, 3, 4), id=f"softmax-axis{axis}")
      for axis in (0, 1, 2, -1)],
    *[case(F.LogSoftmax, partial(F.log_softmax, axis=axis), randn(2, 3, 4), id=f"log_softmax-axis{axis}")
      for axis in (0, 1, 2, -1)],

    case(F.CausalSoftmax, partial(F.causal_softmax, scale=0.5), randn(2, 2, 4, 4), id="causal_softmax-4d"),
    case(F.CausalSoftmax, F.causal_softmax, randn(4, 4), id="causal_softmax-2d"),

    case(F.MaskedFill, lambda x, m: F.softmax(F.masked_fill(x, m, -np.inf), axis=-1),
         randn(2, 2, 4, 4), Const(CAUSAL), id="masked_fill-inf-softmax-broadcast"),
    case(F.MaskedFill, lambda x, m: x.masked_fill(m, 0.5), randn(3, 4),
         Const(_rng.random((3, 4)) < 0.5), id="masked_fill-finite"),
    case(F.MaskedFill, lambda x, m: F.masked_fill(x, m, -2.0), randn(2, 2, 4, 4), Const(CAUSAL),
         id="masked_fill-finite-broadcast"),

    case(F.LayerNorm, F.layer_norm, randn(2, 3, 5), randn(5), randn(5), id="layer_norm-weight-bias"),
    case(F.LayerNorm, F.layer_norm, randn(2, 3, 5), randn(5), id="layer_norm-weight"),
    case(F.LayerNorm, F.layer_norm, randn(2, 3, 5), id="layer_norm-plain"),
    case(F.LayerNorm, F.layer_norm, randn(5), randn(5), randn(5), id="layer_norm-1d"),
    case(F.LayerNorm, partial(F.layer_norm, eps=0.1), 0.3 * randn(4, 5), randn(5), randn(5),
         id="layer_norm-eps"),

    case(F.Embedding, lambda w, ids: F.embedding(ids, w), randn(7, 3), Const([1, 3, 1, 1, 6]),
         id="embedding-1d-repeats"),
    case(F.Embedding, lambda w, ids: F.embedding(ids, w), randn(7, 3), Const([[0, 2, 2], [6, 2, 0]]),
         id="embedding-2d-repeats"),
    case(F.CrossEntropy, F.cross_entropy, randn(6, 5), Const([0, 3, 3, 1, 4, 0]), id="cross_entropy-NV"),
    case(F.CrossEntropy, F.cross_entropy, randn(2, 3, 5), Const([[0, 4, 4], [2, 0, 1]]),
         id="cross_entropy-BTV"),
    case(F.Dropout, lambda x, m: F.dropout(x, 0.25, mask=m.data), randn(3, 4),
         Const(dropout_mask(0.25, 3, 4)), id="dropout-fixed-mask"),
]


# ========================================== tests ============================================

def all_functions():
    """Every Function subclass defined in tensorlite, at any depth, but the fast kernels:
    they are checked through their reference op's cases."""
    found, stack = set(), [tl.Function]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                stack.append(sub)
    return {f for f in found if f.__module__.startswith("tensorlite") and kernels.reference_of(f) is None}


def test_every_function_has_a_case():
    functions = all_functions()
    assert {F.Add, F.Softmax, F.LayerNorm} <= functions  # the walk finds the ops at all
    covered = {param.values[0] for param in CASES}
    missing = sorted(f.__name__ for f in functions - covered)
    assert not missing, f"Function subclasses without a gradcheck case: {missing}"


@pytest.mark.parametrize("op, fn, args", CASES)
def test_gradcheck(op, fn, args, device):
    inputs = make_inputs(args, device)
    ran = ops_in_graph(fn(*inputs))
    assert op in {kernels.reference_of(f) or f for f in ran}, f"the case does not exercise {op.__name__}"
    assert kernels.resolve(op, device) in ran, f"the {op.__name__} registered for {device} did not run"
    assert tl.gradcheck(fn, *inputs)                   # with the fast kernels, then the reference


@pytest.mark.parametrize("mode", kernels.MODES)
@pytest.mark.parametrize("op, fn, args", CASES)
def test_backward_does_not_write_into_gy(op, fn, args, device, rng, mode):
    with tl.use_kernels(mode):
        out = fn(*make_inputs(args, device))
        gy = tl.tensor(rng.standard_normal(out.shape), device=device)
        before = gy.numpy().copy()
        out.backward(gy)
    np.testing.assert_array_equal(gy.numpy(), before)


# ================================== hypothesis-drawn shapes ==================================

HYPOTHESIS = settings(max_examples=25, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])  # device is a str
seeds = st.integers(0, 2**32 - 1)


@HYPOTHESIS
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3),
       name=st.sampled_from(sorted(BINARY)), seed=seeds)
def test_broadcasting_binary_ops(shapes, name, seed, device):
    rng = np.random.default_rng(seed)
    a, b = (tl.tensor(away_from_zero(*s, rng=rng), requires_grad=True, device=device)
            for s in shapes.input_shapes)
    out = BINARY[name][1](a, b)
    assert out.shape == shapes.result_shape
    assert tl.gradcheck(BINARY[name][1], a, b)


@HYPOTHESIS
@given(shapes=hnp.mutually_broadcastable_shapes(signature=np.matmul.signature, max_dims=2,
                                                max_side=3),
       seed=seeds)
def test_batched_matmul(shapes, seed, device):
    rng = np.random.default_rng(seed)
    a, b = (tl.tensor(randn(*s, rng=rng), requires_grad=True, device=device)
            for s in shapes.input_shapes)
    assert (a @ b).shape == shapes.result_shape
    assert tl.gradcheck(operator.matmul, a, b)


@st.composite
def shapes_and_axes(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=3))
    ndim = len(shape)
    axis = draw(st.none() | st.integers(-ndim, ndim - 1) | hnp.valid_tuple_axes(ndim, min_size=1))
    return shape, axis


@HYPOTHESIS
@given(shape_axis=shapes_and_axes(), name=st.sampled_from(sorted(REDUCTIONS)),
       keepdims=st.booleans(), seed=seeds)
def test_reductions(shape_axis, name, keepdims, seed, device):
    shape, axis = shape_axis
    _, f, data = REDUCTIONS[name]
    x = tl.tensor(data(*shape, rng=np.random.default_rng(seed)), requires_grad=True, device=device)
    reduce = partial(f, axis=axis, keepdims=keepdims)
    expected = getattr(np, name)(x.numpy(), axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(reduce(x).numpy(), expected, rtol=1e-12)
    assert tl.gradcheck(reduce, x)
