"""tensorlite: a small reverse-mode autograd engine on NumPy (CPU) and CuPy (GPU).

    import tensorlite as tl
    import tensorlite.functional as F
"""
import os

from . import backend, functional, kernels, nn, optim, viz
from .backend import DeviceError, gpu_available, manual_seed
from .gradcheck import GradcheckError, gradcheck
from .kernels import use_kernels
from .profiler import profile
from .tensor import Function, Tensor, detect_anomaly, is_grad_enabled, no_grad, tensor

__version__ = "0.1.0"

kernels.load()  # the fast kernels register themselves under their reference ops

if os.environ.get("TENSORLITE_KEEP_FREED_MEMORY", "1") != "0":
    backend.keep_freed_memory()  # glibc: reuse freed arrays instead of new pages every step

__all__ = ["Tensor", "Function", "tensor", "no_grad", "detect_anomaly", "is_grad_enabled", "gradcheck",
           "GradcheckError", "use_kernels", "profile", "manual_seed", "gpu_available", "DeviceError",
           "functional", "kernels", "backend", "nn", "optim", "viz"]
