"""Devices, the NumPy/CuPy switch, random state, deferred checks, TF32, and error messages that
name the shapes."""
import operator
import pickle
import types

import numpy as np
import pytest

import cupy_standin
import tensorlite as tl
import tensorlite.functional as F
from conftest import STANDIN
from tensorlite import backend

needs_standin = pytest.mark.skipif(not STANDIN, reason="no cupy package for the stand-in (or a GPU is here)")


@pytest.mark.skipif(tl.gpu_available(), reason="this machine has a GPU: cuda is available")
def test_cuda_without_a_gpu_says_how_to_install():
    with pytest.raises(tl.DeviceError, match=r"pip install .*\[cuda12\]") as info:
        tl.tensor([1.0], device="cuda")
    assert "CuPy" in str(info.value)
    with pytest.raises(tl.DeviceError, match="pip install"):
        tl.tensor([1.0]).to("cuda")


class CUDARuntimeError(RuntimeError):
    """What CuPy raises when the CUDA runtime fails (cupy_backends.cuda.api.runtime)."""


class UnusableCupy:
    """CuPy as installed on a machine whose driver is too old: it imports, then every call fails."""
    class ndarray:
        pass

    class cuda:
        class runtime:
            @staticmethod
            def getDeviceCount():
                raise CUDARuntimeError("cudaErrorInsufficientDriver: CUDA driver version is "
                                       "insufficient for CUDA runtime version")


class CupyWithoutGPUs(UnusableCupy):
    class cuda:
        class runtime:
            @staticmethod
            def getDeviceCount():
                return 0


@pytest.fixture
def cupy_as(monkeypatch):
    """Put a given `cp` (and import error) in backend's place for one test."""
    def use(cp, import_error=None):
        monkeypatch.setattr(backend, "cp", cp)
        monkeypatch.setattr(backend, "_CUPY_IMPORT_ERROR", import_error)
        backend._cuda_changed()
    yield use
    monkeypatch.undo()
    backend._cuda_changed()


@pytest.mark.parametrize("cp, import_error, reason", [
    (None, None, "CuPy is not installed"),
    (None, ImportError("libnvrtc.so.12: cannot open shared object file"),
     r"CuPy is installed but cannot be imported \(libnvrtc.so.12: cannot open shared object file\)"),
    (UnusableCupy, None, "CuPy cannot use the GPU: CUDARuntimeError: cudaErrorInsufficientDriver: "
                         "CUDA driver version is insufficient for CUDA runtime version"),
    (CupyWithoutGPUs, None, "CuPy sees no GPU"),
], ids=["not-installed", "cannot-import", "old-driver", "no-gpu"])
def test_cuda_errors_give_cupys_reason_beside_the_install_hint(cupy_as, cp, import_error, reason):
    cupy_as(cp, import_error)
    assert not tl.gpu_available()
    with pytest.raises(tl.DeviceError, match=rf"^{reason}; .*pip install -e \"\.\[cuda12\]\"") as e:
        tl.tensor([1.0], device="cuda")
    # CuPy installed: the driver and the GPU are the likelier cause, and the cpu device the way on
    assert ("without a GPU, use the cpu device" in str(e.value)) == (cp is not None)
    with pytest.raises(tl.DeviceError, match=reason):
        tl.tensor([1.0]).to("cuda")


@pytest.mark.skipif(tl.gpu_available() or cupy_standin.real_cupy() is None,
                    reason="needs the cupy package on a machine where it cannot reach a GPU")
def test_the_installed_cupy_without_a_gpu_names_its_own_error():
    with pytest.raises(tl.DeviceError, match=r"^CuPy cannot use the GPU: CUDARuntimeError: .*pip install"):
        tl.tensor([1.0], device="cuda")


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


