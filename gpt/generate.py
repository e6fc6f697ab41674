"""Sampling text from a trained model, and the KV cache that makes each new token cheap.

    ids = model.generate(idx, max_new_tokens, temperature=0.8, top_k=200, seed=0)

model.generate (gpt/model.py) runs generate() below. Each step asks the model for the
logits of the token after the context and draws one token per row on the host. With a
GPT, the KVCache keeps every attention layer's keys and values of the tokens seen so far,
so a new token costs one position's work instead of a forward pass over the whole context;
the samples are the same with or without it.
"""
import numpy as np

import tensorlite as tl
from tensorlite import backend


def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, seed=None, use_cache=True):
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
    ids = backend.as_numpy(model._ids(np.asarray(idx) if isinstance(idx, list) else idx, check_length=False))
    cache = model.new_cache() if use_cache else None
    was_training = model.training
    model.eval()
    try:
        with tl.no_grad():
            for _ in range(max_new_tokens):
                context = ids if model.block_size is None else ids[:, -model.block_size:]
                logits = model.next_logits(context, cache)     # (B, V) float64, on the host
                next_ids = sample(logits, temperature, top_k, gen)
                ids = np.concatenate([ids, next_ids[:, None]], axis=1)
    finally:
        model.train(was_training)
    return tl.Tensor(ids) if isinstance(idx, tl.Tensor) else ids


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


def last_logits(model, context, cache=None):
    """The logits after the last position of context (B, t): (B, V) float64 on the host."""
    logits, _ = model(context) if cache is None else model(context, cache=cache)
    return backend.as_numpy(logits.data[:, -1, :]).astype(np.float64)


def next_logits_cached(model, context, cache):
    """GPT's next_logits with a KVCache: only the new position is computed while the window
    still starts at the same token; a window that moved is computed afresh."""
    kept = cache.tokens
    if kept is not None and kept.shape[1] == context.shape[1] - 1 and np.array_equal(kept, context[:, :-1]):
        x = context[:, -1:]                                 # only the new token
    elif context.shape[1] == model.block_size:
        # a full window that moved: every position changed, nothing to reuse now or later
        cache.reset()
        return last_logits(model, context)
    else:
        cache.reset()                                       # a new window: compute it whole
        x = context
    cache.tokens = context
    return last_logits(model, x, cache)


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
