"""nanoGPT's model.py in PyTorch eager: the reference that bench_train.py races tensorlite against.

Shape legend: B batch, T time, C channels (n_embd), V vocab, nh heads, hs head size (C // nh).

Same architecture and the same state_dict keys as nanoGPT (transformer.wte.weight, ...,
transformer.h.{i}.attn.c_attn.weight, ..., lm_head.weight), so weights can be copied across by name.
Differences from nanoGPT, on purpose:
  - GELU is the tanh approximation (GPT-2's), nn.GELU(approximate="tanh").
  - The causal mask is a non-persistent buffer, so it is not in the state_dict (nanoGPT's
    from_pretrained drops its ".attn.bias" keys for the same reason).
  - tie_weights defaults to False (nanoGPT always ties wte and lm_head).
  - forward always returns logits for every position, (B, T, V), with or without targets.
  - attention is the explicit math by default; flash=True uses F.scaled_dot_product_attention.
Imported only when torch is installed.
"""
import math

import torch
from torch import nn
from torch.nn import functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, block_size, n_head, n_embd, dropout, bias, flash):
        super().__init__()
        assert n_embd % n_head == 0, f"n_embd={n_embd} is not divisible by n_head={n_head}"
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)  # q, k, v for all heads, in that order
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)
        self.n_head, self.dropout, self.flash = n_head, dropout, flash
        mask = torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size)
        self.register_buffer("bias", mask, persistent=False)  # nanoGPT's name for the causal mask

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)                           # 3 x (B,T,C)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)                 # (B,nh,T,hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)                 # (B,nh,T,hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)                 # (B,nh,T,hs)
        if self.flash:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=True,
                                               dropout_p=self.dropout if self.training else 0.0)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))        # (B,nh,T,T)
            att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
            att = F.softmax(att, dim=-1)
            att = self.attn_dropout(att)
            y = att @ v                                                    # (B,nh,T,hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)                   # (B,T,C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, n_embd, dropout, bias):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B,T,4C) inside, (B,T,C) out


class Block(nn.Module):
    def __init__(self, block_size, n_head, n_embd, dropout, bias, flash):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(block_size, n_head, n_embd, dropout, bias, flash)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))  # pre-LayerNorm residual blocks
        x = x + self.mlp(self.ln_2(x))
        return x


class TorchGPT(nn.Module):
    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd, dropout=0.0, bias=True,
                 tie_weights=False, flash=False):
        super().__init__()
        self.block_size = block_size
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd),
            wpe=nn.Embedding(block_size, n_embd),
            drop=nn.Dropout(dropout),
            h=nn.ModuleList([Block(block_size, n_head, n_embd, dropout, bias, flash)
                             for _ in range(n_layer)]),
            ln_f=nn.LayerNorm(n_embd, bias=bias),
        ))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        if tie_weights:
            self.transformer.wte.weight = self.lm_head.weight
        # nanoGPT's init: N(0, 0.02) everywhere, residual projections scaled by 1/sqrt(2 * n_layer)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        T = idx.size(1)
        assert T <= self.block_size, f"sequence of length {T} is longer than block_size={self.block_size}"
        pos = torch.arange(T, dtype=torch.long, device=idx.device)         # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B,T,C)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)                                           # (B,T,V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        """Sample max_new_tokens ids after idx (B, T0); returns (B, T0 + max_new_tokens)."""
        for _ in range(max_new_tokens):
            idx_cond = idx[:, -self.block_size:]                           # crop to the context
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :] / temperature                        # (B,V)
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
            probs = F.softmax(logits, dim=-1)
            idx_next = torch.multinomial(probs, num_samples=1)             # (B,1)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx
