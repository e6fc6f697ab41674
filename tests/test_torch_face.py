"""tensorlite.torch: the lecture's PyTorch code, run on tensorlite.

The centre is `lecture_program`, our own code written the way "Let's build GPT" writes its
gpt.py (module-level hyperparameters, Head with a registered `tril` buffer, the per-head loop,
`self.apply(self._init_weights)`, get_batch, estimate_loss, generate), as a function of the three
modules its import lines bind. Given tensorlite.torch it must run and train; given PyTorch (when
installed) it must compute the same logits, loss and gradients from the same weights, in float64.
The other tests take the face's names one by one, against PyTorch where it is installed and
against NumPy formulas everywhere.
"""
import math
import pickle
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

import tensorlite as tl
import tensorlite.torch as ttorch
import tensorlite.torch.nn as tnn
from tensorlite.torch.nn import functional as tF

ROOT = Path(__file__).resolve().parents[1]
HAVE_TORCH = True
try:
    import torch as real_torch
except ImportError:  # the comparisons with PyTorch skip, saying so
    HAVE_TORCH = False
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch not installed: comparison with PyTorch skipped")


def face():
    return ttorch, tnn, tF


def pytorch():
    return real_torch, real_torch.nn, real_torch.nn.functional


# ---- the lecture's program, in our own words ------------------------------------------------

def lecture_program(torch, nn, F, vocab_size=13, n_embd=16, n_head=4, n_layer=2, block_size=8,
                    dropout=0.0, device="cpu", init_weights=False, batch_size=4, eval_iters=2):
    """The classes and functions of a lecture-style gpt.py, bound to the given torch, nn, F."""

    class Head(nn.Module):
        """ one head of self-attention """

        def __init__(self, head_size):
            super().__init__()
            self.key = nn.Linear(n_embd, head_size, bias=False)
            self.query = nn.Linear(n_embd, head_size, bias=False)
            self.value = nn.Linear(n_embd, head_size, bias=False)
            self.register_buffer('tril', torch.tril(torch.ones(block_size, block_size)))
            self.dropout = nn.Dropout(dropout)

        def forward(self, x):
            B, T, C = x.shape
            k = self.key(x)                                               # (B,T,hs)
            q = self.query(x)                                             # (B,T,hs)
            wei = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5          # (B,T,T)
            wei = wei.masked_fill(self.tril[:T, :T] == 0, float('-inf'))
            wei = F.softmax(wei, dim=-1)
            wei = self.dropout(wei)
            v = self.value(x)
            return wei @ v                                                # (B,T,hs)

    class MultiHeadAttention(nn.Module):
        def __init__(self, num_heads, head_size):
            super().__init__()
            self.heads = nn.ModuleList([Head(head_size) for _ in range(num_heads)])
            self.proj = nn.Linear(head_size * num_heads, n_embd)
            self.dropout = nn.Dropout(dropout)

        def forward(self, x):
            out = torch.cat([h(x) for h in self.heads], dim=-1)
            return self.dropout(self.proj(out))

    class FeedFoward(nn.Module):
        def __init__(self, n_embd):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.ReLU(),
                                     nn.Linear(4 * n_embd, n_embd), nn.Dropout(dropout))

        def forward(self, x):
            return self.net(x)

    class Block(nn.Module):
        def __init__(self, n_embd, n_head):
            super().__init__()
            head_size = n_embd // n_head
            self.sa = MultiHeadAttention(n_head, head_size)
            self.ffwd = FeedFoward(n_embd)
            self.ln1 = nn.LayerNorm(n_embd)
            self.ln2 = nn.LayerNorm(n_embd)

        def forward(self, x):
            x = x + self.sa(self.ln1(x))
            x = x + self.ffwd(self.ln2(x))
            return x

    class GPTLanguageModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.token_embedding_table = nn.Embedding(vocab_size, n_embd)
            self.position_embedding_table = nn.Embedding(block_size, n_embd)
            self.blocks = nn.Sequential(*[Block(n_embd, n_head=n_head) for _ in range(n_layer)])
            self.ln_f = nn.LayerNorm(n_embd)
            self.lm_head = nn.Linear(n_embd, vocab_size)
            if init_weights:
                self.apply(self._init_weights)

        def _init_weights(self, module):
            if isinstance(module, nn.Linear):
                torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

        def forward(self, idx, targets=None):
            B, T = idx.shape
            tok_emb = self.token_embedding_table(idx)                                  # (B,T,C)
            pos_emb = self.position_embedding_table(torch.arange(T, device=device))    # (T,C)
            x = tok_emb + pos_emb
            x = self.blocks(x)
            x = self.ln_f(x)
            logits = self.lm_head(x)                                                   # (B,T,V)
            if targets is None:
                loss = None
            else:
                B, T, C = logits.shape
                logits = logits.view(B * T, C)
                targets = targets.view(B * T)
                loss = F.cross_entropy(logits, targets)
            return logits, loss

        def generate(self, idx, max_new_tokens):
            for _ in range(max_new_tokens):
                idx_cond = idx[:, -block_size:]
                logits, loss = self(idx_cond)
                logits = logits[:, -1, :]                                              # (B,C)
                probs = F.softmax(logits, dim=-1)
                idx_next = torch.multinomial(probs, num_samples=1)                     # (B,1)
                idx = torch.cat((idx, idx_next), dim=1)                                # (B,T+1)
            return idx

    def get_batch(data):
        ix = torch.randint(len(data) - block_size, (batch_size,))
        x = torch.stack([data[i:i + block_size] for i in ix])
        y = torch.stack([data[i + 1:i + block_size + 1] for i in ix])
        x, y = x.to(device), y.to(device)
        return x, y

    def make_estimate_loss(model, splits):
        @torch.no_grad()
        def estimate_loss():
            out = {}
            model.eval()
            for split, data in splits.items():
                losses = torch.zeros(eval_iters)
                for k in range(eval_iters):
                    X, Y = get_batch(data)
                    logits, loss = model(X, Y)
                    losses[k] = loss.item()
                out[split] = losses.mean()
            model.train()
            return out
        return estimate_loss

    return types.SimpleNamespace(Head=Head, MultiHeadAttention=MultiHeadAttention, FeedFoward=FeedFoward,
                                 Block=Block, GPTLanguageModel=GPTLanguageModel, get_batch=get_batch,
                                 make_estimate_loss=make_estimate_loss)


TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 20


def tokenizer(text):
    chars = sorted(list(set(text)))
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}
    return len(chars), (lambda s: [stoi[c] for c in s]), (lambda ids: ''.join([itos[i] for i in ids]))


