"""tensorlite.optim: AdamW and SGD against hand-written NumPy references (and PyTorch when it
is installed), AdamW's flat buffer and state, the warmup + cosine schedule, gradient clipping.
AdamW runs with the fast update kernel and with the reference adamw_update; the `device`
fixture (conftest.py) runs a test on the CPU and on cuda (the CuPy stand-in without a GPU).
"""
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tensorlite as tl
from gpt import GPT, GPTConfig
from tensorlite import kernels, nn
from tensorlite.optim import SGD, AdamW, WarmupCosine, adamw_update, clip_grad_norm_

SHAPES = [(3, 4), (5,), (2, 3, 2)]


@pytest.fixture(autouse=True)
def restore_kernel_mode():
    """Tests here may switch the kernel mode with a plain tl.use_kernels(mode) call."""
    with tl.use_kernels(kernels.mode()):
        yield


def make_params(shapes=SHAPES, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [nn.Parameter(rng.standard_normal(s).astype(dtype)) for s in shapes]


def random_grads(params, steps, seed=1):
    """steps lists of gradients, one array per parameter."""
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(p.shape).astype(p.dtype) for p in params] for _ in range(steps)]


def step_both(ours, theirs, params, theirs_params, steps):
    """Give both optimizers the same random gradients for `steps` steps."""
    import torch
    for step_grads in random_grads(params, steps=steps):
        for p, q, g in zip(params, theirs_params, step_grads):
            p.grad, q.grad = g.copy(), torch.tensor(g)
        ours.step()
        theirs.step()


def two_groups(params):
    """Matrices in one group, the rest in another, each with its own lr and weight decay."""
    return [{"params": params[:1] + params[2:], "lr": 3e-2, "weight_decay": 0.1},
            {"params": params[1:2], "lr": 1e-2, "weight_decay": 0.0}]


def adamw_reference(p, grads, lr, wd, betas=(0.9, 0.999), eps=1e-8, m=None, v=None, t0=0):
    """torch.optim.AdamW's update, written out in NumPy for one parameter over len(grads) steps
    (starting from moments m, v after t0 steps; zeros and 0 for a fresh optimizer)."""
    b1, b2 = betas
    p = p.copy()
    m = np.zeros_like(p) if m is None else m
    v = np.zeros_like(p) if v is None else v
    for t, g in enumerate(grads, start=t0 + 1):
        p -= lr * wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p -= lr / (1 - b1 ** t) * m / (np.sqrt(v) / np.sqrt(1 - b2 ** t) + eps)
    return p, m, v


