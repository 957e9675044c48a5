"""LD4LG-style recovery: a small autoencoder between a block's token embeddings and a per-position latent.

Why an autoencoder: LD4LG (Lovelace et al., 2023) runs diffusion in a learned, compact latent space rather
than on raw embeddings; the decoder then maps (imperfect) sampled latents back to tokens.

Why a *causal* encoder: the latent at position i depends only on tokens 0..i, so the latents of a prompt can
be computed from the prompt alone and used as the clean prefix the diffusion model is conditioned on. The
decoder sees the whole block (bidirectional), since at decode time every latent has been sampled.

Why RMS-normalised latents with training noise: a parameter-free RMS norm fixes the latent scale (unit RMS
per vector), which gives the diffusion model a known data scale, and Gaussian noise of std `latent_noise`
on that scale during training teaches the decoder to tolerate imperfect diffusion samples. No noise at eval.

Why a training vocabulary and generators: see `vocab` and `embedding_readout`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dihal.interfaces.base import Interface
from dihal.interfaces.embeddings import token_embeddings
from dihal.interfaces.recovery_training import accuracy, recovery_budget, standardiser, train_steps
from dihal.interfaces.vocab import check_vocab, full_logits, to_class, training_vocab

_CONFIG = ("d_in", "width", "n_tokens", "d_model", "depth", "heads", "max_len", "latent_noise", "seed")


def _init_(module: nn.Module, gen: torch.Generator) -> None:
    """Deterministic init from `gen` only: torch-default-like Linear/attention/LayerNorm, N(0, 0.02) positions."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.in_features)
                nn.init.uniform_(m.weight, -bound, bound, generator=gen)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.MultiheadAttention):
                nn.init.xavier_uniform_(m.in_proj_weight, generator=gen)
                nn.init.zeros_(m.in_proj_bias)
            elif isinstance(m, _Stack):
                nn.init.normal_(m.pos, 0.0, 0.02, generator=gen)


class _Stack(nn.Module):
    """Linear in, learned positions, pre-norm transformer blocks (causal or not), LayerNorm, Linear out."""

    def __init__(self, d_in: int, d_out: int, d_model: int, depth: int, heads: int, max_len: int, causal: bool):
        super().__init__()
        self.causal = causal
        self.inp = nn.Linear(d_in, d_model)
        self.pos = nn.Parameter(torch.empty(max_len, d_model))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(depth)
        )
        self.final_norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        if t > self.pos.shape[0]:
            raise ValueError(f"sequence length {t} exceeds max_len {self.pos.shape[0]}")
        x = self.inp(x) + self.pos[:t]
        mask = None
        if self.causal:
            mask = nn.Transformer.generate_square_subsequent_mask(t, device=x.device, dtype=x.dtype)
        for block in self.blocks:
            x = block(x, src_mask=mask, is_causal=self.causal)
        return self.out(self.final_norm(x))


class LatentAE(nn.Module):
    """Causal encoder (B, T, d_in) -> RMS-normalised latent (B, T, width); bidirectional decoder -> logits."""

    def __init__(
        self,
        d_in: int,
        width: int,
        vocab: torch.Tensor,
        n_tokens: int,
        *,
        d_model: int = 128,
        depth: int = 2,
        heads: int = 4,
        max_len: int = 64,
        latent_noise: float = 0.1,
        seed: int = 0,
    ):
        super().__init__()
        vocab = check_vocab(vocab, n_tokens)
        self.d_in, self.width, self.n_tokens, self.d_model = int(d_in), int(width), int(n_tokens), int(d_model)
        self.depth, self.heads, self.max_len = int(depth), int(heads), int(max_len)
        self.latent_noise, self.seed = float(latent_noise), int(seed)
        self.register_buffer("vocab", vocab, persistent=False)
        with torch.device("meta"):
            self.encoder = _Stack(d_in, width, d_model, depth, heads, max_len, causal=True)
            self.decoder = _Stack(width, vocab.numel(), d_model, depth, heads, max_len, causal=False)
        self.encoder.to_empty(device="cpu")
        self.decoder.to_empty(device="cpu")
        _init_(self, torch.Generator().manual_seed(seed))
        self.register_buffer("mean", torch.zeros(d_in))
        self.register_buffer("std", torch.ones(d_in))

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        z = self.encoder((h.float() - self.mean) / self.std)
        return F.rms_norm(z, (self.width,), eps=1e-6)

    def decode_seen(self, z: torch.Tensor) -> torch.Tensor:
        """(B, T, width) -> (B, T, K) logits over the training vocabulary."""
        return self.decoder(z.float())

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return full_logits(self.decode_seen(z), self.vocab, self.n_tokens)

    def state(self) -> dict:
        return {
            **{k: getattr(self, k) for k in _CONFIG},
            "vocab": self.vocab.tolist(),
            "state_dict": {k: v.detach().clone() for k, v in self.state_dict().items()},
        }

    @classmethod
    def from_state(cls, state: dict) -> LatentAE:
        cfg = {k: state[k] for k in _CONFIG if k not in ("d_in", "width", "n_tokens")}
        vocab = torch.tensor(state["vocab"], dtype=torch.long)
        ae = cls(state["d_in"], state["width"], vocab, state["n_tokens"], **cfg)
        ae.load_state_dict(state["state_dict"])
        return ae.eval()