def test_the_lecture_program_trains_and_samples(device, capsys):
    torch, nn, F = face()
    vocab_size, encode, decode = tokenizer(TEXT)
    torch.manual_seed(1337)
    data = torch.tensor(encode(TEXT), dtype=torch.long)
    assert data.dtype == torch.long and data.shape == (len(TEXT),)
    n = int(0.9 * len(data))
    train_data, val_data = data[:n], data[n:]
    prog = lecture_program(torch, nn, F, vocab_size=vocab_size, device=device, init_weights=True,
                           batch_size=8, eval_iters=4)
    model = prog.GPTLanguageModel()
    m = model.to(device)
    assert m is model
    print(sum(p.numel() for p in m.parameters()) / 1e6, 'M parameters')
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    estimate_loss = prog.make_estimate_loss(model, {'train': train_data, 'val': val_data})
    first = estimate_loss()
    for iter in range(40):
        xb, yb = prog.get_batch(train_data)
        assert xb.device == device and xb.shape == (8, 8) and xb.dtype == torch.long
        logits, loss = model(xb, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    losses = estimate_loss()
    print(f"step {iter}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
    context = torch.zeros((1, 1), dtype=torch.long, device=device)
    text = decode(m.generate(context, max_new_tokens=20)[0].tolist())
    out = capsys.readouterr().out
    assert re.search(r"^0\.0\d+ M parameters$", out, re.M), out
    assert re.search(r"^step 39: train loss \d\.\d{4}, val loss \d\.\d{4}$", out, re.M), out
    assert len(text) == 21 and set(text) <= set(TEXT)
    assert losses['train'].item() < first['train'].item() - 0.5       # it learned something
    assert all(m.training for m in model.modules())                     # estimate_loss restored it


def test_a_script_named_gpt_py_runs_from_its_folder(tmp_path):
    """The lecture's script is gpt.py: run from its own folder it shadows our `gpt` package, so
    the face must not import gpt (nor torch)."""
    (tmp_path / "input.txt").write_text(TEXT)
    (tmp_path / "gpt.py").write_text(textwrap.dedent("""\
        import sys
        import tensorlite.torch as torch
        import tensorlite.torch.nn as nn
        from tensorlite.torch.nn import functional as F

        with open('input.txt', 'r', encoding='utf-8') as f:
            text = f.read()
        chars = sorted(list(set(text)))
        stoi = { ch:i for i,ch in enumerate(chars) }
        data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
        torch.manual_seed(1337)
        emb = nn.Embedding(len(chars), len(chars))
        opt = torch.optim.AdamW(emb.parameters(), lr=1e-2)
        for _ in range(3):
            ix = torch.randint(len(data) - 8, (4,))
            x = torch.stack([data[i:i+8] for i in ix])
            y = torch.stack([data[i+1:i+9] for i in ix])
            loss = F.cross_entropy(emb(x).view(32, -1), y.view(32))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        print(f"loss {loss.item():.4f}", "torch" in sys.modules, "gpt" in sys.modules)
        """))
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "TENSORLITE_KEEP_FREED_MEMORY": "0"}
    run = subprocess.run([sys.executable, "gpt.py"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    loss, torch_loaded, gpt_loaded = run.stdout.split()[1:]
    assert float(loss) > 0 and torch_loaded == "False" and gpt_loaded == "False"


def test_the_face_has_no_torch_or_gpt_import():
    sources = sorted((ROOT / "tensorlite" / "torch").rglob("*.py"))
    assert len(sources) >= 7
    for path in sources:
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(torch|gpt)\b", text, re.M), path


# ---- the same numbers as PyTorch ----------------------------------------------------------------

def perturb(state, seed=0):
    """Random offsets on every floating weight (layer norms leave ones and zeros otherwise)."""
    rng = np.random.default_rng(seed)
    return {k: v + rng.normal(0, 0.3, v.shape) if k.split(".")[-1] != "tril" else v for k, v in state.items()}


@needs_torch
@pytest.mark.parametrize("init_weights", [False, True])
def test_the_lecture_program_matches_pytorch(init_weights):
    ours_prog = lecture_program(*face(), init_weights=init_weights)
    theirs_prog = lecture_program(*pytorch(), init_weights=init_weights)
    ttorch.manual_seed(0)
    real_torch.manual_seed(0)
    ours, theirs = ours_prog.GPTLanguageModel().double(), theirs_prog.GPTLanguageModel().double()
    state = ours.state_dict()
    # register_buffer: in state_dict, in PyTorch's order (each module's parameters, then buffers)
    assert list(state) == list(theirs.state_dict())
    assert "blocks.0.sa.heads.0.tril" in state and "blocks.0.sa.heads.0.tril" not in dict(ours.named_parameters())
    state = perturb(state)
    ours.load_state_dict(state)
    theirs.load_state_dict({k: real_torch.from_numpy(v) for k, v in state.items()})
    rng = np.random.default_rng(1)
    idx, targets = rng.integers(0, 13, (3, 8)), rng.integers(0, 13, (3, 8))
    logits, loss = ours(ttorch.tensor(idx), ttorch.tensor(targets))
    loss.backward()
    t_logits, t_loss = theirs(real_torch.from_numpy(idx), real_torch.from_numpy(targets))
    t_loss.backward()
    assert logits.dtype == np.float64
    np.testing.assert_allclose(logits.numpy(), t_logits.detach().numpy(), rtol=0, atol=1e-12)
    assert abs(loss.item() - t_loss.item()) < 1e-12
    theirs_params = dict(theirs.named_parameters())
    assert [n for n, _ in ours.named_parameters()] == list(theirs_params)
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, theirs_params[name].grad.numpy(), rtol=0, atol=1e-11, err_msg=name)
    assert np.abs(logits.numpy()).max() > 1.0


@needs_torch
def test_default_initialisation_matches_pytorchs_distributions():
    """Linear U(-1/sqrt(in), 1/sqrt(in)) for weight and bias, Embedding N(0, 1), LayerNorm ones
    and zeros: the lecture's middle stages depend on it."""
    ttorch.manual_seed(0)
    lin, emb, ln = tnn.Linear(256, 512), tnn.Embedding(300, 200), tnn.LayerNorm(64)
    real_torch.manual_seed(0)
    t_lin, t_emb = real_torch.nn.Linear(256, 512), real_torch.nn.Embedding(300, 200)
    bound = 1 / math.sqrt(256)
    for ours, theirs in [(lin.weight, t_lin.weight), (lin.bias, t_lin.bias)]:
        ours = ours.numpy()
        theirs = theirs.detach().numpy()
        assert np.abs(ours).max() <= bound and np.abs(theirs).max() <= bound
        assert ours.std() == pytest.approx(theirs.std(), rel=0.1) == pytest.approx(bound / math.sqrt(3), rel=0.1)
    assert emb.weight.numpy().std() == pytest.approx(t_emb.weight.detach().numpy().std(), rel=0.02)
    assert emb.weight.numpy().std() == pytest.approx(1.0, rel=0.02)
    np.testing.assert_array_equal(ln.weight.numpy(), 1.0)
    np.testing.assert_array_equal(ln.bias.numpy(), 0.0)
    assert lin.weight.dtype == np.float32 and emb.weight.dtype == np.float32


@needs_torch
def test_adamw_step_matches_pytorchs():
    rng = np.random.default_rng(0)
    w0, grads = rng.standard_normal((5, 4)), [rng.standard_normal((5, 4)) for _ in range(3)]
    ours = tnn.Parameter(ttorch.tensor(w0))
    theirs = real_torch.nn.Parameter(real_torch.tensor(w0))
    opt = ttorch.optim.AdamW([ours], lr=0.1, weight_decay=0.1)
    t_opt = real_torch.optim.AdamW([theirs], lr=0.1, weight_decay=0.1)
    for g in grads:
        opt.zero_grad(set_to_none=True)
        t_opt.zero_grad(set_to_none=True)
        assert ours.grad is None and theirs.grad is None
        ours.grad, theirs.grad = g.copy(), real_torch.tensor(g)
        opt.step()
        t_opt.step()
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=0, atol=1e-13)


def test_zero_grad_set_to_none_false_keeps_zero_arrays():
    lin = tnn.Linear(3, 2)
    opt = ttorch.optim.AdamW(lin.parameters())
    lin(ttorch.randn(4, 3)).sum().backward()
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in lin.parameters())
    lin(ttorch.randn(4, 3)).sum().backward()
    lin.zero_grad()
    assert all(p.grad is None for p in lin.parameters())
    lin(ttorch.randn(4, 3)).sum().backward()
    lin.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in lin.parameters())


# ---- Tensor methods, the way the lecture uses them -----------------------------------------

def arange_tensor(*shape, requires_grad=False):
    return ttorch.tensor(np.arange(float(np.prod(shape))).reshape(shape), dtype=ttorch.float64,
                         requires_grad=requires_grad)


def test_transpose_two_axes_swaps_them_and_a_permutation_is_numpys():
    x = arange_tensor(2, 3, 4, 5)
    a = x.numpy()
    np.testing.assert_array_equal(x.transpose(-2, -1).numpy(), np.swapaxes(a, -2, -1))
    np.testing.assert_array_equal(x.transpose(1, 2).numpy(), np.swapaxes(a, 1, 2))
    np.testing.assert_array_equal(x.transpose(0, 2, 1, 3).numpy(), a.transpose(0, 2, 1, 3))  # gpt/model.py
    np.testing.assert_array_equal(x.transpose((3, 2, 1, 0)).numpy(), a.transpose(3, 2, 1, 0))
    np.testing.assert_array_equal(x.transpose().numpy(), a.T)
    np.testing.assert_array_equal(x.permute(0, 2, 1, 3).numpy(), a.transpose(0, 2, 1, 3))
    np.testing.assert_array_equal(x.mT.numpy(), np.swapaxes(a, -1, -2))
    m = arange_tensor(2, 3)
    assert m.transpose(0, 1).shape == (3, 2) == m.transpose(1, 0).shape  # NumPy: (0, 1) is no change
    assert ttorch.transpose(x, 0, 3).shape == (5, 3, 4, 2)