def run(opt, params, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.copy()
        opt.step()


# ---- AdamW ----------------------------------------------------------------------------------

def test_adamw_defaults_are_pytorchs():
    opt = AdamW(make_params())
    group = opt.param_groups[0]
    settings = (group["lr"], group["betas"], group["eps"], group["weight_decay"])
    assert settings == (1e-3, (0.9, 0.999), 1e-8, 0.01)


@pytest.mark.parametrize("mode", kernels.MODES)
def test_adamw_matches_the_formula_with_two_groups(mode):
    tl.use_kernels(mode)   # restored by the autouse fixture below
    params = make_params()
    start = [p.numpy().copy() for p in params]
    grads = random_grads(params, steps=4)
    opt = AdamW(two_groups(params), betas=(0.8, 0.95))
    run(opt, params, grads)
    state = opt.state_dict()["state"]
    ordered = [(p, g) for g in opt.param_groups for p in g["params"]]   # state_dict's numbering
    for index, (p, group) in enumerate(ordered):
        i = [id(q) for q in params].index(id(p))
        expected, m, v = adamw_reference(start[i], [g[i] for g in grads], group["lr"],
                                         group["weight_decay"], betas=(0.8, 0.95))
        np.testing.assert_allclose(p.numpy(), expected, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(state[index]["exp_avg"], m, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(state[index]["exp_avg_sq"], v, rtol=1e-13, atol=1e-15)
        assert state[index]["step"] == 4 and set(group["steps"]) == {4}
    assert not np.allclose(params[0].numpy(), start[0])


@pytest.mark.parametrize("mode", kernels.MODES)
def test_adamw_matches_torch(mode):
    torch = pytest.importorskip("torch", reason="PyTorch not installed: reference comparison skipped")
    tl.use_kernels(mode)
    params = make_params()
    ours = AdamW(two_groups(params), betas=(0.9, 0.99), eps=1e-6)
    theirs_params = [torch.tensor(p.numpy(), requires_grad=True) for p in params]
    theirs = torch.optim.AdamW(two_groups(theirs_params), betas=(0.9, 0.99), eps=1e-6)
    step_both(ours, theirs, params, theirs_params, steps=5)
    for p, q in zip(params, theirs_params):
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=0, atol=1e-12)


def test_adamw_on_a_device_matches_the_formula(device):
    params = make_params()
    start = [p.numpy().copy() for p in params]
    grads = random_grads(params, steps=3)
    for p in params:
        p.data = tl.backend.to_device(p.data, device)
    opt = AdamW(params, lr=1e-2, weight_decay=0.1)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = tl.backend.to_device(g, device)
        opt.step()
    for i, p in enumerate(params):
        assert p.device == device
        expected, _, _ = adamw_reference(start[i], [g[i] for g in grads], 1e-2, 0.1)
        np.testing.assert_allclose(p.numpy(), expected, rtol=1e-12, atol=1e-15)


def test_adamw_params_are_views_of_one_flat_buffer():
    params = make_params()
    opt = AdamW(two_groups(params))
    for group in opt.param_groups:
        assert all(np.shares_memory(p.data, group["flat"]) for p in group["params"])
        assert group["flat"].size == sum(p.size for p in group["params"])
    np.testing.assert_array_equal(params[0].numpy(), make_params()[0].numpy())  # values kept


def test_adamw_step_after_module_to_float64_repacks():
    model = nn.Sequential(nn.Linear(4, 3), nn.GELU(), nn.Linear(3, 2))
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    x = tl.tensor(np.random.default_rng(0).standard_normal((5, 4)))

    def backward():
        model.zero_grad()
        (model(x.to(dtype=next(model.parameters()).dtype)) ** 2).mean().backward()

    backward()
    opt.step()                                          # moments are now non-zero, float32
    model.to(dtype="float64")                           # replaces every .data
    backward()
    saved = opt.state_dict()["state"]
    before = [(p.numpy().copy(), p.grad.copy()) for p in model.parameters()]
    opt.step()
    group = opt.param_groups[0]
    assert group["flat"].dtype == np.float64 and group["exp_avg"].dtype == np.float64
    for i, (p, (p0, g)) in enumerate(zip(model.parameters(), before)):
        assert p.dtype == np.float64 and np.shares_memory(p.data, group["flat"])
        expected, _, _ = adamw_reference(p0, [g], 1e-2, 0.1, t0=saved[i]["step"],
                                         m=saved[i]["exp_avg"].astype(np.float64),
                                         v=saved[i]["exp_avg_sq"].astype(np.float64))
        np.testing.assert_allclose(p.numpy(), expected, rtol=1e-12, atol=1e-15)


def test_adamw_sees_load_state_dict_after_creation():
    model = nn.Linear(3, 2)
    opt = AdamW(model.parameters(), lr=0.1, weight_decay=0.0)
    model.load_state_dict({"weight": np.zeros((2, 3)), "bias": np.zeros(2)})
    for p in model.parameters():
        p.grad = np.ones(p.shape, dtype=np.float32)
    opt.step()
    np.testing.assert_allclose(model.weight.numpy(), -0.1, rtol=1e-5)   # started from the loaded 0


def test_adamw_state_dict_round_trip_continues_identically():
    def fresh():
        return make_params(seed=0)

    params = fresh()
    grads = random_grads(params, steps=5)
    opt = AdamW(two_groups(params), betas=(0.85, 0.98))
    run(opt, params, grads[:3])
    saved = pickle.loads(pickle.dumps(opt.state_dict()))      # as a checkpoint would store it
    values = [p.numpy().copy() for p in params]

    resumed = fresh()
    opt2 = AdamW(two_groups(resumed), lr=123.0, betas=(0.5, 0.5), weight_decay=0.5)
    for p, value in zip(resumed, values):
        p.data[...] = value
    opt2.load_state_dict(saved)
    assert [g["lr"] for g in opt2.param_groups] == [3e-2, 1e-2]
    assert [set(g["steps"]) for g in opt2.param_groups] == [{3}, {3}]
    run(opt, params, grads[3:])
    run(opt2, resumed, grads[3:])
    for p, q in zip(params, resumed):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


def test_adamw_load_state_dict_refuses_other_groups():
    opt = AdamW(two_groups(make_params()))
    other = AdamW(make_params())
    with pytest.raises(ValueError, match="parameter groups"):
        other.load_state_dict(opt.state_dict())


def test_adamw_skips_a_group_without_gradients():
    params = make_params()
    opt = AdamW(two_groups(params))
    before = [p.numpy().copy() for p in params]
    params[1].grad = np.ones(5)            # only the second group has gradients
    opt.step()
    np.testing.assert_array_equal(params[0].numpy(), before[0])
    assert not np.array_equal(params[1].numpy(), before[1])


@pytest.mark.parametrize("kwargs", [dict(lr=-1.0), dict(eps=-1e-8), dict(weight_decay=-0.1),
                                    dict(betas=(1.0, 0.999)), dict(betas=(0.9, -0.1))], ids=str)
def test_adamw_rejects_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError, match="AdamW"):
        AdamW(make_params(), **kwargs)


def test_optimizers_reject_bad_parameter_lists():
    with pytest.raises(ValueError, match="empty"):
        AdamW([])
    with pytest.raises(ValueError, match="require grad"):
        SGD([tl.tensor(np.zeros(3))])
    with pytest.raises(TypeError, match="dtype"):
        AdamW(make_params(dtype=np.float32)[:1] + make_params(dtype=np.float64)[1:])


def test_zero_grad_clears_the_optimizers_parameters():
    params = make_params()
    for p in params:
        p.grad = np.ones(p.shape)
    AdamW(params).zero_grad()
    assert all(p.grad is None for p in params)



# ---- AdamW.gather_grads: each group's gradients in one flat buffer ---------------------------

def on_device(arrays, device):
    return [tl.backend.to_device(a, device) for a in arrays]


def host(a):
    return tl.backend.as_numpy(a)


def test_gather_grads_makes_each_grad_a_view_of_its_groups_flat_buffer(device):
    params = make_params()
    for p in params:
        p.data = tl.backend.to_device(p.data, device)
    opt = AdamW(two_groups(params))
    grads = random_grads(params, steps=1)[0]
    params[0].grad = tl.backend.to_device(np.ascontiguousarray(grads[0].T), device).T  # strided
    params[1].grad = tl.backend.to_device(grads[1], device)
    for group in opt.param_groups:
        group["grad"][...] = 7.0                      # whatever the buffer held before
    buffers = opt.gather_grads()                      # params[2] has no gradient
    assert [id(b) for b in buffers] == [id(g["grad"]) for g in opt.param_groups]
    for group in opt.param_groups:
        for p, o, n in zip(group["params"], group["offsets"], group["sizes"]):
            i = [id(q) for q in params].index(id(p))
            if i == 2:
                assert p.grad is None                                   # skipped, as before
                np.testing.assert_array_equal(host(group["grad"][o:o + n]), 0)   # adds zeros
                continue
            assert p.grad.shape == p.shape and p.grad.base is not None
            np.testing.assert_array_equal(host(p.grad), grads[i])
            np.testing.assert_array_equal(host(group["grad"][o:o + n]), grads[i].reshape(-1))
    views = [p.grad for p in params]
    opt.gather_grads()                                # already in place: the same views
    assert all(p.grad is v for p, v in zip(params, views))


def test_gather_grads_refuses_a_gradient_of_another_shape():
    params = make_params()
    opt = AdamW(params)
    params[0].grad = np.ones((1, 4))                  # (3, 4) expected: it would broadcast
    with pytest.raises(ValueError, match=r"shape \(3, 4\) but its \.grad has shape \(1, 4\)"):
        opt.gather_grads()


@pytest.mark.parametrize("mode", kernels.MODES)
def test_adamw_steps_alike_with_and_without_gather_grads(device, mode):
    """gather_grads before step (as the training loop does), or step gathering itself, or the
    gradients replaced by new arrays after a gather: the same parameters, bit for bit."""
    tl.use_kernels(mode)
    runs = []
    for how in ("step alone", "gathered", "replaced after gather"):
        params = make_params(dtype=np.float32)
        for p in params:
            p.data = tl.backend.to_device(p.data, device)
        opt = AdamW(two_groups(params))
        for step_grads in random_grads(params, steps=3):
            for p, g in zip(params, on_device(step_grads, device)):
                p.grad = g
            if how != "step alone":
                opt.gather_grads()
            if how == "replaced after gather":
                for p, g in zip(params, on_device(step_grads, device)):
                    p.grad = g                        # no longer the buffer's views: copied again
            opt.step()
        runs.append([host(p.data) for p in params])
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)

