"""Modules in the shape PyTorch users know: Module, Parameter, Linear, Embedding, LayerNorm, ...

A Module finds its parameters and submodules by looking at its attributes, in the order
they were set, so `named_parameters()` gives dotted names such as `transformer.h.0.ln_1.weight`.
"""
import math

import numpy as np

from . import backend
from . import functional as F
from .tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimizer updates (requires_grad=True)."""

    def __init__(self, data):
        super().__init__(data, requires_grad=True)

    def __repr__(self):
        return "Parameter(" + super().__repr__() + ")"


def _init(shape, kind, scale, dtype=np.float32):
    """Initial values from tensorlite's seeded CPU generator (tl.manual_seed)."""
    gen = backend.rng("cpu")
    if kind == "normal":
        return (gen.standard_normal(shape) * scale).astype(dtype)
    return gen.uniform(-scale, scale, shape).astype(dtype)


class Module:
    training = True

    def forward(self, *args, **kwargs):
        raise NotImplementedError  # abstract

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- the tree of modules and parameters ----------------------------------------------
    def named_children(self):
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def children(self):
        return [m for _, m in self.named_children()]

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return [m for _, m in self.named_modules()]

    def _named_parameters_all(self):
        """Every (name, parameter), a shared parameter once per place it is used."""
        for prefix, module in self.named_modules():
            for name, value in vars(module).items():
                if isinstance(value, Parameter):
                    yield (f"{prefix}.{name}" if prefix else name), value

    def named_parameters(self):
        """(dotted name, Parameter) pairs; a parameter shared by two modules is listed once."""
        seen = set()
        out = []
        for name, p in self._named_parameters_all():
            if id(p) not in seen:
                seen.add(id(p))
                out.append((name, p))
        return out

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def num_parameters(self):
        return sum(p.size for p in self.parameters())

    # ---- modes and gradients ----------------------------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    # ---- saving and loading -----------------------------------------------------------------
    def state_dict(self):
        """{dotted name: NumPy array copy}, every name under which a parameter is reachable."""
        return {name: p.numpy().copy() for name, p in self._named_parameters_all()}

    def load_state_dict(self, state, strict=True):
        """Copy arrays into the parameters. Missing or unexpected keys (strict) and wrong shapes
        are refused with a message naming them, and then nothing is changed."""
        own = dict(self._named_parameters_all())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        wrong = [f"{k}: checkpoint {tuple(np.shape(state[k]))} vs model {tuple(own[k].shape)}"
                 for k in own if k in state and tuple(np.shape(state[k])) != tuple(own[k].shape)]
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if wrong:
            problems.append("shape mismatch: " + "; ".join(wrong))
        if problems:
            raise ValueError("load_state_dict refused (the model is unchanged): " + " | ".join(problems))
        for name, p in own.items():
            if name in state:
                value = backend.to_device(np.asarray(state[name], dtype=p.dtype), p.device)
                p.data[...] = value  # in place: optimizers may hold views of p.data
        return self

    def to(self, device=None, dtype=None):
        """Move every parameter to a device and/or cast it to a floating dtype ("float64")."""
        if device is not None:
            backend.check_device(device)
        if dtype is not None:
            dtype = np.dtype(dtype)
            if dtype.kind != "f":
                raise TypeError(f"Module.to: dtype must be floating, got {dtype}")
        for p in self.parameters():
            data = p.data
            if device is not None:
                data = backend.to_device(data, device)
            if dtype is not None:
                data = data.astype(dtype, copy=False)
            p.data, p.grad = data, None
        return self

    def __repr__(self):
        lines = [f"  ({name}): " + repr(child).replace("\n", "\n  ") for name, child in self.named_children()]
        body = ("\n" + "\n".join(lines) + "\n") if lines else self.extra_repr()
        return f"{type(self).__name__}({body})"

    def extra_repr(self):
        return ""


class Linear(Module):
    """y = x @ W^T + b, with W stored (out_features, in_features) as in PyTorch."""

    def __init__(self, in_features, out_features, bias=True):
        bound = 1.0 / math.sqrt(in_features)  # PyTorch's default init
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(_init((out_features, in_features), "uniform", bound))
        self.bias = Parameter(_init((out_features,), "uniform", bound)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A (num_embeddings, embedding_dim) table looked up by integer ids."""

    def __init__(self, num_embeddings, embedding_dim):
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(_init((num_embeddings, embedding_dim), "normal", 1.0))

    def forward(self, ids):
        return F.embedding(ids, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """Layer norm over the last axis with a weight and an optional bias."""

    def __init__(self, ndim, bias=True, eps=1e-5):
        self.ndim, self.eps = ndim, eps
        self.weight = Parameter(np.ones(ndim, dtype=np.float32))
        self.bias = Parameter(np.zeros(ndim, dtype=np.float32)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.ndim}, eps={self.eps}, bias={self.bias is not None}"


class Dropout(Module):
    def __init__(self, p=0.5):
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class GELU(Module):
    def forward(self, x):
        return F.gelu(x)


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class ModuleList(Module):
    """A list of modules, named 0, 1, 2, ... in parameter names."""

    def __init__(self, modules=()):
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def __len__(self):
        return sum(1 for _ in self.named_children())

    def __iter__(self):
        return iter(self.children())

    def __getitem__(self, i):
        return self.children()[i]

    def append(self, module):
        setattr(self, str(len(self)), module)
        return self


class ModuleDict(Module):
    """Named submodules: ModuleDict(wte=Embedding(...), h=ModuleList(...))."""

    def __init__(self, **modules):
        for name, m in modules.items():
            setattr(self, name, m)

    def __getitem__(self, name):
        return getattr(self, name)


class Sequential(ModuleList):
    """Modules applied one after another."""

    def __init__(self, *modules):
        super().__init__(modules)

    def forward(self, x):
        for m in self:
            x = m(x)
        return x
