"""The whole cuda code path, glue included, on a CPU: tensorlite's device "cuda" runs on the
NumPy-backed CuPy stand-in (tests/cupy_standin), in both kernel modes.

- the stand-in itself: only CuPy's names, CuPy's refusals of host arrays, device scalars;
- gradcheck of a whole GPT on cuda, a few training steps equal to the CPU's, a resume equal
  to an uninterrupted run, KV-cache generation equal to generation without it;
- kernel launches and host synchronisations of one lecture-shaped training step, with
  ceilings, so they can only go down.

With a GPU, the equality tests run on it; the counting tests always use the stand-in.
"""

import numpy as np
import pytest

import cupy_standin
import tensorlite as tl
from conftest import GPU, STANDIN
from gpt import GPT, GPTConfig
from gpt.train import run

try:  # the checkpoint helpers have their own module in newer layouts
    from gpt.checkpoint import load_checkpoint
except ImportError:
    from gpt.train import load_checkpoint
from tensorlite import backend, nn

pytestmark = pytest.mark.skipif(not (GPU or STANDIN), reason="no GPU, and no cupy package for the stand-in")

MODES = ["reference", "fast"]
TINY = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, dropout=0.0)


@pytest.fixture(params=MODES)
def mode(request):
    """Run the test with the readable reference ops, then with the fast kernels."""
    with tl.use_kernels(request.param):
        yield request.param


@pytest.fixture
def standin():
    """The stand-in in place of cupy, even where there is a GPU (it counts what CuPy would do)."""
    with cupy_standin.installed() as cp:
        yield cp
        backend.flush_checks()


@pytest.fixture
def cuda(request):
    """Device "cuda": the GPU where there is one, else the stand-in."""
    if GPU:
        yield "cuda"
        backend.flush_checks()
        return
    with cupy_standin.installed():
        yield "cuda"
        backend.flush_checks()


def ids(shape, vocab_size=11, seed=0):
    return np.random.default_rng(seed).integers(0, vocab_size, shape)


def tiny_gpt(seed=0, **overrides):
    tl.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, **overrides}))


# ================================ the stand-in itself ==========================================

def test_standin_has_only_cupys_names():
    assert cupy_standin.names_not_in_cupy() == []


def test_the_names_check_catches_an_invented_name_and_a_wrong_kind(monkeypatch):
    m = cupy_standin.module()
    monkeypatch.setattr(m, "vecdot", lambda a, b: a, raising=False)    # CuPy 14 has no vecdot
    monkeypatch.setattr(m, "exp", lambda x: x)                          # a ufunc in CuPy
    problems = dict(cupy_standin.names_not_in_cupy())
    assert problems == {"cupy.vecdot": "not in cupy", "cupy.exp": "a function here, a ufunc in cupy"}


def test_standin_refuses_host_arrays_as_cupy_does(standin):
    x = standin.ones((2, 3), dtype=np.float32)
    assert not isinstance(x, np.ndarray)
    host = np.ones((2, 3), np.float32)
    for mixed in (lambda: x + host, lambda: host * x, lambda: standin.exp(host),
                  lambda: standin.maximum(x, host), lambda: standin.concatenate([x, host])):
        with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
            mixed()
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for fill"):
        x[...] = host
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(x)
    with pytest.raises(TypeError, match="got an unexpected keyword argument 'kind'"):
        standin.take_along_axis(x, standin.zeros((2, 1), np.int64), axis=1, kind="stable")
    x[...] = np.float32(2)                                  # a host scalar is fine, as in CuPy
    assert standin.asnumpy(x).sum() == 12


def test_standin_wraps_out_of_range_index_arrays_as_cupy_does(standin):
    """CuPy cannot check device index arrays without reading them back: it wraps them around
    where NumPy raises, so a range check has to be the program's own (backend.check_ids)."""
    table = standin.asarray(np.arange(10.0).reshape(5, 2))
    bad = standin.asarray(np.array([0, 7, -1]))
    np.testing.assert_array_equal(standin.asnumpy(table[bad]), [[0, 1], [4, 5], [8, 9]])
    np.testing.assert_array_equal(standin.asnumpy(standin.take(table, bad, axis=0)), [[0, 1], [4, 5], [8, 9]])
    grads = standin.zeros(5)
    standin.add.at(grads, bad, 1.0)
    np.testing.assert_array_equal(standin.asnumpy(grads), [1, 0, 1, 0, 1])
    with pytest.raises(IndexError):
        table[7]                                            # a Python int is checked on the host