def test_transpose_gradient_flows_back_through_the_swap():
    x = arange_tensor(2, 3, 4, requires_grad=True)
    g = np.random.default_rng(0).standard_normal((2, 4, 3))
    x.transpose(-2, -1).backward(g)
    np.testing.assert_array_equal(x.grad, np.swapaxes(g, -2, -1))
    assert tl.gradcheck(lambda t: t.transpose(0, -1) * 1.0, tl.tensor(np.random.default_rng(1).random((2, 3, 4)), requires_grad=True))


@needs_torch
@pytest.mark.parametrize("call", [
    "x.transpose(-2, -1)", "x.transpose(0, 1)", "x.permute(2, 0, 1)", "x.view(6, 4)", "x.view(-1)",
    "x.unsqueeze(1)", "x.unsqueeze(-1)", "x.squeeze()", "x.flatten(1)", "x.sum(dim=-1, keepdim=True)",
    "x.mean(dim=(0, 2))", "x.softmax(dim=-1)", "x.log_softmax(dim=1)", "x.var(dim=1, keepdim=True)",
    "x.std()", "x.max(dim=-1).values", "x.max(dim=1).indices", "x.argmax(dim=-1)",
    "x.split(2, dim=-1)[1]", "x.split(3, dim=-1)[1]", "x.chunk(2, dim=1)[1]", "x.mT",
    "x.masked_fill(x > 10, float('-inf'))", "x.float()", "x.double()", "x.long()",
])
def test_tensor_methods_match_pytorch(call):
    a = np.random.default_rng(0).standard_normal((2, 3, 4)) * 10
    ours = eval(call, {"x": ttorch.tensor(a)})
    theirs = eval(call, {"x": real_torch.tensor(a)})
    assert tuple(ours.shape) == tuple(theirs.shape)
    assert ours.dtype == np.dtype(str(theirs.dtype).replace("torch.", ""))
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12, atol=1e-12)


def test_size_is_numpys_count_and_pytorchs_shape():
    x = arange_tensor(2, 3, 4)
    assert x.size == 24 and x.numel() == 24 and x.dim() == 3
    assert x.size() == (2, 3, 4) and x.size(-1) == 4 and x.size(0) == 2
    assert sum(p.numel() for p in tnn.Linear(3, 2).parameters()) == 8


def test_item_tolist_float_and_int():
    x = ttorch.tensor([[1, 2], [3, 4]])
    assert x.dtype == ttorch.long and x.tolist() == [[1, 2], [3, 4]]
    assert x[1, 0].item() == 3 and int(x[1, 0]) == 3
    y = x.float()
    assert y.dtype == ttorch.float32 and y.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert ttorch.tensor(2.5).dtype == np.float32 and ttorch.tensor(True).dtype == np.bool_


def test_a_one_element_integer_tensor_indexes_and_slices():
    data = ttorch.arange(20)
    ix = ttorch.tensor([3, 11])
    rows = [data[i:i + 4] for i in ix]                        # iterating gives 0-d tensors
    assert [r.tolist() for r in rows] == [[3, 4, 5, 6], [11, 12, 13, 14]]
    assert list(range(10))[ix[0]] == 3
    with pytest.raises(TypeError, match="single element"):
        list(range(10))[ix]
    with pytest.raises(TypeError, match="integer"):
        list(range(10))[ttorch.tensor(1.0)]


def test_format_a_scalar_like_its_number_and_refuse_a_spec_for_an_array():
    losses = ttorch.zeros(4)
    for k in range(4):
        losses[k] = 2.0 + k
    assert f"{losses.mean():.4f}" == "3.5000" and f"{losses.mean()}" == "3.5"
    assert f"{losses}" == str(losses)
    with pytest.raises(TypeError, match="format"):
        f"{losses:.4f}"


def test_setitem_writes_where_no_gradient_is_at_stake():
    x = ttorch.zeros(2, 3)
    x[0] = 1.0
    x[:, 2] = ttorch.tensor([5.0, 6.0])
    x[ttorch.tensor(1), ttorch.tensor(0)] = 7.0
    np.testing.assert_array_equal(x.numpy(), [[1, 1, 5], [7, 0, 6]])
    w = tnn.Parameter(ttorch.zeros(3))
    with pytest.raises(RuntimeError, match="requires grad"):
        w[0] = 1.0
    with ttorch.no_grad():
        w[0] = 1.0                                            # as PyTorch: a leaf, under no_grad
    assert w.tolist() == [1.0, 0.0, 0.0]
    y = w * 2.0
    with pytest.raises(RuntimeError, match="requires grad"), ttorch.no_grad():
        y[0] = 1.0                                            # not a leaf: never


def test_to_moves_and_casts():
    x = arange_tensor(2, 3, requires_grad=True)
    assert x.to("cpu") is x and x.to(ttorch.float64) is x
    y = x.to(ttorch.float32)
    assert y.dtype == np.float32 and y.is_leaf and y.requires_grad and y is not x
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    assert x.to(x).dtype == x.dtype and x.to("cpu", "float32").dtype == np.float32
    assert x.to("cpu", copy=True) is not x and x.long().dtype == ttorch.long
    with pytest.raises(TypeError, match="neither a device"):
        x.to("gpu")
    with pytest.raises(tl.DeviceError, match="one GPU"):
        x.to("cuda:1")


def test_to_refuses_to_cut_a_graph_silently():
    x = arange_tensor(2, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="gradient would not flow back"):
        (x * 2.0).float()
    with ttorch.no_grad():
        assert (x * 2.0).float().dtype == np.float32       # no graph to cut
    assert (x * 2.0).detach().float().dtype == np.float32


# ---- functions -----------------------------------------------------------------------------------

def test_factories_shapes_dtypes_and_values():
    assert ttorch.zeros(3).dtype == np.float32 and ttorch.zeros((1, 1), dtype=ttorch.long).dtype == np.int64
    assert ttorch.ones(2, 3).shape == (2, 3) and ttorch.ones([2, 3]).shape == (2, 3)
    assert ttorch.arange(5).tolist() == [0, 1, 2, 3, 4] and ttorch.arange(5).dtype == np.int64
    assert ttorch.arange(0, 1, 0.25).dtype == np.float32 and ttorch.arange(2, 8, 3).tolist() == [2, 5]
    assert ttorch.full((2,), 7).dtype == np.int64 and ttorch.full((2,), 0.5).dtype == np.float32
    np.testing.assert_array_equal(ttorch.tril(ttorch.ones(3, 3)).numpy(), np.tril(np.ones((3, 3))))
    np.testing.assert_array_equal(ttorch.triu(ttorch.ones(3, 4), diagonal=1).numpy(), np.triu(np.ones((3, 4)), 1))
    x = ttorch.randn(3, 4, requires_grad=True)
    ttorch.tril(x).sum().backward()                           # differentiable: zeros get no gradient
    np.testing.assert_array_equal(x.grad, np.tril(np.ones((3, 4))))
    assert ttorch.zeros_like(x).shape == (3, 4) and ttorch.ones_like(x).dtype == np.float32
    assert ttorch.from_numpy(np.arange(3)).tolist() == [0, 1, 2] and ttorch.is_tensor(x)
    assert ttorch.allclose(x, x * 1.0) and not ttorch.allclose(x, x + 1.0)


