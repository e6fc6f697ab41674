"""The models of "Let's build GPT", stage by stage, written the way the lecture writes them.

The lecture (karpathy/ng-video-lecture) grows one model in seven commits, each with its own
hyperparameters: a bigram table; token and position embeddings with one self-attention Head;
MultiHeadAttention, a loop over heads whose outputs are concatenated; a feed-forward layer;
residual Blocks with projections; layer norms; and dropout with the scale-up. This module
writes those classes as the lecture does, on tensorlite.torch (so `k.transpose(-2, -1)`,
`F.softmax(wei, dim=-1)` and `register_buffer('tril', ...)` read exactly as there), with the
lecture's module names, so each stage's state_dict keys are the lecture's.

Unlike gpt.GPT (nanoGPT's layout: all heads in one batched matmul, nanoGPT's N(0, 0.02)
initialisation), these layers start from PyTorch's default initialisation, as the lecture's
did; tests/test_lecture.py shows both compute the same function given the same weights.

    from gpt.lecture import STAGES, GPTLanguageModel
    stage = STAGES["layernorm"]
    model = stage.model(vocab_size=65)           # 3 blocks of 4 heads, 32 wide, context 8

Shapes: B batch, T time, C n_embd, hs head size, V vocab.
"""
from dataclasses import dataclass, replace

import tensorlite.torch as torch
import tensorlite.torch.nn as nn
from tensorlite.torch.nn import functional as F

__all__ = ["Head", "MultiHeadAttention", "FeedForward", "Block", "GPTLanguageModel", "Stage", "STAGES"]


class Head(nn.Module):
    """ one head of self-attention """

    def __init__(self, n_embd, head_size, block_size, dropout=0.0, scale_by_n_embd=False):
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.register_buffer('tril', torch.tril(torch.ones(block_size, block_size)))
        self.dropout = nn.Dropout(dropout)
        # the lecture's commits scaled the scores by C**-0.5 (C = n_embd); a later fix in its
        # gpt.py scales by head_size**-0.5, as "Attention is all you need" does
        self.scale_by_n_embd = scale_by_n_embd
        self.record_attention = False   # when True, forward keeps its weights in self.attention
        self.attention = None           # (B, T, T) raw array, for pictures

    def forward(self, x):
        B, T, C = x.shape
        k = self.key(x)    # (B,T,hs)
        q = self.query(x)  # (B,T,hs)
        scale = (C if self.scale_by_n_embd else k.shape[-1]) ** -0.5
        # compute attention scores ("affinities")
        wei = q @ k.transpose(-2, -1) * scale                          # (B,T,hs) @ (B,hs,T) -> (B,T,T)
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float('-inf'))  # (B,T,T)
        wei = F.softmax(wei, dim=-1)                                    # (B,T,T)
        if self.record_attention:
            self.attention = wei.data
        wei = self.dropout(wei)
        # perform the weighted aggregation of the values
        v = self.value(x)  # (B,T,hs)
        out = wei @ v      # (B,T,T) @ (B,T,hs) -> (B,T,hs)
        return out


class MultiHeadAttention(nn.Module):
    """ multiple heads of self-attention in parallel: a loop over the heads """

    def __init__(self, num_heads, head_size, n_embd, block_size, dropout=0.0, proj=True, scale_by_n_embd=False):
        super().__init__()
        self.heads = nn.ModuleList([Head(n_embd, head_size, block_size, dropout, scale_by_n_embd)
                                    for _ in range(num_heads)])
        self.proj = nn.Linear(head_size * num_heads, n_embd) if proj else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        out = torch.cat([h(x) for h in self.heads], dim=-1)   # (B,T,num_heads*hs)
        if self.proj is not None:
            out = self.dropout(self.proj(out))
        return out


class FeedForward(nn.Module):
    """ a simple linear layer followed by a non-linearity (the lecture's FeedFoward): C -> 4C ->
    C in a Block, or one C -> C layer and ReLU (expand=False, the stage before Blocks) """

    def __init__(self, n_embd, dropout=0.0, expand=True):
        super().__init__()
        if expand:
            self.net = nn.Sequential(
                nn.Linear(n_embd, 4 * n_embd),
                nn.ReLU(),
                nn.Linear(4 * n_embd, n_embd),
                nn.Dropout(dropout),
            )
        else:
            self.net = nn.Sequential(nn.Linear(n_embd, n_embd), nn.ReLU())

    def forward(self, x):
        return self.net(x)


