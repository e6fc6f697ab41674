"""tensorlite.nn: the module tree, modes, saving and loading, casting, and the layers.

Forward values are checked against plain NumPy formulas; the GPT-specific names and the
comparison with PyTorch live in test_model.py.
"""
import numpy as np
import pytest

import tensorlite as tl
from gpt import GPT, GPTConfig
from tensorlite import nn

TINY = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, dropout=0.0)


def tiny_gpt(seed=0, **overrides):
    tl.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, **overrides}))


def batch(B=2, T=8, V=11, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))


def snapshot(model):
    """Every parameter's values, copied, keyed by name."""
    return {name: p.numpy().copy() for name, p in model.named_parameters()}


def assert_same_params(model, before):
    now = snapshot(model)
    assert now.keys() == before.keys()
    for name in before:
        np.testing.assert_array_equal(now[name], before[name], err_msg=name)


class Net(nn.Module):
    """Every container kind, nested, with a parameter set directly on the root."""

    def __init__(self):
        self.embed = nn.Embedding(5, 4)
        self.body = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 4, bias=False))
        self.norms = nn.ModuleList([nn.LayerNorm(4), nn.LayerNorm(4, bias=False)])
        self.head = nn.ModuleDict(proj=nn.Linear(4, 3), drop=nn.Dropout(0.5))
        self.scale = nn.Parameter(np.ones(3, dtype=np.float32))

    def forward(self, ids):
        x = self.body(self.embed(ids))
        for norm in self.norms:
            x = norm(x)
        return self.head.drop(self.head.proj(x)) * self.scale


# ---- the tree of modules and parameters -----------------------------------------------------

def test_named_parameters_dotted_names_in_definition_order():
    # As in PyTorch, a module's own parameters come before its children's.
    names = [name for name, _ in Net().named_parameters()]
    assert names == ["scale", "embed.weight", "body.0.weight", "body.0.bias", "body.2.weight",
                     "norms.0.weight", "norms.0.bias", "norms.1.weight",
                     "head.proj.weight", "head.proj.bias"]


def test_parameters_are_the_named_parameter_objects():
    net = Net()
    assert [id(p) for p in net.parameters()] == [id(p) for _, p in net.named_parameters()]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())
    assert net.num_parameters() == 3 + 5 * 4 + (4 * 6 + 6) + 6 * 4 + (4 + 4) + 4 + (4 * 3 + 3)


def test_named_modules_lists_every_module_once_with_dotted_names():
    names = [name for name, _ in Net().named_modules()]
    assert names == ["", "embed", "body", "body.0", "body.1", "body.2", "norms", "norms.0",
                     "norms.1", "head", "head.proj", "head.drop"]


# ---- modes and gradients --------------------------------------------------------------------

def test_train_and_eval_reach_every_submodule():
    model = tiny_gpt(dropout=0.5)
    assert model.eval() is model
    assert all(not m.training for m in model.modules())
    assert model.train() is model
    assert all(m.training for m in model.modules())
    model.transformer.h[1].train(False)           # a subtree alone
    assert not model.transformer.h[1].mlp.dropout.training
    assert model.transformer.h[0].mlp.dropout.training


def test_dropout_follows_the_mode():
    net = nn.Sequential(nn.Dropout(0.5))
    x = tl.tensor(np.random.default_rng(0).uniform(1, 2, (64, 64)))
    tl.manual_seed(0)
    y = net(x).numpy()
    dropped = y == 0
    assert 0.4 < dropped.mean() < 0.6
    np.testing.assert_allclose(y[~dropped], 2 * x.numpy()[~dropped])   # kept ones scaled 1/(1-p)
    np.testing.assert_array_equal(net.eval()(x).numpy(), x.numpy())


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_rejects_bad_probability(p):
    with pytest.raises(ValueError, match="dropout"):
        nn.Dropout(p)