def test_factories_buffers_and_sampling_live_on_the_device(device):
    for t in (ttorch.zeros(2, 3, device=device), ttorch.ones(3, device=device), ttorch.arange(4, device=device),
              ttorch.full((2,), 1.5, device=device), ttorch.randn(2, device=device),
              ttorch.randint(5, (3,), device=device), ttorch.tensor([1, 2], device=device)):
        assert t.device == device
    np.testing.assert_array_equal(ttorch.tril(ttorch.ones(3, 3, device=device)).numpy(), np.tril(np.ones((3, 3))))
    m = WithBuffers().to(device)
    assert m.tril.device == device and m.steps.device == device and m.proj.weight.device == device
    assert all(type(v) is np.ndarray for v in m.state_dict().values())
    probs = ttorch.softmax(ttorch.randn(4, 6, device=device), dim=-1)
    picks = ttorch.multinomial(probs, num_samples=1)
    assert picks.device == device and picks.shape == (4, 1) and picks.dtype == ttorch.long
    idx = ttorch.cat((ttorch.zeros((4, 1), dtype=ttorch.long, device=device), picks), dim=1)
    assert idx.device == device and idx[:, -1:].tolist() == picks.tolist()
    x = ttorch.randn(2, 3, 4, device=device, requires_grad=True)
    y = x.transpose(-2, -1).masked_fill(ttorch.ones(4, 3, device=device) == 0, float("-inf"))
    loss = tF.cross_entropy(tF.softmax(y, dim=-1).view(8, 3), ttorch.tensor([0, 1, 2, 0, 1, 2, 0, 1], device=device))
    loss.backward()
    assert x.grad is not None and backend_of(x.grad) == device


def backend_of(array):
    return tl.backend.device_of(array)


def test_stack_and_cat_as_the_lecture_calls_them():
    a, b = ttorch.tensor([[1, 2]]), ttorch.tensor([[3], [4]])
    assert ttorch.cat((ttorch.tensor([[1], [2]]), b), dim=1).tolist() == [[1, 3], [2, 4]]
    assert ttorch.cat([a, a], dim=-1).tolist() == [[1, 2, 1, 2]]
    assert ttorch.stack([ttorch.tensor([1, 2]), ttorch.tensor([3, 4])]).tolist() == [[1, 2], [3, 4]]
    x = ttorch.randn(2, 3, requires_grad=True)
    ttorch.cat([x, x * 2.0], dim=-1).sum().backward()
    np.testing.assert_allclose(x.grad, 3.0)


def test_manual_seed_makes_the_draws_repeat():
    def draws():
        ttorch.manual_seed(1337)
        return (ttorch.randint(100, (5,)).tolist(), ttorch.randint(3, 9, (2, 2)).tolist(),
                ttorch.randn(3).tolist(), tnn.Linear(2, 2).weight.tolist(),
                ttorch.multinomial(ttorch.tensor([0.2, 0.3, 0.5]), 4, replacement=True).tolist())
    first = draws()
    assert first == draws()
    assert all(0 <= v < 100 for v in first[0]) and all(3 <= v < 9 for row in first[1] for v in row)
    ttorch.manual_seed(1)
    assert ttorch.randint(100, (5,)).tolist() != first[0]


@pytest.mark.parametrize("replacement", [True, False])
def test_multinomial_draws_from_the_weights(replacement):
    ttorch.manual_seed(0)
    weights = np.array([1.0, 0.0, 3.0, 6.0])                # need not sum to one
    probs = ttorch.tensor(np.tile(weights, (20000, 1)))
    first = ttorch.multinomial(probs, 2 if not replacement else 1, replacement=replacement)
    assert first.dtype == ttorch.long and first.shape == (20000, 2 if not replacement else 1)
    freq = np.bincount(first.numpy()[:, 0], minlength=4) / 20000
    np.testing.assert_allclose(freq, weights / weights.sum(), atol=0.012)
    if not replacement:
        picks = first.numpy()
        assert np.all(picks[:, 0] != picks[:, 1]) and not np.any(picks == 1)  # never a zero weight
        # the second pick, given the first: p_j / (1 - p_first)
        second = picks[picks[:, 0] == 3, 1]
        np.testing.assert_allclose(np.bincount(second, minlength=4)[[0, 2]] / len(second), [0.25, 0.75], atol=0.02)


def test_multinomial_refuses_bad_weights():
    with pytest.raises(RuntimeError, match="probability"):
        ttorch.multinomial(ttorch.tensor([0.5, -0.1]), 1)
    with pytest.raises(RuntimeError, match="without replacement"):
        ttorch.multinomial(ttorch.tensor([0.5, 0.5]), 3)


def test_no_grad_as_a_context_and_as_a_decorator():
    w = ttorch.randn(3, requires_grad=True)

    @ttorch.no_grad()
    def double(t):
        """doubles"""
        return t * 2.0

    assert not double(w).requires_grad and double.__doc__ == "doubles"
    with ttorch.no_grad():
        assert not (w * 2.0).requires_grad and not ttorch.is_grad_enabled()
    assert (w * 2.0).requires_grad and ttorch.is_grad_enabled()


def test_the_differences_docs_pytorch_md_lists_hold():
    """docs/pytorch.md, "What still behaves differently": when one of these fails, the face has
    come closer to PyTorch; take the line out of the list (and this check with it)."""
    lin = tnn.Linear(3, 2)
    lin(ttorch.randn(4, 3)).sum().backward()
    assert type(lin.weight.grad) is np.ndarray                         # not a Tensor
    assert all(type(v) is np.ndarray for v in lin.state_dict().values())
    x = ttorch.zeros(2, 3)
    assert type(x.shape) is tuple and type(x.size()) is tuple          # not torch.Size
    mean = ttorch.tensor([1, 2, 4]).mean()
    assert mean.dtype == np.float64 and mean.item() == pytest.approx(7 / 3)   # PyTorch refuses
    logits, t32 = ttorch.randn(4, 5), ttorch.tensor([1, 2, 3, 4], dtype=ttorch.int32)
    assert tF.cross_entropy(logits, t32).item() == tF.cross_entropy(logits, t32.long()).item()
    with pytest.raises(ValueError, match="dropout probability"):
        tnn.Dropout(1.0)
    assert not hasattr(x, "zero_"), "Tensor.zero_ exists now: docs/pytorch.md lists it as missing"


def test_device_is_a_torch_device_that_is_also_its_name():
    x = ttorch.zeros(2, 3)
    assert x.device.type == "cpu" and x.device.index is None and not x.is_cuda
    assert x.device == "cpu" == ttorch.device("cpu") and {"cpu": 1}[x.device] == 1
    assert repr(x.device) == "device(type='cpu')" and f"{x.device}" == "cpu"
    assert type(pickle.loads(pickle.dumps(x.device))) is str        # checkpoints stay plain


def test_unsqueeze_and_squeeze_refuse_a_dim_out_of_range_as_pytorch():
    x = ttorch.zeros(2, 3, 4)
    assert x.unsqueeze(3).shape == (2, 3, 4, 1) and x.unsqueeze(-4).shape == (1, 2, 3, 4)
    for bad in (4, -5):
        with pytest.raises(IndexError, match=rf"range of \[-4, 3\], but got {bad}"):
            x.unsqueeze(bad)
    with pytest.raises(IndexError, match=r"range of \[-3, 2\], but got 3"):
        x.squeeze(3)
    assert ttorch.tensor(5.0).squeeze(0).shape == () and ttorch.zeros(1).squeeze(-1).shape == ()


def test_abs_gives_the_magnitude_and_the_sign_as_its_gradient():
    x = ttorch.tensor([-2.0, 0.0, 3.0, -0.5], requires_grad=True)
    gy = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    y = abs(x)
    np.testing.assert_array_equal(y.numpy(), [2.0, 0.0, 3.0, 0.5])
    (y * ttorch.tensor(gy)).sum().backward()
    np.testing.assert_array_equal(x.grad, gy * np.array([-1, 0, 1, -1]))   # 0 at 0, as PyTorch
    assert x.abs().dtype == np.float32 and ttorch.tensor([-3, 4]).abs().tolist() == [3, 4]


def test_clone_copies_and_keeps_the_graph():
    x = ttorch.tensor([1.0, 2.0], requires_grad=True)
    c = x.clone()
    assert c.requires_grad and not c.is_leaf
    (c * ttorch.tensor([3.0, 5.0])).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 5.0])
    data = ttorch.tensor([1, 2])
    copy = data.clone()
    copy[0] = 7                                           # a copy, not a view (detach shares)
    assert data.tolist() == [1, 2] and copy.dtype == data.dtype and copy.is_leaf


