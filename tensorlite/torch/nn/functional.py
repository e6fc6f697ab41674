"""`torch.nn.functional`: PyTorch's signatures (`dim=`, class axis 1, `approximate=`) over
tensorlite's ops in `tensorlite.functional`.

    from tensorlite.torch.nn import functional as F
    wei = F.softmax(wei, dim=-1)
    loss = F.cross_entropy(logits.view(B * T, C), targets.view(B * T))

Shapes: N rows, C classes (cross_entropy), B batch, T time, nh heads, hs head size.
"""
import math

import numpy as np

import tensorlite.functional as TF
from tensorlite.backend import get_array_module
from tensorlite.tensor import Tensor

__all__ = ["softmax", "log_softmax", "cross_entropy", "relu", "gelu", "dropout", "linear",
           "layer_norm", "embedding", "scaled_dot_product_attention", "gelu_erf", "erf"]


def softmax(input, dim=None, dtype=None):
    """exp(x) / sum(exp(x)) along dim, which must be given (`F.softmax(wei, dim=-1)`)."""
    if dim is None:
        raise TypeError("softmax: pass the axis to normalize over, e.g. F.softmax(x, dim=-1)")
    return TF.softmax(input if dtype is None else input.to(dtype=dtype), axis=dim)


def log_softmax(input, dim=None, dtype=None):
    """log(softmax(x)) along dim, computed stably."""
    if dim is None:
        raise TypeError("log_softmax: pass the axis, e.g. F.log_softmax(x, dim=-1)")
    return TF.log_softmax(input if dtype is None else input.to(dtype=dtype), axis=dim)


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """The mean negative log-likelihood of the target classes under softmax(input).

    As PyTorch's: input (N, C) with target (N,), (C,) with a scalar target, or (N, C, d1, ...)
    with target (N, d1, ...) (the classes on axis 1). reduction "mean" or "sum". Class weights,
    label smoothing and reduction "none" are not supported; a target equal to ignore_index is
    refused as out of range rather than ignored.
    """
    if weight is not None or label_smoothing:
        raise NotImplementedError("cross_entropy: class weights and label smoothing are not supported")
    if reduction not in ("mean", "sum"):
        raise NotImplementedError(f"cross_entropy: reduction {reduction!r} is not supported ('mean' or 'sum')")
    if input.ndim == 1:                                   # (C,) and a scalar target
        input = input.reshape(1, -1)
        target = target.reshape(1) if isinstance(target, Tensor) else np.reshape(target, 1)
    elif input.ndim > 2:                                  # (N, C, d1, ...): classes to the last axis
        input = input.permute(0, *range(2, input.ndim), 1)
    loss = TF.cross_entropy(input, target)
    return loss * float(np.prod(input.shape[:-1])) if reduction == "sum" else loss


def relu(input, inplace=False):
    """max(x, 0)."""
    return TF.relu(input)


def gelu(input, approximate="none"):
    """PyTorch's GELU: x * Phi(x) with the exact normal CDF ("none", the default), or GPT-2's
    tanh approximation ("tanh", tensorlite.functional.gelu)."""
    if approximate == "tanh":
        return TF.gelu(input)
    if approximate != "none":
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return gelu_erf(input)


def dropout(input, p=0.5, training=True, inplace=False):
    """Zero each element with probability p and scale the rest by 1/(1-p) when training."""
    return TF.dropout(input, p, training)


def linear(input, weight, bias=None):
    """x @ weight.T + bias, weight (out, in)."""
    return TF.linear(input, weight, bias)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Layer norm over the last axis, whose size normalized_shape must be."""
    shape = tuple(normalized_shape) if isinstance(normalized_shape, (tuple, list)) else (normalized_shape,)
    if shape != tuple(input.shape[-1:]):
        raise ValueError(f"layer_norm normalizes over the last axis only: normalized_shape {shape} "
                         f"must be ({input.shape[-1]},) for input of shape {tuple(input.shape)}")
    return TF.layer_norm(input, weight, bias, eps)


def embedding(input, weight):
    """Rows of weight (V, C) picked by the integer ids in input: (...) -> (..., C)."""
    return TF.embedding(input, weight)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """softmax(q @ k^T * scale + mask) @ v over (..., T, hs) inputs, scale 1/sqrt(hs) by default.

    is_causal hides the future (needs as many queries as keys); attn_mask is a boolean mask
    (True where a query may attend) or a float mask added to the scores.
    """
    hs = query.shape[-1]
    scale = 1.0 / math.sqrt(hs) if scale is None else scale
    att = query @ key.mT                                                   # (..., Tq, Tk)
    if is_causal:
        if attn_mask is not None:
            raise ValueError("scaled_dot_product_attention: pass attn_mask or is_causal, not both")
        att = TF.causal_softmax(att, scale=scale)
    else:
        att = att * scale
        if attn_mask is not None:
            mask = attn_mask.data if isinstance(attn_mask, Tensor) else attn_mask
            att = TF.masked_fill(att, ~mask, float("-inf")) if mask.dtype == bool else att + attn_mask
        att = TF.softmax(att, axis=-1)
    if dropout_p:
        att = TF.dropout(att, dropout_p, True)
    return att @ value                                                     # (..., Tq, hs)


# ================================ PyTorch's exact GELU =======================================

SQRT_HALF = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def erf(x):
    """The error function of an array: CuPy's on the GPU; SciPy's on the CPU when SciPy is
    installed, else Python's math.erf element by element (exact, and slow on large arrays)."""
    xp = get_array_module(x)
    if xp is not np:
        import cupyx.scipy.special
        return cupyx.scipy.special.erf(x)
    try:
        from scipy.special import erf as scipy_erf
    except ImportError:
        return np.frompyfunc(math.erf, 1, 1)(x).astype(x.dtype)
    return scipy_erf(x).astype(x.dtype, copy=False)


def gelu_erf(input):
    """y = x Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2, the normal CDF (PyTorch's default GELU).

    dx = gy * (Phi(x) + x phi(x)),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)

    Written with tensorlite's Mul, Sub and Add, so its backward is theirs: with x0 the values of
    x held constant, y = x * Phi(x0) + (x - x0) * (x0 * phi(x0)). The second term is exactly zero
    in value and carries the slope x phi(x) in its gradient.
    """
    x0 = input.data
    dt = x0.dtype.type
    cdf = erf(x0 * dt(SQRT_HALF))
    cdf += 1
    cdf *= 0.5                                                              # Phi(x)
    slope = x0 * get_array_module(x0).exp(x0 * x0 * dt(-0.5)) * dt(INV_SQRT_2PI)  # x phi(x)
    return input * cdf + (input - x0) * slope