def test_rng_state_round_trip(device):
    """A checkpoint's rng state resumes the same dropout masks, on either device."""
    x = tl.tensor(np.ones((8, 8), np.float32), device=device)
    tl.manual_seed(5)
    state = pickle.loads(pickle.dumps(backend.get_rng_state()))   # as a checkpoint carries it
    first = F.dropout(x, 0.5).numpy()
    assert not np.array_equal(F.dropout(x, 0.5).numpy(), first)   # the generator moved on
    backend.set_rng_state(state)
    np.testing.assert_array_equal(F.dropout(x, 0.5).numpy(), first)


def test_an_older_rng_state_without_cuda_still_loads():
    tl.manual_seed(1)
    state = backend.get_rng_state()
    cuda_before = dict(backend.rng("cuda"))
    backend.set_rng_state({"cpu": state["cpu"]})
    assert backend.rng("cuda") == cuda_before


def mix64(z):
    """splitmix64's output function, written out independently of backend.mix64."""
    m = 2**64 - 1
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & m
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB & m
    return z ^ (z >> 31)


@pytest.mark.parametrize("dtype, bits", [(np.float32, 24), (np.float64, 53)])
def test_the_cuda_generator_is_counter_based(device, dtype, bits):
    """Draw c of seed s, element i: mix64(key + GOLDEN (i + 1)) with key = mix64(s + GOLDEN (c + 1))."""
    golden = 0x9E3779B97F4A7C15
    tl.manual_seed(7)
    backend.next_key("cuda")                                   # draw 0
    key = mix64((7 + golden * 2) % 2**64)                      # draw 1
    assert backend.next_key("cuda") == key
    assert backend.rng("cuda") == {"seed": 7, "counter": 2}
    u = backend.as_numpy(backend.counter_uniform(backend.xp_for(device), 1000, key, dtype))
    expected = [(mix64((key + golden * (i + 1)) % 2**64) >> (64 - bits)) * 2.0**-bits for i in range(1000)]
    assert u.dtype == dtype
    np.testing.assert_array_equal(u, np.array(expected, dtype))
    assert 0.47 < u.mean() < 0.53 and u.min() >= 0 and u.max() < 1


@needs_standin
def test_cuda_dropout_draws_from_the_counter():
    with cupy_standin.installed():
        x = tl.tensor(np.ones(4000, np.float32), device="cuda")
        tl.manual_seed(3)
        y = F.dropout(x, 0.25).numpy()
    key = backend.mix64(3 + backend.GOLDEN)
    u = backend.as_numpy(backend.counter_uniform(np, 4000, key, np.float32))
    np.testing.assert_array_equal(y, np.where(u >= 0.25, np.float32(1 / 0.75), 0))


# ---- deferred checks -------------------------------------------------------------------------

def test_a_deferred_check_on_the_cpu_raises_at_once():
    with pytest.raises(IndexError, match="bad id"):
        backend.defer_check(np.array(True), "bad id")
    backend.defer_check(np.array(False), lambda: pytest.fail("a passing check builds no message"))


@needs_standin
def test_a_deferred_check_on_cuda_raises_at_the_next_read_and_not_before():
    with cupy_standin.installed() as cp:
        x = tl.tensor(np.arange(4.0), device="cuda")
        with cupy_standin.counting() as c:
            backend.defer_check(x.data.max() > 2, lambda: "max above 2", ValueError)
            backend.defer_check(x.data.min() < 0, "negative", ValueError)
            assert c.syncs == 0                                   # nothing waited
            with pytest.raises(ValueError, match="^max above 2$"):
                backend.item(x.sum())
            assert c.syncs == 1                                   # the value and the flags at once
        assert backend.item(x.sum()) == 6.0                       # read once, then gone
        backend.defer_check(x.data.min() < 0, "negative", ValueError)
        with cupy_standin.counting() as c:
            assert backend.item(x.sum(), x.max()) == (6.0, 3.0)
            assert c.syncs == 1 and c.d2h == 1
        backend.defer_check(x.data.max() > 2, "at numpy()")
        with pytest.raises(IndexError, match="at numpy"):
            x.numpy()
        backend.defer_check(x.data.max() > 2, "at flush")
        with pytest.raises(IndexError, match="at flush"):
            backend.flush_checks()
        backend.flush_checks()


