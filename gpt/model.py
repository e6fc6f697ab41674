"""The GPT of "Let's build GPT", laid out as nanoGPT's model.py so weights move between them.

Shapes: B batch, T time (<= block_size), C n_embd, nh n_head, hs head size C // nh, V vocab.
"""
import math

import numpy as np

import tensorlite as tl
import tensorlite.functional as F
from tensorlite import backend, nn

from .config import GPTConfig


class CausalSelfAttention(nn.Module):
    """All heads at once: q, k, v are (B, nh, T, hs) and the scores one batched matmul."""

    def __init__(self, config):
        C = config.n_embd
        self.n_head = config.n_head
        self.c_attn = nn.Linear(C, 3 * C, bias=config.bias)   # q, k, v stacked: (3C, C)
        self.c_proj = nn.Linear(C, C, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.fused_softmax = config.fused_softmax
        self.record_attention = False  # when True, forward keeps its weights in self.attention
        self.attention = None           # (B, nh, T, T) raw array, for pictures of attention
        # future positions, True above the diagonal (the lecture's `tril == 0`); not a parameter
        self.future = np.triu(np.ones((config.block_size, config.block_size), dtype=bool), k=1)

    def forward(self, x, cache=None):
        B, T, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(3, axis=2)               # 3 x (B, T, C)
        q = q.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)       # (B, nh, T, hs)
        k = k.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)
        v = v.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)
        if cache is not None and cache.length(self) > 0:
            # generation, one new token: attend to the kept keys and values, nothing to mask
            k, v = cache.append(self, k, v)                     # (B, nh, t + 1, hs)
            att = F.softmax((q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(hs)), axis=-1)  # (B, nh, 1, t + 1)
        else:
            if cache is not None:
                cache.append(self, k, v)                        # keep the prompt's keys and values
            att = q @ k.transpose(0, 1, 3, 2)                   # (B, nh, T, T)
            if self.fused_softmax:  # the three lines below as one op, in one pass
                att = F.causal_softmax(att, scale=1.0 / math.sqrt(hs))
            else:                   # the lecture's: scale, hide the future, softmax
                att = att * (1.0 / math.sqrt(hs))
                att = att.masked_fill(backend.to_device(self.future[:T, :T], x.device), float("-inf"))
                att = F.softmax(att, axis=-1)
        if self.record_attention:
            self.attention = att.data
        att = self.attn_dropout(att)
        y = att @ v                                             # (B, nh, T, hs)
        y = y.transpose(0, 2, 1, 3).reshape(B, T, C)            # heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config):
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.act = nn.GELU() if config.activation == "gelu" else nn.ReLU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))  # (B, T, 4C) inside


