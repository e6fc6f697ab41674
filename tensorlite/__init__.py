"""tensorlite: a small reverse-mode autograd engine on NumPy (CPU) and CuPy (GPU).

    import tensorlite as tl
    import tensorlite.functional as F
"""
from . import backend, functional, nn, optim, viz
from .backend import DeviceError, gpu_available, manual_seed
from .gradcheck import GradcheckError, gradcheck
from .profiler import profile
from .tensor import Function, Tensor, detect_anomaly, is_grad_enabled, no_grad, tensor

__version__ = "0.1.0"

__all__ = ["Tensor", "Function", "tensor", "no_grad", "detect_anomaly", "is_grad_enabled", "gradcheck",
           "GradcheckError", "profile", "manual_seed", "gpu_available", "DeviceError",
           "functional", "backend", "nn", "optim", "viz"]
