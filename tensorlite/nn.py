"""Modules in the shape PyTorch users know: Module, Parameter, Linear, Embedding, LayerNorm, ...

A Module finds its parameters and submodules by looking at its attributes, in the order
they were set, so `named_parameters()` gives dotted names such as `transformer.h.0.ln_1.weight`.
Buffers (`register_buffer`: tensors a module keeps that are not trained, such as a causal
mask) are saved in `state_dict` and moved by `to`, as in PyTorch. Layers start from PyTorch's
default initialisation: Linear U(-1/sqrt(in), 1/sqrt(in)) for weight and bias, Embedding
N(0, 1), LayerNorm ones and zeros.
"""
import math

import numpy as np

from . import backend
from . import functional as F
from .tensor import Tensor, parse_to_args

__all__ = ["Module", "Parameter", "Linear", "Embedding", "LayerNorm", "Dropout", "GELU", "ReLU",
           "ModuleList", "ModuleDict", "Sequential"]


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimizer updates (requires_grad=True).

    `data` is a raw NumPy/CuPy array or a Tensor (whose array it takes, as torch.nn.Parameter)."""

    def __init__(self, data, requires_grad=True):
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter(" + super().__repr__() + ")"


def _init(shape, kind, scale, dtype=None, device=None):
    """Initial values from tensorlite's seeded CPU generator (tl.manual_seed), float32 unless
    a floating dtype is given, moved to `device` when one is given: the same seed gives the
    same weights on every device."""
    gen = backend.rng("cpu")
    dtype = _float_dtype(dtype)
    if kind == "normal":
        values = (gen.standard_normal(shape) * scale).astype(dtype)
    elif kind == "uniform":
        values = gen.uniform(-scale, scale, shape).astype(dtype)
    else:
        values = np.full(shape, scale, dtype=dtype)
    return values if device is None else backend.to_device(values, backend.check_device(device))


def _float_dtype(dtype):
    dtype = np.dtype(np.float32 if dtype is None else dtype)
    if dtype.kind != "f":
        raise TypeError(f"a layer's dtype must be floating, got {dtype}")
    return dtype


class Module:
    """Base class of every layer and model: subclasses set their parameters and submodules
    as attributes in __init__ and define forward. Calling super().__init__() is optional."""
    training = True

    def forward(self, *args, **kwargs):
        """What the module computes; calling the module, `module(x)`, runs it."""
        raise NotImplementedError  # abstract

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- the tree of modules and parameters ----------------------------------------------
    def named_children(self):
        """(attribute name, submodule) for each direct submodule, in the order they were set."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def children(self):
        """The direct submodules, in the order they were set."""
        return [m for _, m in self.named_children()]

    def named_modules(self, prefix=""):
        """(dotted name, module) for this module ("") and every module below it, parents first."""
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        """This module and every module below it, parents first."""
        return [m for _, m in self.named_modules()]

    def _named_parameters_all(self, recurse=True):
        """Every (name, parameter), a shared parameter once per place it is used."""
        for prefix, module in (self.named_modules() if recurse else [("", self)]):
            for name, value in vars(module).items():
                if isinstance(value, Parameter):
                    yield (f"{prefix}.{name}" if prefix else name), value

    def named_parameters(self, recurse=True):
        """(dotted name, Parameter) pairs; a parameter shared by two modules is listed once.
        With recurse=False, only this module's own."""
        return _unique(self._named_parameters_all(recurse))

    def parameters(self, recurse=True):
        """Every Parameter, each once, in named_parameters() order: a generator, as PyTorch's
        (`next(model.parameters())` works). It can be gone through once: take
        `list(model.parameters())` to count them or go over them twice."""
        for _, p in self.named_parameters(recurse):
            yield p

    def num_parameters(self):
        """The number of trainable numbers: sum(p.numel() for p in parameters())."""
        return sum(int(p.size) for p in self.parameters())

    def register_parameter(self, name, param):
        """Set a Parameter (or None) as attribute `name`, as `self.name = param` does."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: {name!r} must be a Parameter or None, got {type(param).__name__}")
        setattr(self, name, param)

    # ---- buffers: state that is saved and moved, but not trained -----------------------------
    def register_buffer(self, name, tensor, persistent=True):
        """Keep `tensor` (a Tensor, or None) as attribute `name`: it is moved by `to`, and saved
        in `state_dict` unless persistent=False, but it is not a parameter (no gradient, no
        optimizer), as PyTorch's `self.register_buffer('tril', torch.tril(...))`."""
        if not isinstance(name, str) or not name.isidentifier():
            raise KeyError(f"register_buffer: buffer name must be an identifier, got {name!r}")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer: {name!r} must be a Tensor or None, got {type(tensor).__name__}")
        if isinstance(tensor, Parameter):
            raise TypeError(f"register_buffer: {name!r} is a Parameter; set it as an attribute instead")
        if name in vars(self) and name not in self._buffer_names():
            raise KeyError(f"register_buffer: attribute {name!r} already exists")
        self.__dict__.setdefault("_buffers", {})[name] = persistent
        setattr(self, name, tensor)

    def _buffer_names(self):
        return vars(self).get("_buffers", {})

    def _named_buffers_all(self, recurse=True, persistent_only=False):
        for prefix, module in (self.named_modules() if recurse else [("", self)]):
            for name, persistent in module._buffer_names().items():
                value = getattr(module, name, None)
                if isinstance(value, Tensor) and (persistent or not persistent_only):
                    yield (f"{prefix}.{name}" if prefix else name), value

    def named_buffers(self, recurse=True):
        """(dotted name, buffer Tensor) pairs, each buffer once."""
        return _unique(self._named_buffers_all(recurse))

    def buffers(self, recurse=True):
        """Every buffer Tensor, each once."""
        return [b for _, b in self.named_buffers(recurse)]

    def _named_state_all(self):
        """What state_dict holds, in PyTorch's order: each module's parameters, then its
        persistent buffers, then its children's."""
        for prefix, module in self.named_modules():
            for name, value in module._named_parameters_all(recurse=False):
                yield (f"{prefix}.{name}" if prefix else name), value
            for name, value in module._named_buffers_all(recurse=False, persistent_only=True):
                yield (f"{prefix}.{name}" if prefix else name), value

    def apply(self, fn):
        """Call fn(module) on every submodule (children first) and on self; returns self.
        The lecture's `self.apply(self._init_weights)`."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ---- modes and gradients ----------------------------------------------------------------
    def train(self, mode=True):
        """Training mode (dropout on) for this module and all below it; train(False) is eval()."""
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        """Evaluation mode (dropout off) for this module and all below it."""
        return self.train(False)

    def zero_grad(self, set_to_none=True):
        """Forget every parameter's gradient: None (the default, as PyTorch's), or zeros."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad = p.xp.zeros_like(p.data)

    # ---- saving and loading -----------------------------------------------------------------
    def state_dict(self):
        """{dotted name: NumPy array copy}: every name under which a parameter is reachable,
        and every persistent buffer, in PyTorch's order."""
        return {name: t.numpy().copy() for name, t in self._named_state_all()}

    def load_state_dict(self, state, strict=True):
        """Copy arrays into the parameters and persistent buffers. Missing or unexpected keys
        (strict) and wrong shapes are refused with a message naming them, and then nothing is
        changed."""
        own = dict(self._named_state_all())
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

    def to(self, *args, device=None, dtype=None):
        """Move every parameter and buffer to a device and/or cast the floating ones to a
        floating dtype: `model.to("cuda")`, `model.to(dtype="float64")`, `model.to(np.float64)`.
        Integer and boolean buffers keep their dtype, as in PyTorch. Returns self."""
        device, dtype = parse_to_args(args, device, dtype)
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
        for b in self.buffers():
            data = b.data
            if device is not None:
                data = backend.to_device(data, device)
            if dtype is not None and data.dtype.kind == "f":
                data = data.astype(dtype, copy=False)
            b.data = data
        return self

    def double(self):
        """Cast floating parameters and buffers to float64."""
        return self.to(dtype=np.float64)

    def float(self):
        """Cast floating parameters and buffers to float32."""
        return self.to(dtype=np.float32)

    def cuda(self):
        """Move to the GPU: `to("cuda")`."""
        return self.to("cuda")

    def cpu(self):
        """Move to the CPU: `to("cpu")`."""
        return self.to("cpu")

    def __repr__(self):
        lines = [f"  ({name}): " + repr(child).replace("\n", "\n  ") for name, child in self.named_children()]
        body = ("\n" + "\n".join(lines) + "\n") if lines else self.extra_repr()
        return f"{type(self).__name__}({body})"

    def extra_repr(self):
        """The settings shown in the module's repr, e.g. "in_features=4, out_features=3, bias=True"."""
        return ""