# ---- SGD ------------------------------------------------------------------------------------

SGD_SETTINGS = [dict(lr=0.1), dict(lr=0.1, momentum=0.9), dict(lr=0.05, weight_decay=0.01),
                dict(lr=0.05, momentum=0.8, weight_decay=0.01)]


def sgd_reference(p, grads, lr, momentum=0.0, weight_decay=0.0):
    """torch.optim.SGD (dampening 0, no Nesterov) for one parameter."""
    p, buf = p.copy(), None
    for g in grads:
        g = g + weight_decay * p
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + g
            g = buf
        p -= lr * g
    return p


@pytest.mark.parametrize("settings", SGD_SETTINGS, ids=str)
def test_sgd_matches_the_formula(settings):
    params = make_params()
    start = [p.numpy().copy() for p in params]
    grads = random_grads(params, steps=3)
    run(SGD(params, **settings), params, grads)
    for i, p in enumerate(params):
        expected = sgd_reference(start[i], [g[i] for g in grads], **settings)
        np.testing.assert_allclose(p.numpy(), expected, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("settings", SGD_SETTINGS, ids=str)
def test_sgd_matches_torch(settings):
    torch = pytest.importorskip("torch", reason="PyTorch not installed: reference comparison skipped")
    params = make_params()
    theirs_params = [torch.tensor(p.numpy(), requires_grad=True) for p in params]
    ours, theirs = SGD(params, **settings), torch.optim.SGD(theirs_params, **settings)
    step_both(ours, theirs, params, theirs_params, steps=3)
    for p, q in zip(params, theirs_params):
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=0, atol=1e-13)


