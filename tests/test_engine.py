"""The engine: accumulation, graph walking, freeing, no_grad, the Function contract's errors,
Tensor basics and the profiler."""
import contextlib
import re

import numpy as np
import pytest

import tensorlite as tl
import tensorlite.functional as F
from tensorlite.backend import as_numpy


def leaf(data, device="cpu"):
    return tl.tensor(np.asarray(data, np.float64), requires_grad=True, device=device)


def creators(out):
    """Every Function in the graph of out, walked without recursion."""
    found, stack, seen = [], [out], set()
    while stack:
        t = stack.pop()
        if t.creator is not None and id(t.creator) not in seen:
            seen.add(id(t.creator))
            found.append(t.creator)
            stack.extend(t.creator.inputs)
    return found


# =================================== gradient accumulation ====================================

X = np.array([0.5, -1.5, 2.0])
TANH = np.tanh(X)


def square_of_double(x):
    h = x + x        # x twice
    return h * h     # then h twice


def sum_used_twice(a, b):
    u = a + b
    return u + u     # u's gradient is the engine's own sum of the two uses


def polynomial(x):
    u = x * 1.0
    return u * u + u


# (graph of one leaf x used more than once, d sum(graph) / dx)
USED_TWICE = {
    "x*x": (lambda x: x * x, 2 * X),
    "x+x": (lambda x: x + x, np.full(3, 2.0)),
    "x*x*x": (lambda x: x * x * x, 3 * X ** 2),
    # x feeds tanh and the scaling, which meet again in the product
    "diamond": (lambda x: F.tanh(x) * (x * 3.0), 3 * TANH + 3 * X * (1 - TANH ** 2)),
    "diamond-of-diamonds": (square_of_double, 8 * X),
}


@pytest.mark.parametrize("name", USED_TWICE)
def test_a_tensor_used_twice_accumulates(name, device):
    graph, expected = USED_TWICE[name]
    x = leaf(X, device)
    graph(x).sum().backward()
    np.testing.assert_allclose(as_numpy(x.grad), expected, rtol=1e-12)


def test_leaf_grads_accumulate_across_backward_calls(device):
    x = leaf(X, device)
    (x * 2.0).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(as_numpy(x.grad), 2.0 + 2 * X, rtol=1e-12)


def test_inputs_without_requires_grad_get_no_grad():
    x, c = leaf(X), tl.tensor(X)
    (x * c).sum().backward()
    assert c.grad is None and x.grad is not None


def test_backward_on_a_non_scalar_needs_a_gradient():
    y = leaf(np.ones((2, 3))) * 2.0
    with pytest.raises(RuntimeError, match=r"non-scalar tensor of shape \(2, 3\)"):
        y.backward()


def test_backward_rejects_a_wrong_shaped_gradient():
    y = leaf(np.ones((2, 3))) * 2.0
    with pytest.raises(ValueError, match=r"gradient shape \(3, 2\) does not match .* \(2, 3\)"):
        y.backward(np.ones((3, 2)))


def test_backward_without_requires_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        (tl.tensor(X) * 2.0).sum().backward()


def test_deep_chain_has_no_recursion_limit():
    x = leaf(X)
    y = x
    for _ in range(5000):
        y = y + 1.0
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, 1.0)


def test_gradient_is_cast_to_the_tensor_dtype():
    x = tl.tensor([1.0, 2.0], requires_grad=True)
    (x * 3.0).backward(np.array([1.0, 1.0]))  # a float64 gradient for a float32 tensor
    assert x.grad.dtype == np.float32


# ========================================= no_grad ===========================================

def test_no_grad_records_nothing():
    x = leaf(X)
    with tl.no_grad():
        assert not tl.is_grad_enabled()
        y = F.softmax(x * 2.0)
    assert tl.is_grad_enabled()
    assert not y.requires_grad and y.creator is None


def test_no_grad_as_a_decorator():
    @tl.no_grad()
    def double(t):
        """Doubles."""
        return t * 2.0

    y = double(leaf(X))
    assert not y.requires_grad and y.creator is None
    assert tl.is_grad_enabled()
    assert (double.__name__, double.__doc__) == ("double", "Doubles.")


def test_no_grad_restores_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with tl.no_grad():
            1 / 0
    assert tl.is_grad_enabled()


# ================================ freeing and reuse of arrays =================================

