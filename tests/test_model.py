"""gpt.model: the GPT and the bigram baseline.

The headline check is test_matches_pytorch: the same weights in a PyTorch GPT give the same
logits, loss and gradients to float64 precision. test_gradcheck_whole_gpt checks every
parameter's gradient against finite differences, without PyTorch.
"""
import importlib.util
import math
import pickle
from pathlib import Path

import numpy as np
import pytest

import tensorlite as tl
import tensorlite.functional as F
from gpt import GPT, BigramLanguageModel, GPTConfig, preset
from gpt.model import sample
from tensorlite import nn

TINY = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, dropout=0.0)
TORCH_REFERENCE = Path(__file__).resolve().parents[1] / "benchmarks" / "torch_reference.py"


def tiny_gpt(seed=0, **overrides):
    tl.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, **overrides}))


def random_ids(shape, vocab_size=11, seed=0):
    return np.random.default_rng(seed).integers(0, vocab_size, shape)


def randomize(model, scale=0.3, seed=0):
    """Add N(0, scale) to every parameter: nanoGPT's init (std 0.02, zero biases, unit layer
    norms) leaves logits so small that a wrong bias or layer-norm path could hide in them."""
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data[...] += rng.normal(0.0, scale, p.shape)
    return model


def case_id(overrides):
    return ",".join(f"{k}={v}" for k, v in overrides.items()) or "default"


def nanogpt_keys(n_layer, bias):
    """nanoGPT's GPT.state_dict() keys in its order (without the causal-mask buffers)."""
    def layer(name):
        return [name + ".weight"] + ([name + ".bias"] if bias else [])

    keys = ["transformer.wte.weight", "transformer.wpe.weight"]
    for i in range(n_layer):
        h = f"transformer.h.{i}."
        for name in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"):
            keys += layer(h + name)
    return keys + layer("transformer.ln_f") + ["lm_head.weight"]


def nanogpt_shape(key, cfg):
    V, T, C = cfg.vocab_size, cfg.block_size, cfg.n_embd
    shapes = {"wte.weight": (V, C), "wpe.weight": (T, C), "c_attn.weight": (3 * C, C),
              "c_attn.bias": (3 * C,), "attn.c_proj.weight": (C, C), "c_fc.weight": (4 * C, C),
              "c_fc.bias": (4 * C,), "mlp.c_proj.weight": (C, 4 * C), "lm_head.weight": (V, C)}
    return next((s for suffix, s in shapes.items() if key.endswith(suffix)), (C,))


# ---- the numbers at initialization ----------------------------------------------------------

def test_initial_loss_is_log_vocab_on_the_cpu_preset():
    config = preset("cpu")[0]
    assert config.vocab_size == 65
    tl.manual_seed(1337)
    model = GPT(config)
    idx = random_ids((8, config.block_size), 65, seed=1)
    targets = random_ids((8, config.block_size), 65, seed=2)
    logits, loss = model(idx, targets)
    assert logits.shape == (8, config.block_size, 65) and logits.dtype == np.float32
    assert abs(loss.item() - math.log(65)) < 0.1


def test_init_follows_nanogpt():
    model = tiny_gpt(n_layer=4, n_embd=32, n_head=4, vocab_size=64, block_size=32)
    state = model.state_dict()
    for name, value in state.items():
        if name.endswith(".bias"):
            assert np.all(value == 0), name
        elif value.ndim == 1:
            assert np.all(value == 1), name                       # layer-norm weights
        else:
            std = 0.02 / math.sqrt(2 * 4) if name.endswith("c_proj.weight") else 0.02
            assert value.std() == pytest.approx(std, rel=0.15), name


# ---- what the model computes ----------------------------------------------------------------

def test_forward_shapes_and_optional_loss():
    model = tiny_gpt()
    logits, loss = model(random_ids((3, 5)))
    assert logits.shape == (3, 5, 11) and loss is None
    logits2, loss = model(tl.tensor(random_ids((3, 5))), random_ids((3, 5), seed=1))
    np.testing.assert_array_equal(logits.numpy(), logits2.numpy())
    assert loss.shape == () and np.isfinite(loss.item())