class Linear(Module):
    """y = x @ W^T + b, with W stored (out_features, in_features) as in PyTorch.

    Initialised as PyTorch's: weight and bias U(-1/sqrt(in_features), 1/sqrt(in_features))."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        bound = 1.0 / math.sqrt(in_features)  # PyTorch's default init
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(_init((out_features, in_features), "uniform", bound, dtype, device))
        self.bias = Parameter(_init((out_features,), "uniform", bound, dtype, device)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A (num_embeddings, embedding_dim) table looked up by integer ids; N(0, 1) at first, as
    PyTorch's."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, device=None, dtype=None):
        if padding_idx is not None:
            raise NotImplementedError("Embedding: padding_idx is not supported")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(_init((num_embeddings, embedding_dim), "normal", 1.0, dtype, device))

    def forward(self, ids):
        return F.embedding(ids, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """Layer norm over the last axis, with a weight (ones at first) and a bias (zeros), as
    PyTorch's `LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True)`.

    normalized_shape is the size of the last axis (an int or a 1-tuple)."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None, dtype=None):
        shape = tuple(normalized_shape) if isinstance(normalized_shape, (tuple, list)) else (normalized_shape,)
        if len(shape) != 1 or not isinstance(shape[0], (int, np.integer)) or isinstance(shape[0], bool):
            raise ValueError(f"LayerNorm normalizes over the last axis only: normalized_shape must be "
                             f"an int or a 1-tuple, got {normalized_shape!r}")
        if isinstance(eps, bool) or not isinstance(eps, (float, int)):
            raise TypeError(f"LayerNorm: eps must be a number, got {eps!r} (pass bias= by keyword)")
        self.normalized_shape, self.eps = shape, float(eps)
        self.elementwise_affine = elementwise_affine
        self.weight = Parameter(_init(shape, "full", 1.0, dtype, device)) if elementwise_affine else None
        self.bias = Parameter(_init(shape, "full", 0.0, dtype, device)) if elementwise_affine and bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self):
        affine = "" if self.elementwise_affine else ", elementwise_affine=False"
        return f"{self.normalized_shape[0]}, eps={self.eps}{affine}, bias={self.bias is not None}"


class Dropout(Module):
    """Zero each element with probability p in training mode, scaling the rest by 1/(1-p);
    the identity in eval mode."""

    def __init__(self, p=0.5, inplace=False):
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p  # inplace is accepted for PyTorch's signature; the result is the same

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class GELU(Module):
    """GPT-2's GELU, the tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    (tensorlite.torch.nn.GELU is PyTorch's, exact by default.)"""

    def forward(self, x):
        return F.gelu(x)


class ReLU(Module):
    """max(x, 0)."""

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
        """Add a module at the end; returns the list."""
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


def _unique(named):
    """(name, tensor) pairs, each tensor once (the first name under which it is reached)."""
    seen, out = set(), []
    for name, t in named:
        if id(t) not in seen:
            seen.add(id(t))
            out.append((name, t))
    return out
