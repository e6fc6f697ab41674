"""Devices, the NumPy/CuPy switch, random state, and error messages that name the shapes."""
import operator

import numpy as np
import pytest

import tensorlite as tl
import tensorlite.functional as F
from tensorlite import backend


@pytest.mark.skipif(tl.gpu_available(), reason="this machine has a GPU: cuda is available")
def test_cuda_without_a_gpu_says_how_to_install():
    with pytest.raises(tl.DeviceError, match=r"pip install .*\[cuda12\]") as info:
        tl.tensor([1.0], device="cuda")
    assert "CuPy" in str(info.value)
    with pytest.raises(tl.DeviceError, match="pip install"):
        tl.tensor([1.0]).to("cuda")


@pytest.mark.parametrize("name", ["gpu", "cuda:0", "tpu", "CPU", ""])
def test_unknown_device_raises(name):
    with pytest.raises(tl.DeviceError, match=f"unknown device {name!r}"):
        tl.tensor([1.0], device=name)


def test_device_error_is_a_runtime_error():
    assert issubclass(tl.DeviceError, RuntimeError)


class OnAnotherDevice(tl.Tensor):
    """A CPU tensor that reports "cuda", to test the device check without a GPU."""
    device = "cuda"


@pytest.mark.parametrize("op", [operator.add, operator.mul, operator.matmul], ids=["add", "mul", "matmul"])
def test_mixing_devices_raises(op):
    a = tl.tensor(np.ones((2, 2)), requires_grad=True)
    b = OnAnotherDevice(np.ones((2, 2)))
    for x, y in [(a, b), (b, a)]:
        with pytest.raises(tl.DeviceError,
                           match=r"inputs are on different devices \((cpu, cuda|cuda, cpu)\)"):
            op(x, y)


def test_tensors_live_on_their_device(device):
    t = tl.tensor(np.arange(6.0).reshape(2, 3), device=device)
    assert t.device == device
    assert t.xp is backend.xp_for(device)
    assert backend.device_of(t.data) == device
    back = t.to("cpu")
    assert back.device == "cpu" and isinstance(back.numpy(), np.ndarray)
    np.testing.assert_array_equal(back.numpy(), np.arange(6.0).reshape(2, 3))
    assert t.to(device) is t


def test_array_module_helpers():
    a = np.ones(3)
    assert backend.get_array_module(a) is np and backend.device_of(a) == "cpu"
    assert backend.as_numpy(a) is a and backend.to_device(a, "cpu") is a
    assert backend.xp_for("cpu") is np


def test_rng_state_round_trip():
    """A checkpoint's rng state resumes the same dropout masks."""
    x = tl.tensor(np.ones((8, 8), np.float32))
    tl.manual_seed(5)
    state = backend.get_rng_state()
    first = F.dropout(x, 0.5).numpy()
    F.dropout(x, 0.5)
    backend.set_rng_state(state)
    np.testing.assert_array_equal(F.dropout(x, 0.5).numpy(), first)


# ================================ errors that name the shapes =================================

@pytest.mark.parametrize("a, b", [((3, 4), (5, 6)), ((2, 3, 4), (3, 4)), ((4,), (3,))])
def test_matmul_shape_mismatch_names_both_shapes(a, b):
    with pytest.raises(ValueError) as info:
        tl.tensor(np.ones(a)) @ tl.tensor(np.ones(b))
    assert str(a) in str(info.value) and str(b) in str(info.value)


@pytest.mark.parametrize("op, name", [(operator.add, "Add"), (operator.sub, "Sub"),
                                      (operator.mul, "Mul"), (operator.truediv, "Div")])
def test_broadcast_mismatch_names_op_and_shapes(op, name):
    with pytest.raises(ValueError, match=rf"^{name}: .*\(3, 4\).*\(5,\)"):
        op(tl.tensor(np.ones((3, 4))), tl.tensor(np.ones(5)))


def test_linear_mismatch_names_shapes():
    with pytest.raises(ValueError, match=r"input features 3 \(input shape \(2, 3\)\).*\(5, 4\)"):
        F.linear(tl.tensor(np.ones((2, 3))), tl.tensor(np.ones((5, 4))))


