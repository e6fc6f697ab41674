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