def test_requires_grad_sets_the_flag_in_place_and_refuses_what_pytorch_refuses():
    w = ttorch.zeros(3)
    assert w.requires_grad_() is w and w.requires_grad
    (w * 2.0).sum().backward()
    np.testing.assert_array_equal(w.grad, [2.0, 2.0, 2.0])
    assert not w.requires_grad_(False).requires_grad
    with pytest.raises(TypeError, match="floating-point"):
        ttorch.tensor([1, 2]).requires_grad_()
    with pytest.raises(RuntimeError, match="only a leaf"):
        (ttorch.zeros(2, requires_grad=True) * 2.0).requires_grad_(False)


def test_dtypes_and_devices_compare_as_pytorchs_do():
    assert ttorch.tensor([1]).dtype == ttorch.long == ttorch.int64
    assert ttorch.zeros(1).dtype == ttorch.float32 == ttorch.float
    assert ttorch.zeros(1, dtype=ttorch.float64).dtype == ttorch.double
    assert ttorch.cuda.is_available() == tl.gpu_available()
    assert ttorch.device("cpu") == "cpu" and ttorch.device("cuda:0").type == "cuda"
    assert ttorch.zeros(2, device=ttorch.device("cpu")).device == "cpu"
    with pytest.raises(tl.DeviceError, match="tpu"):
        ttorch.device("tpu")


# ---- nn ---------------------------------------------------------------------------------------

class WithBuffers(tnn.Module):
    def __init__(self):
        super().__init__()
        self.proj = tnn.Linear(3, 3)
        self.register_buffer("tril", ttorch.tril(ttorch.ones(3, 3)))
        self.register_buffer("steps", ttorch.zeros(1, dtype=ttorch.long))
        self.register_buffer("scratch", ttorch.zeros(3), persistent=False)


def test_register_buffer_is_saved_moved_and_not_trained():
    m = tnn.Sequential(WithBuffers())
    # PyTorch's order: a module's own parameters and buffers, then its children's; not scratch
    assert list(m.state_dict()) == ["0.tril", "0.steps", "0.proj.weight", "0.proj.bias"]
    assert [n for n, _ in m.named_buffers()] == ["0.tril", "0.steps", "0.scratch"]
    assert len(list(m.parameters())) == 2 and not any(b.requires_grad for b in m.buffers())
    m.double()
    assert m[0].tril.dtype == np.float64 and m[0].scratch.dtype == np.float64
    assert m[0].steps.dtype == np.int64                         # integer buffers keep their dtype
    state = m.state_dict()
    state["0.tril"] = np.full((3, 3), 2.0)
    m.load_state_dict(state)
    np.testing.assert_array_equal(m[0].tril.numpy(), 2.0)
    del state["0.steps"]
    with pytest.raises(ValueError, match=r"missing keys: 0\.steps"):
        m.load_state_dict(state)


def test_parameters_is_a_generator_as_pytorchs():
    """The lecture's two uses (a count, the optimizer) and `next(model.parameters())`."""
    m = tnn.Sequential(tnn.Linear(3, 4), tnn.ReLU(), tnn.Linear(4, 2))
    assert isinstance(m.parameters(), types.GeneratorType)
    assert next(m.parameters()) is m[0].weight and next(m.parameters()).device == "cpu"
    assert sum(p.numel() for p in m.parameters()) == 3 * 4 + 4 + 4 * 2 + 2
    assert [id(p) for p in m.parameters()] == [id(p) for _, p in m.named_parameters()]
    for make in (lambda ps: ttorch.optim.AdamW(ps, lr=0.1), lambda ps: ttorch.optim.SGD(ps, lr=0.1)):
        opt = make(m.parameters())
        assert [id(p) for p in opt.param_groups[0]["params"]] == [id(p) for _, p in m.named_parameters()]
        before = [p.numpy().copy() for p in m.parameters()]
        m(ttorch.randn(5, 3)).sum().backward()
        tnn.utils.clip_grad_norm_(m.parameters(), 1e-3)
        opt.step()
        opt.zero_grad(set_to_none=True)
        assert all(not np.array_equal(b, p.numpy()) for b, p in zip(before, m.parameters()))  # each moved
        assert all(p.grad is None for p in m.parameters())


def test_register_buffer_refuses_what_is_not_a_tensor():
    m = tnn.Module()
    with pytest.raises(TypeError, match="Tensor"):
        m.register_buffer("mask", np.ones(3))
    with pytest.raises(TypeError, match="Parameter"):
        m.register_buffer("w", tnn.Parameter(ttorch.ones(2)))
    m.register_buffer("empty", None)
    assert m.state_dict() == {}


@pytest.mark.skipif(tl.gpu_available(), reason="a GPU is present: the error path cannot be reached")
def test_module_to_cuda_without_a_gpu_names_the_problem():
    with pytest.raises(tl.DeviceError, match="cuda|CuPy"):
        WithBuffers().to("cuda")


def test_apply_visits_children_first_then_self():
    seen = []
    net = tnn.Sequential(tnn.Linear(2, 2), tnn.Sequential(tnn.ReLU(), tnn.Linear(2, 1)))
    assert net.apply(lambda m: seen.append(type(m).__name__)) is net
    assert seen == ["Linear", "ReLU", "Linear", "Sequential", "Sequential"]


def test_init_functions_fill_in_place():
    ttorch.manual_seed(0)
    lin = tnn.Linear(400, 300)
    weight = lin.weight.data
    assert tnn.init.normal_(lin.weight, mean=0.0, std=0.02) is lin.weight
    assert lin.weight.data is weight                                    # in place
    assert lin.weight.numpy().std() == pytest.approx(0.02, rel=0.02)
    assert abs(lin.weight.numpy().mean()) < 1e-3
    tnn.init.zeros_(lin.bias)
    assert not lin.bias.numpy().any()
    tnn.init.ones_(lin.bias)
    tnn.init.uniform_(lin.weight, -0.1, 0.1)
    assert lin.bias.numpy().min() == 1 and np.abs(lin.weight.numpy()).max() <= 0.1


def test_layernorm_takes_pytorchs_signature():
    ln = tnn.LayerNorm(4, 1e-3)
    assert ln.eps == 1e-3 and ln.normalized_shape == (4,)
    assert list(tnn.LayerNorm((4,), elementwise_affine=False).parameters()) == []
    assert [n for n, _ in tnn.LayerNorm(4, bias=False).named_parameters()] == ["weight"]
    with pytest.raises(ValueError, match="last axis"):
        tnn.LayerNorm((3, 4))
    with pytest.raises(TypeError, match="eps"):
        tnn.LayerNorm(4, False)


@needs_torch
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_pytorchs(approximate):
    a = np.linspace(-6, 6, 101)
    ours = ttorch.tensor(a, requires_grad=True)
    theirs = real_torch.tensor(a, requires_grad=True)
    y = tnn.GELU(approximate=approximate)(ours)
    t_y = real_torch.nn.GELU(approximate=approximate)(theirs)
    np.testing.assert_allclose(y.numpy(), t_y.detach().numpy(), rtol=0, atol=1e-15)
    g = np.random.default_rng(0).standard_normal(101)
    y.backward(g)
    t_y.backward(real_torch.tensor(g))
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(tF.gelu(ttorch.tensor(a), approximate=approximate).numpy(),
                               real_torch.nn.functional.gelu(real_torch.tensor(a), approximate=approximate).numpy(), atol=1e-15)


def test_exact_gelu_backward_passes_gradcheck_and_a_wrong_slope_fails(monkeypatch):
    x = tl.tensor(np.random.default_rng(0).standard_normal((3, 5)) * 2, requires_grad=True)
    assert tl.gradcheck(lambda t: tF.gelu(t), x, atol=1e-8, rtol=1e-6)
    value = tF.gelu(x).numpy()
    monkeypatch.setattr(tF, "INV_SQRT_2PI", tF.INV_SQRT_2PI * 1.01)   # phi(x) 1% off: the slope only
    np.testing.assert_array_equal(tF.gelu(x).numpy(), value)           # the value cannot show it
    with pytest.raises(tl.GradcheckError):
        tl.gradcheck(lambda t: tF.gelu(t), x, atol=1e-8, rtol=1e-6)