def test_sgd_leaves_parameters_without_gradient_alone():
    params = make_params()
    before = params[0].numpy().copy()
    params[1].grad = np.ones(5)
    SGD(params, lr=0.1, momentum=0.9).step()
    np.testing.assert_array_equal(params[0].numpy(), before)


# ---- the learning-rate schedule -------------------------------------------------------------

def nanogpt_get_lr(it, learning_rate, warmup_iters, lr_decay_iters, min_lr):
    """nanoGPT train.py's get_lr, verbatim in substance."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (learning_rate - min_lr)


@pytest.mark.parametrize("it", [0, 1, 99, 100, 101, 550, 999, 1000, 1001, 5000])
def test_warmup_cosine_matches_nanogpt(it):
    opt = AdamW([{"params": make_params()[:1], "lr": 1e-3}, {"params": make_params()[1:], "lr": 5e-4}])
    schedule = WarmupCosine(opt, warmup_iters=100, decay_iters=1000, min_lr=1e-4)
    returned = schedule.step(it)
    expected = nanogpt_get_lr(it, 1e-3, 100, 1000, 1e-4)
    assert returned == pytest.approx(expected, rel=1e-12)
    assert opt.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12)
    assert opt.param_groups[1]["lr"] == pytest.approx(nanogpt_get_lr(it, 5e-4, 100, 1000, 1e-4), rel=1e-12)


@settings(max_examples=100, deadline=None)
@given(warmup=st.integers(0, 50), length=st.integers(1, 500), it=st.integers(0, 700),
       lr=st.floats(1e-5, 1.0), min_fraction=st.floats(0.0, 1.0))
def test_warmup_cosine_matches_nanogpt_everywhere(warmup, length, it, lr, min_fraction):
    opt = SGD([nn.Parameter(np.zeros(1))], lr=lr)
    min_lr = lr * min_fraction
    schedule = WarmupCosine(opt, warmup_iters=warmup, decay_iters=warmup + length, min_lr=min_lr)
    got = schedule.step(it)
    assert got == pytest.approx(nanogpt_get_lr(it, lr, warmup, warmup + length, min_lr), rel=1e-12)
    floor = 0.0 if it < warmup else min_lr                       # warmup ramps up from 0
    assert floor * (1 - 1e-12) <= got <= lr * (1 + 1e-12)


def test_warmup_cosine_landmarks():
    opt = SGD(make_params(), lr=1.0)
    schedule = WarmupCosine(opt, warmup_iters=10, decay_iters=110, min_lr=0.1)
    lrs = [schedule.step(it) for it in range(200)]
    assert lrs[0] == pytest.approx(1 / 11)                         # warmup starts above 0
    assert lrs[10] == pytest.approx(1.0)                           # the peak at warmup's end
    assert lrs[60] == pytest.approx(0.55)                          # half way: the mean of both ends
    assert lrs[110] == pytest.approx(0.1) and lrs[199] == 0.1      # the floor, and past the end
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))         # rises, then falls
    assert all(a > b for a, b in zip(lrs[10:110], lrs[11:111]))


# ---- the update kernel -----------------------------------------------------------------------

def test_adamw_uses_the_registered_update_in_fast_mode_only(monkeypatch):
    calls = []
    fast = kernels.resolve(adamw_update, "cpu")
    assert fast is not adamw_update and kernels.reference_of(fast) is adamw_update
    monkeypatch.setitem(kernels._active, (adamw_update, "cpu"),
                        lambda *args, **kw: calls.append("fast") or fast(*args, **kw))
    params = make_params()
    opt = AdamW(params)
    run(opt, params, random_grads(params, steps=1))
    assert calls == ["fast"]
    with tl.use_kernels("reference"):
        run(opt, params, random_grads(params, steps=1))
    assert calls == ["fast"]


# ---- gradient clipping ----------------------------------------------------------------------

def test_clip_grad_norm_scales_to_max_norm():
    params = make_params()
    for p, g in zip(params, random_grads(params, steps=1)[0]):
        p.grad = 10 * g
    norm = math.sqrt(sum(float((p.grad ** 2).sum()) for p in params))
    directions = [p.grad / norm for p in params]
    assert float(clip_grad_norm_(params, 1.5)) == pytest.approx(norm, rel=1e-12)
    new_norm = math.sqrt(sum(float((p.grad ** 2).sum()) for p in params))
    assert new_norm == pytest.approx(1.5, rel=1e-6)
    for p, d in zip(params, directions):                           # direction kept
        np.testing.assert_allclose(p.grad / new_norm, d, rtol=1e-10)


def test_clip_grad_norm_leaves_small_gradients_unchanged():
    params = make_params()
    for p, g in zip(params, random_grads(params, steps=1)[0]):
        p.grad = 1e-3 * g
    before = [p.grad.copy() for p in params]
    norm = clip_grad_norm_(params, 1.0)
    assert float(norm) == pytest.approx(math.sqrt(sum(float((g ** 2).sum()) for g in before)), rel=1e-12)
    for p, g in zip(params, before):
        np.testing.assert_array_equal(p.grad, g)


def test_clip_grad_norm_skips_missing_gradients():
    params = make_params()
    params[1].grad = np.full(5, 2.0)
    assert float(clip_grad_norm_(params, 1.0)) == pytest.approx(math.sqrt(20))
    assert params[0].grad is None
    assert float(clip_grad_norm_(make_params(), 1.0)) == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_grad_norm_returns_a_0d_tensor_like_pytorch(dtype):
    params = make_params(dtype=dtype)
    for p, g in zip(params, random_grads(params, steps=1)[0]):
        p.grad = g
    norm = clip_grad_norm_(params, 1.0)
    assert isinstance(norm, tl.Tensor) and norm.shape == () and norm.dtype == dtype
    assert norm.device == "cpu" and math.isfinite(norm) and float(norm) == norm.item() > 1.0
    params[0].grad[0, 0] = np.inf
    with np.errstate(invalid="ignore"):                       # inf * 0: as in PyTorch, NaN
        assert not math.isfinite(clip_grad_norm_(params, 1.0))


class OnDevice(np.ndarray):
    """An array that refuses to be read on the host, as a GPU array would make the host wait."""
    def __bool__(self):
        raise RuntimeError("host read: bool")

    def __float__(self):
        raise RuntimeError("host read: float")

    def item(self, *args):
        raise RuntimeError("host read: item")


@pytest.mark.parametrize("scale", [10.0, 1e-3], ids=["clipped", "unchanged"])
def test_clip_grad_norm_reads_nothing_on_the_host(scale):
    """The norm, the coefficient min(1, max_norm / (norm + 1e-6)) and the scaling stay arrays:
    no float(), no `if` on a value; the caller reads the returned norm when it wants to."""
    params = make_params()
    grads = [scale * g for g in random_grads(params, steps=1)[0]]
    for p, g in zip(params, grads):
        p.grad = g.copy().view(OnDevice)
    with pytest.raises(RuntimeError, match="host read"):     # the trap works
        float((params[0].grad ** 2).sum())
    norm = clip_grad_norm_(params, 1.0)
    total = math.sqrt(sum(float((g ** 2).sum()) for g in grads))
    assert isinstance(norm.data, OnDevice)
    assert norm.data.view(np.ndarray) == pytest.approx(total, rel=1e-12)
    coef = min(1.0, 1.0 / (total + 1e-6))
    for p, g in zip(params, grads):
        assert isinstance(p.grad, OnDevice)
        np.testing.assert_allclose(p.grad.view(np.ndarray), g * coef, rtol=1e-15)


def test_clip_grad_norm_matches_torch():
    torch = pytest.importorskip("torch", reason="PyTorch not installed: reference comparison skipped")
    params = make_params()
    theirs = [torch.tensor(p.numpy(), requires_grad=True) for p in params]
    for p, q, g in zip(params, theirs, random_grads(params, steps=1)[0]):
        p.grad, q.grad = 3 * g, torch.tensor(3 * g)
    expected = float(torch.nn.utils.clip_grad_norm_(theirs, 0.7))
    assert float(clip_grad_norm_(params, 0.7)) == pytest.approx(expected, rel=1e-12)
    for p, q in zip(params, theirs):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-12)



def gathered_and_separate(device, scale, dtype=np.float32, groups=two_groups):
    """Two copies of the same parameters with the same gradients (times scale), on device: the
    first's gathered into AdamW's flat buffers, the second's separate arrays."""
    out = []
    for gather in (True, False):
        params = make_params(dtype=dtype)
        for p in params:
            p.data = tl.backend.to_device(p.data, device)
        opt = AdamW(groups(params))
        for p, g in zip(params, random_grads(params, steps=1)[0]):
            p.grad = tl.backend.to_device(scale * g, device)
        if gather:
            opt.gather_grads()
        out.append((params, opt))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [10.0, 1e-3], ids=["clipped", "unchanged"])
