"""gpt.lecture: the lecture's stages, written as the lecture writes them.

The headline check: the lecture-style model (a loop over Heads, each with its own key, query
and value, concatenated) and the batched nanoGPT-layout gpt.GPT (one c_attn matmul for every
head) compute the same function given the same weights, forward and every gradient, in float64.
"""
import math

import numpy as np
import pytest

import tensorlite as tl
import tensorlite.torch as torch
from gpt import GPT, GPTConfig
from gpt.lecture import STAGE_NAMES, STAGES, GPTLanguageModel, Head

V = 13


def random_ids(shape, seed):
    return np.random.default_rng(seed).integers(0, V, shape)


def to_gpt_state(state, n_layer, n_head, final_ln):
    """The lecture model's weights under gpt.GPT's names: each head's key, query and value rows
    stacked into c_attn (q rows, then k, then v, head by head), c_attn's bias zero."""
    C = state["token_embedding_table.weight"].shape[1]
    out = {"transformer.wte.weight": state["token_embedding_table.weight"],
           "transformer.wpe.weight": state["position_embedding_table.weight"]}
    for i in range(n_layer):
        b, h = f"blocks.{i}.", f"transformer.h.{i}."
        qkv = [np.concatenate([state[f"{b}sa.heads.{j}.{name}.weight"] for j in range(n_head)])
               for name in ("query", "key", "value")]                    # 3 x (C, C)
        out.update({
            h + "ln_1.weight": state[b + "ln1.weight"], h + "ln_1.bias": state[b + "ln1.bias"],
            h + "attn.c_attn.weight": np.concatenate(qkv), h + "attn.c_attn.bias": np.zeros(3 * C),
            h + "attn.c_proj.weight": state[b + "sa.proj.weight"], h + "attn.c_proj.bias": state[b + "sa.proj.bias"],
            h + "ln_2.weight": state[b + "ln2.weight"], h + "ln_2.bias": state[b + "ln2.bias"],
            h + "mlp.c_fc.weight": state[b + "ffwd.net.0.weight"], h + "mlp.c_fc.bias": state[b + "ffwd.net.0.bias"],
            h + "mlp.c_proj.weight": state[b + "ffwd.net.2.weight"], h + "mlp.c_proj.bias": state[b + "ffwd.net.2.bias"],
        })
    out["transformer.ln_f.weight"] = state[final_ln + ".weight"]
    out["transformer.ln_f.bias"] = state[final_ln + ".bias"]
    out["lm_head.weight"] = state["lm_head.weight"]
    return out


@pytest.mark.parametrize("stage, fused", [("scaleup", True), ("scaleup", False), ("layernorm", True)])
def test_lecture_model_and_batched_gpt_compute_the_same_function(stage, fused):
    n_layer, n_head, C, T = 2, 4, 16, 8
    torch.manual_seed(0)
    lecture = GPTLanguageModel(V, stage=stage, n_embd=C, n_head=n_head, n_layer=n_layer, block_size=T).double()
    rng = np.random.default_rng(0)
    for name, p in lecture.named_parameters():
        p.data[...] += rng.normal(0, 0.3, p.shape)      # layer norms away from ones and zeros
    lecture.lm_head.bias.data[...] = 0                 # gpt.GPT's lm_head has no bias
    config = GPTConfig(vocab_size=V, block_size=T, n_layer=n_layer, n_head=n_head, n_embd=C, dropout=0.0,
                       bias=True, activation="relu", fused_softmax=fused)
    batched = GPT(config).to(dtype="float64")
    final_ln = "ln_f" if stage == "scaleup" else f"blocks.{n_layer}"
    batched.load_state_dict(to_gpt_state(lecture.state_dict(), n_layer, n_head, final_ln))

    idx, targets = random_ids((3, 7), 1), random_ids((3, 7), 2)       # T < block_size
    logits, loss = lecture(torch.tensor(idx), torch.tensor(targets))
    loss.backward()
    g_logits, g_loss = batched(idx, targets)
    g_logits.retain_grad()
    g_loss.backward()

    assert logits.dtype == np.float64 and np.abs(logits.numpy()).max() > 1.0
    np.testing.assert_allclose(logits.numpy(), g_logits.numpy().reshape(21, V), rtol=0, atol=1e-12)
    assert abs(loss.item() - g_loss.item()) < 1e-13
    # every gradient of the lecture's parameters, mapped the same way, is GPT's
    lecture_grads = {name: p.grad for name, p in lecture.named_parameters()}
    lecture_grads.update({name: b.numpy() for name, b in lecture.named_buffers()})
    expected = to_gpt_state(lecture_grads, n_layer, n_head, final_ln)
    gpt_grads = {name: p.grad for name, p in batched.named_parameters()}
    assert set(expected) == set(gpt_grads)
    for name, g in gpt_grads.items():
        if name.endswith("c_attn.bias"):
            continue                                    # the lecture's heads have no bias
        np.testing.assert_allclose(expected[name], g, rtol=0, atol=1e-12, err_msg=name)
    # and lm_head's bias, which GPT lacks, gets the logits' gradient summed over every position
    np.testing.assert_allclose(lecture.lm_head.bias.grad, g_logits.grad.sum(axis=(0, 1)), rtol=0, atol=1e-13)


