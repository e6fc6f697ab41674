"""The GPT of "Let's build GPT", laid out as nanoGPT's model.py so weights move between them.

Shapes: B batch, T time (<= block_size), C n_embd, nh n_head, hs head size C // nh, V vocab.
Sampling and the KV cache live in gpt/generate.py.
"""
import math

import tensorlite as tl
import tensorlite.functional as F
from tensorlite import backend, nn

from .config import GPTConfig
from .generate import KVCache, generate, last_logits, next_logits_cached, sample  # noqa: F401


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
        self.block_size = config.block_size
        self.future = {}  # device -> (block_size, block_size) bool, True above the diagonal

    def future_mask(self, T, device):
        """The future positions (the lecture's `tril == 0`), made once per device, not per step."""
        if device not in self.future:
            xp = backend.xp_for(device)
            self.future[device] = xp.triu(xp.ones((self.block_size, self.block_size), dtype=bool), k=1)
        return self.future[device][:T, :T]

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
                att = att.masked_fill(self.future_mask(T, x.device), float("-inf"))
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
        """Append max_new_tokens sampled tokens to idx (B, T0) and return (B, T0 + n):
        gpt.generate.generate, with the KV cache where the model has one."""
        return generate(self, idx, max_new_tokens, temperature, top_k, seed, use_cache)

    def new_cache(self):
        return None  # models without attention have nothing to keep

    def next_logits(self, context, cache=None):
        """The logits of the token after context (B, t): (B, V) float64 on the host."""
        return last_logits(self, context)


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
        """The logits of the token after context (B, t), (B, V): with a cache, only the new
        position is computed while the window still starts at the same token."""
        return last_logits(self, context) if cache is None else next_logits_cached(self, context, cache)

    def configure_optimizer(self, learning_rate, weight_decay, betas=(0.9, 0.999)):
        """AdamW with weight decay on matrices only (not biases, LayerNorm weights), as nanoGPT."""
        params = list(self.parameters())
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