def test_exact_gelu_without_scipy_uses_math_erf(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.startswith("scipy"):
            raise ImportError("scipy hidden")
        return real_import(name, *args, **kwargs)

    x = np.linspace(-4, 4, 33)
    expected = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    monkeypatch.setattr(builtins, "__import__", no_scipy)
    np.testing.assert_allclose(tF.gelu(ttorch.tensor(x)).numpy(), expected, rtol=0, atol=1e-15)
    assert tF.gelu(ttorch.tensor(x, dtype=ttorch.float32)).dtype == np.float32


# ---- functional --------------------------------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("call", [
    "F.softmax(x, dim=-1)", "F.softmax(x, dim=1)", "F.log_softmax(x, dim=-1)", "F.relu(x)",
    "F.cross_entropy(x.view(6, 4), t.view(6))", "F.cross_entropy(x.permute(0, 2, 1), t)",
    "F.cross_entropy(x.view(6, 4), t.view(6), reduction='sum')", "F.cross_entropy(x[0, 0], t[0, 0])",
    "F.layer_norm(x, (4,))", "F.linear(x, x[0])", "F.dropout(x, 0.5, training=False)",
    "F.scaled_dot_product_attention(x, x, x, is_causal=True)",
    "F.scaled_dot_product_attention(x, x * 0.5, x, attn_mask=torch.tril(torch.ones(3, 3)) == 1)",
])
def test_functional_matches_pytorch_forward_and_backward(call):
    rng = np.random.default_rng(0)
    a, targets = rng.standard_normal((2, 3, 4)) * 3, rng.integers(0, 4, (2, 3))
    results = []
    for torch, _, F in (face(), pytorch()):
        x = torch.tensor(a, requires_grad=True)
        y = eval(call, {"F": F, "x": x, "t": torch.tensor(targets), "torch": torch})
        g = np.random.default_rng(1).standard_normal(tuple(y.shape))
        y.backward(torch.tensor(g))
        results.append((y.detach().numpy(), x.grad if x.grad is not None else None))
    (y, gx), (t_y, t_gx) = results
    np.testing.assert_allclose(y, t_y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(gx, t_gx.numpy(), rtol=0, atol=1e-12)


def test_softmax_without_dim_is_refused():
    with pytest.raises(TypeError, match="dim"):
        tF.softmax(ttorch.randn(2, 3))


def test_dropout_layer_follows_train_and_eval():
    ttorch.manual_seed(0)
    drop, x = tnn.Dropout(0.2), ttorch.ones(100, 100)
    y = drop(x).numpy()
    assert 0.17 < (y == 0).mean() < 0.23 and np.allclose(y[y != 0], 1 / 0.8)
    drop.eval()
    assert drop(x) is x


# ==== the same names without PyTorch ================================================================
# CI installs no PyTorch, so every test above marked needs_torch skips there. Each name they compare
# with PyTorch is checked below against NumPy formulas, known values and properties instead.

def np_softmax(a, axis=-1):
    e = np.exp(a - a.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def np_log_softmax(a, axis=-1):
    z = a - a.max(axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis, keepdims=True))


def np_cross_entropy(logits, targets, reduction="mean"):
    """logits (N, C), targets (N,): the mean (or sum) of -log softmax(logits)[n, targets[n]]."""
    nll = -np_log_softmax(logits)[np.arange(len(targets)), targets]
    return nll.mean() if reduction == "mean" else nll.sum()


def np_layer_norm(a, weight=1.0, bias=0.0, eps=1e-5):
    return (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True) + eps) * weight + bias


def np_attention(q, k, v, allowed):
    """softmax(q k^T / sqrt(hs)) v with the scores where `allowed` is False set to -inf."""
    scores = np.where(allowed, q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1]), -np.inf)
    return np_softmax(scores) @ v


CAUSAL3 = np.tril(np.ones((3, 3), dtype=bool))

# each call of test_tensor_methods_match_pytorch, and what NumPy makes of the same (2, 3, 4) array
TENSOR_METHODS_IN_NUMPY = {
    "x.transpose(-2, -1)": lambda a: np.swapaxes(a, -2, -1),
    "x.transpose(0, 1)": lambda a: np.swapaxes(a, 0, 1),
    "x.permute(2, 0, 1)": lambda a: a.transpose(2, 0, 1),
    "x.view(6, 4)": lambda a: a.reshape(6, 4),
    "x.view(-1)": lambda a: a.reshape(24),
    "x.unsqueeze(1)": lambda a: a.reshape(2, 1, 3, 4),
    "x.unsqueeze(-1)": lambda a: a.reshape(2, 3, 4, 1),
    "x.squeeze()": lambda a: a,                                    # no axis of size 1 to drop
    "x[:, :1].squeeze()": lambda a: a[:, 0],                       # (2, 1, 4) -> (2, 4)
    "x.flatten(1)": lambda a: a.reshape(2, 12),
    "x.sum(dim=-1, keepdim=True)": lambda a: a.sum(-1, keepdims=True),
    "x.mean(dim=(0, 2))": lambda a: a.mean((0, 2)),
    "x.softmax(dim=-1)": lambda a: np_softmax(a, -1),
    "x.log_softmax(dim=1)": lambda a: np_log_softmax(a, 1),
    "x.var(dim=1, keepdim=True)": lambda a: a.var(1, ddof=1, keepdims=True),    # unbiased, as PyTorch's
    "x.std()": lambda a: a.std(ddof=1),
    "x.max(dim=-1).values": lambda a: a.max(-1),
    "x.max(dim=1).indices": lambda a: a.argmax(1).astype(np.int64),
    "x.argmax(dim=-1)": lambda a: a.argmax(-1).astype(np.int64),
    "x.split(2, dim=-1)[1]": lambda a: a[..., 2:4],                # parts of 2 elements
    "x.split(3, dim=-1)[1]": lambda a: a[..., 3:],                 # 3, then the 1 left
    "x.chunk(2, dim=1)[1]": lambda a: a[:, 2:],                    # ceil(3 / 2) = 2, then 1
    "x.mT": lambda a: np.swapaxes(a, -1, -2),
    "x.masked_fill(x > 10, float('-inf'))": lambda a: np.where(a > 10, -np.inf, a),
    "x.float()": lambda a: a.astype(np.float32),
    "x.double()": lambda a: a,
    "x.long()": lambda a: np.trunc(a).astype(np.int64),           # toward zero, as PyTorch
}


@pytest.mark.parametrize("call", TENSOR_METHODS_IN_NUMPY)
def test_tensor_methods_match_numpy(call):
    a = np.random.default_rng(0).standard_normal((2, 3, 4)) * 10
    ours = eval(call, {"x": ttorch.tensor(a)})
    expected = np.asarray(TENSOR_METHODS_IN_NUMPY[call](a))
    assert tuple(ours.shape) == expected.shape and ours.dtype == expected.dtype
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("call", [c for c in TENSOR_METHODS_IN_NUMPY if not re.search(
    r"indices|argmax|masked_fill|float\(\)|double\(\)|long\(\)", c)])
def test_tensor_methods_pass_gradcheck(call):
    """Their backward, without PyTorch: against the numerical derivative of their forward."""
    x = tl.tensor(np.random.default_rng(1).standard_normal((2, 3, 4)), requires_grad=True)
    assert tl.gradcheck(lambda t: eval(call, {"x": t}) * 1.0, x)


def test_unsqueeze_and_squeeze_shapes():
    x = arange_tensor(2, 3, 4, requires_grad=True)
    for dim, shape in [(0, (1, 2, 3, 4)), (1, (2, 1, 3, 4)), (2, (2, 3, 1, 4)), (3, (2, 3, 4, 1)),
                       (-1, (2, 3, 4, 1)), (-2, (2, 3, 1, 4)), (-4, (1, 2, 3, 4))]:
        y = x.unsqueeze(dim)
        assert y.shape == shape, dim
        np.testing.assert_array_equal(y.numpy(), np.expand_dims(x.numpy(), dim))
    g = np.random.default_rng(0).standard_normal((2, 1, 3, 4))
    x.unsqueeze(1).backward(g)
    np.testing.assert_array_equal(x.grad, g[:, 0])
    ones = arange_tensor(1, 2, 1, 3)
    assert ones.squeeze().shape == (2, 3) and ones.squeeze(0).shape == (2, 1, 3)
    assert ones.squeeze(-2).shape == (1, 2, 3) and ones.squeeze(1).shape == (1, 2, 1, 3)  # size 2: kept