GRAPHS = {
    "softmax": lambda x, w: F.softmax(x * w, axis=-1),
    "layer_norm": lambda x, w: F.layer_norm(x, w, w),
    "mlp": lambda x, w: F.gelu(F.linear(x, w.reshape(1, 4))).exp() / (x.sum() ** 2),
    "cross_entropy": lambda x, w: F.cross_entropy(F.masked_fill(x, x > 1.0, 0.5) @ w[:, None] * x,
                                                  np.array([0, 3, 1])),
    "slices": lambda x, w: x[:, 1:] * w[1:] + x[0, :3] + x[[0, 0, 2]][:, ::2].sum(),
    "embedding": lambda x, w: F.embedding(np.array([1, 1, 2]), x).max(axis=0) * F.dropout(w, 0.5),
}


@pytest.mark.parametrize("name", GRAPHS)
def test_saved_arrays_are_released_after_backward(name, rng):
    x, w = leaf(rng.standard_normal((3, 4))), leaf(rng.standard_normal(4))
    out = GRAPHS[name](x, w).sum()
    fns = creators(out)
    out.backward()
    for fn in fns:
        assert sorted(fn.__dict__) == ["inputs", "released"], fn
    with pytest.raises(RuntimeError, match="a second time"):
        out.backward()


@pytest.mark.parametrize("graph", [lambda a, b: a + b, sum_used_twice], ids=["a+b", "(a+b)-used-twice"])
def test_leaf_grads_are_not_aliased(graph):
    a, b = leaf(X), leaf(-X)
    graph(a, b).sum().backward()
    b_before = b.grad.copy()
    a.grad += 1.0
    np.testing.assert_array_equal(b.grad, b_before)


class AddSharingOneArray(tl.Function):
    """a + b whose backward hands the same fresh array to both inputs (allowed by the contract)."""

    def forward(self, a, b):
        return a + b

    def backward(self, gy):
        g = gy * 1.0
        return g, g


def test_one_array_returned_for_two_inputs_is_not_added_into():
    p, q = leaf(np.ones(3)), leaf(np.ones(3))
    y = AddSharingOneArray.apply(p, q)
    z = (y + p * 3.0) + q * 0.0   # p's slot is summed after y's backward; q is read after that
    z.sum().backward()
    np.testing.assert_array_equal(p.grad, 4.0)
    np.testing.assert_array_equal(q.grad, 1.0)


@pytest.mark.parametrize("graph", [
    lambda x: x,
    lambda x: x + x,
    polynomial,
    lambda x: F.softmax(x) + F.tanh(x) + x,
    lambda x: F.layer_norm(x) + x,
    lambda x: x[:, ::-1] + x,
    lambda x: x + x[:, ::-1],
], ids=["leaf", "x+x", "u*u+u", "softmax+tanh+x", "layer_norm+x", "slice+x", "x+slice"])
def test_incoming_gradient_is_not_modified(graph, rng):
    x = leaf(rng.standard_normal((3, 4)))
    grad = rng.standard_normal((3, 4))
    before = grad.copy()
    graph(x).backward(grad)
    np.testing.assert_array_equal(grad, before)
    grad += 1.0                                  # and x.grad is not a view of it either
    assert not np.shares_memory(x.grad, grad)


def test_retain_grad_keeps_a_non_leaf_gradient():
    x = leaf(X)
    u = (x * 2.0).retain_grad()
    v = u * 1.0
    (u * v).sum().backward()
    np.testing.assert_allclose(u.grad, 2 * (2 * X), rtol=1e-12)
    assert v.grad is None
    np.testing.assert_allclose(x.grad, 8 * X, rtol=1e-12)


# ==================================== your own Function ======================================
#
# The contract (tl.Function): backward returns one gradient per input, in order (None for an
# input that needs none; extra trailing Nones are allowed, as in PyTorch), each of its input's
# shape or of a shape that broadcasting the input gives. Anything else is an error naming the op.

class Returns(tl.Function):
    """forward: a + b; backward returns whatever the test put in `grads` (gy -> tuple)."""
    grads = None

    def forward(self, a, b):
        return a + b

    def backward(self, gy):
        return type(self).grads(gy)


def returning(grads):
    return type("MyOp", (Returns,), {"grads": staticmethod(grads)})


def run_backward(op, a_shape=(2, 3), b_shape=(2, 3)):
    a, b = leaf(np.ones(a_shape)), leaf(np.ones(b_shape))
    op.apply(a, b).sum().backward()
    return a, b