def test_causality_future_tokens_do_not_change_the_past():
    model = randomize(tiny_gpt()).eval()
    idx = random_ids((2, 8))
    base = model(idx)[0].numpy()
    for t in range(7):
        changed = idx.copy()
        changed[:, t + 1] = (changed[:, t + 1] + 1 + np.arange(2)) % 11   # a different token
        logits = model(changed)[0].numpy()
        np.testing.assert_array_equal(logits[:, :t + 1], base[:, :t + 1], err_msg=f"t={t}")
        assert not np.allclose(logits[:, t + 1], base[:, t + 1])          # the change is seen


def test_dropout_only_in_training():
    model = tiny_gpt(dropout=0.3)
    idx = random_ids((2, 8))
    model.eval()
    np.testing.assert_array_equal(model(idx)[0].numpy(), model(idx)[0].numpy())
    model.train()
    assert not np.array_equal(model(idx)[0].numpy(), model(idx)[0].numpy())


def test_overfits_one_batch():
    model = tiny_gpt(n_embd=16)
    idx, targets = random_ids((4, 8), seed=1), random_ids((4, 8), seed=2)
    opt = tl.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(300):
        opt.zero_grad()
        _, loss = model(idx, targets)
        loss.backward()
        opt.step()
    assert model(idx, targets)[1].item() < 0.1


# ---- weights in and out ---------------------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_keys_are_nanogpts(bias):
    model = tiny_gpt(bias=bias)
    state = model.state_dict()
    assert list(state) == nanogpt_keys(2, bias)
    assert [name for name, _ in model.named_parameters()] == nanogpt_keys(2, bias)
    if not bias:
        assert not any(k.endswith(".bias") for k in state)
    assert state["transformer.h.0.attn.c_attn.weight"].shape == (24, 8)
    for key, value in state.items():
        assert value.shape == nanogpt_shape(key, model.config), key


def test_tied_state_dict_keeps_nanogpts_keys():
    model = tiny_gpt(tie_weights=True)
    assert list(model.state_dict()) == nanogpt_keys(2, True)
    assert [n for n, _ in model.named_parameters()] == nanogpt_keys(2, True)[:-1]  # listed once


@pytest.mark.parametrize("fmt", ["npz", "pickle"])
def test_state_dict_file_round_trip_restores_the_logits(tmp_path, fmt):
    model = tiny_gpt(seed=1)
    idx = random_ids((2, 8))
    expected = model(idx)[0].numpy()
    path = tmp_path / f"model.{fmt}"
    if fmt == "npz":
        np.savez(path, **model.state_dict())
        with np.load(path) as f:
            state = dict(f)
    else:
        path.write_bytes(pickle.dumps(model.state_dict()))
        state = pickle.loads(path.read_bytes())
    fresh = tiny_gpt(seed=2)
    assert not np.array_equal(fresh(idx)[0].numpy(), expected)
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(fresh(idx)[0].numpy(), expected)


# ---- the same numbers as PyTorch ------------------------------------------------------------

