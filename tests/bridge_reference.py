"""A fixed small bridge run whose numbers must not move when the default recipe is kept.

`reference_run()` uses only the API the bridge had before recipes were spec options (Denoiser, TrainConfig,
train_denoiser, x0_mse, ddim_sample with their old arguments), so the same function measures the code of
any revision. tests/golden/bridge_default_recipe.json holds what it returned on main at 6c01a4a, the last
revision without recipe options; regenerate it (on the revision you mean to compare against, not on a
changed one) with `python -m tests.bridge_reference > tests/golden/bridge_default_recipe.json`.
"""

from __future__ import annotations

import hashlib
import json

import torch

T, D = 6, 8


def _data(n: int = 128, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(2, T * D, generator=g)
    x = (torch.randn(n, 2, generator=g) @ basis).reshape(n, T, D)
    return ((x - x.mean((0, 1))) / x.std((0, 1))).float()


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        h.update(key.encode())
        h.update(tensors[key].detach().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def reference_run(objective: str = "x0") -> dict:
    """Train 24 steps on one thread, then measure the validation x0-MSE and draw DDIM samples."""
    from dihal.bridge.denoiser import Denoiser
    from dihal.bridge.diffusion import ddim_sample, x0_mse
    from dihal.bridge.train import TrainConfig, prefix_mask, train_denoiser

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = _data()
        net = Denoiser(D, d_model=32, depth=2, heads=4, max_len=T, seed=5)
        n_params = sum(p.numel() for p in net.parameters())
        cfg = TrainConfig(steps=24, batch_size=16, lr=3e-3, warmup=4, seed=3, objective=objective, prefix=1)
        result = train_denoiser(net, data, cfg, progress=False, log_every=4)
        g = torch.Generator().manual_seed(7)
        val = _data(32, seed=1)
        mask = prefix_mask(32, T, 1)
        t, noise = torch.rand(32, generator=g), torch.randn(32, T, D, generator=g)
        val_mse = float(x0_mse(net, val, mask, t, noise, objective))
        samples = ddim_sample(
            net,
            clamp_values=val[:4],
            clamp_mask=mask[:4],
            steps=8,
            objective=objective,
            generator=torch.Generator().manual_seed(11),
        )
        return {
            "n_params": n_params,
            "state_keys": sorted(net.state_dict()),
            "curve": [[row["step"], row["loss"], row["grad_norm"]] for row in result.curve],
            "weights_sha256": _digest(net.state_dict()),
            "val_x0_mse": val_mse,
            "samples_sha256": _digest({"samples": samples}),
        }
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    print(json.dumps({objective: reference_run(objective) for objective in ("x0", "v")}, indent=1))
