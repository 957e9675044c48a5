"""The splice is right, the retained stack stays frozen, and training survives kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dihal.backbone import BackboneAdapter
from dihal.bridge.denoiser import Denoiser
from dihal.bridge.diffusion import model_x0, q_sample
from dihal.bridge.hybrid import HybridLM
from dihal.bridge.standardize import Standardizer
from tests.tiny import make_model


def ids(batch=3, length=10, vocab=512):
    x = torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(1))
    x[:, 0] = 1
    return x


def hybrid_for(arch: str, layer: int, seq_len: int = 10) -> tuple[HybridLM, torch.nn.Module]:
    model = make_model(arch, n_layers=5)
    ad = BackboneAdapter(model)
    std = Standardizer(mean=torch.zeros(ad.d), std=torch.ones(ad.d))
    den = Denoiser(d_in=ad.d, d_model=16, depth=1, heads=2, max_len=seq_len)
    return HybridLM(ad, layer, den, std, seq_len=seq_len), model


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("layer", [1, 3, 5])
def test_hybrid_fed_true_states_reproduces_backbone_logits(arch, layer):
    hybrid, model = hybrid_for(arch, layer)
    x = ids()
    with torch.no_grad():
        ref = model(x).logits
    true_h = hybrid.adapter.hidden_states(x, [layer])[layer]
    torch.testing.assert_close(hybrid.decode(true_h), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hybrid.prefix_states(x[:, :4]), true_h[:, :4], rtol=1e-5, atol=1e-5)


def test_retained_stack_gets_no_gradient_and_stays_bit_identical():
    hybrid, _ = hybrid_for("llama", 2)
    ad = hybrid.adapter  # the retained stack: blocks ℓ+1..L, final norm, LM head
    frozen = [p for m in (*ad.blocks[hybrid.layer :], ad.final_norm, ad.lm_head) for p in m.parameters()]
    before = [p.detach().clone() for p in frozen]
    x = ids()
    true_h = hybrid.adapter.hidden_states(x, [2])[2]
    params = [p for p in hybrid.parameters() if p.requires_grad]
    assert params and all(any(p is q for q in hybrid.denoiser.parameters()) for p in params)
    opt = torch.optim.AdamW(params, lr=1e-2)
    mask = torch.zeros(x.shape, dtype=torch.bool)
    mask[:, 0] = True
    g = torch.Generator().manual_seed(0)
    for _ in range(5):  # a loss that flows *through* the upper stack, the worst case for leakage
        t = torch.rand(x.shape[0], generator=g)
        xt = q_sample(true_h, t, torch.randn(true_h.shape, generator=g))
        logits = hybrid.adapter.head(hybrid.adapter.run_blocks(model_x0(hybrid.denoiser, xt, t, mask, "x0"), 2, 5))
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.grad is None for p in frozen)
    assert all(torch.equal(a, b) for a, b in zip(before, frozen))


def test_sample_keeps_the_prompt_and_is_deterministic():
    hybrid, _ = hybrid_for("llama", 2)
    prompt = ids(2, 3)
    a = hybrid.sample(prompt, steps=4, generator=torch.Generator().manual_seed(5))
    b = hybrid.sample(prompt, steps=4, generator=torch.Generator().manual_seed(5))
    assert a.tokens.shape == (2, 10) and torch.equal(a.tokens[:, :3], prompt) and torch.equal(a.tokens, b.tokens)
    torch.testing.assert_close(a.states[:, :3], hybrid.prefix_states(prompt))
    with pytest.raises(ValueError, match="prompt length"):
        hybrid.sample(ids(1, 10), steps=2)


def _stage_config(root: Path, name: str, steps: int) -> Path:
    targets = root / "targets"
    if not targets.exists():
        targets.mkdir()
        rng = np.random.default_rng(0)
        np.save(targets / "train_h.npy", rng.standard_normal((64, 8, 6)).astype(np.float32))
        np.save(targets / "train_ids.npy", rng.integers(3, 100, (64, 8)))
        (targets / "meta.json").write_text(json.dumps({"layer": 2, "special_ids": [0, 1, 2]}))
    params = {
        "seq_len": 8,
        "prefix": 1,
        "d_model": 16,
        "depth": 1,
        "heads": 2,
        "time_cond": "adaln",
        "pos": "sinusoidal",
        "objective": "x0",
        "self_condition": False,
        "schedule": "cosine",
        "schedule_shift": 1.0,
        "time_sampling": "uniform",
        "time_loc": 0.0,
        "time_scale": 1.0,
        "steps": steps,
        "batch_size": 8,
        "lr": 1e-3,
        "warmup": 5,
        "weight_decay": 0.01,
        "grad_clip": 1.0,
        "outliers": {"rule": "drop", "threshold": 20.0},
        "seed": 0,
        "device": "cpu",
    }
    cfg = {
        "kind": "train",
        "hash": name,
        "params": params,
        "inputs": {"targets": str(targets)},
        "link": None,
        "out": str(root / "out" / name),
        "runtime": {"checkpoint_every": 50},
    }
    path = root / f"{name}.json"
    path.write_text(json.dumps(cfg))
    return path


def test_train_stage_killed_with_sigkill_resumes_to_the_same_bytes(tmp_path):
    env = {**os.environ, "DIHAL_PROGRESS": "0"}
    stage = [sys.executable, "-m", "dihal", "stage"]
    steps = 1500
    ref = _stage_config(tmp_path, "reference", steps)
    subprocess.run([*stage, str(ref)], cwd=tmp_path, env=env, check=True, timeout=600)

    cfg = _stage_config(tmp_path, "killed", steps)
    ckpt = tmp_path / "artifacts" / "checkpoints" / "killed" / "ckpt.pt"
    proc = subprocess.Popen([*stage, str(cfg)], cwd=tmp_path, env=env)
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed: raise `steps`"
    assert ckpt.exists() and not (tmp_path / "out" / "killed" / "bridge.pt").exists()
    subprocess.run([*stage, str(cfg)], cwd=tmp_path, env=env, check=True, timeout=600)

    meta = json.loads((tmp_path / "out" / "killed" / "meta.json").read_text())
    assert meta["resumed_from"] and meta["resumed_from"] > 0
    a = torch.load(tmp_path / "out" / "reference" / "bridge.pt", weights_only=True)["denoiser"]
    b = torch.load(tmp_path / "out" / "killed" / "bridge.pt", weights_only=True)["denoiser"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    curve_a = json.loads((tmp_path / "out" / "reference" / "curve.json").read_text())
    curve_b = json.loads((tmp_path / "out" / "killed" / "curve.json").read_text())
    assert curve_a == curve_b
    assert not ckpt.exists(), "checkpoints are removed once the bridge is saved"