def torch_functional_gpt(torch, weights, config, idx, targets):
    """nanoGPT's forward in plain torch.nn.functional calls on a {name: tensor} dict."""
    TF = torch.nn.functional
    B, T = idx.shape
    C, nh = config.n_embd, config.n_head

    def linear(x, name):
        return TF.linear(x, weights[name + ".weight"], weights.get(name + ".bias"))

    def layer_norm(x, name):
        return TF.layer_norm(x, (C,), weights[name + ".weight"], weights.get(name + ".bias"), 1e-5)

    def act(x):
        return TF.gelu(x, approximate="tanh") if config.activation == "gelu" else TF.relu(x)

    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    x = weights["transformer.wte.weight"][idx] + weights["transformer.wpe.weight"][:T]
    for i in range(config.n_layer):
        h = f"transformer.h.{i}."
        q, k, v = linear(layer_norm(x, h + "ln_1"), h + "attn.c_attn").split(C, dim=2)
        q, k, v = (z.view(B, T, nh, C // nh).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // nh))
        att = att.masked_fill(future, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + linear(y, h + "attn.c_proj")
        x = x + linear(act(linear(layer_norm(x, h + "ln_2"), h + "mlp.c_fc")), h + "mlp.c_proj")
    logits = linear(layer_norm(x, "transformer.ln_f"), "lm_head")
    return logits, TF.cross_entropy(logits.reshape(B * T, -1), targets.reshape(-1))


def torch_reference(torch, kind, state, config):
    """(forward(idx, targets) -> (logits, loss), {name: torch parameter}) holding `state`."""
    if kind == "functional":
        weights = {name: torch.tensor(value, requires_grad=True) for name, value in state.items()}
        if config.tie_weights:                  # one tensor under both names
            weights["lm_head.weight"] = weights["transformer.wte.weight"]
        return (lambda idx, targets: torch_functional_gpt(torch, weights, config, idx, targets)), weights
    if not TORCH_REFERENCE.is_file():
        pytest.skip(f"{TORCH_REFERENCE} not found")
    spec = importlib.util.spec_from_file_location("torch_reference", TORCH_REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "TorchGPT"):
        pytest.skip("benchmarks/torch_reference.py has no TorchGPT")
    model = module.TorchGPT(config.vocab_size, config.block_size, config.n_layer, config.n_head,
                            config.n_embd, dropout=0.0, bias=config.bias,
                            tie_weights=config.tie_weights).double()
    if config.activation == "relu":
        for block in model.transformer.h:
            block.mlp.gelu = torch.nn.ReLU()   # TorchGPT is GELU only: swap the activation in
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return model, dict(model.named_parameters(remove_duplicate=False))


TORCH_CASES = [dict(), dict(bias=False), dict(activation="relu"), dict(tie_weights=True),
               dict(bias=False, activation="relu", tie_weights=True)]


@pytest.mark.parametrize("kind", ["functional", "TorchGPT"])
@pytest.mark.parametrize("overrides", TORCH_CASES, ids=case_id)
def test_matches_pytorch(kind, overrides):
    torch = pytest.importorskip("torch", reason="PyTorch not installed: reference comparison skipped")
    model = tiny_gpt(vocab_size=13, n_embd=16, n_head=4, **overrides).to(dtype="float64")
    randomize(model)
    config = model.config
    idx, targets = random_ids((3, 7), 13, seed=1), random_ids((3, 7), 13, seed=2)  # T < block_size
    logits, loss = model(idx, targets)
    loss.backward()

    forward, theirs = torch_reference(torch, kind, model.state_dict(), config)
    t_logits, t_loss = forward(torch.from_numpy(idx), torch.from_numpy(targets))
    t_loss.backward()
    assert t_logits.dtype == torch.float64
    np.testing.assert_allclose(logits.numpy(), t_logits.detach().numpy(), rtol=0, atol=1e-10)
    assert abs(loss.item() - t_loss.item()) < 1e-10
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, theirs[name].grad.numpy(), rtol=0, atol=1e-8, err_msg=name)
    assert np.abs(logits.numpy()).max() > 1.0   # the weights are large enough to mean something


# ---- every gradient against finite differences ----------------------------------------------

GRADCHECK = dict(vocab_size=5, block_size=4, n_layer=2, n_head=2, n_embd=4, dropout=0.0)
GRADCHECK_CASES = [dict(activation="gelu", bias=True), dict(activation="relu", bias=True),
                   dict(activation="gelu", bias=False), dict(activation="relu", bias=False),
                   dict(activation="gelu", bias=True, tie_weights=True)]


def gradcheck_gpt(model, monkeypatch, **tolerances):
    """tl.gradcheck of the loss with respect to every parameter of model.

    gradcheck passes float64 copies of the parameters to fn, so fn puts each copy where its
    parameter lives (setattr on the owning module; a tied weight lives in two places).
    """
    params = list(model.parameters())   # gone through three times
    places = {id(p): [] for p in params}
    for module in model.modules():
        for attr, value in vars(module).items():
            if isinstance(value, nn.Parameter):
                places[id(value)].append((module, attr))
    # with plain Tensors in the parameters' places the model finds no Parameter to ask its device
    monkeypatch.setattr(type(model), "device", "cpu")
    idx, targets = random_ids((2, 4), 5, seed=1), random_ids((2, 4), 5, seed=2)

    def loss(*tensors):
        for p, t in zip(params, tensors):
            for module, attr in places[id(p)]:
                setattr(module, attr, t)
        return model(idx, targets)[1]

    try:
        return tl.gradcheck(loss, *params, **tolerances)
    finally:
        for p in params:
            for module, attr in places[id(p)]:
                setattr(module, attr, p)


@pytest.mark.parametrize("overrides", GRADCHECK_CASES, ids=case_id)
def test_gradcheck_whole_gpt(overrides, monkeypatch):
    model = randomize(tiny_gpt(**{**GRADCHECK, **overrides}), scale=0.5).to(dtype="float64")
    assert gradcheck_gpt(model, monkeypatch, atol=1e-7, rtol=1e-5)
    assert (model.lm_head.weight is model.transformer.wte.weight) == model.config.tie_weights
    assert all(isinstance(p, nn.Parameter) for _, p in model.named_parameters())  # restored


def test_gradcheck_whole_gpt_catches_a_wrong_backward(monkeypatch):
    right = F.GELU.backward
    monkeypatch.setattr(F.GELU, "backward", lambda self, gy: 1.01 * right(self, gy))  # 1% off
    model = randomize(tiny_gpt(**{**GRADCHECK, "n_layer": 1}), scale=0.5).to(dtype="float64")
    with pytest.raises(tl.GradcheckError, match="input"):
        gradcheck_gpt(model, monkeypatch, atol=1e-7, rtol=1e-5)


# ---- generation -----------------------------------------------------------------------------

def greedy(model, idx, n):
    """argmax decoding, cropping the context to block_size by hand."""
    ids = idx.copy()
    for _ in range(n):
        logits, _ = model(ids[:, -model.config.block_size:])
        ids = np.concatenate([ids, logits.numpy()[:, -1].argmax(-1)[:, None]], axis=1)
    return ids


def test_generate_shape_ids_and_seed():
    model = tiny_gpt()
    idx = random_ids((2, 3))
    out = model.generate(idx, 20, seed=0)
    assert out.shape == (2, 23) and out.dtype.kind in "iu"
    np.testing.assert_array_equal(out[:, :3], idx)
    assert out.min() >= 0 and out.max() < 11
    np.testing.assert_array_equal(model.generate(idx, 20, seed=0), out)
    assert not np.array_equal(model.generate(idx, 20, seed=1), out)


def test_generate_without_seed_follows_manual_seed():
    model = tiny_gpt()
    idx = random_ids((2, 3))
    tl.manual_seed(5)
    first = model.generate(idx, 10)
    tl.manual_seed(5)
    np.testing.assert_array_equal(model.generate(idx, 10), first)


def test_generate_top_k_1_is_greedy_past_block_size():
    model = randomize(tiny_gpt())
    idx = random_ids((2, 5))
    out = model.generate(idx, 20, top_k=1, seed=0)          # 25 tokens: the context is cropped
    np.testing.assert_array_equal(out, greedy(model.eval(), idx, 20))


def test_generate_takes_a_context_longer_than_block_size():
    model = tiny_gpt()
    context = random_ids((2, 12))
    out = model.generate(context, 3, seed=0)
    assert out.shape == (2, 15)
    np.testing.assert_array_equal(out[:, :12], context)
    cropped = model.generate(context[:, -8:], 3, seed=0)   # only the last block_size tokens count
    np.testing.assert_array_equal(out[:, 12:], cropped[:, 8:])


def test_generate_top_k_beyond_the_vocab_filters_nothing():
    model = tiny_gpt()
    idx = random_ids((2, 3))
    np.testing.assert_array_equal(model.generate(idx, 10, top_k=100, seed=3), model.generate(idx, 10, seed=3))


def test_generate_returns_a_tensor_for_a_tensor():
    out = tiny_gpt().generate(tl.tensor(random_ids((1, 2))), 4, seed=0)
    assert isinstance(out, tl.Tensor) and out.shape == (1, 6)


@pytest.mark.parametrize("training", [True, False])
def test_generate_restores_the_mode(training):
    model = tiny_gpt(dropout=0.5).train(training)
    model.generate(random_ids((1, 2)), 3, seed=0)
    assert all(m.training == training for m in model.modules())


@pytest.mark.parametrize("kwargs, match", [(dict(temperature=0.0), "temperature"),
                                           (dict(temperature=-1.0), "temperature"),
                                           (dict(top_k=0), "top_k")])
def test_generate_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_gpt().generate(random_ids((1, 2)), 3, **kwargs)


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.5, None), (2.0, 2)])
def test_sample_draws_from_the_softmax(temperature, top_k):
    logits = np.array([1.0, -0.5, 2.0, 0.3])
    n = 40_000
    ids = sample(np.tile(logits, (n, 1)), temperature, top_k, np.random.default_rng(0))
    z = logits / temperature
    if top_k is not None:
        z = np.where(z < np.sort(z)[-top_k], -np.inf, z)
    p = np.exp(z - z.max())
    p /= p.sum()
    np.testing.assert_allclose(np.bincount(ids, minlength=4) / n, p, atol=0.01)


