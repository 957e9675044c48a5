"""Recovery parts of the continuous-diffusion baselines: CDCD softmax readout and LD4LG latent autoencoder."""

from __future__ import annotations

import math

import pytest
import torch

from dihal.interfaces.embedding_readout import Readout, fit_readout
from dihal.interfaces.latent_ae import LatentAE, fit_autoencoder
from dihal.interfaces.recovery_training import warmup_cosine
from dihal.interfaces.vocab import full_logits, to_class, training_vocab
from tests.tiny import make_model

V, D = 512, 32


@pytest.fixture(scope="module")
def data():
    model = make_model("llama", n_layers=2, d=D, vocab=V)
    ids = torch.randint(0, 200, (64, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = model.get_input_embeddings()(ids).float()
    return {"model": model, "ids": ids, "h": h, "vocab": training_vocab(ids)}


def _fit_readout(data, seed=0, steps=300):
    readout = Readout(D, data["vocab"], V, seed=seed)
    report = fit_readout(
        readout, data["h"].reshape(-1, D), data["ids"].reshape(-1), steps=steps, batch_size=256, lr=0.05, seed=seed
    )
    return readout, report


@pytest.fixture(scope="module")
def readout(data):
    return _fit_readout(data)


@pytest.fixture(scope="module")
def ae(data):
    model = LatentAE(D, 16, data["vocab"], V, seed=0)
    report = fit_autoencoder(model, data["h"], data["ids"], steps=200, batch_size=16, lr=3e-3, seed=0)
    return model, report


def test_vocab_helpers():
    ids = torch.tensor([[7, 3, 3], [9, 0, 7]])
    vocab = training_vocab(ids, exclude=[0])
    assert vocab.tolist() == [3, 7, 9]
    assert to_class(ids, training_vocab(ids)).tolist() == [[2, 1, 1], [3, 0, 2]]
    with pytest.raises(ValueError, match=r"\b0\b"):
        to_class(ids, vocab)
    with pytest.raises(ValueError, match=r"\b5\b"):
        to_class(torch.tensor([3, 5, 6]), vocab)
    out = full_logits(torch.ones(2, 3, dtype=torch.float64), vocab, 12)
    assert out.dtype == torch.float32 and out.shape == (2, 12)
    assert torch.isfinite(out[:, vocab]).all() and (out.isfinite().sum(-1) == 3).all()


def test_schedule():
    assert warmup_cosine(0, 1000) == pytest.approx(1 / 50) and warmup_cosine(49, 1000) == 1.0
    assert warmup_cosine(999, 1000) < 1e-4 and warmup_cosine(0, 5) == 1.0  # steps // 10 == 0: no warmup
    assert warmup_cosine(525, 1000) == pytest.approx(0.5 * (1 + math.cos(math.pi * 475 / 950)))


def test_readout_reaches_99_percent(readout, data):
    model, report = readout
    assert report["train_accuracy"] >= 0.99, report
    k = len(data["vocab"])
    assert report["vocab_size"] == k and report["n_params"] == D * k + k
    assert report["steps"] == 300 and report["curve"][-1]["step"] == 300 and report["curve"][-1]["loss"] < 0.1
    with torch.no_grad():
        pred = model(data["h"]).argmax(-1)  # raw embeddings in, full-vocabulary logits out
    assert (pred == data["ids"]).float().mean() >= 0.99


def test_readout_inf_exactly_outside_vocab(readout, data):
    model, _ = readout
    with torch.no_grad():
        logits = model(torch.randn(5, 7, D))
    assert logits.shape == (5, 7, V) and logits.dtype == torch.float32
    inside = torch.zeros(V, dtype=torch.bool)
    inside[data["vocab"]] = True
    assert torch.isfinite(logits[..., inside]).all()
    assert (logits[..., ~inside] == float("-inf")).all()


def test_readout_deterministic_and_leaves_global_rng(readout, data):
    rng = torch.random.get_rng_state()
    same, _ = _fit_readout(data, steps=300)
    other, _ = _fit_readout(data, seed=1, steps=300)
    assert torch.equal(rng, torch.random.get_rng_state())
    ref = readout[0].state_dict()
    assert all(torch.equal(ref[k], v) for k, v in same.state_dict().items())
    assert not torch.equal(ref["linear.weight"], other.state_dict()["linear.weight"])
    fresh = [Readout(D, data["vocab"], V, seed=3).linear.weight for _ in range(2)]
    assert torch.equal(*fresh)


def test_readout_state_round_trip(readout):
    model, _ = readout
    clone = Readout.from_state(model.state())
    x = torch.randn(4, 9, D)
    with torch.no_grad():
        assert torch.equal(model(x), clone(x))
    assert torch.equal(clone.mean, model.mean) and torch.equal(clone.std, model.std)


def test_autoencoder_reconstructs(ae, data):
    model, report = ae
    assert report["train_accuracy"] >= 0.95, report
    assert report["width"] == 16 and report["latent_length"] == 16 and report["vocab_size"] == len(data["vocab"])
    with torch.no_grad():
        z = model.encode(data["h"])
        assert z.shape == (64, 16, 16)
        assert torch.allclose(z.pow(2).mean(-1), torch.ones(64, 16), atol=1e-4)  # unit RMS latents
        assert torch.equal(z, model.encode(data["h"]))  # no noise at eval
        logits = model.decode(z)
    assert logits.shape == (64, 16, V) and (logits.isfinite().sum(-1) == len(data["vocab"])).all()
    assert (logits.argmax(-1) == data["ids"]).float().mean() >= 0.95


def test_autoencoder_state_round_trip(ae, data):
    model, _ = ae
    clone = LatentAE.from_state(model.state())
    with torch.no_grad():
        z = model.encode(data["h"][:4])
        assert torch.equal(z, clone.encode(data["h"][:4]))
        assert torch.equal(model.decode(z), clone.decode(z))


def test_encoder_is_causal(data):
    model = LatentAE(D, 16, data["vocab"], V, seed=0, max_len=16)
    emb = data["model"].get_input_embeddings()
    ids = data["ids"][:8]
    with torch.no_grad():
        base = model.encode(emb(ids))
        for j in (0, 5, 15):
            changed = ids.clone()
            changed[:, j] = (changed[:, j] + 1) % 200
            z = model.encode(emb(changed))
            assert torch.equal(z[:, :j], base[:, :j])
            assert not torch.equal(z[:, j], base[:, j])


def test_autoencoder_rejects_ids_outside_vocab(data):
    vocab = data["vocab"][data["vocab"] != data["ids"][3, 4]]
    model = LatentAE(D, 8, vocab, V)
    with pytest.raises(ValueError, match=str(int(data["ids"][3, 4]))):
        fit_autoencoder(model, data["h"], data["ids"], steps=1, batch_size=2, lr=1e-3, seed=0)


def test_autoencoder_init_deterministic(data):
    rng = torch.random.get_rng_state()
    a, b = (LatentAE(D, 8, data["vocab"], V, seed=5) for _ in range(2))
    assert torch.equal(rng, torch.random.get_rng_state())
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.encoder.inp.weight, LatentAE(D, 8, data["vocab"], V, seed=6).encoder.inp.weight)