class Block(nn.Module):
    """ Transformer block: communication followed by computation """

    def __init__(self, n_embd, n_head, block_size, dropout=0.0, layer_norm=True, scale_by_n_embd=False):
        # n_embd: embedding dimension, n_head: the number of heads we'd like
        super().__init__()
        head_size = n_embd // n_head
        self.sa = MultiHeadAttention(n_head, head_size, n_embd, block_size, dropout, True, scale_by_n_embd)
        self.ffwd = FeedForward(n_embd, dropout)
        self.layer_norm = layer_norm
        if layer_norm:
            self.ln1 = nn.LayerNorm(n_embd)
            self.ln2 = nn.LayerNorm(n_embd)

    def forward(self, x):
        if self.layer_norm:
            x = x + self.sa(self.ln1(x))
            x = x + self.ffwd(self.ln2(x))
        else:
            x = x + self.sa(x)
            x = x + self.ffwd(x)
        return x


STAGE_NAMES = ("bigram", "head", "multihead", "feedforward", "residual", "layernorm", "scaleup")


class GPTLanguageModel(nn.Module):
    """The lecture's model at one of its stages (STAGE_NAMES), with that commit's module names:

    bigram       token_embedding_table (V, V)
    head         + position_embedding_table, sa_head = Head(C), lm_head
    multihead    sa_heads = MultiHeadAttention(4, C // 4), no projection
    feedforward  + ffwd = FeedForward(C, expand=False)
    residual     blocks = n_layer Blocks (projections, 4C feed-forward, residuals)
    layernorm    Blocks with ln1, ln2, and a final LayerNorm inside blocks
    scaleup      n_layer Blocks, ln_f, dropout (the lecture preset: 6 x 384, context 256)
    """

    def __init__(self, vocab_size, stage="scaleup", n_embd=32, n_head=4, n_layer=3, block_size=8,
                 dropout=0.0, scale_by_n_embd=False):
        super().__init__()
        if stage not in STAGE_NAMES:
            raise ValueError(f"unknown stage {stage!r}: expected one of {', '.join(STAGE_NAMES)}")
        if stage != "bigram" and n_embd % n_head:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        self.stage, self.block_size = stage, block_size
        args = dict(block_size=block_size, dropout=dropout, scale_by_n_embd=scale_by_n_embd)
        if stage == "bigram":
            # each token directly reads off the logits for the next token from a lookup table
            self.token_embedding_table = nn.Embedding(vocab_size, vocab_size)
            return
        self.token_embedding_table = nn.Embedding(vocab_size, n_embd)
        self.position_embedding_table = nn.Embedding(block_size, n_embd)
        if stage == "head":
            self.sa_head = Head(n_embd, n_embd, block_size, dropout, scale_by_n_embd)
        elif stage in ("multihead", "feedforward"):
            self.sa_heads = MultiHeadAttention(4, n_embd // 4, n_embd, proj=False, **args)  # 4 heads of C/4
            if stage == "feedforward":
                self.ffwd = FeedForward(n_embd, expand=False)
        else:
            blocks = [Block(n_embd, n_head, layer_norm=stage != "residual", **args) for _ in range(n_layer)]
            if stage == "layernorm":
                blocks.append(nn.LayerNorm(n_embd))
            self.blocks = nn.Sequential(*blocks)
            if stage == "scaleup":
                self.ln_f = nn.LayerNorm(n_embd)  # final layer norm
        self.lm_head = nn.Linear(n_embd, vocab_size)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        # idx and targets are both (B,T) tensor of integers
        tok_emb = self.token_embedding_table(idx)  # (B,T,C)
        if self.stage == "bigram":
            logits = tok_emb                       # (B,T,V)
        else:
            pos_emb = self.position_embedding_table(torch.arange(T, device=idx.device))  # (T,C)
            x = tok_emb + pos_emb  # (B,T,C)
            if self.stage == "head":
                x = self.sa_head(x)
            elif self.stage in ("multihead", "feedforward"):
                x = self.sa_heads(x)
                if self.stage == "feedforward":
                    x = self.ffwd(x)
            else:
                x = self.blocks(x)
                if self.stage == "scaleup":
                    x = self.ln_f(x)
            logits = self.lm_head(x)  # (B,T,V)

        if targets is None:
            loss = None
        else:
            B, T, C = logits.shape
            logits = logits.view(B * T, C)
            targets = targets.view(B * T)
            loss = F.cross_entropy(logits, targets)
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens):
        """idx (B, T) -> (B, T + max_new_tokens), sampling each next token from the softmax."""
        for _ in range(max_new_tokens):
            # crop idx to the last block_size tokens (the bigram has no positions to run out of)
            idx_cond = idx if self.stage == "bigram" else idx[:, -self.block_size:]
            logits, loss = self(idx_cond)
            logits = logits[:, -1, :]                           # (B, V)
            probs = F.softmax(logits, dim=-1)                   # (B, V)
            idx_next = torch.multinomial(probs, num_samples=1)  # (B, 1)
            idx = torch.cat((idx, idx_next), dim=1)             # (B, T+1)
        return idx