# ---- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, field", [
    (dict(n_embd=10, n_head=3), "n_embd"),
    (dict(dropout=1.0), "dropout"), (dict(dropout=-0.1), "dropout"),
    (dict(vocab_size=0), "vocab_size"), (dict(block_size=-1), "block_size"),
    (dict(n_layer=0), "n_layer"), (dict(n_head=0), "n_head"), (dict(n_embd=0), "n_embd"),
    (dict(n_layer=2.0), "n_layer"), (dict(n_layer=True), "n_layer"),
    (dict(activation="tanh"), "activation"),
], ids=str)
def test_config_validation_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        GPTConfig(**{**TINY, **overrides})


@pytest.mark.parametrize("idx, error, match", [
    (random_ids((1, 9)), ValueError, "block_size"),
    (np.array([[1, 11]]), IndexError, "11"),
    (np.array([[-1, 2]]), IndexError, "-1"),
    (np.array([[1.0, 2.0]]), TypeError, "integer"),
    (np.array([1, 2]), ValueError, r"\(B, T\)"),
], ids=["too-long", "too-large", "negative", "float", "1-D"])
def test_forward_rejects_bad_ids(idx, error, match):
    with pytest.raises(error, match=match):
        tiny_gpt()(idx)


def test_forward_rejects_bad_targets():
    model = tiny_gpt()
    with pytest.raises(IndexError, match="targets"):
        model(random_ids((1, 4)), np.array([[0, 1, 2, 11]]))
    with pytest.raises(TypeError, match="targets"):
        model(random_ids((1, 4)), np.zeros((1, 4)))


