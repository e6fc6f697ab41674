"""Finite-difference checks of hand-written backward passes.

For a function f and a random upstream gradient g, the scalar L(x) = sum(f(x) * g) has
dL/dx = backward(g). Central differences (L(x + eps e) - L(x - eps e)) / (2 eps) estimate
the same thing in float64. The random g matters: with g = 1 (a check of sum(f(x))) the true
gradient of softmax is exactly 0, since its outputs always sum to 1, and a backward that
returns y * (gy - sum(y)) instead of y * (gy - sum(gy * y)) gives 0 there too and passes.

Small inputs are checked element by element; large ones along random directions d,
comparing <dL/dx, d> with (L(x + eps d) - L(x - eps d)) / (2 eps).

An op may run as its reference (tensorlite.functional) or as a fast kernel (tensorlite.kernels),
so by default fn is checked both ways: with the fast kernels, and, when fn ran any, again with
the reference ops.
"""
from dataclasses import dataclass

import numpy as np

from .. import kernels as _kernels
from ..backend import as_numpy, get_array_module
from ..tensor import Tensor, no_grad

FULL_CHECK_LIMIT = 512   # inputs with at most this many elements are checked element by element
N_DIRECTIONS = 16        # random directions for larger inputs


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with its finite-difference estimate."""


@dataclass
class InputReport:
    index: int            # position of the input in the call
    shape: tuple
    mode: str             # "elements" or "directions"
    max_abs_err: float
    max_rel_err: float
    worst: str            # the element or direction with the largest violation
    analytic: float
    numeric: float
    passed: bool
    kernels: str = "reference"  # "fast" when the checked run used a fast kernel, else "reference"


def gradcheck(fn, *inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0, kernels="both"):
    """Check fn's backward against central differences; True or GradcheckError.

    fn takes the inputs (Tensors or other arguments) and returns one Tensor. Every floating
    Tensor input with requires_grad=True is checked, after being copied to float64.
    kernels: "both" (fn with the fast kernels, and again with the reference ops if it ran any
    fast kernel), "fast" or "reference" (that mode only).
    """
    for r in gradcheck_report(fn, *inputs, eps=eps, atol=atol, rtol=rtol, seed=seed, kernels=kernels):
        if not r.passed:
            raise GradcheckError(
                f"gradient of input {r.index} (shape {r.shape}) is wrong at {r.worst}: "
                f"analytic {r.analytic:.10g}, numeric {r.numeric:.10g} "
                f"(abs err {r.max_abs_err:.3g}, rel err {r.max_rel_err:.3g}; atol {atol}, rtol {rtol}; "
                f"{'fast kernels' if r.kernels == 'fast' else 'reference ops'})")
    return True


def gradcheck_report(fn, *inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0, kernels="both"):
    """The per-input comparison behind gradcheck, as a list of InputReport: one per checked
    input, the failing run's (or, when all pass, the one with the larger error) where fn was
    checked in both kernel modes."""
    if kernels not in ("both", "fast", "reference"):
        raise ValueError(f"gradcheck: kernels must be 'both', 'fast' or 'reference', got {kernels!r}")
    inputs = [_float64(x) for x in inputs]
    checked = [i for i, x in enumerate(inputs) if _is_checked(x)]
    if not checked:
        raise ValueError("gradcheck: no floating input with requires_grad=True to check")
    runs = []
    for mode in ("fast", "reference"):
        if kernels in (mode, "both"):
            with _kernels.use_kernels(mode):
                reports, used_fast = _check(fn, inputs, checked, eps, atol, rtol, seed)
            runs.append(reports)
            if kernels == "both" and not used_fast:
                break                       # fn ran no fast kernel: the reference run is the same
    return [min(pair, key=lambda r: (r.passed, -r.max_abs_err)) for pair in zip(*runs)]


def _check(fn, inputs, checked, eps, atol, rtol, seed):
    """Reports for the checked inputs under the current kernel mode, and whether fn ran a
    fast kernel."""
    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    used_fast = any(_kernels.reference_of(op) is not None for op in _ops_in_graph(out))
    xp = out.xp
    rng = np.random.default_rng(seed)
    gy = xp.asarray(rng.standard_normal(out.shape))           # the random upstream gradient
    for i in checked:
        inputs[i].grad = None
    out.backward(gy)

    def loss():
        with no_grad():
            return float((fn(*inputs).data * gy).sum())

    reports = []
    for i in checked:
        x = inputs[i]
        analytic = x.grad if x.grad is not None else xp.zeros_like(x.data)
        if x.size <= FULL_CHECK_LIMIT:
            r = _check_elements(i, x, as_numpy(analytic), loss, eps, atol, rtol)
        else:
            r = _check_directions(i, x, analytic, loss, eps, atol, rtol, rng)
        r.kernels = "fast" if used_fast else "reference"
        reports.append(r)
    return reports, used_fast


def _ops_in_graph(out):
    """The Function types of the graph that made out (walked without recursion)."""
    types, visited, stack = set(), set(), [out]
    while stack:
        fn = stack.pop().creator
        if fn is not None and id(fn) not in visited:
            visited.add(id(fn))
            types.add(type(fn))
            stack.extend(fn.inputs)
    return types


def _float64(x):
    if _is_checked(x):
        return Tensor(x.data.astype("float64"), requires_grad=True)
    return x


def _is_checked(x):
    return isinstance(x, Tensor) and x.requires_grad and x.dtype.kind == "f"


def _check_elements(i, x, analytic, loss, eps, atol, rtol):
    flat = x.data.reshape(-1)  # a view: nudging it nudges x
    numeric = np.empty(flat.size)
    for k in range(flat.size):
        old = flat[k].item()
        flat[k] = old + eps
        up = loss()
        flat[k] = old - eps
        down = loss()
        flat[k] = old
        numeric[k] = (up - down) / (2 * eps)
    return _compare(i, x.shape, "elements", analytic.reshape(-1), numeric, atol, rtol,
                    lambda k: f"element {tuple(int(j) for j in np.unravel_index(k, x.shape))}")


def _check_directions(i, x, analytic, loss, eps, atol, rtol, rng):
    xp = get_array_module(x.data)
    original = x.data.copy()
    rows = []
    for d_i in range(N_DIRECTIONS):
        d = xp.asarray(rng.standard_normal(x.shape))
        d /= xp.sqrt((d * d).sum())                         # unit direction
        x.data[...] = original + eps * d
        up = loss()
        x.data[...] = original - eps * d
        down = loss()
        x.data[...] = original
        rows.append((d_i, float((analytic * d).sum()), (up - down) / (2 * eps)))
    a = np.array([r[1] for r in rows])
    n = np.array([r[2] for r in rows])
    return _compare(i, x.shape, "directions", a, n, atol, rtol, lambda k: f"random direction {k}")


def _compare(i, shape, mode, analytic, numeric, atol, rtol, name):
    """The report of one input: pass when |a - n| <= atol + rtol |n| everywhere; the worst
    entry is the one furthest over that bound, named by name(k)."""
    abs_err = np.abs(analytic - numeric)
    excess = abs_err - (atol + rtol * np.abs(numeric))
    k = int(np.argmax(excess))
    return InputReport(
        index=i, shape=tuple(shape), mode=mode, max_abs_err=float(abs_err.max()),
        max_rel_err=float((abs_err / np.maximum(np.abs(numeric), 1e-12)).max()),
        worst=name(k), analytic=float(analytic[k]), numeric=float(numeric[k]), passed=bool(excess[k] <= 0))
