"""Shared fixtures: every op test runs once per backend (Chainer's inject_backend_tests).

"cuda" is always listed so that a machine without CuPy or a GPU shows the skip instead of
silently running fewer tests.
"""
import numpy as np
import pytest

import tensorlite as tl

GPU = tl.gpu_available()


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not GPU, reason="no GPU: CuPy not installed or sees no device"))])
def device(request):
    """The device name the test builds its inputs on."""
    return request.param


@pytest.fixture
def rng():
    """A fresh, fixed-seed NumPy generator, so every test sees the same data on every run."""
    return np.random.default_rng(0)