@pytest.mark.parametrize("mode", kernels.MODES)
def test_clip_grad_norm_of_a_flat_buffer_equals_the_per_parameter_path(device, mode, scale, dtype):
    """One multiplication of each group's buffer gives the same bits as one per gradient."""
    tl.use_kernels(mode)
    (flat, _), (separate, _) = gathered_and_separate(device, scale, dtype)
    assert flat[0].grad.base is not None and separate[0].grad.base is None
    norms = [clip_grad_norm_(params, 1.0) for params in (flat, separate)]
    assert norms[0].dtype == norms[1].dtype == dtype
    assert norms[0].item() == norms[1].item()
    for p, q in zip(flat, separate):
        np.testing.assert_array_equal(host(p.grad), host(q.grad))
    assert (norms[0].item() > 1.0) == (scale > 1)     # the clipped case scales


def test_clip_grad_norm_of_some_of_a_buffers_gradients_leaves_the_others_alone(device):
    """Gradients that cover only part of a flat buffer are scaled one by one: the buffer's
    other gradients keep their values."""
    (flat, _), (separate, _) = gathered_and_separate(device, 10.0)
    untouched = host(flat[1].grad).copy()
    picked = [flat[0], flat[2]]                        # group 0 is params 0 and 2: whole
    picked_separate = [separate[0], separate[2]]
    assert clip_grad_norm_(picked[:1], 1.0).item() == clip_grad_norm_(picked_separate[:1], 1.0).item()
    np.testing.assert_array_equal(host(flat[0].grad), host(separate[0].grad))
    np.testing.assert_array_equal(host(flat[2].grad), 10 * random_grads(flat, 1)[0][2])   # not scaled
    np.testing.assert_array_equal(host(flat[1].grad), untouched)
    clip_grad_norm_(picked, 1.0)                       # the whole group 0: its buffer at once
    clip_grad_norm_(picked_separate, 1.0)
    for p, q in zip(picked, picked_separate):
        np.testing.assert_array_equal(host(p.grad), host(q.grad))
    np.testing.assert_array_equal(host(flat[1].grad), untouched)