def fit_autoencoder(
    ae: LatentAE,
    h: torch.Tensor,
    ids: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: bool = False,
    log_every: int = 10,
) -> dict:
    """Fit `ae` to reconstruct token ids (N, T) from their embeddings h (N, T, d_in); returns a training report."""
    h = h.detach().float()
    if h.dim() != 3 or h.shape[-1] != ae.d_in or ids.shape != h.shape[:2]:
        raise ValueError(f"expected h (N, T, {ae.d_in}) and ids (N, T); got {tuple(h.shape)} and {tuple(ids.shape)}")
    target = to_class(ids, ae.vocab)
    with torch.no_grad():
        mean, std = standardiser(h)
        ae.mean.copy_(mean)
        ae.std.copy_(std)

    def batch_loss(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        z = ae.encode(h[idx])
        z = z + ae.latent_noise * torch.randn(z.shape, generator=gen)
        return F.cross_entropy(ae.decode_seen(z).flatten(0, 1), target[idx].flatten())

    report = train_steps(
        ae,
        batch_loss,
        h.shape[0],
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        progress=progress,
        log_every=log_every,
    )
    report["train_accuracy"] = accuracy(lambda r: ae.decode_seen(ae.encode(h[r])).argmax(-1), target, h.shape[0], 256)
    report.update(vocab_size=ae.vocab.numel(), width=ae.width, latent_length=h.shape[1])
    return report


class LatentInterface(Interface):
    """latent_ae (LD4LG style): generate the autoencoder's latent of the block; its decoder reads tokens off.

    The latent has one vector per position (length = bridge.seq_len) of `latent_width` (default the backbone's
    d, which keeps the denoiser's parameter count equal to the other interfaces'); the encoder reads the tokens'
    input embeddings, so it starts from what the embedding interfaces generate."""

    name = "latent_ae"
    shift = 0

    def __init__(self, adapter, ae: LatentAE | None = None, settings: dict | None = None) -> None:
        super().__init__(adapter, 0)
        self.ae, self.settings = ae, settings or {}

    @classmethod
    def create(cls, adapter, settings: dict) -> LatentInterface:
        return cls(adapter, settings=settings)

    def fit(self, train_ids: torch.Tensor, *, specials, seed: int, progress: bool = False) -> dict:
        s, t = self.settings, train_ids.shape[1]
        n_tokens = self.adapter.model.get_input_embeddings().num_embeddings
        self.ae = LatentAE(
            self.adapter.d,
            s["latent_width"] or self.adapter.d,
            training_vocab(train_ids),
            n_tokens,
            d_model=s["latent_d_model"],
            depth=s["latent_depth"],
            heads=s["latent_heads"],
            max_len=t,
            latent_noise=s["latent_noise"],
            seed=seed,
        )
        h = token_embeddings(self.adapter, train_ids)
        report = fit_autoencoder(
            self.ae,
            h,
            train_ids,
            steps=s["recovery_steps"],
            lr=s["recovery_lr"],
            seed=seed,
            batch_size=max(1, s["recovery_batch_tokens"] // t),
            progress=progress,
        )
        return recovery_budget(report, latent_width=report["width"], latent_length=report["latent_length"])

    @torch.no_grad()
    def clean(self, ids: torch.Tensor) -> torch.Tensor:
        return self.ae.encode(token_embeddings(self.adapter, ids))

    @torch.no_grad()
    def logits(self, states: torch.Tensor) -> torch.Tensor:
        return self.ae.decode(states.float().cpu())

    def state(self) -> dict:
        return {"layer": 0, "ae": self.ae.state()}

    @classmethod
    def from_state(cls, adapter, state: dict) -> LatentInterface:
        return cls(adapter, LatentAE.from_state(state["ae"]))
