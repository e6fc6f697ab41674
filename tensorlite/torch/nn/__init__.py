"""`torch.nn`: tensorlite's modules, which already have PyTorch's names, layouts and default
initialisation (Linear U(-1/sqrt(in), 1/sqrt(in)), Embedding N(0, 1), LayerNorm ones and zeros),
plus PyTorch's exact `GELU` and the `functional`, `init` and `utils` submodules.

`nn.Module` here is `tensorlite.nn.Module`: `isinstance(m, nn.Linear)` holds for layers made
through either import.
"""
from tensorlite.nn import (
    Dropout, Embedding, LayerNorm, Linear, Module, ModuleDict, ModuleList, Parameter, ReLU, Sequential,
)
from tensorlite.nn import GELU as _TanhGELU

from . import functional, init, utils


class GELU(_TanhGELU):
    """PyTorch's GELU: x * Phi(x) with the exact normal CDF by default (`approximate="none"`), or
    GPT-2's tanh approximation with `approximate="tanh"`."""

    def __init__(self, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return functional.gelu(x, approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Identity(Module):
    """Returns its input unchanged."""

    def __init__(self, *args, **kwargs):
        pass

    def forward(self, x):
        return x


__all__ = ["Module", "Parameter", "Linear", "Embedding", "LayerNorm", "Dropout", "ReLU", "GELU",
           "Identity", "Sequential", "ModuleList", "ModuleDict", "functional", "init", "utils"]