def test_standin_gives_device_scalars_and_counts_what_cupy_would_do(standin):
    x = standin.arange(6.0)
    with cupy_standin.counting() as c:
        total, first = x.sum(), x[0]
        assert isinstance(total, standin.ndarray) and total.ndim == 0
        assert isinstance(first, standin.ndarray) and first.ndim == 0
        assert c.snapshot() == dict(launches=1, syncs=0, h2d=0, d2h=0)   # x[0] is a view
        x.reshape(2, 3).T                                                # views: no launch
        x.reshape(2, 3).T.copy()                                         # one copy
        assert c.launches == 2
        assert float(total) == 15.0 and total.item() == 15.0 and bool(total > 1)
        standin.asnumpy(x), x.tolist()
        assert c.syncs == 5
        x[x > 2] = 0.0                                                   # a boolean mask: CuPy counts it
        assert c.syncs == 6
        standin.asarray(np.arange(3))
        assert c.h2d == 1


# ================================ the cuda path works ==========================================

def gradcheck_gpt_on(device, model):
    """tl.gradcheck of the loss with respect to every parameter, on device (see test_model.py)."""
    params = list(model.parameters())   # gone through three times
    places = {id(p): [] for p in params}
    for module in model.modules():
        for attr, value in vars(module).items():
            if isinstance(value, nn.Parameter):
                places[id(value)].append((module, attr))
    idx, targets = ids((2, 4), 5, seed=1), ids((2, 4), 5, seed=2)

    def loss(*tensors):
        for p, t in zip(params, tensors):
            for module, attr in places[id(p)]:
                setattr(module, attr, t)
        return model(idx, targets)[1]

    type(model).device = property(lambda self: device)   # plain Tensors stand where Parameters were
    try:
        return tl.gradcheck(loss, *params, atol=1e-7, rtol=1e-5)
    finally:
        del type(model).device
        for p in params:
            for module, attr in places[id(p)]:
                setattr(module, attr, p)


def test_gradcheck_of_a_whole_gpt_on_cuda(cuda, mode):
    model = tiny_gpt(vocab_size=5, block_size=4, n_embd=4, n_layer=1)
    rng = np.random.default_rng(0)
    for p in model.parameters():
        p.data[...] += rng.normal(0.0, 0.5, p.shape)
    model.to(device=cuda, dtype="float64")
    assert gradcheck_gpt_on(cuda, model)


def train_steps(device, steps=3):
    """Losses, gradient norms and final weights of a few AdamW steps, clipping at 0.5.

    Without biases: the key bias's gradient is zero in exact arithmetic (softmax ignores a
    constant added to a row of scores), so in float32 it is rounding noise, which AdamW
    scales up to steps of size lr with a sign that differs from device to device."""
    model = tiny_gpt(bias=False).to(device=device)
    opt = model.configure_optimizer(1e-2, 0.1)
    losses, norms = [], []
    for step in range(steps):
        _, loss = model(ids((4, 8), seed=step), ids((4, 8), seed=100 + step))
        opt.zero_grad()
        loss.backward()
        norm = tl.optim.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        loss_value, norm_value = backend.item(loss, norm)
        losses.append(loss_value)
        norms.append(norm_value)
    return losses, norms, {name: p.numpy() for name, p in model.named_parameters()}


def test_training_on_cuda_equals_the_cpu(cuda, mode):
    cpu = train_steps("cpu")
    gpu = train_steps(cuda)
    np.testing.assert_allclose(gpu[0], cpu[0], rtol=2e-6)
    np.testing.assert_allclose(gpu[1], cpu[1], rtol=2e-5)
    assert cpu[1][0] > 0.5          # the first step clips: the clip path is exercised
    for name in cpu[2]:
        np.testing.assert_allclose(gpu[2][name], cpu[2][name], rtol=1e-4, atol=2e-6, err_msg=name)


TEXT = ("the king and queen of rome shall not go to war with france my lord be still now "
        "what say you good sir I will speak no more of this O fair day\n") * 12


def run_tiny(out_dir, device, max_iters, resume=False):
    from gpt import preset
    model_cfg, train_cfg = preset("cpu", vocab_size=len(set(TEXT)), n_layer=1, n_head=2, n_embd=16,
                                  block_size=16, dropout=0.1, batch_size=4, max_iters=max_iters,
                                  eval_interval=2, eval_iters=1, sample_chars=0, lr_decay=False)
    return run(model_cfg, train_cfg, TEXT, out_dir, device=device, resume=resume, progress=False,
               log=lambda line: None)


