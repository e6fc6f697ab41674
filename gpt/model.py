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
        self.record_attention = False  # when True, forward keeps its weights in self.attention
        self.attention = None           # (B, nh, T, T) raw array, for pictures of attention

    def forward(self, x):
        B, T, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(3, axis=2)               # 3 x (B, T, C)
        q = q.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)       # (B, nh, T, hs)
        k = k.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)
        v = v.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)
        # softmax(masked_fill(q k^T / sqrt(hs), future, -inf)) as one fused op
        att = F.causal_softmax(q @ k.transpose(0, 1, 3, 2), scale=1.0 / math.sqrt(hs))  # (B, nh, T, T)
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

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class LanguageModel(nn.Module):
    """What GPT and the bigram baseline share: the input checks, the device, and sampling."""
    block_size = None  # None: any context length

    @property
    def device(self):
        return self.parameters()[0].device

    def _ids(self, idx, what="idx"):
        data = idx.data if isinstance(idx, tl.Tensor) else idx
        data = backend.to_device(data, self.device) if backend.device_of(data) != self.device else data
        xp = backend.get_array_module(data)
        data = xp.asarray(data)
        if data.dtype.kind not in "iu":
            raise TypeError(f"{what} must hold integer token ids, got dtype {data.dtype}")
        if data.ndim != 2:
            raise ValueError(f"{what} must be (B, T), got shape {tuple(data.shape)}")
        if self.block_size is not None and data.shape[1] > self.block_size:
            raise ValueError(f"{what} has {data.shape[1]} positions but block_size is {self.block_size}; "
                             "crop the context to the last block_size tokens")
        return data

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, seed=None):
        """Append max_new_tokens sampled tokens to idx (B, T0) and return (B, T0 + n).

        Runs in eval mode under no_grad, cropping the context to block_size. Sampling draws
        from numpy.random.default_rng(seed), or tensorlite's generator (tl.manual_seed) when
        seed is None, so the same seed gives the same text.
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if top_k is not None and top_k <= 0:
            raise ValueError(f"top_k must be a positive integer, got {top_k}")
        gen = np.random.default_rng(seed) if seed is not None else backend.rng("cpu")
        ids = backend.as_numpy(self._ids(idx) if not isinstance(idx, list) else np.asarray(idx))
        was_training = self.training
        self.eval()
        try:
            with tl.no_grad():
                for _ in range(max_new_tokens):
                    context = ids if self.block_size is None else ids[:, -self.block_size:]
                    logits = self.next_logits(context)          # (B, V) float64 numpy
                    next_ids = sample(logits, temperature, top_k, gen)
                    ids = np.concatenate([ids, next_ids[:, None]], axis=1)
        finally:
            self.train(was_training)
        return tl.Tensor(ids) if isinstance(idx, tl.Tensor) else ids

    def next_logits(self, context):
        logits, _ = self(context)
        return backend.as_numpy(logits.data[:, -1, :]).astype(np.float64)


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

    def forward(self, idx, targets=None):
        """idx (B, T) int -> logits (B, T, V), and the mean cross-entropy if targets are given."""
        idx = self._ids(idx)
        B, T = idx.shape
        tok_emb = self.transformer.wte(idx)                     # (B, T, C)
        pos_emb = self.transformer.wpe.weight[:T]               # (T, C), broadcast over B
        x = self.transformer.drop(tok_emb + pos_emb)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)                                # (B, T, V)
        loss = None if targets is None else F.cross_entropy(logits, self._ids(targets, "targets"))
        return logits, loss

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
