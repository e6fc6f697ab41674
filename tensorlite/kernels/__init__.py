"""Fast kernels beside the reference ops, and the one switch between them.

`tensorlite.functional` holds the reference ops: each op's textbook forward and backward,
written to be read against docs/backward.md. This package holds faster implementations of
some of them, per device: `kernels/cpu.py` (NumPy tuned for cache and BLAS) and, where CuPy is
installed, hand-written CUDA kernels. Each fast implementation is registered under the
reference it speeds up and is tested equal to it (tests/test_kernels.py).

    @register(functional.GELU, "cpu")
    class GELU(functional.GELU): ...        # same name, same forward arguments, same gradients

    tl.use_kernels("reference")             # train on the readable ops from now on
    with tl.use_kernels("reference"): ...   # or only inside a block
    TENSORLITE_KERNELS=reference python examples/train_shakespeare.py

Ops choose in one place: `Function.apply` looks the op's class up for the inputs' device in
`_active` (one dict lookup per op), which holds the registered kernels in "fast" mode and is
empty in "reference" mode. The optimizer's non-Function references (optim.adamw_update,
optim.grad_norm) go through resolve() the same way.
"""
import os

MODES = ("reference", "fast")
ENV = "TENSORLITE_KERNELS"

_registered = {}    # (reference, device) -> fast implementation, whatever the mode
_active = {}        # the same entries while the mode is "fast", empty in "reference"
_supports = {}      # (reference, device) -> the implementation's supports(), where it has one
_references = set()  # reference functions (not Function subclasses) that accept kernels
_mode = None


def reference(fn):
    """Mark a plain function (optim.adamw_update) as a reference that fast kernels may replace.

    Function subclasses defined in tensorlite.functional are references already."""
    _references.add(fn)
    return fn


def _is_reference(obj):
    if obj in _references:
        return True
    from ..tensor import Function
    return (isinstance(obj, type) and issubclass(obj, Function)
            and obj.__module__ == "tensorlite.functional")


def register(reference, device):
    """Class or function decorator: the fast implementation of `reference` on `device`.

    A Function implementation takes the reference's forward arguments and returns the same
    gradients from backward; its class name is the reference's, so profiles and graphs read
    the same in both modes. It may define a classmethod supports(*arrays, **kwargs) -> bool
    to decline a call (an unsupported dtype, say), which then runs the reference.
    """
    from ..backend import DEVICES
    if not _is_reference(reference):
        raise TypeError(f"kernels.register: {reference!r} is not a reference op (a Function of "
                        "tensorlite.functional, or a function marked with kernels.reference); "
                        "a fast kernel must have a reference it is tested against")
    if device not in DEVICES:
        raise ValueError(f"kernels.register: unknown device {device!r}, expected one of {DEVICES}")

    def decorate(impl):
        name = getattr(impl, "__name__", None)
        if isinstance(reference, type) and name != reference.__name__:
            raise TypeError(f"kernels.register: the fast {name} must be named as its reference "
                            f"{reference.__name__}")
        key = (reference, device)
        _registered[key] = impl
        supports = getattr(impl, "supports", None)
        if supports is not None:
            _supports[key] = supports
        else:
            _supports.pop(key, None)
        if _mode == "fast":
            _active[key] = impl
        return impl
    return decorate


def resolve(reference, device, *arrays, **kwargs):
    """The implementation to run for `reference` on `device`: the registered fast one in
    "fast" mode, else the reference itself. Given the call's arrays and options, a kernel
    whose supports() declines them also resolves to the reference."""
    impl = _active.get((reference, device))
    if impl is None:
        return reference
    supports = _supports.get((reference, device))
    if arrays and supports is not None and not supports(*arrays, **kwargs):
        return reference
    return impl


def reference_of(impl):
    """The reference that `impl` is registered for, or None if it is not a registered kernel."""
    for (ref, _), fast in _registered.items():
        if fast is impl:
            return ref
    return None


def registered():
    """{(reference, device): implementation} for every registered kernel (a copy)."""
    return dict(_registered)


def mode():
    """ "fast" or "reference": which implementations ops run now."""
    return _mode


def _set_mode(new):
    global _mode
    if new not in MODES:
        raise ValueError(f"kernel mode must be 'reference' or 'fast', got {new!r}")
    _mode = new
    _active.clear()
    if new == "fast":
        _active.update(_registered)


class use_kernels:
    """Choose the implementations ops run: "reference" (tensorlite.functional, the readable
    ops) or "fast" (the registered kernels where there is one, the default).

    Takes effect at once; used as a context manager, it restores the previous mode on exit:

        tl.use_kernels("reference")
        with tl.use_kernels("fast"): ...
    """

    def __init__(self, mode):
        self.prev = _mode
        _set_mode(mode)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _set_mode(self.prev)


def _mode_from_environment():
    value = os.environ.get(ENV, "fast")
    if value not in MODES:
        raise ValueError(f"{ENV}={value!r} is not a kernel mode: set it to 'reference' or 'fast' "
                         "(or leave it unset for 'fast')")
    return value


_set_mode(_mode_from_environment())


def load():
    """Import the kernel modules, which register themselves: cpu always, cuda where it exists
    (it imports without CuPy or a GPU, and launches only when an op runs on cuda)."""
    import importlib.util
    from . import cpu  # noqa: F401
    if importlib.util.find_spec(__name__ + ".cuda") is not None:
        from . import cuda  # noqa: F401
