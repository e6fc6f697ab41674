"""`torch.cuda`: whether a GPU is there (through CuPy), and waiting for it."""
from tensorlite import backend

__all__ = ["is_available", "device_count", "synchronize"]


def is_available():
    """True when CuPy is installed and sees a GPU: then "cuda" is a device here."""
    return backend.gpu_available()


def device_count():
    """The number of GPUs CuPy sees (0 without CuPy)."""
    if not backend.gpu_available():
        return 0
    return backend.cp.cuda.runtime.getDeviceCount()


def synchronize():
    """Wait until the GPU has finished everything queued so far (nothing to do without one)."""
    if backend.gpu_available():
        backend.cp.cuda.Device().synchronize()