# ---- the bigram baseline --------------------------------------------------------------------

def test_bigram_reads_its_table():
    tl.manual_seed(0)
    model = BigramLanguageModel(11)
    idx, targets = random_ids((4, 16)), random_ids((4, 16), seed=1)
    logits, loss = model(idx, targets)
    assert logits.shape == (4, 16, 11)
    np.testing.assert_array_equal(logits.numpy(), model.token_embedding_table.weight.numpy()[idx])
    # N(0, 1) logits: the expected loss is a little above ln V
    assert math.log(11) < loss.item() < math.log(11) + 1.5
    assert model(random_ids((1, 500)))[0].shape == (1, 500, 11)    # no block_size limit


def test_bigram_generates_and_learns():
    tl.manual_seed(0)
    model = BigramLanguageModel(11)
    out = model.generate(random_ids((2, 1)), 30, seed=0)
    assert out.shape == (2, 31) and out.min() >= 0 and out.max() < 11
    idx = random_ids((4, 16))
    targets = (idx + 1) % 11                                       # a bigram rule to learn
    opt = tl.optim.AdamW(model.parameters(), lr=0.1)
    first = model(idx, targets)[1].item()
    for _ in range(50):
        opt.zero_grad()
        model(idx, targets)[1].backward()
        opt.step()
    assert model(idx, targets)[1].item() < first / 4
    np.testing.assert_array_equal(model.generate(idx[:, :1], 5, top_k=1)[:, 1:],
                                  (idx[:, :1] + np.arange(1, 6)) % 11)


