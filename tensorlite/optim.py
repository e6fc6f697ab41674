"""Optimizers with PyTorch's semantics: AdamW, SGD, a warmup + cosine schedule, clip_grad_norm_.

AdamW keeps each parameter group in one flat buffer: the parameters' .data become views
into it, and one step is one call of adamw_update over the whole buffer instead of a loop
over parameters (the same idea as PyTorch's `foreach` / `fused` AdamW).

adamw_update and grad_norm below are the reference formulas; tensorlite/kernels/ registers
faster versions of them per device (blocked NumPy on the CPU), chosen by kernels.resolve.
"""
import math

import numpy as np

from . import kernels
from .backend import as_numpy, device_of, get_array_module
from .tensor import Tensor


@kernels.reference
def adamw_update(param, grad, exp_avg, exp_avg_sq, *, step, lr, beta1, beta2, eps, weight_decay):
    """One AdamW step (torch.optim.AdamW's formula) over flat buffers, in place:

        param      <- param - lr * weight_decay * param
        exp_avg    <- beta1 * exp_avg + (1 - beta1) * grad
        exp_avg_sq <- beta2 * exp_avg_sq + (1 - beta2) * grad^2
        param      <- param - lr / (1 - beta1^step) * exp_avg
                                / (sqrt(exp_avg_sq) / sqrt(1 - beta2^step) + eps)

    param, grad, exp_avg, exp_avg_sq: 1-D contiguous arrays of one length, one floating dtype,
    on one device; param, exp_avg and exp_avg_sq are updated in place, grad is only read.
    step: the step count t >= 1 of these parameters, after this update (for the bias
    corrections); lr, beta1, beta2, eps, weight_decay: Python floats. Returns None.
    A fast kernel registered for it must take exactly these arguments.
    """
    xp = get_array_module(param)
    param *= 1 - lr * weight_decay
    exp_avg *= beta1
    exp_avg += (1 - beta1) * grad
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * grad * grad
    denom = xp.sqrt(exp_avg_sq) / math.sqrt(1 - beta2 ** step) + eps
    param -= lr / (1 - beta1 ** step) * exp_avg / denom


@kernels.reference
def grad_norm(grads):
    """The L2 norm of all the arrays together, sqrt(sum over arrays of sum(g^2)), as a 0-d
    float64 array on their device; nothing is copied to the host.

    grads: a non-empty list of floating arrays on one device, of any shapes. Each array's sum
    of squares is taken in its own dtype, and the sums are added in float64.
    A fast kernel registered for it must take and return the same.
    """
    xp = get_array_module(grads[0])
    total = sum((g * g).sum().astype(np.float64) for g in grads)    # added in order, on the device
    return xp.asanyarray(xp.sqrt(total))


def _as_groups(params, defaults):
    params = list(params)
    if not params:
        raise ValueError("optimizer got an empty parameter list")
    groups = params if isinstance(params[0], dict) else [{"params": params}]
    out = []
    for g in groups:
        group = {**defaults, **g, "params": list(g["params"])}
        for p in group["params"]:
            if not getattr(p, "requires_grad", False):
                raise ValueError("optimizer given a tensor that does not require grad")
        out.append(group)
    return out


