"""The checker itself: deliberately wrong backward passes must be caught.

Each wrong op subclasses the real Function and keeps its forward, so only the backward is wrong.
"""
import re

import numpy as np
import pytest

import tensorlite as tl
import tensorlite.functional as F
from tensorlite.gradcheck import FULL_CHECK_LIMIT, gradcheck_report


class SoftmaxWithoutSubtraction(F.Softmax):
    def backward(self, gy):
        return self.y * gy                                   # forgot - sum(gy * y)


class SoftmaxSumOfY(F.Softmax):
    def backward(self, gy):
        y = self.y
        return y * (gy - y.sum(axis=self.axis, keepdims=True))  # sum(y) where sum(gy * y) belongs


class LayerNormWithoutMeanTerm(F.LayerNorm):
    def backward(self, gy):
        xh, rstd, lead = self.xh, self.rstd, tuple(range(gy.ndim - 1))
        dxh = gy * self.w
        gx = rstd * (dxh - xh * (dxh * xh).mean(axis=-1, keepdims=True))  # forgot - mean(dxh)
        return gx, (gy * xh).sum(axis=lead), gy.sum(axis=lead)


class LayerNormWithoutProjectionTerm(F.LayerNorm):
    def backward(self, gy):
        xh, rstd, lead = self.xh, self.rstd, tuple(range(gy.ndim - 1))
        dxh = gy * self.w
        gx = rstd * (dxh - dxh.mean(axis=-1, keepdims=True))  # forgot - xh * mean(dxh * xh)
        return gx, (gy * xh).sum(axis=lead), gy.sum(axis=lead)


class AddMeanOverBroadcast(F.Add):
    def backward(self, gy):
        return gy, gy.mean(axis=0)   # b was broadcast over axis 0: its gradient is the sum there


class MatMulWrongTranspose(F.MatMul):
    def backward(self, gy):
        return gy @ self.b, self.a.T @ gy                    # da needs b.T


class GELUWithoutTanhTerm(F.GELU):
    def backward(self, gy):
        return gy * self.s                                   # forgot x ds/dx


class CrossEntropyWithoutMean(F.CrossEntropy):
    def backward(self, gy):
        gx = self.p
        gx[self.rows, self.t] -= 1
        return (gx * gy).reshape(self.shape)                 # forgot / N


_rng = np.random.default_rng(7)  # the table below is drawn once, at import
x34, w5, b5 = _rng.standard_normal((3, 4)), _rng.standard_normal(5), _rng.standard_normal(5)

# (wrong op applied, its inputs, the index of the input whose gradient is wrong)
WRONG = {
    "softmax-without-subtraction": (lambda x: SoftmaxWithoutSubtraction.apply(x, axis=-1), [x34], 0),
    "softmax-sum-of-y": (lambda x: SoftmaxSumOfY.apply(x, axis=-1), [x34], 0),
    "layer_norm-without-mean-term": (LayerNormWithoutMeanTerm.apply,
                                     [_rng.standard_normal((2, 3, 5)), w5, b5], 0),
    "layer_norm-without-projection-term": (LayerNormWithoutProjectionTerm.apply,
                                           [_rng.standard_normal((2, 3, 5)), w5, b5], 0),
    "add-mean-over-broadcast": (AddMeanOverBroadcast.apply, [x34, _rng.standard_normal(4)], 1),
    "matmul-wrong-transpose": (MatMulWrongTranspose.apply,
                               [_rng.standard_normal((3, 3)), _rng.standard_normal((3, 3))], 0),
    "gelu-without-tanh-term": (GELUWithoutTanhTerm.apply, [2 * x34], 0),
    "cross_entropy-without-mean": (lambda x: CrossEntropyWithoutMean.apply(
        x, targets=np.array([0, 3, 1, 1])), [_rng.standard_normal((4, 5))], 0),
}
NUMBER = r"(-?[0-9.]+(?:e[-+]?[0-9]+)?|nan|-?inf)"


@pytest.mark.parametrize("name", WRONG)
def test_wrong_backward_is_caught(name):
    fn, arrays, wrong_input = WRONG[name]
    inputs = [tl.tensor(a, requires_grad=True) for a in arrays]
    with pytest.raises(tl.GradcheckError) as info:
        tl.gradcheck(fn, *inputs)
    message = str(info.value)
    assert f"gradient of input {wrong_input} (shape {arrays[wrong_input].shape})" in message
    analytic, numeric = re.search(f"analytic {NUMBER}, numeric {NUMBER}", message).groups()
    assert abs(float(analytic) - float(numeric)) > 1e-5, message


