"""`torch.nn.init`: fill a parameter in place, `nn.init.normal_(module.weight, mean=0.0, std=0.02)`.

The values come from tensorlite's seeded CPU generator (torch.manual_seed) and are copied to the
tensor's device, so a seed gives the same weights on the CPU and on the GPU. Each function writes
into the tensor's array (an optimizer holding views of it sees the new values) and returns the
tensor.
"""
import math

import numpy as np

from tensorlite import backend

__all__ = ["normal_", "uniform_", "zeros_", "ones_", "constant_", "xavier_uniform_", "xavier_normal_"]


def _fill(tensor, values):
    tensor.data[...] = backend.to_device(np.asarray(values, dtype=tensor.dtype), tensor.device)
    return tensor


def normal_(tensor, mean=0.0, std=1.0):
    """Fill with samples of N(mean, std^2)."""
    return _fill(tensor, backend.rng("cpu").normal(mean, std, tensor.shape))


def uniform_(tensor, a=0.0, b=1.0):
    """Fill with samples of U(a, b)."""
    return _fill(tensor, backend.rng("cpu").uniform(a, b, tensor.shape))


def zeros_(tensor):
    """Fill with zeros."""
    return _fill(tensor, 0)


def ones_(tensor):
    """Fill with ones."""
    return _fill(tensor, 1)


def constant_(tensor, val):
    """Fill with one value."""
    return _fill(tensor, val)


def _fans(tensor):
    if tensor.ndim < 2:
        raise ValueError(f"fan in and fan out need a tensor of 2 or more axes, got shape {tuple(tensor.shape)}")
    receptive = int(np.prod(tensor.shape[2:]))
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def xavier_uniform_(tensor, gain=1.0):
    """Fill with U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out)) (Glorot)."""
    fan_in, fan_out = _fans(tensor)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -a, a)


def xavier_normal_(tensor, gain=1.0):
    """Fill with N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out)) (Glorot)."""
    fan_in, fan_out = _fans(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))
