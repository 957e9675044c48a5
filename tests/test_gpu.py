"""CUDA checks: extraction, bf16-autocast bridge training and the hybrid on a GPU (tiny models, seconds).

Every test here is marked `gpu` and skipped (with the reason) where torch sees no CUDA device; run them
with `pytest -m gpu` on a GPU machine (bench/gpu.sh does).
"""

from __future__ import annotations

import math

import pytest
import torch

from dihal.backbone import BackboneAdapter, load_backbone
from dihal.bridge.denoiser import Denoiser
from dihal.bridge.hybrid import HybridLM
from dihal.bridge.standardize import Standardizer
from dihal.bridge.train import TrainConfig, train_denoiser
from dihal.spec.schema import BackboneSpec
from tests.tiny import make_model

pytestmark = pytest.mark.gpu

N_LAYERS = 4
TOL = {"rtol": 1e-4, "atol": 1e-4}  # fp32 on both sides; kernels differ (TF32 stays off for fp32 matmul by default)


def ids(batch: int = 3, length: int = 16, vocab: int = 200) -> torch.Tensor:
    x = torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(1))
    x[:, 0] = 1
    return x


@pytest.mark.parametrize(
    "placement",
    [{"device": "cuda"}, {"device": "cuda", "device_map": "cuda:0"}, {"device": "cuda", "device_map": "auto"}],
)
def test_extraction_on_cuda_matches_cpu(tiny_llama, placement):
    layers = list(range(N_LAYERS + 1))
    x = ids()
    cpu = BackboneAdapter(load_backbone(BackboneSpec(source="local", id=str(tiny_llama))).model)
    gpu = BackboneAdapter(load_backbone(BackboneSpec(source="local", id=str(tiny_llama), **placement)).model)
    assert gpu.device.type == "cuda" and gpu.embed_device.type == "cuda"
    ref, got = cpu.hidden_states(x, layers), gpu.hidden_states(x.to(gpu.device), layers)
    for layer in layers:
        assert got[layer].device == gpu.device
        torch.testing.assert_close(got[layer].cpu(), ref[layer], **TOL, msg=f"layer {layer}")
    torch.testing.assert_close(gpu.logits(x).cpu(), cpu.logits(x), **TOL)


def test_bridge_trains_under_bf16_autocast_with_fp32_weights():
    T, D = 8, 16
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(2, T * D, generator=g)
    data = (torch.randn(512, 2, generator=g) @ basis).reshape(512, T, D)
    data = ((data - data.mean((0, 1))) / data.std((0, 1))).float()
    den = Denoiser(D, d_model=64, depth=2, heads=4, max_len=T, seed=0).cuda()
    seen = set()
    first_linear = next(m for m in den.modules() if isinstance(m, torch.nn.Linear))
    first_linear.register_forward_hook(lambda mod, args, out: seen.add(out.dtype))
    cfg = TrainConfig(steps=60, batch_size=32, lr=3e-3, warmup=5, checkpoint_every=60, seed=0)
    result = train_denoiser(den, data, cfg, progress=False, log_every=10)
    assert seen == {torch.bfloat16}, "the forward pass did not run under bf16 autocast"
    assert all(p.dtype == torch.float32 for p in den.parameters()), "master weights must stay fp32"
    losses = [row["loss"] for row in result.curve]
    assert result.final_step == 60 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("layer", [1, 3])
def test_hybrid_on_cuda_reproduces_backbone_logits_from_true_states(layer):
    seq_len = 10
    model = make_model("llama", n_layers=5).cuda()
    ad = BackboneAdapter(model)
    std = Standardizer(mean=torch.zeros(ad.d), std=torch.ones(ad.d))
    den = Denoiser(d_in=ad.d, d_model=16, depth=1, heads=2, max_len=seq_len).cuda()
    hybrid = HybridLM(ad, layer, den, std, seq_len=seq_len)
    x = ids(length=seq_len, vocab=500)
    with torch.no_grad():
        ref = model(x.cuda()).logits.float().cpu()
    true_h = ad.hidden_states(x.cuda(), [layer])[layer]
    assert true_h.is_cuda
    torch.testing.assert_close(hybrid.decode(true_h), ref, **TOL)
    torch.testing.assert_close(hybrid.prefix_states(x[:, :4]).cpu(), true_h[:, :4].cpu(), **TOL)
    out = hybrid.sample(x[:, :4], steps=4)  # the whole sampling path runs on the GPU
    assert out.tokens.shape == (3, seq_len) and torch.equal(out.tokens[:, :4], x[:, :4])
