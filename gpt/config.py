"""The model's and the training run's settings, and the two presets.

Every field here becomes a command-line flag of examples/train_shakespeare.py
(`n_layer` -> `--n-layer`), generated from these dataclasses.
"""
import math
from dataclasses import dataclass, fields


@dataclass
class GPTConfig:
    vocab_size: int = 65      # V: characters in Tiny Shakespeare
    block_size: int = 256     # T: the longest context the model sees
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384         # C
    dropout: float = 0.2
    bias: bool = True         # biases in Linear and LayerNorm layers
    activation: str = "gelu"  # "gelu" (GPT-2) or "relu" (the lecture)
    tie_weights: bool = False  # share wte and lm_head, as GPT-2
    fused_softmax: bool = True  # attention's scale, causal mask and softmax as one op (same numbers)

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.activation not in ("gelu", "relu"):
            raise ValueError(f"GPTConfig.activation must be 'gelu' or 'relu', got {self.activation!r}")


@dataclass
class TrainConfig:
    batch_size: int = 64
    max_iters: int = 5000
    eval_interval: int = 500
    eval_iters: int = 200
    learning_rate: float = 3e-4
    min_lr: float = 3e-5        # the floor of the cosine schedule
    warmup_iters: int = 0
    lr_decay: bool = False      # warmup + cosine decay to min_lr at lr_decay_iters
    lr_decay_iters: int = 0     # where the cosine reaches min_lr (0: max_iters)
    weight_decay: float = 0.01  # applied to matrices only (2-D weights), as nanoGPT
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 0.0      # clip the global gradient norm to this (0: off)
    seed: int = 1337
    sample_chars: int = 500     # the sample printed at the end
    checkpoint_interval: int = 0  # also checkpoint every this many steps (0: at evaluations only)
    debug_nan: bool = False     # on a non-finite loss, name the first op that produced it
    tf32: bool = True           # False: no TF32 matmuls on cuda for this run (True: the backend's setting)

    def __post_init__(self):
        for name in ("batch_size", "max_iters", "eval_interval", "eval_iters"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {value!r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"TrainConfig.learning_rate must be a positive number, got {self.learning_rate}")
        for name in ("warmup_iters", "lr_decay_iters", "checkpoint_interval", "sample_chars",
                     "min_lr", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {value}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be in [0, 1), got {getattr(self, name)}")


# The lecture's final model and hyperparameters ("Let's build GPT", gpt.py), and nanoGPT's
# CPU run of the same task (README: 4 layers, 128 wide, context 64, batch 12, 2000 iters,
# with config/train_shakespeare_char.py's optimizer settings).
PRESETS = {
    "lecture": dict(
        model=dict(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2),
        train=dict(batch_size=64, max_iters=5000, eval_interval=500, eval_iters=200,
                   learning_rate=3e-4),
    ),
    "cpu": dict(
        model=dict(block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0),
        train=dict(batch_size=12, max_iters=2000, eval_interval=250, eval_iters=20,
                   learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, lr_decay=True,
                   weight_decay=0.1, beta2=0.99, grad_clip=1.0),
    ),
}


def preset(name, **overrides):
    """(GPTConfig, TrainConfig) for a preset, with any field overridden by keyword."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {sorted(PRESETS)}")
    model_names = {f.name for f in fields(GPTConfig)}
    train_names = {f.name for f in fields(TrainConfig)}
    unknown = set(overrides) - model_names - train_names
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    p = PRESETS[name]
    model = {**p["model"], **{k: v for k, v in overrides.items() if k in model_names}}
    train = {**p["train"], **{k: v for k, v in overrides.items() if k in train_names}}
    return GPTConfig(**model), TrainConfig(**train)


def parameter_count(model_config):
    """The GPT's number of parameters: wte, wpe, L blocks, ln_f and lm_head (nanoGPT's layout)."""
    V, T, C, L = model_config.vocab_size, model_config.block_size, model_config.n_embd, model_config.n_layer
    b = 1 if model_config.bias else 0
    per_block = (2 * (C + b * C)                    # ln_1, ln_2
                 + 3 * C * C + b * 3 * C            # c_attn: q, k, v stacked
                 + C * C + b * C                    # attention's c_proj
                 + 4 * C * C + b * 4 * C            # mlp.c_fc
                 + 4 * C * C + b * C)               # mlp.c_proj
    head = 0 if model_config.tie_weights else V * C   # lm_head has no bias, as nanoGPT
    return V * C + T * C + L * per_block + (C + b * C) + head


def memory_estimate(model_config, batch_size, bytes_per_value=4):
    """A lower bound on the bytes one training step needs, by part, for a float32 GPT:

        state        = 4 P values: the weights, their gradients and AdamW's two moments
        activations  = L (16 B T C + B nh T T) + 2 B T V values kept for backward: per block
                       the LayerNorms, q/k/v, the MLP's (B, T, 4C) twice, and one (B, nh, T, T)
                       attention matrix; the logits and their gradient
        mask         = T T bytes: the causal mask each attention layer keeps

    Measured peaks on the CPU are 1.1-1.5 times this (temporaries, dropout masks), so a run this
    estimate says does not fit certainly does not.
    """
    B, T, C = batch_size, model_config.block_size, model_config.n_embd
    L, nh, V = model_config.n_layer, model_config.n_head, model_config.vocab_size
    return {
        "activations": bytes_per_value * (L * (16 * B * T * C + B * nh * T * T) + 2 * B * T * V),
        "parameters, gradients and AdamW state": bytes_per_value * 4 * parameter_count(model_config),
        "attention mask": L * T * T,
    }