# each call of test_functional_matches_pytorch_forward_and_backward, in NumPy (x (2, 3, 4), t (2, 3))
FUNCTIONAL_IN_NUMPY = {
    "F.softmax(x, dim=-1)": lambda a, t: np_softmax(a, -1),
    "F.softmax(x, dim=1)": lambda a, t: np_softmax(a, 1),
    "F.log_softmax(x, dim=-1)": lambda a, t: np_log_softmax(a, -1),
    "F.relu(x)": lambda a, t: np.maximum(a, 0),
    "F.cross_entropy(x.view(6, 4), t.view(6))": lambda a, t: np_cross_entropy(a.reshape(6, 4), t.reshape(6)),
    # (N, C, d1) with the classes on axis 1: the same rows as above
    "F.cross_entropy(x.permute(0, 2, 1), t)": lambda a, t: np_cross_entropy(a.reshape(6, 4), t.reshape(6)),
    "F.cross_entropy(x.view(6, 4), t.view(6), reduction='sum')":
        lambda a, t: np_cross_entropy(a.reshape(6, 4), t.reshape(6), "sum"),
    "F.cross_entropy(x[0, 0], t[0, 0])": lambda a, t: np_cross_entropy(a[0, :1], t[0, :1]),  # (C,), a scalar target
    "F.layer_norm(x, (4,))": lambda a, t: np_layer_norm(a),
    "F.linear(x, x[0])": lambda a, t: a @ a[0].T,
    "F.dropout(x, 0.5, training=False)": lambda a, t: a,
    "F.scaled_dot_product_attention(x, x, x, is_causal=True)": lambda a, t: np_attention(a, a, a, CAUSAL3),
    "F.scaled_dot_product_attention(x, x * 0.5, x, attn_mask=torch.tril(torch.ones(3, 3)) == 1)":
        lambda a, t: np_attention(a, a * 0.5, a, CAUSAL3),
}


@pytest.mark.parametrize("call", FUNCTIONAL_IN_NUMPY)
def test_functional_matches_numpy_forward_and_passes_gradcheck(call):
    rng = np.random.default_rng(0)
    a, targets = rng.standard_normal((2, 3, 4)) * 3, rng.integers(0, 4, (2, 3))
    env = {"F": tF, "t": ttorch.tensor(targets), "torch": ttorch}
    y = eval(call, {**env, "x": ttorch.tensor(a)})
    expected = np.asarray(FUNCTIONAL_IN_NUMPY[call](a, targets))
    assert tuple(y.shape) == expected.shape and y.dtype == np.float64
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)
    x = tl.tensor(a / 3, requires_grad=True)
    assert tl.gradcheck(lambda t: eval(call, {**env, "x": t}) * 1.0, x)


def test_relu_everywhere_it_is_spelled():
    a = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0]])
    g = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]])
    for relu in (tF.relu, ttorch.relu, tnn.ReLU(), lambda t: t.relu()):
        x = ttorch.tensor(a, requires_grad=True)
        y = relu(x)
        np.testing.assert_array_equal(y.numpy(), [[0.0, 0.0, 0.0, 0.5, 3.0]])
        y.backward(g)
        np.testing.assert_array_equal(x.grad, [[0.0, 0.0, 0.0, 4.0, 5.0]])   # 0 at 0, as PyTorch


def test_dropout_zeroes_a_fraction_p_and_scales_the_rest_by_1_over_1_minus_p():
    rng = np.random.default_rng(0)
    a = rng.uniform(1.0, 2.0, (200, 250))                   # no zeros of its own
    for p in (0.1, 0.5, 0.8):
        x = ttorch.tensor(a, requires_grad=True)
        y = tF.dropout(x, p) if p != 0.5 else tF.dropout(x)  # PyTorch's defaults: p=0.5, training=True
        kept = y.numpy() != 0
        assert abs((~kept).mean() - p) < 0.01               # 50,000 draws: the fraction's sd <= 0.0023
        np.testing.assert_allclose(y.numpy()[kept], a[kept] / (1 - p), rtol=1e-14)
        assert y.numpy().mean() == pytest.approx(a.mean(), rel=0.02)   # the expectation is kept
        g = rng.standard_normal(a.shape)
        y.backward(g)
        np.testing.assert_allclose(x.grad, np.where(kept, g / (1 - p), 0.0), rtol=1e-14)
    x = ttorch.tensor(a)
    assert tF.dropout(x, 0.5, training=False) is x and tF.dropout(x, 0.0) is x
    ttorch.manual_seed(3)
    first = tF.dropout(x, 0.5).numpy()
    assert not np.array_equal(first, tF.dropout(x, 0.5).numpy())       # a new mask each call
    ttorch.manual_seed(3)
    np.testing.assert_array_equal(tF.dropout(x, 0.5).numpy(), first)   # the seed repeats it
    layer = tnn.Dropout(p=0.5)
    assert 0.48 < (layer(x).numpy() == 0).mean() < 0.52
    layer.eval()
    assert layer(x) is x


def np_gelu(a, approximate="none"):
    if approximate == "tanh":
        u = math.sqrt(2 / math.pi) * (a + 0.044715 * a ** 3)
        du = math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * a ** 2)
        return 0.5 * a * (1 + np.tanh(u)), 0.5 * (1 + np.tanh(u)) + 0.5 * a * (1 - np.tanh(u) ** 2) * du
    cdf = 0.5 * (1 + np.array([math.erf(v / math.sqrt(2)) for v in a.ravel()]).reshape(a.shape))
    pdf = np.exp(-a ** 2 / 2) / math.sqrt(2 * math.pi)
    return a * cdf, cdf + a * pdf                            # x Phi(x), and its slope Phi(x) + x phi(x)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_values_and_slopes_are_the_formulas(approximate):
    """nn.GELU() is PyTorch's default, the exact x Phi(x) with erf; approximate="tanh" GPT-2's."""
    a = np.linspace(-6, 6, 101)
    value, slope = np_gelu(a, approximate)
    g = np.random.default_rng(0).standard_normal(101)
    layer = tnn.GELU() if approximate == "none" else tnn.GELU(approximate="tanh")
    for gelu in (layer, lambda t: tF.gelu(t, approximate=approximate)):
        x = ttorch.tensor(a, requires_grad=True)
        y = gelu(x)
        np.testing.assert_allclose(y.numpy(), value, rtol=1e-13, atol=1e-15)
        y.backward(g)
        np.testing.assert_allclose(x.grad, g * slope, rtol=1e-12, atol=1e-14)
    other = np_gelu(a, "tanh" if approximate == "none" else "none")[0]
    assert np.abs(value - other).max() > 1e-4              # the two are told apart at these tolerances
    assert tF.gelu(ttorch.tensor(a, dtype=ttorch.float32), approximate=approximate).dtype == np.float32
    assert tF.gelu(ttorch.tensor(a)).numpy() == pytest.approx(np_gelu(a)[0], abs=1e-15)   # default: exact
    with pytest.raises(ValueError, match="approximate"):
        tnn.GELU(approximate="sigmoid")


def ks_distance(samples, cdf):
    """The Kolmogorov-Smirnov distance between the samples' empirical CDF and cdf."""
    s = np.sort(samples.ravel())
    c = cdf(s)
    n = len(s)
    return max((np.arange(1, n + 1) / n - c).max(), (c - np.arange(n) / n).max())