class Optimizer:
    """Base class of the optimizers, as torch.optim.Optimizer: `param_groups` (a list of dicts,
    each with its "params" and its hyperparameters, which a schedule may change between steps),
    step() and zero_grad().

    params: an iterable of tensors that require grad, or of dicts {"params": [...], **options}
    for groups with their own options; defaults: the options a group does not set."""

    def __init__(self, params, defaults):
        self.defaults = defaults
        self.param_groups = _as_groups(params, defaults)

    def _params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def zero_grad(self, set_to_none=True):
        """Clear every parameter's gradient before the next backward, as PyTorch's zero_grad:
        set_to_none=True (the default) sets .grad to None, so backward makes a fresh array;
        False fills each existing .grad with zeros in place (a .grad that is None stays None)."""
        for p in self._params():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad[...] = 0

    def step(self):
        """Update every parameter that has a gradient, in place, from its .grad."""
        raise NotImplementedError  # abstract


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW:

        p <- p - lr * wd * p
        m <- b1 m + (1 - b1) g            v <- b2 v + (1 - b2) g^2
        p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    A parameter whose .grad is None is skipped (its step count t stays), as in PyTorch.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"AdamW: invalid lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        for g in self.param_groups:
            if g["lr"] < 0 or g["weight_decay"] < 0:
                raise ValueError(f"AdamW: invalid lr={g['lr']} or weight_decay={g['weight_decay']} in a group")
            self._pack(g)
            g["steps"] = [0] * len(g["params"])

    @staticmethod
    def _pack(group):
        """Copy the group's parameters into one flat buffer and make each .data a view of it."""
        params = group["params"]
        xp = get_array_module(params[0].data)
        dtype = params[0].dtype
        for p in params:
            if p.dtype != dtype or get_array_module(p.data) is not xp:
                raise TypeError("AdamW: a parameter group must share one dtype and device; "
                                f"got {dtype} and {p.dtype}")
        sizes = [p.size for p in params]
        flat = xp.empty(sum(sizes), dtype=dtype)
        views, offsets, offset = [], [], 0
        for p, n in zip(params, sizes):
            view = flat[offset:offset + n].reshape(p.shape)
            view[...] = p.data
            p.data = view
            views.append(view)
            offsets.append(offset)
            offset += n
        grad = xp.empty_like(flat)
        group.update(flat=flat, views=views, sizes=sizes, offsets=offsets,
                     exp_avg=group.get("exp_avg", xp.zeros_like(flat)),
                     exp_avg_sq=group.get("exp_avg_sq", xp.zeros_like(flat)),
                     grad=grad, grad_views=[grad[o:o + n].reshape(p.shape)
                                            for p, n, o in zip(params, sizes, offsets)])

    def gather_grads(self):
        """Copy each parameter's .grad into its group's flat gradient buffer, group["grad"],
        and make .grad a view of its slice there; a .grad that already is that view is not
        copied again. Returns the buffers, one per group.

        After it, a group's gradients are one array: clip_grad_norm_ scales them in one
        launch, the data-parallel all-reduce (gpt/distributed.py) sums them in one call, and
        step() finds them in place. Call it between backward() and clipping; step() calls it
        too, so without it nothing changes but the number of launches. A parameter without a
        gradient gets zeros in its slice and keeps .grad None (step() still skips it).
        """
        for group in self.param_groups:
            if any(p.data is not v for p, v in zip(group["params"], group["views"])):
                self._repack(group)  # something replaced a parameter's array (e.g. Module.to)
            for i, (p, view) in enumerate(zip(group["params"], group["grad_views"])):
                if p.grad is view:
                    continue
                if p.grad is None:
                    view[...] = 0
                    continue
                if tuple(p.grad.shape) != tuple(view.shape):
                    raise ValueError(f"AdamW: parameter {i} of its group has shape {tuple(view.shape)} "
                                     f"but its .grad has shape {tuple(p.grad.shape)}")
                view[...] = p.grad
                p.grad = view
        return [group["grad"] for group in self.param_groups]

    def step(self):
        """One AdamW update of every parameter that has a gradient: one adamw_update call over a
        group's flat buffer when all of its parameters have one and share a step count."""
        self.gather_grads()
        for group in self.param_groups:
            params, steps = group["params"], group["steps"]
            have = [p.grad is not None for p in params]
            if all(have) and len(set(steps)) == 1:     # the usual case: the whole group at once
                self._update(group, slice(None), steps[0] + 1)
                group["steps"] = [steps[0] + 1] * len(steps)
                continue
            for i, (n, o, ok) in enumerate(zip(group["sizes"], group["offsets"], have)):
                if ok:
                    steps[i] += 1
                    self._update(group, slice(o, o + n), steps[i])

    @staticmethod
    def _update(group, part, t):
        """One AdamW update of flat[part] at step t, in place (adamw_update or its kernel)."""
        flat = group["flat"]
        update = kernels.resolve(adamw_update, device_of(flat))
        b1, b2 = group["betas"]
        update(flat[part], group["grad"][part], group["exp_avg"][part], group["exp_avg_sq"][part],
               step=t, lr=group["lr"], beta1=b1, beta2=b2, eps=group["eps"],
               weight_decay=group["weight_decay"])

    def _repack(self, group):
        m, v = group["exp_avg"], group["exp_avg_sq"]
        self._pack(group)
        xp = get_array_module(group["flat"])
        group["exp_avg"], group["exp_avg_sq"] = xp.asarray(m, dtype=group["flat"].dtype), xp.asarray(v, dtype=group["flat"].dtype)

    # ---- state as PyTorch lays it out: per-parameter moments, keyed by parameter index -------
    def state_dict(self):
        """The moments, step counts and hyperparameters, laid out as torch.optim.AdamW's:
        {"state": {index: {"step", "exp_avg", "exp_avg_sq"}}, "param_groups": [...]}, with
        NumPy arrays, for checkpoints (load_state_dict restores it)."""
        state, groups, index = {}, [], 0
        for group in self.param_groups:
            ids = []
            for p, n, o, t in zip(group["params"], group["sizes"], group["offsets"], group["steps"]):
                if t:  # as PyTorch: no state for a parameter never stepped
                    state[index] = {"step": t,
                                    "exp_avg": as_numpy(group["exp_avg"][o:o + n]).reshape(p.shape).copy(),
                                    "exp_avg_sq": as_numpy(group["exp_avg_sq"][o:o + n]).reshape(p.shape).copy()}
                ids.append(index)
                index += 1
            groups.append({k: group[k] for k in ("lr", "betas", "eps", "weight_decay")} | {"params": ids})
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd):
        """Restore moments, step counts and hyperparameters; refuses (changing nothing) a state
        whose groups or shapes do not match this optimizer's parameters."""
        groups = sd["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(a["params"]) != len(b["params"]) for a, b in zip(groups, self.param_groups)):
            raise ValueError("AdamW.load_state_dict: the saved parameter groups "
                             f"({[len(g['params']) for g in groups]} parameters) do not match this "
                             f"optimizer's ({[len(g['params']) for g in self.param_groups]})")
        for saved, group in zip(groups, self.param_groups):
            for i, p in zip(saved["params"], group["params"]):
                s = sd["state"].get(i, sd["state"].get(str(i)))
                if s is not None and tuple(np.shape(s["exp_avg"])) != tuple(p.shape):
                    raise ValueError(f"AdamW.load_state_dict: state of parameter {i} has shape "
                                     f"{tuple(np.shape(s['exp_avg']))}, the parameter {tuple(p.shape)}")
        for saved, group in zip(groups, self.param_groups):
            xp = get_array_module(group["flat"])
            for k in ("lr", "betas", "eps", "weight_decay"):
                group[k] = tuple(saved[k]) if k == "betas" else saved[k]
            for j, (i, n, o) in enumerate(zip(saved["params"], group["sizes"], group["offsets"])):
                s = sd["state"].get(i, sd["state"].get(str(i)))
                m, v = group["exp_avg"][o:o + n], group["exp_avg_sq"][o:o + n]
                if s is None:
                    m[...], v[...], group["steps"][j] = 0, 0, 0
                else:
                    m[...] = xp.asarray(np.asarray(s["exp_avg"]).reshape(-1))
                    v[...] = xp.asarray(np.asarray(s["exp_avg_sq"]).reshape(-1))
                    group["steps"][j] = int(s["step"])


class SGD(Optimizer):
    """p <- p - lr * (g + wd * p), with optional momentum b: buf <- b buf + g, as torch.optim.SGD."""

    def __init__(self, params, lr=1e-2, momentum=0.0, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
        self.buffers = {}

    def step(self):
        """One SGD update of every parameter that has a gradient (momentum buffers start at the
        first gradient, as PyTorch's)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad + group["weight_decay"] * p.data if group["weight_decay"] else p.grad
                if group["momentum"]:
                    buf = self.buffers.get(id(p))
                    buf = g.copy() if buf is None else buf * group["momentum"] + g
                    self.buffers[id(p)] = g = buf
                p.data -= group["lr"] * g


def clip_grad_norm_(params, max_norm):
    """Scale all gradients in place so that their global L2 norm is at most max_norm, and
    return the norm before clipping as a 0-d Tensor, as torch.nn.utils.clip_grad_norm_ does.
    A parameter without a gradient is skipped.

    Everything stays on the gradients' device: the norm (grad_norm, or its kernel), the
    coefficient min(1, max_norm / (norm + 1e-6)) and the scaling, with no host `if`, so a GPU
    step does not wait here. float(norm) or norm.item() reads it on the host when wanted.
    Gradients that are views tiling one flat buffer (after AdamW.gather_grads) are scaled by
    one multiplication of the buffer, others one by one: the same numbers either way.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return Tensor(np.zeros((), dtype=np.float32))
    xp = get_array_module(grads[0])
    norm = kernels.resolve(grad_norm, device_of(grads[0]))(grads)           # 0-d, float64
    coef = xp.minimum(max_norm / (norm + 1e-6), 1.0)                        # 1: leave them alone
    cast = {}                                                               # dtype -> coef in it
    for g in _scaling_targets(grads):
        if g.dtype not in cast:
            cast[g.dtype] = coef.astype(g.dtype)
        g *= cast[g.dtype]
    return Tensor(xp.asanyarray(norm.astype(np.result_type(*[g.dtype for g in grads]))))


def _scaling_targets(grads):
    """The arrays to scale so that each gradient is scaled once (as often as it is listed):
    a flat buffer whose whole length some of the gradients tile exactly, side by side, as
    views of it (AdamW.gather_grads makes them so), stands for them; any other gradient
    stands for itself."""
    targets, buffers = [], {}
    for g in grads:
        base = g.base
        if (base is None or type(base) is not type(g) or base.dtype != g.dtype
                or not (g.flags.c_contiguous and base.flags.c_contiguous)):
            targets.append(g)
        else:   # keyed by address: CuPy and NumPy give one base object, other arrays may not
            buffers.setdefault((_address(base), base.nbytes), (base, []))[1].append(g)
    for (start, nbytes), (base, views) in buffers.items():
        spans = sorted((_address(v) - start, v.nbytes) for v in views)      # (offset, bytes)
        ends = [0] + [offset + n for offset, n in spans]
        # each view starts where the one before ends (no gap, no overlap: none listed twice)
        tiled = all(offset == end for (offset, _), end in zip(spans, ends)) and ends[-1] == nbytes
        targets += [base] if tiled else views
    return targets


def _address(a):
    """Where an array's first element lies in memory (device or host)."""
    if get_array_module(a) is np:
        return a.__array_interface__["data"][0]
    return a.data.ptr


class WarmupCosine:
    """Linear warmup to the base lr over warmup_iters, then cosine decay to min_lr at
    decay_iters (nanoGPT's get_lr). Call step(it) before each optimizer step."""

    def __init__(self, optimizer, warmup_iters, decay_iters, min_lr):
        self.optimizer, self.warmup_iters, self.decay_iters, self.min_lr = optimizer, warmup_iters, decay_iters, min_lr
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]

    def lr_at(self, it, base_lr):
        """The learning rate at step it for a group whose base learning rate is base_lr."""
        if it < self.warmup_iters:
            return base_lr * (it + 1) / (self.warmup_iters + 1)
        if it > self.decay_iters:
            return self.min_lr
        ratio = (it - self.warmup_iters) / max(1, self.decay_iters - self.warmup_iters)
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (base_lr - self.min_lr)

    def step(self, it):
        """Set every group's learning rate for step it; returns the first group's."""
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = self.lr_at(it, base)
        return self.optimizer.param_groups[0]["lr"]
