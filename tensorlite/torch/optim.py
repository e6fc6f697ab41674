"""`torch.optim`: tensorlite's optimizers under PyTorch's signatures (zero_grad(set_to_none=True)
is tensorlite's own)."""
from tensorlite import optim as _optim

__all__ = ["Optimizer", "AdamW", "SGD"]


Optimizer = _optim.Optimizer


class AdamW(_optim.AdamW):
    """tensorlite's AdamW (the same update as torch.optim.AdamW, same defaults: lr 1e-3,
    betas (0.9, 0.999), eps 1e-8, weight_decay 0.01). `foreach` and `fused` are accepted and
    change nothing (every step is one pass over a flat buffer already); amsgrad is not supported."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, foreach=None, fused=None, maximize=False):
        if amsgrad or maximize:
            raise NotImplementedError("AdamW: amsgrad and maximize are not supported")
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


class SGD(_optim.SGD):
    """tensorlite's SGD: p -= lr * (g + weight_decay * p), with optional momentum (as torch.optim.SGD
    without dampening or Nesterov)."""

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        if dampening or nesterov:
            raise NotImplementedError("SGD: dampening and nesterov are not supported")
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