def test_embedding_out_of_range_names_the_id():
    with pytest.raises(IndexError, match="id 7 is out of range for a table of 7 rows"):
        F.embedding([0, 7], tl.tensor(np.ones((7, 2))))


@pytest.mark.parametrize("ids", [[0.0, 1.0], np.array([0.5])], ids=["list", "array"])
def test_embedding_needs_integer_ids(ids):
    with pytest.raises(TypeError, match="embedding ids must be integers"):
        F.embedding(ids, tl.tensor(np.ones((7, 2))))


def test_cross_entropy_targets_shape_is_checked():
    with pytest.raises(ValueError, match=r"targets shape \(6,\) must be the logits shape \(2, 3, 5\)"):
        F.cross_entropy(tl.tensor(np.ones((2, 3, 5))), np.zeros(6, int))


def test_cross_entropy_targets_range_is_checked():
    with pytest.raises(IndexError, match=r"targets must lie in 0\.\.4"):
        F.cross_entropy(tl.tensor(np.ones((2, 5))), [0, 5])


def test_masked_fill_needs_a_boolean_mask():
    with pytest.raises(TypeError, match="mask must be boolean"):
        F.masked_fill(tl.tensor(np.ones(3)), np.array([1, 0, 1]), 0.0)


def test_layer_norm_bias_needs_a_weight():
    with pytest.raises(ValueError, match="bias without a weight"):
        F.layer_norm(tl.tensor(np.ones((2, 3))), bias=tl.tensor(np.ones(3)))


def test_pow_takes_a_constant_exponent():
    with pytest.raises(TypeError, match="constant exponent"):
        tl.tensor(np.ones(3)) ** tl.tensor(2.0)


def test_split_into_unequal_parts_raises():
    with pytest.raises(ValueError, match="axis 1 of size 5 does not divide into 2"):
        F.split(tl.tensor(np.ones((2, 5))), 2, axis=1)


# ---- host memory: glibc keeps freed arrays for the next step ---------------------------------

FAULTS_PER_STEP = """
import resource, numpy as np, tensorlite as tl
from gpt import GPT, preset
tl.manual_seed(0)
model = GPT(preset("cpu")[0])
opt = tl.optim.AdamW(model.parameters())
x = tl.tensor(np.random.default_rng(0).integers(0, 65, (12, 64)))
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    _, loss = model(x, x)
    opt.zero_grad(); loss.backward(); opt.step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults[3:]))
"""


def glibc():
    import ctypes
    try:
        ctypes.CDLL(None).gnu_get_libc_version
        return True
    except AttributeError:
        return False


@pytest.mark.skipif(not glibc(), reason="keep_freed_memory changes glibc's malloc only; this libc is not glibc")
@pytest.mark.parametrize("setting, few", [("1", True), ("0", False)])
def test_training_steps_reuse_freed_memory(setting, few):
    """With the setting (the default), a cpu-preset step after the first few takes its arrays
    from memory freed by the step before: almost no new pages. With it off, glibc maps and
    faults in thousands of fresh pages every step."""
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "TENSORLITE_KEEP_FREED_MEMORY": setting, "PYTHONPATH": root}
    out = subprocess.run([sys.executable, "-c", FAULTS_PER_STEP], env=env, capture_output=True,
                         text=True, check=True, timeout=120)
    faults = int(out.stdout.split()[-1])
    assert (faults < 100) if few else (faults > 1000), f"page faults per step: {faults}"


def test_keep_freed_memory_reports_whether_it_applied():
    assert backend.keep_freed_memory() is glibc()


def test_large_arrays_still_allocate_in_other_threads():
    """With mmap off, a thread's own malloc arena (64 MB heaps) must still get arrays bigger
    than a heap: glibc falls back to mmap for those."""
    import threading
    sums = []
    thread = threading.Thread(target=lambda: sums.append(float(np.ones(2**25, np.float32)[::2**20].sum())))
    thread.start()
    thread.join()
    assert sums == [32.0]  # a 128 MB array, 32 of its elements summed