def test_default_initialisation_is_pytorchs():
    """Linear weight and bias U(-1/sqrt(in), 1/sqrt(in)), Embedding N(0, 1), LayerNorm ones and
    zeros, float32: the lecture's middle stages depend on it (README)."""
    ttorch.manual_seed(0)
    lin, emb, ln = tnn.Linear(256, 512), tnn.Embedding(300, 200), tnn.LayerNorm(64)
    bound = 1 / math.sqrt(256)
    assert lin.weight.shape == (512, 256) and lin.bias.shape == (512,) and emb.weight.shape == (300, 200)
    for p, n in ((lin.weight, 512 * 256), (lin.bias, 512)):
        w = p.numpy().astype(np.float64)
        assert np.abs(w).max() <= bound and np.abs(w).max() > bound * (1 - 20 / n)   # fills its range
        assert w.std() == pytest.approx(bound / math.sqrt(3), rel=5 / math.sqrt(n))  # U's sd: bound/sqrt(3)
        assert abs(w.mean()) < 5 * bound / math.sqrt(3 * n)
        assert ks_distance(w, lambda v: (v + bound) / (2 * bound)) < 2 / math.sqrt(n)
    e = emb.weight.numpy().astype(np.float64)
    assert e.std() == pytest.approx(1.0, rel=0.01) and abs(e.mean()) < 0.01
    normal_cdf = np.vectorize(lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2))))
    assert ks_distance(e, normal_cdf) < 2 / math.sqrt(e.size)
    np.testing.assert_array_equal(ln.weight.numpy(), 1.0)
    np.testing.assert_array_equal(ln.bias.numpy(), 0.0)
    assert lin.weight.dtype == lin.bias.dtype == emb.weight.dtype == ln.weight.dtype == np.float32
    assert tnn.Linear(4, 3, bias=False).bias is None
    assert tnn.Linear(4, 3, dtype=ttorch.float64).weight.dtype == np.float64


def np_adamw(w, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
    """torch.optim.AdamW's documented update, written out: the decay is decoupled (it shrinks
    the weights; it never enters the moments) and both moments are bias-corrected."""
    b1, b2 = betas
    m = v = np.zeros_like(w)
    for t, g in enumerate(grads, 1):
        w = w - lr * weight_decay * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
    return w


def adamw_run(w0, grads, **options):
    p = tnn.Parameter(ttorch.tensor(w0))
    opt = ttorch.optim.AdamW([p], **options)
    for g in grads:
        opt.zero_grad(set_to_none=True)
        assert p.grad is None
        p.grad = g.copy()
        opt.step()
    return p.numpy(), opt


def test_adamw_steps_are_adamws_formula():
    rng = np.random.default_rng(0)
    w0, grads = rng.standard_normal((5, 4)), [rng.standard_normal((5, 4)) for _ in range(3)]
    ours, _ = adamw_run(w0, grads, lr=0.1, weight_decay=0.1)
    np.testing.assert_allclose(ours, np_adamw(w0, grads, lr=0.1, weight_decay=0.1), rtol=1e-12, atol=1e-14)
    ours, opt = adamw_run(w0, grads[:2])                                  # PyTorch's defaults
    group = opt.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (1e-3, (0.9, 0.999), 1e-8, 1e-2)
    np.testing.assert_allclose(ours, np_adamw(w0, grads[:2], lr=1e-3), rtol=1e-12, atol=1e-14)


def test_adamw_decay_is_decoupled_and_the_first_step_is_bias_corrected():
    rng = np.random.default_rng(1)
    w0, g = rng.standard_normal(6), rng.standard_normal(6)
    # a zero gradient still shrinks the weights by lr * weight_decay, and moves them no further
    # (Adam with L2 decay would feed weight_decay * w into the moments and step by lr * sign(w))
    ours, _ = adamw_run(w0, [np.zeros(6)], lr=0.1, weight_decay=0.1)
    np.testing.assert_allclose(ours, w0 * (1 - 0.1 * 0.1), rtol=1e-15)
    # bias correction makes the first step lr in size: m_hat = g, v_hat = g^2 (uncorrected, it would
    # be (1 - b1) / sqrt(1 - b2) = 3.16 times lr)
    ours, _ = adamw_run(w0, [g], lr=0.1, weight_decay=0.0)
    np.testing.assert_allclose(ours, w0 - 0.1 * np.sign(g), rtol=0, atol=1e-7)
    with pytest.raises(NotImplementedError, match="amsgrad"):
        ttorch.optim.AdamW([tnn.Parameter(ttorch.zeros(2))], amsgrad=True)


# the state_dict keys, in PyTorch's order (each module's parameters, its buffers, then its
# children's), of lecture_program's GPTLanguageModel with its defaults: 2 blocks of 4 heads
def lecture_keys(n_layer=2, n_head=4):
    keys = ["token_embedding_table.weight", "position_embedding_table.weight"]
    for b in range(n_layer):
        for h in range(n_head):
            keys += [f"blocks.{b}.sa.heads.{h}.{k}" for k in ("tril", "key.weight", "query.weight", "value.weight")]
        keys += [f"blocks.{b}.{k}" for k in ("sa.proj.weight", "sa.proj.bias", "ffwd.net.0.weight", "ffwd.net.0.bias",
                                             "ffwd.net.2.weight", "ffwd.net.2.bias", "ln1.weight", "ln1.bias",
                                             "ln2.weight", "ln2.bias")]
    return keys + ["ln_f.weight", "ln_f.bias", "lm_head.weight", "lm_head.bias"]


def np_lecture_forward(s, idx, targets, n_layer=2, n_head=4):
    """lecture_program's GPTLanguageModel in NumPy, from its state_dict s: (logits, loss)."""
    T = idx.shape[1]
    x = s["token_embedding_table.weight"][idx] + s["position_embedding_table.weight"][:T]
    for b in range(n_layer):
        p = f"blocks.{b}."
        h = np_layer_norm(x, s[p + "ln1.weight"], s[p + "ln1.bias"])
        heads = []
        for i in range(n_head):
            q, k, v = (h @ s[f"{p}sa.heads.{i}.{name}.weight"].T for name in ("query", "key", "value"))
            heads.append(np_attention(q, k, v, s[f"{p}sa.heads.{i}.tril"][:T, :T] != 0))
        x = x + np.concatenate(heads, -1) @ s[p + "sa.proj.weight"].T + s[p + "sa.proj.bias"]
        h = np_layer_norm(x, s[p + "ln2.weight"], s[p + "ln2.bias"])
        hidden = np.maximum(h @ s[p + "ffwd.net.0.weight"].T + s[p + "ffwd.net.0.bias"], 0)
        x = x + hidden @ s[p + "ffwd.net.2.weight"].T + s[p + "ffwd.net.2.bias"]
    x = np_layer_norm(x, s["ln_f.weight"], s["ln_f.bias"])
    logits = x @ s["lm_head.weight"].T + s["lm_head.bias"]
    V = logits.shape[-1]
    return logits, np_cross_entropy(logits.reshape(-1, V), targets.reshape(-1))


@pytest.mark.parametrize("init_weights", [False, True])
def test_the_lecture_program_matches_numpy(init_weights):
    """test_the_lecture_program_matches_pytorch without PyTorch: the state_dict's keys in PyTorch's
    order, the logits and loss of a NumPy forward from the same weights, and each parameter's
    gradient against a central difference of that NumPy loss at a few of its entries."""
    ttorch.manual_seed(0)
    model = lecture_program(*face(), init_weights=init_weights).GPTLanguageModel().double()
    state = model.state_dict()
    assert list(state) == lecture_keys()
    assert "blocks.0.sa.heads.0.tril" not in dict(model.named_parameters())
    state = perturb(state)
    model.load_state_dict(state)
    rng = np.random.default_rng(1)
    idx, targets = rng.integers(0, 13, (3, 8)), rng.integers(0, 13, (3, 8))
    logits, loss = model(ttorch.tensor(idx), ttorch.tensor(targets))
    loss.backward()
    np_logits, np_loss = np_lecture_forward(state, idx, targets)
    assert logits.dtype == np.float64 and np.abs(np_logits).max() > 1.0
    np.testing.assert_allclose(logits.numpy().reshape(np_logits.shape), np_logits, rtol=0, atol=1e-12)
    assert abs(loss.item() - np_loss) < 1e-12
    h = 1e-6   # small enough that no ReLU's input crosses 0 within +-h at these weights (1e-5: one does)
    for name, p in model.named_parameters():
        for flat in rng.choice(p.numel(), size=min(2, p.numel()), replace=False):
            at = np.unravel_index(flat, p.shape)
            up, down = dict(state), dict(state)
            up[name], down[name] = state[name].copy(), state[name].copy()
            up[name][at] += h
            down[name][at] -= h
            numeric = (np_lecture_forward(up, idx, targets)[1] - np_lecture_forward(down, idx, targets)[1]) / (2 * h)
            assert p.grad[at] == pytest.approx(numeric, rel=1e-5, abs=1e-8), (name, at)