def test_a_resumed_cuda_run_equals_an_uninterrupted_one(cuda, mode, tmp_path):
    """With dropout on: the cuda generator's (seed, counter) travels in the checkpoint."""
    run_tiny(tmp_path / "whole", cuda, 4)
    run_tiny(tmp_path / "halves", cuda, 2)
    run_tiny(tmp_path / "halves", cuda, 4, resume=True)
    whole, halves = load_checkpoint(tmp_path / "whole"), load_checkpoint(tmp_path / "halves")
    assert whole["step"] == halves["step"] == 4
    assert whole["rng"]["tensorlite"]["cuda"] == halves["rng"]["tensorlite"]["cuda"]
    assert whole["rng"]["tensorlite"]["cuda"]["counter"] > 0     # dropout drew on the device
    for name, value in whole["model"].items():
        if GPU and mode == "reference":
            # the reference embedding backward is xp.add.at, which CuPy runs with float
            # atomicAdd: repeated ids add in a different order each run (the fast kernel is
            # deterministic, and is compared bit for bit)
            np.testing.assert_allclose(halves["model"][name], value, rtol=1e-4, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(halves["model"][name], value, err_msg=name)


def test_kv_cache_generation_on_cuda_equals_generation_without_it(cuda, mode):
    model = tiny_gpt().to(device=cuda)
    rng = np.random.default_rng(0)
    for p in model.parameters():
        p.data[...] += backend.to_device(rng.normal(0.0, 0.3, p.shape).astype(np.float32), cuda)
    context = ids((2, 3))
    cached = model.generate(context, 12, temperature=0.9, top_k=5, seed=7, use_cache=True)
    plain = model.generate(context, 12, temperature=0.9, top_k=5, seed=7, use_cache=False)
    np.testing.assert_array_equal(cached, plain)
    assert cached.shape == (2, 15)
    on_cpu = model.to(device="cpu", dtype="float64").generate(context, 12, temperature=0.9, top_k=5, seed=7)
    on_gpu = model.to(device=cuda).generate(context, 12, temperature=0.9, top_k=5, seed=7)
    np.testing.assert_array_equal(on_gpu, on_cpu)


def test_dropout_draws_the_same_mask_in_both_kernel_modes(standin):
    """The fused CUDA kernel draws from the same (seed, counter) stream as the reference."""
    import tensorlite.functional as F
    x = tl.tensor(np.ones((64, 33), np.float32), device="cuda")
    masks = []
    for kernel_mode in MODES:
        with tl.use_kernels(kernel_mode):
            tl.manual_seed(4)
            masks.append([F.dropout(x, p).numpy() for p in (0.3, 0.5)])
    for reference, fast in zip(*masks):
        np.testing.assert_array_equal(fast, reference)
    assert 0.25 < (masks[0][0] == 0).mean() < 0.35


def test_the_lecture_style_mask_is_made_once_on_the_device(standin):
    model = tiny_gpt(fused_softmax=False).to(device="cuda")
    model(ids((2, 8)), ids((2, 8), seed=1))
    attn = model.transformer.h[0].attn
    with cupy_standin.counting() as c:
        for T in (8, 5):
            mask = attn.future_mask(T, "cuda")
            assert isinstance(mask, standin.ndarray) and mask.shape == (T, T)
        assert c.snapshot() == dict(launches=0, syncs=0, h2d=0, d2h=0)
    np.testing.assert_array_equal(standin.asnumpy(mask), np.triu(np.ones((5, 5), bool), k=1))


def test_an_id_out_of_range_on_cuda_raises_by_the_next_read(cuda, mode):
    model = tiny_gpt().to(device=cuda)
    bad = ids((2, 8))
    bad[1, 3] = 11
    with pytest.raises(IndexError, match="11"):
        _, loss = model(bad, ids((2, 8)))
        backend.item(loss)


def test_profile_synchronizes_after_every_op_on_cuda(standin):
    model = tiny_gpt().to(device="cuda")
    x, y = ids((2, 8)), ids((2, 8), seed=1)
    model(x, y)                                     # first use: compile, cache
    with cupy_standin.counting() as c:
        with tl.profile() as prof:
            _, loss = model(x, y)
            loss.backward()
    calls = sum(r[1] + r[3] for r in prof.rows())
    assert calls > 50
    assert c.syncs >= calls + 2                     # after each forward and backward, and around the block


# ============================ launches and syncs of one step ===================================
#
# The lecture preset's depth (6 layers, 6 heads) with tiny widths, so it runs in a moment:
# forward, backward, AdamW.gather_grads, clip_grad_norm_, AdamW step, and reading the loss and
# the clip norm as gpt/train.py does (backend.item: one transfer). The ceilings are today's
# counts: lower them when a change removes launches or syncs; a change that adds some fails here.
#
# Of the fast step's 443 launches, 77 copy each parameter's gradient into AdamW's flat buffer
# (one per parameter), 9 clip (the norm in 2, the coefficient in 4, one multiplication per
# parameter group, the returned norm's cast) and 2 are AdamW's updates (one per group).
# Before the gradients were gathered first, clipping took 160 launches (a cast and a
# multiplication per parameter) and AdamW.step 79 (its own gather): 594 launches, h2d 3.

LECTURE_SHAPED = dict(vocab_size=65, block_size=16, n_layer=6, n_head=6, n_embd=24, dropout=0.2)
CEILINGS = {
    "reference": dict(launches=1532, syncs=1, h2d=2),
    "fast": dict(launches=443, syncs=1, h2d=2),
}


def lecture_step_counts(mode, gather=True):
    with tl.use_kernels(mode), cupy_standin.installed():
        tl.manual_seed(0)
        model = GPT(GPTConfig(**LECTURE_SHAPED)).to(device="cuda")
        opt = model.configure_optimizer(1e-3, 0.1)

        def step(seed):
            x, y = ids((2, 16), 65, seed), ids((2, 16), 65, seed + 1)
            _, loss = model(x, y)
            opt.zero_grad()
            loss.backward()
            if gather:
                opt.gather_grads()
            norm = tl.optim.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            return backend.item(loss, norm)

        step(0)                                     # the first step makes the optimizer's buffers
        with cupy_standin.counting() as c:
            step(2)
        return c.snapshot()


@pytest.mark.parametrize("kernel_mode", MODES)
def test_launches_and_syncs_of_a_lecture_shaped_step(kernel_mode):
    counts = lecture_step_counts(kernel_mode)
    ceiling = CEILINGS[kernel_mode]
    over = {k: (counts[k], ceiling[k]) for k in ceiling if counts[k] > ceiling[k]}
    assert not over, f"{kernel_mode} step: {counts}; above the ceiling (count, ceiling): {over}"
    assert counts["syncs"] >= 1 and counts["d2h"] >= 1   # the loss is read: the count is live


def test_launches_of_a_lecture_shaped_step_written_as_for_pytorch():
    """backward, clip_grad_norm_, step with no gather_grads: clipping scales each gradient
    (with one cast of the coefficient, not one per parameter), step gathers: 518 launches."""
    counts = lecture_step_counts("fast", gather=False)
    assert counts["launches"] <= 518 and counts["syncs"] <= 1, counts


def launches_by_name(c):
    names = {}
    for kind, name in c.trace:
        if kind == "launches":
            names[name] = names.get(name, 0) + 1
    return names


@pytest.mark.parametrize("kernel_mode", MODES)
def test_gathered_gradients_are_clipped_and_stepped_once_per_group(standin, kernel_mode):
    with tl.use_kernels(kernel_mode):
        model = tiny_gpt().to(device="cuda")
        opt = model.configure_optimizer(1e-3, 0.1)
        model(ids((2, 8)), ids((2, 8), seed=1))[1].backward()
        n = len(list(model.parameters()))
        with cupy_standin.counting(trace=True) as c:
            opt.gather_grads()
        assert launches_by_name(c) == {"setitem": n}                 # one copy per parameter
        with cupy_standin.counting(trace=True) as c:
            opt.gather_grads()                                       # in place already
            opt.gather_grads()
        assert c.launches == 0
        with cupy_standin.counting(trace=True) as c:
            tl.optim.clip_grad_norm_(model.parameters(), 1e-3)
        assert launches_by_name(c)["mul"] == len(opt.param_groups) + (n if kernel_mode == "reference" else 0)
        with cupy_standin.counting(trace=True) as c:
            opt.step()
        assert "setitem" not in launches_by_name(c)                  # no second gather
        if kernel_mode == "fast":
            assert launches_by_name(c) == {"adamw_update": len(opt.param_groups)}


def test_a_training_loop_step_reads_the_device_once(standin, tmp_path):
    """gpt.train.run's steps, each one host synchronisation (the loss, the clip norm and the
    deferred id checks read together), counted as the difference between a run of 5 steps
    and one of 2 that evaluate and checkpoint alike (at steps 0 and max_iters)."""
    from gpt import preset

    def syncs(max_iters, grad_clip):
        model_cfg, train_cfg = preset("cpu", vocab_size=len(set(TEXT)), n_layer=1, n_head=2, n_embd=16,
                                      block_size=16, dropout=0.1, batch_size=4, max_iters=max_iters,
                                      eval_interval=1000, eval_iters=1, sample_chars=0, grad_clip=grad_clip)
        with cupy_standin.counting() as c:
            run(model_cfg, train_cfg, TEXT, tmp_path / f"{max_iters}-{grad_clip}", device="cuda",
                progress=False, log=lambda line: None)
        return c.syncs

    backend.check_device("cuda")          # its first use reads one value back: not a step's
    with tl.use_kernels("fast"):
        for grad_clip in (1.0, 0.0):
            assert syncs(5, grad_clip) - syncs(2, grad_clip) == 3, grad_clip