@dataclass(frozen=True)
class Stage:
    """One commit of the lecture: its model and training hyperparameters, and the validation
    loss its commit message (or its own run) reports."""
    name: str
    commit: str                # karpathy/ng-video-lecture
    title: str
    batch_size: int
    block_size: int
    max_iters: int
    eval_interval: int
    learning_rate: float
    eval_iters: int = 200
    n_embd: int = 32
    n_head: int = 4
    n_layer: int = 3
    dropout: float = 0.0
    scale_by_n_embd: bool = True   # the commits scaled scores by n_embd**-0.5 (fixed later)
    lecture_val_loss: float = None
    lecture_source: str = ""
    lecture_note: str = ""         # printed under the ladder's table: where a figure needs a word

    def model(self, vocab_size, **overrides):
        """This stage's GPTLanguageModel, with PyTorch's default initialisation."""
        args = dict(stage=self.name, n_embd=self.n_embd, n_head=self.n_head, n_layer=self.n_layer,
                    block_size=self.block_size, dropout=self.dropout, scale_by_n_embd=self.scale_by_n_embd)
        return GPTLanguageModel(vocab_size, **{**args, **overrides})

    def with_(self, **changes):
        """A copy with some fields changed (fewer iterations for a quick run, ...)."""
        return replace(self, **changes)


_SMALL = dict(batch_size=32, block_size=8, max_iters=5000, eval_interval=500, learning_rate=1e-3)

STAGES = {s.name: s for s in [
    # No commit message gives the bigram's loss, so its figure is the lecture's own bigram.py (at
    # 83f7d22, unchanged) run in PyTorch 2.13 on this project's CPU: the val loss of its last
    # evaluation (step 2700 of 3000). From the README, "The lecture's own code, on tensorlite": the
    # ladder table's column "the lecture's file, PyTorch 2.13 here".
    Stage("bigram", "83f7d22", "bigram table", batch_size=32, block_size=8, max_iters=3000,
          eval_interval=300, learning_rate=1e-2, lecture_val_loss=2.4911,
          lecture_source="its bigram.py run in PyTorch 2.13 on the CPU: the last val loss (README)",
          lecture_note="no commit message gives it: the lecture's bigram.py run in PyTorch 2.13 on the "
                       "CPU, its last val loss (step 2700); README, \"The lecture's ladder\""),
    # The commit message rounds: the same commit's v2.py, run in PyTorch, ends at 2.4084 (README).
    Stage("head", "10024b1", "positional embeddings + one self-attention head", **_SMALL,
          lecture_val_loss=2.5, lecture_source='commit message "reach 2.5 val loss"',
          lecture_note="the commit message's \"reach 2.5 val loss\"; its own code (v2.py at 10024b1, "
                       "run in PyTorch) ends at about 2.41; README, \"The lecture's ladder\""),
    Stage("multihead", "a6e0bee", "multi-head attention (4 heads of 8)", **_SMALL,
          lecture_val_loss=2.28, lecture_source='commit message "down to 2.28 now"'),
    Stage("feedforward", "97dd3f9", "feed-forward layer", **_SMALL,
          lecture_val_loss=2.24, lecture_source='commit message "down to 2.24"'),
    Stage("residual", "5c3a2d2", "3 residual blocks with projections", **_SMALL,
          lecture_source="no figure in its commit message"),
    Stage("layernorm", "0016836", "layer norms", **_SMALL,
          lecture_val_loss=2.06, lecture_source='commit message "down to 2.06"'),
    Stage("scaleup", "482b15d", "dropout and the scale-up (6 x 384, context 256)", batch_size=64,
          block_size=256, max_iters=5000, eval_interval=500, learning_rate=3e-4, n_embd=384,
          n_head=6, n_layer=6, dropout=0.2, lecture_val_loss=1.48,
          lecture_source="the lecture's video; no commit message carries it"),
]}
"""The lecture's seven stages by name, in order: each commit's model and hyperparameters."""