@pytest.mark.parametrize("grads, got", [
    (lambda gy: gy, 1),                       # a single array for two inputs
    (lambda gy: (gy,), 1),
    (lambda gy: (gy, gy, gy), 3),
    (lambda gy: (None, gy, gy), 3),
], ids=["bare-array", "one", "three", "extra-not-None"])
def test_a_backward_with_the_wrong_number_of_gradients_names_the_op(grads, got):
    with pytest.raises(RuntimeError, match=rf"MyOp\.backward returned {got} gradients? for 2 inputs: expected 2"):
        run_backward(returning(grads))


@pytest.mark.parametrize("grads", [lambda gy: (gy, gy, None), lambda gy: [gy, gy * 2.0]],
                         ids=["extra-None", "a-list"])
def test_trailing_none_gradients_and_a_list_are_accepted(grads):
    a, b = run_backward(returning(grads))
    np.testing.assert_array_equal(a.grad, 1.0)
    assert b.grad is not None


# (input shape, gradient shape): legal exactly when broadcasting the input can give the
# gradient's shape; the engine then sums the gradient back to the input's shape
LEGAL = [((2, 3), (2, 3)), ((3,), (2, 3)), ((1, 3), (2, 3)), ((2, 1), (2, 3)), ((), (2, 3)),
         ((1,), (4, 2, 5)), ((2, 1, 3), (4, 2, 5, 3)), ((1, 1), (1, 1)), ((1,), (0,))]
ILLEGAL = [((2, 3), (3, 2)), ((2, 3), (3,)), ((2, 3), (2, 3, 1)), ((2, 3), ()), ((3,), (3, 1)),
           ((3, 1), (3,)), ((2,), (3,)), ((2, 3), (2, 3, 2)), ((0,), (1,))]


@pytest.mark.parametrize("x_shape, g_shape", LEGAL, ids=[f"{a}<-{b}" for a, b in LEGAL])
def test_a_gradient_shaped_like_a_broadcast_of_its_input_is_summed_back(x_shape, g_shape):
    rng = np.random.default_rng(0)
    g = rng.standard_normal(g_shape)
    op = returning(lambda gy: (g, None))
    a = leaf(np.ones(x_shape))
    op.apply(a, leaf(np.ones(()))).sum().backward()
    assert a.grad.shape == x_shape
    lead = len(g_shape) - len(x_shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(x_shape) if n == 1)
    np.testing.assert_allclose(a.grad, g.sum(axis=axes).reshape(x_shape), rtol=1e-12)


@pytest.mark.parametrize("x_shape, g_shape", ILLEGAL, ids=[f"{a}<-{b}" for a, b in ILLEGAL])
def test_a_gradient_of_the_wrong_shape_names_the_op_the_input_and_both_shapes(x_shape, g_shape):
    op = returning(lambda gy: (None, np.ones(g_shape)))
    a, b = leaf(np.ones(())), leaf(np.ones(x_shape))
    b.name = "w"
    with pytest.raises(ValueError, match=(rf"MyOp\.backward returned a gradient of shape "
                                          rf"{re.escape(str(g_shape))} for input 1 \(w\) of shape "
                                          rf"{re.escape(str(x_shape))}")):
        op.apply(a, b).sum().backward()


def test_a_wrong_gradient_is_an_error_even_for_an_input_that_needs_none():
    op = returning(lambda gy: (gy, np.ones(5)))
    a, b = leaf(np.ones(3)), tl.tensor(np.ones(3))      # b: a constant
    with pytest.raises(ValueError, match=r"MyOp\.backward .* shape \(5,\) for input 1 of shape \(3,\)"):
        op.apply(a, b).sum().backward()


@pytest.mark.parametrize("anomaly", [False, True])
def test_a_gradient_that_is_not_an_array_names_the_op(anomaly):
    with tl.detect_anomaly() if anomaly else contextlib.nullcontext():
        with pytest.raises(TypeError, match=r"MyOp\.backward returned a float as the gradient of input 0"):
            run_backward(returning(lambda gy: (1.0, gy)))


def test_a_scatter_gradient_of_the_wrong_shape_names_the_op():
    from tensorlite.tensor import ScatterGrad
    op = returning(lambda gy: (ScatterGrad((3, 2), gy.dtype, (slice(None),), gy), gy))
    with pytest.raises(ValueError, match=r"MyOp\.backward returned a gradient of shape \(3, 2\) "
                                         r"for input 0 of shape \(2, 3\)"):
        run_backward(op)