@needs_standin
@pytest.mark.parametrize("bad", [7, -1, 2**40])
def test_check_ids_on_cuda_names_the_culprit_later(bad):
    describe = lambda ids: f"id {int(ids[(ids < 0) | (ids >= 7)][0])} out of range"  # noqa: E731
    with pytest.raises(IndexError, match=f"id {bad} out of range"):
        backend.check_ids(np.array([0, bad, 3]), 7, describe)
    with cupy_standin.installed() as cp:
        ids = cp.asarray(np.array([[0, 6], [bad, 3]]))
        with cupy_standin.counting() as c:
            backend.check_ids(ids, 7, describe)
            backend.check_ids(cp.asarray(np.arange(7)), 7, describe)
            assert c.syncs == 0
        with pytest.raises(IndexError, match=f"id {bad} out of range"):
            backend.flush_checks()


def test_item_reads_several_values(device):
    a, b = tl.tensor(np.float32(1.5), device=device), tl.tensor(np.int64(2**60 + 1), device=device)
    assert backend.item(a, b.data) == (1.5, 2**60 + 1)
    assert backend.item(a) == 1.5
    with pytest.raises(ValueError, match=r"size 1.*\(2,\)"):
        backend.item(tl.tensor([1.0, 2.0], device=device))


# ---- TF32 ------------------------------------------------------------------------------------

def compute_type():
    """CuPy's float32 compute type (its 2-D products), and the cuBLAS handle's math mode (its
    batched products) must agree."""
    linalg, cublas = backend.cp._core._routines_linalg, backend.cp.cuda.cublas
    two_d = {linalg.COMPUTE_TYPE_TF32: "tf32", linalg.COMPUTE_TYPE_DEFAULT: "default"}[
        linalg.get_compute_type(np.float32)]
    batched = {backend._CUBLAS_TF32_TENSOR_OP_MATH: "tf32", cublas.CUBLAS_DEFAULT_MATH: "default"}[
        cublas.getMathMode(backend.cp.cuda.get_cublas_handle())]
    assert two_d == batched, f"2-D products {two_d}, batched products {batched}"
    return two_d


@needs_standin
def test_tf32_is_on_for_float32_products_by_default_and_can_be_turned_off(monkeypatch):
    monkeypatch.setitem(backend._tf32, "enabled", True)
    with cupy_standin.installed():
        tl.tensor([1.0], device="cuda")                   # the first use sets it
        assert backend.tf32_enabled() and compute_type() == "tf32"
        backend.set_tf32(False)
        assert not backend.tf32_enabled() and compute_type() == "default"
        backend.set_tf32(True)
        assert compute_type() == "tf32"
        monkeypatch.setattr(cupy_standin._cuda.Device, "compute_capability", "75")   # a Turing GPU
        backend.set_tf32(True)
        assert compute_type() == "default"


@pytest.mark.parametrize("env, expected", [({}, True), ({"TENSORLITE_TF32": "0"}, False),
                                           ({"CUPY_TF32": "0"}, False),
                                           ({"TENSORLITE_TF32": "1", "CUPY_TF32": "0"}, True)])
def test_tf32_default_comes_from_the_environment(monkeypatch, env, expected):
    for name in ("TENSORLITE_TF32", "CUPY_TF32"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert backend._tf32_default() is expected


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


def test_a_run_without_gxx_says_last_that_the_cuda_kernel_gates_did_not_run(monkeypatch):
    import shutil

    import conftest
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "g++" else real_which(name, *a, **k))
    assert ("emulation and sanitizers", "g++ is not installed") in conftest.missing_cuda_gates()
    lines = []
    conftest.pytest_terminal_summary(types.SimpleNamespace(write_line=lambda line, **kw: lines.append(line)))
    assert "CUDA kernel gate not run: emulation and sanitizers (g++ is not installed)" in lines