@pytest.mark.parametrize("listed", [[0, 1, 2, 0], [0, 1, 0]], ids=["all-and-one-again", "as-long-as-the-buffer"])
def test_clip_grad_norm_counts_and_scales_a_gradient_listed_twice_as_pytorch(listed):
    """Listed twice, a gradient counts twice in the norm and is scaled twice (PyTorch's
    foreach path); [0, 1, 0] spans as many bytes as the whole buffer, yet does not tile it."""
    torch = pytest.importorskip("torch", reason="PyTorch not installed: reference comparison skipped")
    (flat, _), (separate, _) = gathered_and_separate("cpu", 10.0, np.float64, groups=lambda ps: ps)
    theirs = [torch.tensor(p.numpy(), requires_grad=True) for p in separate]
    for q, p in zip(theirs, separate):
        q.grad = torch.tensor(p.grad)
    expected = float(torch.nn.utils.clip_grad_norm_([theirs[i] for i in listed], 1.0))
    for params in (flat, separate):
        assert clip_grad_norm_([params[i] for i in listed], 1.0).item() == pytest.approx(expected, rel=1e-12)
        for p, q in zip(params, theirs):
            np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-12)

# ---- a whole model --------------------------------------------------------------------------

def test_configure_optimizer_decays_matrices_only():
    tl.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, dropout=0.0))
    opt = model.configure_optimizer(learning_rate=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert sorted(map(id, decay["params"] + no_decay["params"])) == sorted(map(id, model.parameters()))
    assert decay["betas"] == (0.9, 0.95) and decay["lr"] == 1e-3


@pytest.mark.parametrize("mode", kernels.MODES)
def test_adamw_skips_parameters_without_a_gradient_as_pytorch_does(mode):
    """A parameter whose .grad is None is not decayed, not moved and keeps its step count;
    the others follow the reference, each with its own bias correction."""
    tl.use_kernels(mode)
    rng = np.random.default_rng(5)
    a, b = (tl.tensor(rng.standard_normal(s), requires_grad=True) for s in ((3, 2), (4,)))
    a0, b0 = a.numpy().copy(), b.numpy().copy()
    opt = AdamW([a, b], lr=1e-2, weight_decay=0.1)
    ga, gb = rng.standard_normal((2, 3, 2)), rng.standard_normal(4)
    a.grad, b.grad = ga[0], None                         # step 1: only a
    opt.step()
    np.testing.assert_array_equal(b.numpy(), b0)
    a.grad, b.grad = ga[1], gb                           # step 2: a at t=2, b at t=1
    opt.step()
    expected_a, _, _ = adamw_reference(a0, [ga[0], ga[1]], 1e-2, 0.1)
    expected_b, _, _ = adamw_reference(b0, [gb], 1e-2, 0.1)
    np.testing.assert_allclose(a.numpy(), expected_a, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(b.numpy(), expected_b, rtol=1e-13, atol=1e-15)
    assert [s["step"] for s in opt.state_dict()["state"].values()] == [2, 1]