def test_the_per_head_loop_is_what_the_equivalence_test_would_catch():
    """Swapping two heads' value weights changes the output: the mapping above is not vacuous."""
    torch.manual_seed(0)
    model = GPTLanguageModel(V, stage="scaleup", n_embd=16, n_head=4, n_layer=1, block_size=8).double()
    idx = torch.tensor(random_ids((2, 8), 3))
    before = model(idx)[0].numpy()
    heads = model.blocks[0].sa.heads
    heads[0].value.weight.data[...], heads[1].value.weight.data[...] = (
        heads[1].value.weight.numpy().copy(), heads[0].value.weight.numpy().copy())
    assert not np.allclose(model(idx)[0].numpy(), before)


# The lecture's state_dict keys at each commit (karpathy/ng-video-lecture), one block / head shown.
def head_keys(prefix):
    return [f"{prefix}.tril", f"{prefix}.key.weight", f"{prefix}.query.weight", f"{prefix}.value.weight"]


def block_keys(prefix, layer_norm):
    keys = [k for j in range(4) for k in head_keys(f"{prefix}.sa.heads.{j}")]
    keys += [f"{prefix}.sa.proj.weight", f"{prefix}.sa.proj.bias"]
    keys += [f"{prefix}.ffwd.net.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")]
    if layer_norm:
        keys += [f"{prefix}.ln{i}.{w}" for i in (1, 2) for w in ("weight", "bias")]
    return keys


EMB = ["token_embedding_table.weight", "position_embedding_table.weight"]
HEAD = ["lm_head.weight", "lm_head.bias"]
STAGE_KEYS = {
    "bigram": ["token_embedding_table.weight"],
    "head": EMB + head_keys("sa_head") + HEAD,
    "multihead": EMB + [k for j in range(4) for k in head_keys(f"sa_heads.heads.{j}")] + HEAD,
    "feedforward": EMB + [k for j in range(4) for k in head_keys(f"sa_heads.heads.{j}")]
    + ["ffwd.net.0.weight", "ffwd.net.0.bias"] + HEAD,
    "residual": EMB + [k for i in range(3) for k in block_keys(f"blocks.{i}", False)] + HEAD,
    "layernorm": EMB + [k for i in range(3) for k in block_keys(f"blocks.{i}", True)]
    + ["blocks.3.weight", "blocks.3.bias"] + HEAD,
}


@pytest.mark.parametrize("stage", list(STAGE_KEYS))
def test_each_stage_has_the_lectures_module_names(stage):
    model = STAGES[stage].model(65)
    keys = list(model.state_dict())
    assert sorted(keys) == sorted(STAGE_KEYS[stage])
    assert all(isinstance(b, tl.Tensor) and not b.requires_grad for b in model.buffers())