class Block(nn.Module):
    """Pre-LayerNorm: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config):
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)
        x = x + self.mlp(self.ln_2(x))
        return x


class LanguageModel(nn.Module):
    """What GPT and the bigram baseline share: the input checks, the device, and sampling."""
    block_size = None  # None: any context length

    @property
    def device(self):
        _, first = next(self._named_parameters_all())  # stops at the first: this runs every forward
        return first.device

    def _ids(self, idx, what="idx", check_length=True):
        data = backend.to_device(idx.data if isinstance(idx, tl.Tensor) else idx, self.device)
        if data.dtype.kind not in "iu":
            raise TypeError(f"{what} must hold integer token ids, got dtype {data.dtype}")
        if data.ndim != 2:
            raise ValueError(f"{what} must be (B, T), got shape {tuple(data.shape)}")
        if check_length and self.block_size is not None and data.shape[1] > self.block_size:
            raise ValueError(f"{what} has {data.shape[1]} positions but block_size is {self.block_size}; "
                             "crop the context to the last block_size tokens")
        return data

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, seed=None, use_cache=True):
        """Append max_new_tokens sampled tokens to idx (B, T0) and return (B, T0 + n).

        Runs in eval mode under no_grad, cropping the context to block_size. Sampling draws
        from numpy.random.default_rng(seed), or tensorlite's generator (tl.manual_seed) when
        seed is None, so the same seed gives the same text, with or without the KV cache.
        """
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if top_k is not None and top_k <= 0:
            raise ValueError(f"top_k must be a positive integer, got {top_k}")
        gen = np.random.default_rng(seed) if seed is not None else backend.rng("cpu")
        ids = backend.as_numpy(self._ids(np.asarray(idx) if isinstance(idx, list) else idx, check_length=False))
        cache = self.new_cache() if use_cache else None
        was_training = self.training
        self.eval()
        try:
            with tl.no_grad():
                for _ in range(max_new_tokens):
                    context = ids if self.block_size is None else ids[:, -self.block_size:]
                    logits = self.next_logits(context, cache)   # (B, V) float64 numpy
                    next_ids = sample(logits, temperature, top_k, gen)
                    ids = np.concatenate([ids, next_ids[:, None]], axis=1)
        finally:
            self.train(was_training)
        return tl.Tensor(ids) if isinstance(idx, tl.Tensor) else ids

    def new_cache(self):
        return None  # models without attention have nothing to keep

    def next_logits(self, context, cache=None):
        logits, _ = self(context)
        return backend.as_numpy(logits.data[:, -1, :]).astype(np.float64)


class KVCache:
    """Each attention layer's keys and values of the positions seen so far, (B, nh, t, hs),
    in buffers of block_size positions, so a new token costs O(t) work instead of a whole
    forward pass over the context.

    The cache holds one window: when the context is cropped to its last block_size tokens,
    every position's embedding changes, so the window is computed afresh (exactly as
    without the cache).
    """

    def __init__(self, block_size):
        self.block_size = block_size
        self.reset()

    def reset(self):
        self.keys, self.values, self.used = {}, {}, {}
        self.tokens = None     # the ids whose keys and values are kept, (B, t)

    def length(self, layer):
        return self.used.get(id(layer), 0)

    def append(self, layer, k, v):
        """Store k, v (B, nh, t, hs) after the kept positions; return all kept, as Tensors."""
        key, t = id(layer), k.shape[2]
        if key not in self.keys:
            xp = k.xp
            B, nh, _, hs = k.shape
            self.keys[key] = xp.empty((B, nh, self.block_size, hs), dtype=k.dtype)
            self.values[key] = xp.empty((B, nh, self.block_size, hs), dtype=v.dtype)
            self.used[key] = 0
        n = self.used[key]
        self.keys[key][:, :, n:n + t] = k.data
        self.values[key][:, :, n:n + t] = v.data
        self.used[key] = n + t
        return tl.Tensor(self.keys[key][:, :, :n + t]), tl.Tensor(self.values[key][:, :, :n + t])


def sample(logits, temperature, top_k, gen):
    """One token per row of logits (B, V): softmax(logits / temperature), top-k optional."""
    logits = logits / temperature
    if top_k is not None:
        kth = np.sort(logits, axis=-1)[:, -min(top_k, logits.shape[-1])][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    cdf = np.cumsum(p, axis=-1)
    u = gen.random((logits.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((cdf < u).sum(axis=-1), logits.shape[-1] - 1)   # inverse-CDF draw


class GPT(LanguageModel):
    def __init__(self, config: GPTConfig):
        self.config = config
        self.block_size = config.block_size
        self.transformer = nn.ModuleDict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight
        self._init_weights()
        for name, p in self.named_parameters():
            p.name = name  # shown in graphs (tensorlite.viz) and error messages

    def _init_weights(self):
        """nanoGPT's init: N(0, 0.02) for matrices and tables, zero biases, and the residual
        projections scaled by 1/sqrt(2 n_layer)."""
        gen = backend.rng("cpu")
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                p.data[...] = 0
            elif p.ndim == 2:
                std = 0.02 / math.sqrt(2 * self.config.n_layer) if name.endswith("c_proj.weight") else 0.02
                p.data[...] = gen.standard_normal(p.shape) * std

    def forward(self, idx, targets=None, cache=None):
        """idx (B, T) int -> logits (B, T, V), and the mean cross-entropy if targets are given.

        With a KVCache (generation), idx holds the positions after those already cached.
        """
        idx = self._ids(idx)
        B, T = idx.shape
        start = 0 if cache is None else cache.length(self.transformer.h[0].attn)
        if start + T > self.block_size:
            raise ValueError(f"{start + T} positions exceed block_size {self.block_size}")
        tok_emb = self.transformer.wte(idx)                     # (B, T, C)
        pos_emb = self.transformer.wpe.weight[start:start + T]  # (T, C), broadcast over B
        x = self.transformer.drop(tok_emb + pos_emb)
        for block in self.transformer.h:
            x = block(x, cache)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)                                # (B, T, V)
        loss = None if targets is None else F.cross_entropy(logits, self._ids(targets, "targets"))
        return logits, loss

    def new_cache(self):
        return KVCache(self.block_size)

    def next_logits(self, context, cache=None):
        """Logits of the token after context (B, t), (B, V): with a cache, only the new
        position is computed while the window still starts at the same token."""
        if cache is None:
            return super().next_logits(context)
        kept = cache.tokens
        if kept is not None and kept.shape[1] == context.shape[1] - 1 and np.array_equal(kept, context[:, :-1]):
            x = context[:, -1:]                                 # only the new token
        elif context.shape[1] == self.block_size:
            # a full window that moved: every position changed, nothing to reuse now or later
            cache.reset()
            return super().next_logits(context)
        else:
            cache.reset()                                       # a new window: compute it whole
            x = context
        cache.tokens = context
        logits, _ = self(x, cache=cache)
        return backend.as_numpy(logits.data[:, -1, :]).astype(np.float64)

    def configure_optimizer(self, learning_rate, weight_decay, betas=(0.9, 0.999)):
        """AdamW with weight decay on matrices only (not biases, LayerNorm weights), as nanoGPT."""
        params = self.parameters()
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return tl.optim.AdamW(groups, lr=learning_rate, betas=betas)


class BigramLanguageModel(LanguageModel):
    """The lecture's baseline: each token reads the logits of the next from a (V, V) table."""

    def __init__(self, vocab_size):
        self.token_embedding_table = nn.Embedding(vocab_size, vocab_size)

    def forward(self, idx, targets=None):
        logits = self.token_embedding_table(self._ids(idx))     # (B, T, V)
        loss = None if targets is None else F.cross_entropy(logits, self._ids(targets, "targets"))
        return logits, loss