@pytest.mark.parametrize("returned, said", [(None, r"NoneType \(a missing `return`\?\)"), (3.0, "float"),
                                             ([1.0, 2.0], "list")])
def test_a_forward_that_returns_no_array_names_the_op_at_once(returned, said):
    """It failed later, naming nothing: AttributeError 'NoneType' object has no attribute 'dtype'."""
    class NoOutput(tl.Function):
        def forward(self, x):
            self.x = x
            return returned

        def backward(self, gy):
            return gy
    with pytest.raises(TypeError, match=rf"^NoOutput\.forward returned {said}, not an array: it must return the "
                                        rf"output array \(input shapes \(3,\)\)$"):
        NoOutput.apply(tl.tensor(np.ones(3), requires_grad=True))


def test_a_function_without_backward_says_what_to_define():
    class NoBackward(tl.Function):
        def forward(self, x):
            return x * 2

    x = leaf(X)
    y = NoBackward.apply(x)
    np.testing.assert_array_equal(y.numpy(), 2 * X)          # forward alone works
    with pytest.raises(NotImplementedError, match=r"NoBackward defines no backward\(\): .*def backward\(self, gy\)"):
        y.sum().backward()


def test_a_function_without_forward_says_what_to_define():
    class NoForward(tl.Function):
        def backward(self, gy):
            return gy

    with pytest.raises(NotImplementedError, match=r"NoForward defines no forward\(\): .*def forward\(self"):
        NoForward.apply(leaf(X))


# ================================= 0-d tensors and their gradients ==============================

@pytest.mark.parametrize("graph", [
    lambda p: p * p, lambda p: (p + 1.0) * 3.0, lambda p: p.exp() - p, lambda p: F.relu(p) ** 2,
], ids=["p*p", "(p+1)*3", "exp(p)-p", "relu(p)**2"])
def test_the_gradient_of_a_0d_parameter_is_an_array_that_clipping_scales_in_place(graph, device):
    """NumPy gives the product of 0-d arrays as a scalar (np.float64): kept as .grad, clipping's
    in-place `g *= coef` would not reach it."""
    p = tl.tensor(np.array(3.0), requires_grad=True, device=device)
    graph(p).backward()
    graph(p).backward()              # accumulation (old + g) too
    assert p.grad.shape == () and isinstance(p.grad, p.xp.ndarray), type(p.grad)
    g = float(as_numpy(p.grad))
    assert abs(g) > 1.0
    norm = tl.optim.clip_grad_norm_([p], 1.0)
    assert float(norm) == pytest.approx(abs(g))
    assert float(as_numpy(p.grad)) == pytest.approx(np.sign(g) * 1.0, rel=1e-5)


def test_op_outputs_are_arrays_even_when_0d(device):
    x = tl.tensor(np.array([1.0, 2.0]), requires_grad=True, device=device)
    for y in (x.sum(), x.sum() * 2.0, x.max(), F.cross_entropy(x[None], np.array([1]))):
        assert y.shape == () and isinstance(y.data, x.xp.ndarray), type(y.data)
    y = x.sum() * 2.0
    y.data[...] = 5.0                # writable in place, as any tensor's data
    assert y.item() == 5.0


# ====================================== Tensor basics =========================================

@pytest.mark.parametrize("data, dtype", [
    (1.5, np.float32),
    ([1.0, 2.0], np.float32),
    ([1, 2.5], np.float32),
    ([[1.0], [2.0]], np.float32),
    (np.array([1.0, 2.0]), np.float64),
    (np.array([1.0], np.float32), np.float32),
    (np.float64(1.5), np.float64),
    (3, np.int64),
    ([1, 2], np.int64),
    (np.array([1, 2], np.int32), np.int32),
    (tl.tensor(np.array([1.0])), np.float64),
], ids=["float", "list", "mixed-list", "nested-list", "np-float64", "np-float32", "np-scalar",
        "int", "int-list", "np-int32", "tensor"])
def test_tensor_dtype_rules(data, dtype, device):
    assert tl.tensor(data, device=device).dtype == dtype


def test_explicit_dtype_wins():
    assert tl.tensor([1, 2], dtype=np.float64).dtype == np.float64