def test_zero_grad_clears_every_gradient():
    model = tiny_gpt()
    idx, targets = batch()
    model(idx, targets)[1].backward()
    assert all(p.grad is not None and np.any(p.grad != 0) for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


# ---- state_dict and load_state_dict ---------------------------------------------------------

def test_state_dict_is_a_copy():
    model = tiny_gpt()
    state = model.state_dict()
    assert list(state) == [name for name, _ in model.named_parameters()]
    assert all(type(v) is np.ndarray for v in state.values())
    before = snapshot(model)
    for v in state.values():
        v += 1.0                                   # editing the dict leaves the model alone
    assert_same_params(model, before)
    model.transformer.wte.weight.data[...] = 7.0   # and editing the model leaves the dict alone
    assert not np.any(state["transformer.wte.weight"] == 7.0)


def _broken_states(model):
    """(what is wrong, the offending key, a state with every value changed and one fault)."""
    good = {k: v + 1.0 for k, v in model.state_dict().items()}
    missing = dict(good)
    del missing["transformer.h.1.mlp.c_fc.bias"]
    unexpected = {**good, "transformer.h.2.attn.c_attn.weight": np.zeros((24, 8))}
    wrong_shape = {**good, "transformer.wpe.weight": np.zeros((9, 8))}
    return {"missing": ("transformer.h.1.mlp.c_fc.bias", missing),
            "unexpected": ("transformer.h.2.attn.c_attn.weight", unexpected),
            "shape": ("transformer.wpe.weight", wrong_shape)}


@pytest.mark.parametrize("fault", ["missing", "unexpected", "shape"])
def test_strict_load_refuses_and_changes_nothing(fault):
    model = tiny_gpt()
    key, state = _broken_states(model)[fault]
    before = snapshot(model)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")) as info:
        model.load_state_dict(state)
    assert fault in str(info.value)
    assert_same_params(model, before)


def test_non_strict_load_still_refuses_a_wrong_shape():
    model = tiny_gpt()
    key, state = _broken_states(model)["shape"]
    before = snapshot(model)
    with pytest.raises(ValueError, match=key):
        model.load_state_dict(state, strict=False)
    assert_same_params(model, before)


def test_non_strict_load_copies_a_subset_and_ignores_extra_keys():
    model = tiny_gpt()
    before = snapshot(model)
    subset = {"transformer.ln_f.weight": np.full(8, 3.0), "lm_head.weight": np.full((11, 8), -2.0),
              "not.a.parameter": np.zeros(4)}
    model.load_state_dict(subset, strict=False)
    now = snapshot(model)
    np.testing.assert_array_equal(now["transformer.ln_f.weight"], 3.0)
    np.testing.assert_array_equal(now["lm_head.weight"], -2.0)
    for name in before.keys() - {"transformer.ln_f.weight", "lm_head.weight"}:
        np.testing.assert_array_equal(now[name], before[name], err_msg=name)


def test_load_state_dict_round_trip_writes_in_place():
    source, target = tiny_gpt(seed=1), tiny_gpt(seed=2)
    arrays = [p.data for p in target.parameters()]
    target.load_state_dict(source.state_dict())
    assert_same_params(target, snapshot(source))
    # in place: an optimizer holding views of .data sees the loaded values
    assert all(p.data is a for p, a in zip(target.parameters(), arrays))
    assert all(p.dtype == np.float32 for p in target.parameters())


# ---- to(): dtype and device -----------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", np.float64, np.dtype("float64")], ids=str)
def test_to_dtype_casts_every_parameter(dtype):
    model = tiny_gpt()
    before = snapshot(model)
    assert model.to(dtype=dtype) is model
    assert all(p.dtype == np.float64 for p in model.parameters())
    for name, value in snapshot(model).items():
        np.testing.assert_array_equal(value, before[name].astype(np.float64), err_msg=name)
    logits, loss = model(*batch())
    assert logits.dtype == np.float64 and loss.dtype == np.float64


def test_to_rejects_an_integer_dtype():
    with pytest.raises(TypeError, match="floating"):
        tiny_gpt().to(dtype="int32")


@pytest.mark.skipif(tl.gpu_available(), reason="a GPU is present: the error path cannot be reached")
def test_to_cuda_without_a_gpu_raises_device_error():
    model = tiny_gpt()
    before = snapshot(model)
    with pytest.raises(tl.DeviceError, match="cuda|CuPy"):
        model.to(device="cuda")
    assert_same_params(model, before)
    assert all(p.device == "cpu" for p in model.parameters())


def test_to_unknown_device_raises_device_error():
    with pytest.raises(tl.DeviceError, match="tpu"):
        tiny_gpt().to(device="tpu")


def test_to_device_moves_parameters(device):
    model = tiny_gpt()
    before = snapshot(model)
    model.to(device=device)
    assert all(p.device == device for p in model.parameters())
    assert_same_params(model, before)
    logits, _ = model(*batch())
    assert logits.device == device


# ---- tied weights ---------------------------------------------------------------------------

def test_tied_weight_is_one_parameter_under_two_names():
    tied, untied = tiny_gpt(tie_weights=True), tiny_gpt(tie_weights=False)
    assert tied.lm_head.weight is tied.transformer.wte.weight
    assert len(list(tied.parameters())) == len(list(untied.parameters())) - 1
    assert tied.num_parameters() == untied.num_parameters() - 11 * 8
    assert "lm_head.weight" not in dict(tied.named_parameters())
    state = tied.state_dict()
    assert state.keys() == untied.state_dict().keys()           # both names, as nanoGPT saves
    np.testing.assert_array_equal(state["lm_head.weight"], state["transformer.wte.weight"])


def test_tied_weight_gradient_sums_both_uses():
    tied, untied = tiny_gpt(tie_weights=True), tiny_gpt(tie_weights=False)
    untied.lm_head.weight.data[...] = untied.transformer.wte.weight.data
    tied.load_state_dict(untied.state_dict())
    idx, targets = batch()
    tied(idx, targets)[1].backward()
    untied(idx, targets)[1].backward()
    np.testing.assert_allclose(tied.transformer.wte.weight.grad,
                               untied.transformer.wte.weight.grad + untied.lm_head.weight.grad,
                               rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("gather", [False, True], ids=["step", "gather-then-step"])
def test_adamw_updates_a_tied_weight_once(device, gather):
    model = tiny_gpt(tie_weights=True).to(device=device, dtype="float64")
    lr, wd, eps = 1e-2, 0.1, 1e-8
    opt = tl.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd, eps=eps)
    w = model.transformer.wte.weight
    before = w.numpy().copy()
    model(*batch())[1].backward()
    g = tl.backend.as_numpy(w.grad).copy()
    if gather:
        opt.gather_grads()
    opt.step()
    # AdamW's first step: m_hat = g, v_hat = g^2, so the update is about lr * sign(g)
    once = before * (1 - lr * wd) - lr * g / (np.abs(g) + eps)
    np.testing.assert_allclose(w.numpy(), once, rtol=1e-10, atol=1e-12)
    state = model.state_dict()
    np.testing.assert_array_equal(state["lm_head.weight"], state["transformer.wte.weight"])
    assert model.lm_head.weight is model.transformer.wte.weight


def test_tied_weight_survives_to_and_load():
    model = tiny_gpt(tie_weights=True)
    model.to(dtype="float64")
    assert model.lm_head.weight is model.transformer.wte.weight
    state = model.state_dict()
    state["transformer.wte.weight"] = state["lm_head.weight"] = np.full((11, 8), 0.5)
    model.load_state_dict(state)
    np.testing.assert_array_equal(model.lm_head.weight.numpy(), 0.5)


# ---- the layers -----------------------------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False])
def test_linear_stores_weight_out_by_in(bias):
    layer = nn.Linear(5, 3, bias=bias)
    assert layer.weight.shape == (3, 5)
    assert list(layer.state_dict()) == (["weight", "bias"] if bias else ["weight"])
    if bias:
        assert layer.bias.shape == (3,)
    else:
        assert layer.bias is None
    # PyTorch's default init: U(-1/sqrt(in), 1/sqrt(in))
    assert np.all(np.abs(layer.weight.numpy()) <= 1 / np.sqrt(5))
    x = np.random.default_rng(0).standard_normal((2, 4, 5)).astype(np.float32)
    expected = x @ layer.weight.numpy().T + (layer.bias.numpy() if bias else 0)
    np.testing.assert_allclose(layer(tl.tensor(x)).numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bias", [True, False])
def test_layernorm_with_and_without_bias(bias):
    ln = nn.LayerNorm(6, bias=bias)
    assert list(ln.state_dict()) == (["weight", "bias"] if bias else ["weight"])
    np.testing.assert_array_equal(ln.weight.numpy(), np.ones(6))
    rng = np.random.default_rng(0)
    ln.weight.data[...] = rng.standard_normal(6)
    if bias:
        ln.bias.data[...] = rng.standard_normal(6)
    x = rng.standard_normal((3, 6)) * 5 + 2
    xh = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    expected = xh * ln.weight.numpy() + (ln.bias.numpy() if bias else 0)
    np.testing.assert_allclose(ln(tl.tensor(x, dtype="float32")).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_embedding_looks_up_rows():
    emb = nn.Embedding(7, 3)
    ids = np.array([[0, 6, 2], [2, 2, 5]])
    assert emb.weight.shape == (7, 3)
    np.testing.assert_array_equal(emb(ids).numpy(), emb.weight.numpy()[ids])


def test_sequential_applies_modules_in_order():
    seq = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2), nn.GELU())
    assert len(seq) == 4 and isinstance(seq[1], nn.ReLU) and seq[-1] is seq[3]
    assert [type(m).__name__ for m in seq] == ["Linear", "ReLU", "Linear", "GELU"]
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    x = np.random.default_rng(0).standard_normal((3, 4))
    w1, b1, w2, b2 = (p.numpy().astype(np.float64) for p in seq.parameters())
    h = np.maximum(x @ w1.T + b1, 0) @ w2.T + b2
    gelu = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h ** 3)))
    np.testing.assert_allclose(seq(tl.tensor(x, dtype="float32")).numpy(), gelu, rtol=1e-4, atol=1e-5)


def test_module_list_indexes_appends_and_names():
    layers = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2, bias=False)])
    third = nn.LayerNorm(2)
    assert layers.append(third) is layers
    assert len(layers) == 3 and layers[2] is third and list(layers)[0] is layers[0]
    assert [n for n, _ in layers.named_parameters()] == ["0.weight", "0.bias", "1.weight",
                                                         "2.weight", "2.bias"]
    with pytest.raises(IndexError):
        layers[3]


def test_module_dict_gets_by_name():
    d = nn.ModuleDict(a=nn.Linear(2, 3), b=nn.ReLU())
    assert isinstance(d["a"], nn.Linear) and d["b"] is d.b
    assert [n for n, _ in d.named_parameters()] == ["a.weight", "a.bias"]


def test_repr_names_the_layers():
    text = repr(Net())
    for part in ("(embed): Embedding(5, 4)", "(0): Linear(in_features=4, out_features=6, bias=True)",
                 "(1): LayerNorm(4, eps=1e-05, bias=False)", "(drop): Dropout(p=0.5)"):
        assert part in text