def test_report_names_worst_element_and_passes_correct_inputs():
    """The mean-over-broadcast Add gets a's gradient right and only b's wrong."""
    fn, arrays, _ = WRONG["add-mean-over-broadcast"]
    ok, bad = gradcheck_report(fn, *[tl.tensor(a, requires_grad=True) for a in arrays])
    assert (ok.index, ok.passed, ok.mode) == (0, True, "elements")
    assert (bad.index, bad.passed, bad.shape) == (1, False, (4,))
    assert re.fullmatch(r"element \(\d,\)", bad.worst)
    # b's true gradient is the sum over 3 rows, the wrong one their mean: a third of it
    assert bad.analytic == pytest.approx(bad.numeric / 3, rel=1e-6)


def test_all_ones_upstream_gradient_misses_a_softmax_bug(rng):
    """Why gradcheck draws a random upstream gradient: checking sum(softmax(x)), i.e. gy = 1.

    sum(softmax(x)) is 1 for every x, so its numeric gradient is 0. With gy = 1:
      correct  y * (gy - sum(gy * y)) = y * (1 - 1) = 0      matches
      sum(y)   y * (gy - sum(y))      = y * (1 - 1) = 0      matches: the bug is missed
      y * gy                          = y != 0               differs: that bug is caught
    """
    x = rng.standard_normal((3, 4))
    y = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
    gy = np.ones_like(y)
    numeric = np.zeros_like(y)
    np.testing.assert_allclose(y * (gy - (gy * y).sum(-1, keepdims=True)), numeric, atol=1e-15)
    np.testing.assert_allclose(y * (gy - y.sum(-1, keepdims=True)), numeric, atol=1e-15)
    assert np.abs(y * gy - numeric).min() > 0.01

    # the engine agrees: the sum-of-y bug gives the gradient of sum(softmax(x)) exactly
    t = tl.tensor(x, requires_grad=True)
    SoftmaxSumOfY.apply(t, axis=-1).sum().backward()
    np.testing.assert_allclose(t.grad, numeric, atol=1e-15)
    # while a random upstream gradient catches it (test_wrong_backward_is_caught[softmax-sum-of-y])
    with pytest.raises(tl.GradcheckError):
        tl.gradcheck(lambda x: SoftmaxSumOfY.apply(x, axis=-1), tl.tensor(x, requires_grad=True))


@pytest.mark.parametrize("op", [F.softmax, F.layer_norm, F.gelu])
def test_random_directions_pass_correct_ops(op, rng):
    x = tl.tensor(rng.standard_normal((24, 30)), requires_grad=True)
    assert x.size > FULL_CHECK_LIMIT
    [report] = gradcheck_report(op, x)
    assert report.mode == "directions" and report.passed, report


@pytest.mark.parametrize("name", ["softmax-sum-of-y", "gelu-without-tanh-term"])
def test_random_directions_catch_a_wrong_op(name, rng):
    fn = WRONG[name][0]
    x = tl.tensor(rng.standard_normal((24, 30)), requires_grad=True)
    with pytest.raises(tl.GradcheckError, match=r"input 0 \(shape \(24, 30\)\) is wrong at random "
                                                r"direction \d+: analytic .*, numeric "):
        tl.gradcheck(fn, x)


def test_gradcheck_checks_in_float64_and_leaves_inputs_alone(rng):
    x32 = tl.tensor(rng.standard_normal((2, 3)).astype(np.float32), requires_grad=True)
    before = x32.numpy().copy()
    seen = []

    def fn(x):
        seen.append(x.dtype)
        return F.tanh(x)

    assert tl.gradcheck(fn, x32)
    assert set(seen) == {np.dtype(np.float64)}
    np.testing.assert_array_equal(x32.numpy(), before)
    assert x32.grad is None


def test_gradcheck_needs_something_to_check():
    with pytest.raises(ValueError, match="no floating input with requires_grad"):
        tl.gradcheck(F.tanh, tl.tensor(x34))


def test_gradcheck_needs_a_tensor_back():
    with pytest.raises(TypeError, match="must return a Tensor"):
        tl.gradcheck(lambda x: x.numpy(), tl.tensor(x34, requires_grad=True))
