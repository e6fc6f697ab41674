"""`torch.nn.utils`: clip_grad_norm_."""
import numpy as np

from tensorlite import optim
from tensorlite.tensor import Tensor

__all__ = ["clip_grad_norm_"]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0):
    """Scale the gradients in place so that their global L2 norm is at most max_norm; returns
    the norm before clipping as a 0-d tensor (`f"{norm:.4f}"` and `norm.item()` work)."""
    if norm_type != 2.0:
        raise NotImplementedError("clip_grad_norm_: only the L2 norm (norm_type=2.0) is supported")
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    return Tensor(np.asarray(optim.clip_grad_norm_(params, max_norm), dtype=np.float32))