# parameter counts: V = 65 characters; gpt.py prints 10.788929 M for the scale-up
PARAMETERS = {"bigram": 65 * 65, "head": 65 * 32 + 8 * 32 + 3 * 32 * 32 + 32 * 65 + 65,
              "scaleup": 10_788_929}


@pytest.mark.parametrize("stage", list(PARAMETERS))
def test_parameter_counts(stage):
    tl.manual_seed(0)
    model = STAGES[stage].model(65)
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS[stage]


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_every_stage_learns_and_generates(stage):
    torch.manual_seed(0)
    model = STAGES[stage].model(V, n_embd=16, n_head=4, n_layer=2, block_size=8, dropout=0.0)
    idx = torch.tensor(random_ids((4, 8), 4))
    targets = torch.tensor((random_ids((4, 8), 4) + 1) % V)               # a bigram rule
    opt = torch.optim.AdamW(model.parameters(), lr=5e-2 if stage == "bigram" else 1e-2)
    first = model(idx, targets)[1].item()
    for _ in range(30):
        _, loss = model(idx, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert loss.item() < first / 2
    out = model.generate(torch.zeros((2, 1), dtype=torch.long), max_new_tokens=12)
    assert out.shape == (2, 13) and out.dtype == torch.long and 0 <= out.numpy().min() and out.numpy().max() < V
    assert all(m.training for m in model.modules())


def test_a_lecture_model_trains_on_the_device(device):
    torch.manual_seed(0)
    model = STAGES["layernorm"].model(V, n_embd=8, n_head=2, n_layer=1, block_size=8).to(device)
    assert all(b.device == device for b in model.buffers())
    idx = torch.tensor(random_ids((2, 8), 4), device=device)
    targets = torch.tensor((random_ids((2, 8), 4) + 1) % V, device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = model(idx, targets)[1].item()
    for _ in range(10):
        _, loss = model(idx, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert loss.item() < first
    out = model.generate(torch.zeros((1, 1), dtype=torch.long, device=device), max_new_tokens=3)
    assert out.device == device and out.shape == (1, 4)


def test_scale_by_n_embd_is_the_commits_scaling():
    """The commits scaled the scores by n_embd**-0.5; gpt.py's later fix by head_size**-0.5."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 32, dtype=torch.float64)
    weights = []
    for by_n_embd in (False, True):
        torch.manual_seed(1)
        head = Head(32, 8, 5, scale_by_n_embd=by_n_embd).double()
        head.record_attention = True
        head(x)
        weights.append(head.attention)
    q, k = head.query(x).numpy(), head.key(x).numpy()
    scores = q @ np.swapaxes(k, -1, -2)
    for w, scale in zip(weights, (8 ** -0.5, 32 ** -0.5)):
        z = np.where(np.tril(np.ones((5, 5))) == 0, -np.inf, scores * scale)
        e = np.exp(z - z.max(-1, keepdims=True))
        np.testing.assert_allclose(w, e / e.sum(-1, keepdims=True), rtol=1e-12, atol=1e-15)


def test_stages_carry_the_commits_hyperparameters():
    assert [s for s in STAGES] == list(STAGE_NAMES)
    assert STAGES["bigram"].learning_rate == 1e-2 and STAGES["bigram"].max_iters == 3000
    assert all(STAGES[s].learning_rate == 1e-3 and STAGES[s].max_iters == 5000 and STAGES[s].block_size == 8
               for s in STAGE_NAMES[1:-1])
    up = STAGES["scaleup"]
    assert (up.batch_size, up.block_size, up.n_embd, up.n_head, up.n_layer, up.dropout, up.learning_rate) == \
        (64, 256, 384, 6, 6, 0.2, 3e-4)
    assert [STAGES[s].lecture_val_loss for s in ("head", "multihead", "feedforward", "layernorm")] == \
        [2.5, 2.28, 2.24, 2.06]
    assert math.isclose(STAGES["head"].with_(max_iters=10).max_iters, 10)


def test_unknown_stage_is_named():
    with pytest.raises(ValueError, match="stage 'attention'"):
        GPTLanguageModel(V, stage="attention")