@pytest.mark.parametrize("data", [3, [1, 2], np.array([1, 2], np.int32), [True]])
def test_requires_grad_on_integers_raises(data):
    with pytest.raises(TypeError, match="only floating tensors can require grad"):
        tl.tensor(data, requires_grad=True)


def test_conversions():
    t = tl.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    assert isinstance(t.numpy(), np.ndarray)
    np.testing.assert_array_equal(np.asarray(t), t.numpy())
    assert np.asarray(t, dtype=np.float64).dtype == np.float64
    assert t[1, 2].item() == 6.0 and isinstance(t.sum().item(), float)
    assert t.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert (t.shape, t.ndim, t.size, len(t)) == ((2, 3), 2, 6, 2)

    d = (t * 2.0).detach()
    assert d.is_leaf and not d.requires_grad and d.creator is None
    assert t.to("cpu") is t
    t64 = t.to(dtype=np.float64)
    assert t64.dtype == np.float64 and t64.requires_grad and t64 is not t


def test_repr_names_shape_dtype_device_and_grad_fn():
    x = tl.tensor(np.ones((2, 3), np.float32), requires_grad=True)
    text = repr(x * 2.0)
    for part in ["shape=(2, 3)", "dtype=float32", "device=cpu", "grad_fn=Mul"]:
        assert part in text, text
    assert "requires_grad=True" in repr(x)


@pytest.mark.parametrize("expr", [
    lambda x: x * 2.0, lambda x: 2.0 * x, lambda x: x + 1, lambda x: 1.0 - x, lambda x: x / 3.0,
    lambda x: 3.0 / x, lambda x: x ** 2, lambda x: F.gelu(x), lambda x: F.layer_norm(x),
    lambda x: F.softmax(x), lambda x: x.mean(), lambda x: F.cross_entropy(x, np.array([0, 1])),
    lambda x: x.max(axis=-1), lambda x: x.max(),
], ids=["x*2.0", "2.0*x", "x+1", "1.0-x", "x/3.0", "3.0/x", "x**2", "gelu", "layer_norm",
        "softmax", "mean", "cross_entropy", "max-axis", "max"])
def test_float32_stays_float32(expr, device):
    x = tl.tensor(np.ones((2, 3), np.float32), requires_grad=True, device=device)
    y = expr(x)
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


def test_comparisons_give_boolean_tensors_without_grad():
    x = leaf(X)
    mask = x > 0
    assert mask.dtype == bool and not mask.requires_grad
    np.testing.assert_array_equal(mask.numpy(), X > 0)
    assert x.argmax().item() == 2


# ======================================== profiler ============================================

def test_profiler_counts_forward_and_backward_per_op():
    x = leaf(np.ones((2, 3)))
    with tl.profile() as prof:
        loss = F.softmax(x * 2.0 * 3.0).sum()
        loss.backward()
    assert prof.stats["Mul"]["forward"][0] == 2 and prof.stats["Mul"]["backward"][0] == 2
    assert prof.stats["Softmax"]["forward"][0] == 1 and prof.stats["Softmax"]["backward"][0] == 1
    assert prof.stats["Sum"]["backward"][0] == 1
    table = prof.table()
    for op in ("Mul", "Softmax", "Sum"):
        assert op in table
    assert {row[0] for row in prof.rows()} == {"Mul", "Softmax", "Sum"}


def test_profiler_is_off_outside_its_block_and_cannot_nest():
    with tl.profile() as prof:
        with pytest.raises(RuntimeError, match="cannot be nested"):
            with tl.profile():
                pass
    leaf(X).exp()
    assert "Exp" not in prof.stats


def test_the_graph_keeps_no_data_that_no_op_saved():
    """An intermediate result is freed once the program drops it, though the graph through it
    lives on: the graph holds an Edge (op, shape, dtype), and ops keep only what they saved."""
    import gc
    import weakref
    x = leaf(np.arange(6.0).reshape(2, 3))
    a = x * 2.0                     # Sum below saves only a shape, so nothing needs a's data
    data = weakref.ref(a.data)
    y = F.exp(a.sum(axis=0))        # Exp saves its own output, not a
    del a
    gc.collect()
    assert data() is None
    y.backward(np.ones(3))
    expected = 2.0 * np.exp((2.0 * np.arange(6.0).reshape(2, 3)).sum(axis=0))
    np.testing.assert_allclose(x.grad, np.broadcast_to(expected, (2, 3)))