@pytest.mark.parametrize("prompt_len, new_tokens", [(1, 5), (3, 20), (8, 4), (12, 10)])
def test_kv_cache_gives_the_same_samples(prompt_len, new_tokens):
    """Within the window only the new position is computed; once the context is cropped the
    window is recomputed. Either way the samples equal those of full recomputation."""
    model = tiny_gpt()
    context = random_ids((2, prompt_len))
    cached = model.generate(context, new_tokens, temperature=0.9, top_k=5, seed=7, use_cache=True)
    plain = model.generate(context, new_tokens, temperature=0.9, top_k=5, seed=7, use_cache=False)
    np.testing.assert_array_equal(cached, plain)


def test_kv_cache_logits_match_a_full_forward():
    model = tiny_gpt().eval()
    ids = random_ids((2, 8))
    cache = model.new_cache()
    with tl.no_grad():
        full = model(ids)[0].numpy()                              # (B, T, V)
        for t in range(1, ids.shape[1] + 1):
            step = model.next_logits(ids[:, :t], cache)           # only position t-1 is new
            np.testing.assert_allclose(step, full[:, t - 1], rtol=1e-5, atol=1e-6)
    assert cache.length(model.transformer.h[0].attn) == ids.shape[1]


def test_the_fused_attention_softmax_equals_the_lectures_three_steps():
    """fused_softmax=True runs F.causal_softmax; False runs scale, masked_fill(-inf), softmax.
    Same logits, same loss, same gradients (float64)."""
    results = []
    for fused in (True, False):
        model = randomize(tiny_gpt(fused_softmax=fused).to(dtype="float64"))
        logits, loss = model(random_ids((2, 8)), random_ids((2, 8), seed=1))
        loss.backward()
        results.append((logits.numpy(), loss.item(), {n: p.grad for n, p in model.named_parameters()}))
    (l1, s1, g1), (l2, s2, g2) = results
    np.testing.assert_allclose(l1, l2, rtol=0, atol=1e-13)
    assert abs(s1 - s2) < 1e-13
    for name in g1:
        np.testing.assert_allclose(g1[name], g2[name], rtol=0, atol=1e-13, err_msg=name)


REFERENCE = Path(__file__).resolve().parent / "reference" / "torch_gpt_float64.npz"


@pytest.mark.parametrize("case", ["default", "nobias-relu-tied"])
def test_matches_stored_pytorch_numbers(case):
    """The same check as test_matches_pytorch, against logits, loss and gradients PyTorch
    computed once (tests/reference/make_torch_reference.py), so it runs without PyTorch."""
    import ast
    ref = np.load(REFERENCE)
    config = GPTConfig(**ast.literal_eval(str(ref[f"{case}/config"])))
    tl.manual_seed(0)
    model = GPT(config).to(dtype="float64")
    prefix = f"{case}/weight/"
    model.load_state_dict({k[len(prefix):]: ref[k] for k in ref.files if k.startswith(prefix)})
    logits, loss = model(ref[f"{case}/idx"], ref[f"{case}/targets"])
    loss.backward()
    np.testing.assert_allclose(logits.numpy(), ref[f"{case}/logits"], rtol=0, atol=1e-10)
    assert abs(loss.item() - float(ref[f"{case}/loss"])) < 1e-10
    for name, p in model._named_parameters_all():
        np.testing.assert_allclose(p.grad, ref[f"{case}/grad/{name}"], rtol=0, atol=1e-8, err_msg=name)
    assert np.abs(ref[f"{case}/logits"]).max() > 1.0
