"""Writes tests/reference/torch_gpt_float64.npz: PyTorch's logits, loss and gradients for tiny
GPTs with fixed float64 weights, so the suite compares against PyTorch even where PyTorch is not
installed (as in CI). Run it again after changing the cases:

    pip install torch && python tests/reference/make_torch_reference.py
"""
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parents[1])]

from test_model import random_ids, randomize, tiny_gpt, torch_functional_gpt  # noqa: E402

CASES = {"default": dict(), "nobias-relu-tied": dict(bias=False, activation="relu", tie_weights=True)}


def main():
    arrays = {}
    for name, overrides in CASES.items():
        model = randomize(tiny_gpt(vocab_size=13, n_embd=16, n_head=4, **overrides).to(dtype="float64"))
        config = model.config
        idx, targets = random_ids((3, 7), 13, seed=1), random_ids((3, 7), 13, seed=2)
        state = model.state_dict()
        weights = {k: torch.tensor(v, requires_grad=True) for k, v in state.items()}
        if config.tie_weights:
            weights["lm_head.weight"] = weights["transformer.wte.weight"]
        logits, loss = torch_functional_gpt(torch, weights, config, torch.from_numpy(idx), torch.from_numpy(targets))
        loss.backward()
        arrays[f"{name}/config"] = np.array(repr(asdict(config)))
        arrays[f"{name}/idx"], arrays[f"{name}/targets"] = idx, targets
        arrays[f"{name}/logits"], arrays[f"{name}/loss"] = logits.detach().numpy(), loss.detach().numpy()
        for k in state:
            arrays[f"{name}/weight/{k}"] = state[k]
            arrays[f"{name}/grad/{k}"] = weights[k].grad.numpy()
    out = HERE / "torch_gpt_float64.npz"
    np.savez_compressed(out, torch_version=np.array(torch.__version__), **arrays)
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB) with torch {torch.__version__}")


if __name__ == "__main__":
    main()
