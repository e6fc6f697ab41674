"""Kernel dispatch: the reference ops in tensorlite.functional, the fast kernels beside them.

The switch (tl.use_kernels, TENSORLITE_KERNELS) and the registry's rules.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import tensorlite as tl
import tensorlite.functional as F
from tensorlite import kernels
from tensorlite.backend import as_numpy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ======================================= the switch ==========================================

def test_the_default_mode_is_fast():
    assert kernels.mode() == "fast"


def test_use_kernels_sets_the_mode_and_restores_it_as_a_context_manager():
    assert kernels.mode() == "fast"
    with tl.use_kernels("reference") as switch:
        assert kernels.mode() == "reference" and isinstance(switch, tl.use_kernels)
        with tl.use_kernels("fast"):
            assert kernels.mode() == "fast"
        assert kernels.mode() == "reference"
    assert kernels.mode() == "fast"
    try:
        tl.use_kernels("reference")                 # a plain call: in effect from now on
        assert kernels.mode() == "reference"
    finally:
        tl.use_kernels("fast")
    assert kernels.mode() == "fast"


def test_use_kernels_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="kernel mode must be 'reference' or 'fast', got 'quick'"):
        tl.use_kernels("quick")
    assert kernels.mode() == "fast"


def run_python(code, **env):
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_the_environment_variable_sets_the_mode_and_a_bad_value_is_named():
    out = run_python("import tensorlite as tl; print(tl.kernels.mode())", TENSORLITE_KERNELS="reference")
    assert out.returncode == 0 and out.stdout.strip() == "reference", out.stderr
    out = run_python("import tensorlite", TENSORLITE_KERNELS="slow")
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1] == (
        "ValueError: TENSORLITE_KERNELS='slow' is not a kernel mode: set it to 'reference' or 'fast' "
        "(or leave it unset for 'fast')")


# ====================================== the registry =========================================

class Doubled(F.Function):
    """Not an op of tensorlite.functional: no kernel may be registered for it."""
    def forward(self, x):
        return 2 * x

    def backward(self, gy):
        return 2 * gy


def test_a_kernel_without_a_reference_is_refused():
    with pytest.raises(TypeError, match="is not a reference op"):
        kernels.register(Doubled, "cpu")
    with pytest.raises(TypeError, match="is not a reference op"):
        kernels.register(np.exp, "cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        kernels.register(F.Tanh, "tpu")
    with pytest.raises(TypeError, match="must be named as its reference Tanh"):
        @kernels.register(F.Tanh, "cpu")
        class FastTanh(F.Tanh):
            pass
    assert (F.Tanh, "cpu") not in kernels.registered()


@pytest.fixture
def planted(monkeypatch):
    """Register a kernel for Tanh on the CPU for one test, restoring the registry after."""
    for table in ("_registered", "_active", "_supports"):
        monkeypatch.setattr(kernels, table, dict(getattr(kernels, table)))

    def plant(impl):
        return kernels.register(F.Tanh, "cpu")(impl)
    return plant


def test_apply_runs_the_registered_kernel_in_fast_mode_only(planted):
    calls = []

    @planted
    class Tanh(F.Tanh):
        def forward(self, x):
            calls.append("fast")
            return super().forward(x)

    assert kernels.resolve(F.Tanh, "cpu") is Tanh and kernels.reference_of(Tanh) is F.Tanh
    assert kernels.resolve(F.Tanh, "cuda") is F.Tanh              # nothing registered there
    x = tl.tensor(np.linspace(-1, 1, 5), requires_grad=True)
    y = F.tanh(x)
    assert type(y.creator) is Tanh and calls == ["fast"]
    with tl.use_kernels("reference"):
        assert kernels.resolve(F.Tanh, "cpu") is F.Tanh
        y = F.tanh(x)
        assert type(y.creator) is F.Tanh and calls == ["fast"]
    assert type(F.tanh(x).creator) is Tanh and calls == ["fast", "fast"]


def test_a_kernel_may_decline_a_call(planted):
    @planted
    class Tanh(F.Tanh):
        @classmethod
        def supports(cls, x):
            return x.dtype == np.float32

    for dtype, ran in ((np.float32, Tanh), (np.float64, F.Tanh)):
        assert type(F.tanh(tl.tensor(np.ones(3, dtype), requires_grad=True)).creator) is ran
    assert kernels.resolve(F.Tanh, "cpu", np.ones(3)) is F.Tanh
    assert kernels.resolve(F.Tanh, "cpu", np.ones(3, np.float32)) is Tanh


# ============================ every fast kernel equals its reference ==========================

def floats(rng, dtype, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def ids(rng, high, *shape):
    return rng.integers(0, high, shape)


# reference op -> cases: (id, make(rng, dtype) -> (arrays, keyword arguments)). Shapes cross the
# kernels' own boundaries: several 64K blocks and a partial one for GELU, the last and other
# axes for softmax, both embedding paths (one-hot GEMM; N * V > 2^24: sort and reduceat).
FUNCTION_CASES = {
    F.GELU: [
        ("BTC", lambda r, d: ([floats(r, d, 2, 8, 24, scale=3)], {})),
        ("three-blocks", lambda r, d: ([floats(r, d, 3, 100, 450, scale=3)], {})),
        ("transposed", lambda r, d: ([floats(r, d, 24, 8, scale=3).T], {})),
    ],
    F.Softmax: [(f"axis{a}", lambda r, d, a=a: ([floats(r, d, 4, 5, 6, scale=3)], {"axis": a}))
                for a in (-1, 1, 0)],
    F.LogSoftmax: [(f"axis{a}", lambda r, d, a=a: ([floats(r, d, 4, 5, 6, scale=3)], {"axis": a}))
                   for a in (-1, 0)],
    F.CausalSoftmax: [
        ("4d", lambda r, d: ([floats(r, d, 2, 3, 6, 6, scale=3)], {"scale": 0.4})),
        ("2d", lambda r, d: ([floats(r, d, 5, 5)], {})),
    ],
    F.CrossEntropy: [
        ("BTV", lambda r, d: ([floats(r, d, 3, 4, 11, scale=2)], {"targets": ids(r, 11, 3, 4)})),
        ("NV", lambda r, d: ([floats(r, d, 6, 7, scale=2)], {"targets": ids(r, 7, 6)})),
    ],
    F.LayerNorm: [
        ("weight-bias", lambda r, d: ([floats(r, d, 3, 4, 16, scale=2) + 1, floats(r, d, 16),
                                       floats(r, d, 16)], {})),
        ("weight", lambda r, d: ([floats(r, d, 3, 4, 16), floats(r, d, 16)], {})),
        ("plain", lambda r, d: ([floats(r, d, 5, 16)], {})),
        ("1d-eps", lambda r, d: ([0.1 * floats(r, d, 16), floats(r, d, 16), floats(r, d, 16)],
                                 {"eps": 0.01})),
    ],
    F.Linear: [
        ("3d-bias", lambda r, d: ([floats(r, d, 3, 4, 8), floats(r, d, 5, 8), floats(r, d, 5)], {})),
        ("2d", lambda r, d: ([floats(r, d, 6, 8), floats(r, d, 5, 8)], {})),
        ("1d-bias", lambda r, d: ([floats(r, d, 8), floats(r, d, 5, 8), floats(r, d, 5)], {})),
    ],
    F.Dropout: [                                        # random: the same seed, then a given mask
        ("drawn", lambda r, d: ([floats(r, d, 5, 300)], {"p": 0.3})),
        ("mask", lambda r, d: ([floats(r, d, 4, 9)], {"p": 0.25, "mask": ((r.random((4, 9)) >= 0.25)
                                                                           / 0.75).astype(d)})),
    ],
    F.Embedding: [
        ("onehot", lambda r, d: ([floats(r, d, 11, 6)], {"ids": ids(r, 11, 3, 5)})),
        ("sorted", lambda r, d: ([floats(r, d, 1 << 15, 3)], {"ids": ids(r, 50, 24, 25)})),
    ],
}

# Fast and reference compute the same formula in another order (BLAS sums, blocks, in-place
# passes), so they differ by rounding only: at most 8 eps of |value| + 1 on these cases (GELU's
# regrouped polynomial; sums are 0-3 eps), in either dtype. The bounds leave about 10x for
# other shapes and BLAS builds: float32 1e-5 = 84 eps (eps 1.2e-7), float64 1e-13 = 450 eps
# (eps 2.2e-16). float64 is the sharp check: a layer norm that forgets its eps of 1e-5 moves
# rows of variance ~4 by ~1e-6, inside float32's bound, far outside float64's
# (test_a_wrong_kernel_is_caught).
TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-13, atol=1e-13)}


def on_device(a, device):
    return tl.backend.to_device(a, device)


def run_function(op, arrays, kwargs, device, seed):
    """forward, then backward with a random upstream gradient: [y, grads...] as NumPy arrays.
    Also checks that the op writes into neither its inputs nor gy."""
    arrays = [on_device(a, device) for a in arrays]
    kwargs = {k: on_device(v, device) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    before = [as_numpy(a).copy() for a in arrays]
    fn = op()
    tl.manual_seed(seed)                  # random ops (dropout) draw the same numbers in both
    y = fn.forward(*arrays, **kwargs)
    gy = on_device(floats(np.random.default_rng(seed), y.dtype, *y.shape), device)
    gy_before = as_numpy(gy).copy()
    grads = fn.backward(gy)
    grads = grads if isinstance(grads, tuple) else (grads,)
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(as_numpy(a), b, err_msg=f"{op.__name__} wrote into an input")
    np.testing.assert_array_equal(as_numpy(gy), gy_before, err_msg=f"{op.__name__}.backward wrote into gy")
    return [as_numpy(y)] + [as_numpy(g) for g in grads if g is not None]


def run_adamw(update, arrays, kwargs, device, seed):
    """One update of (param, grad, exp_avg, exp_avg_sq): the three updated buffers."""
    param, grad, m, v = (on_device(a.copy(), device) for a in arrays)
    update(param, grad, m, v, **kwargs)
    return [as_numpy(param), as_numpy(m), as_numpy(v)]


def run_grad_norm(norm, arrays, kwargs, device, seed):
    return [as_numpy(norm([on_device(a, device) for a in arrays]))]


def adamw_buffers(r, d, n):
    return [floats(r, d, n), floats(r, d, n), 0.1 * floats(r, d, n), np.abs(0.1 * floats(r, d, n))]


ADAMW = dict(lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8)
PLAIN_CASES = {
    tl.optim.adamw_update: (run_adamw, [
        ("step1-decay", lambda r, d: (adamw_buffers(r, d, 1000), dict(ADAMW, step=1, weight_decay=0.1))),
        ("step7-two-blocks", lambda r, d: (adamw_buffers(r, d, 70000), dict(ADAMW, step=7, weight_decay=0.0))),
    ]),
    tl.optim.grad_norm: (run_grad_norm, [
        ("three", lambda r, d: ([floats(r, d, 3, 4), floats(r, d, 5), floats(r, d, 70000)], {})),
    ]),
}


def cases_of(reference):
    if reference in FUNCTION_CASES:
        return run_function, FUNCTION_CASES[reference]
    if reference in PLAIN_CASES:
        return PLAIN_CASES[reference]
    raise AssertionError(f"the kernel for {reference.__name__} has no case in tests/test_kernels.py: "
                         "add inputs for it to FUNCTION_CASES or PLAIN_CASES")


def assert_kernel_matches(reference, impl, device, dtype):
    """impl gives reference's results on every case of reference that it supports, to
    TOL[dtype]; returns how many cases were compared."""
    runner, cases = cases_of(reference)
    compared = 0
    for i, (case, make) in enumerate(cases):
        arrays, kwargs = make(np.random.default_rng(i), dtype)
        supports = getattr(impl, "supports", None)
        if supports is not None and not supports(*[on_device(a, device) for a in arrays], **{
                k: on_device(v, device) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}):
            continue
        want = runner(reference, arrays, kwargs, device, seed=100 + i)
        got = runner(impl, arrays, kwargs, device, seed=100 + i)
        assert len(got) == len(want), f"{case}: {len(got)} results, the reference gives {len(want)}"
        for k, (g, w) in enumerate(zip(got, want)):
            what = "forward" if k == 0 and runner is run_function else f"result {k}"
            assert g.shape == w.shape and g.dtype == w.dtype, \
                f"{case} {what}: {g.shape} {g.dtype}, the reference {w.shape} {w.dtype}"
            np.testing.assert_allclose(g, w, **TOL[dtype], err_msg=f"{reference.__name__} {case} {what}")
        compared += 1
    return compared


def kernel_id(key):
    reference, device = key
    return f"{reference.__name__}-{device}"


REGISTERED = sorted(kernels.registered(), key=kernel_id)


def test_every_kernel_class_is_registered_under_a_reference():
    """No Function in tensorlite/kernels escapes the equality test below by not being registered."""
    import importlib
    import inspect
    found = []
    for name in ("cpu", "cuda"):
        if importlib.util.find_spec(f"tensorlite.kernels.{name}") is None:
            continue
        module = importlib.import_module(f"tensorlite.kernels.{name}")
        found += [c for _, c in inspect.getmembers(module, inspect.isclass)
                  if issubclass(c, tl.Function) and c.__module__ == module.__name__]
    assert found
    for impl in found:
        reference = kernels.reference_of(impl)
        assert reference is not None, f"{impl.__module__}.{impl.__name__} is not registered"
        assert kernels._is_reference(reference)


def test_the_cpu_kernels_are_registered():
    names = {kernel_id(k) for k in REGISTERED}
    assert {"GELU-cpu", "Softmax-cpu", "CausalSoftmax-cpu", "LogSoftmax-cpu", "CrossEntropy-cpu",
            "LayerNorm-cpu", "Linear-cpu", "Embedding-cpu", "adamw_update-cpu"} <= names


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("key, device", [pytest.param(k, k[1], id=kernel_id(k)) for k in REGISTERED],
                         indirect=["device"])   # conftest's device fixture sets the device up
def test_every_kernel_matches_its_reference(key, device, dtype):
    reference = key[0]
    try:
        tl.backend.check_device(device)
    except tl.DeviceError as e:
        pytest.skip(f"{kernel_id(key)} not run: {e}")
    impl = kernels.registered()[key]
    assert impl.__name__ == reference.__name__
    if assert_kernel_matches(reference, impl, device, dtype) == 0:
        pytest.skip(f"{kernel_id(key)} declines every {np.dtype(dtype)} case (supports): the reference runs")


def test_a_wrong_kernel_is_caught():
    class GELU(F.GELU):
        def backward(self, gy):
            return gy * self.s                               # forgot x ds/dx

    class LayerNorm(kernels.cpu.LayerNorm):
        def forward(self, x, w=None, b=None, eps=1e-5):
            return super().forward(x, w, b, eps=0.0)         # forgot eps: off by about 5e-6

    with pytest.raises(AssertionError, match="GELU BTC result 1"):
        assert_kernel_matches(F.GELU, GELU, "cpu", np.float32)
    with pytest.raises(AssertionError, match="LayerNorm weight-bias forward"):
        assert_kernel_matches(F.LayerNorm, LayerNorm, "cpu", np.float64)


def test_the_embedding_sort_path_passes_gradcheck(monkeypatch):
    monkeypatch.setattr(kernels.cpu.Embedding, "ONEHOT_LIMIT", 0)   # every N * V is above it now
    w = tl.tensor(np.random.default_rng(0).standard_normal((7, 3)), requires_grad=True)
    assert tl.gradcheck(lambda w: F.embedding([[0, 2, 2], [6, 2, 0]], w), w, kernels="fast")


# ================================ the reference path end to end ===============================

def train_tiny_gpt(mode, steps=5):
    """Losses of a few AdamW steps (with clipping and dropout) of a small GPT in one mode."""
    from gpt import GPT, GPTConfig
    with tl.use_kernels(mode):
        tl.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.1))
        opt = model.configure_optimizer(learning_rate=1e-2, weight_decay=0.1, betas=(0.9, 0.95))
        rng = np.random.default_rng(1)
        x, y = rng.integers(0, 13, (4, 8)), rng.integers(0, 13, (4, 8))   # one batch, learned
        losses = []
        for _ in range(steps):
            _, loss = model(x, y)
            opt.zero_grad()
            loss.backward()
            tl.optim.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
        return losses, [p.numpy() for p in model.parameters()], model


def test_a_gpt_trains_the_same_on_the_reference_ops():
    fast, fast_params, fast_model = train_tiny_gpt("fast")
    reference, reference_params, reference_model = train_tiny_gpt("reference")
    assert fast[-1] < fast[0] - 0.1                                   # it did learn
    np.testing.assert_allclose(reference, fast, rtol=1e-6)            # float32: a few eps
    # Adam moves a weight whose gradient is ~0 by about lr * sign(rounding noise), so weights
    # may differ by a small fraction of a step (lr = 1e-2); 2e-5 here
    for p, q in zip(reference_params, fast_params):
        np.testing.assert_allclose(p, q, rtol=0, atol=1e-4)
    ran = {type(fn) for fn in _graph_functions(reference_model, "reference")}
    assert F.LayerNorm in ran and F.GELU in ran and not any(kernels.reference_of(f) for f in ran)
    ran = {type(fn) for fn in _graph_functions(fast_model, "fast")}
    assert kernels.cpu.LayerNorm in ran and kernels.cpu.GELU in ran


def _graph_functions(model, mode):
    with tl.use_kernels(mode):
        _, loss = model(np.zeros((1, 8), np.int64), np.zeros((1, 8), np.int64))
    found, stack = {}, [loss]
    while stack:
        fn = stack.pop().creator
        if fn is not None and id(fn) not in found:
            found[id(fn)] = fn
            stack.extend(fn.inputs)
    return found.values()


# ================================ the README shows the code ==================================

def test_the_readme_softmax_is_the_code():
    """README's "A backward pass, as it reads in the code" quotes functional.Softmax verbatim."""
    import inspect
    import re
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = readme.split("## A backward pass, as it reads in the code", 1)[1]
    quoted = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert quoted == inspect.getsource(F.Softmax)


FLOAT_OPS = sorted((c for c in vars(F).values() if isinstance(c, type) and issubclass(c, tl.Function)
                    and c.float_input), key=lambda c: c.__name__)


def test_the_ops_that_need_floats_are_the_ones_pytorch_refuses_integers_for():
    assert [c.__name__ for c in FLOAT_OPS] == [
        "CausalSoftmax", "CrossEntropy", "Dropout", "GELU", "LayerNorm", "LogSoftmax", "Softmax"]


@pytest.mark.parametrize("mode", ["reference", "fast"])
@pytest.mark.parametrize("op", FLOAT_OPS, ids=lambda c: c.__name__)
def test_an_integer_tensor_gets_one_line_naming_the_op_in_both_modes(op, mode):
    # before, the fast GELU and softmax failed inside NumPy, the reference cross-entropy
    # returned an integer loss and the reference causal softmax overflowed
    with tl.use_kernels(mode), pytest.raises(TypeError, match=rf"^{op.__name__}: needs a "
                                             r"floating-point tensor, got int64; convert it"):
        op.apply(tl.Tensor(np.arange(12).reshape(3, 4)))
