"""CDCD-style recovery: a linear softmax readout from a token's input embedding back to its token id.

Why: a continuous-diffusion baseline that denoises in embedding space needs a way back to tokens. CDCD
(Dieleman et al., 2022) reads tokens off with a softmax classifier over embeddings; training it on *clean*
embeddings makes it the natural "nearest token" map that the diffusion samples are judged against.

Why standardise inside the module: backbone embeddings are tiny (std ~0.02) and unevenly scaled, which
makes a plain linear classifier slow to train; keeping the mean/std as buffers lets callers pass raw
embeddings at train and sample time alike.

Why generators everywhere: the readout is part of an experiment whose results are hashed and compared, so
the same inputs and seed must give bit-identical weights, and fitting must not shift anyone else's RNG.
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


class Readout(nn.Module):
    """Standardise, then nn.Linear(width, K) over the training vocabulary; logits over the full vocabulary."""

    def __init__(self, width: int, vocab: torch.Tensor, n_tokens: int, seed: int = 0):
        super().__init__()
        vocab = check_vocab(vocab, n_tokens)
        self.width, self.n_tokens = int(width), int(n_tokens)
        self.register_buffer("vocab", vocab, persistent=False)
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))
        self.linear = nn.Linear(width, vocab.numel(), device="meta").to_empty(device="cpu")
        gen, bound = torch.Generator().manual_seed(seed), 1.0 / math.sqrt(width)  # nn.Linear's default bounds
        with torch.no_grad():
            nn.init.uniform_(self.linear.weight, -bound, bound, generator=gen)
            nn.init.uniform_(self.linear.bias, -bound, bound, generator=gen)

    def seen_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((x.float() - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return full_logits(self.seen_logits(x), self.vocab, self.n_tokens)

    def state(self) -> dict:
        return {
            "width": self.width,
            "vocab": self.vocab.tolist(),
            "n_tokens": self.n_tokens,
            "state_dict": {k: v.detach().clone() for k, v in self.state_dict().items()},
        }

    @classmethod
    def from_state(cls, state: dict) -> Readout:
        readout = cls(state["width"], torch.tensor(state["vocab"], dtype=torch.long), state["n_tokens"])
        readout.load_state_dict(state["state_dict"])
        return readout.eval()


def fit_readout(
    readout: Readout,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: bool = False,
    log_every: int = 10,
) -> dict:
    """Fit `readout` to map clean embeddings x (N, width) to token ids y (N,); returns a training report."""
    x = x.detach().float().reshape(-1, readout.width)
    target = to_class(y.reshape(-1), readout.vocab)
    if target.numel() != x.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but y has {target.numel()} ids")
    with torch.no_grad():
        mean, std = standardiser(x)
        readout.mean.copy_(mean)
        readout.std.copy_(std)

    def batch_loss(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return F.cross_entropy(readout.seen_logits(x[idx]), target[idx])

    report = train_steps(
        readout,
        batch_loss,
        x.shape[0],
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        progress=progress,
        log_every=log_every,
    )
    report["train_accuracy"] = accuracy(lambda r: readout.seen_logits(x[r]).argmax(-1), target, x.shape[0])
    report["vocab_size"] = readout.vocab.numel()
    return report


class EmbeddingReadout(Interface):
    """embedding_readout (CDCD style): generate the tokens' input embeddings; a softmax readout, trained on the
    clean embeddings of the training blocks' tokens, reads tokens off them."""

    name = "embedding_readout"
    shift = 0

    def __init__(self, adapter, readout: Readout | None = None, settings: dict | None = None) -> None:
        super().__init__(adapter, 0)
        self.readout, self.settings = readout, settings or {}

    @classmethod
    def create(cls, adapter, settings: dict) -> EmbeddingReadout:
        return cls(adapter, settings=settings)

    def fit(self, train_ids: torch.Tensor, *, specials, seed: int, progress: bool = False) -> dict:
        s = self.settings
        n_tokens = self.adapter.model.get_input_embeddings().num_embeddings
        self.readout = Readout(self.adapter.d, training_vocab(train_ids), n_tokens, seed=seed)
        x = token_embeddings(self.adapter, train_ids)
        report = fit_readout(
            self.readout,
            x.reshape(-1, x.shape[-1]),
            train_ids.reshape(-1),
            steps=s["recovery_steps"],
            batch_size=s["recovery_batch_tokens"],
            lr=s["recovery_lr"],
            seed=seed,
            progress=progress,
        )
        return recovery_budget(report)

    def clean(self, ids: torch.Tensor) -> torch.Tensor:
        return token_embeddings(self.adapter, ids)

    @torch.no_grad()
    def logits(self, states: torch.Tensor) -> torch.Tensor:
        return self.readout(states.float().cpu())

    def state(self) -> dict:
        return {"layer": 0, "readout": self.readout.state()}

    @classmethod
    def from_state(cls, adapter, state: dict) -> EmbeddingReadout:
        return cls(adapter, Readout.from_state(state["readout"]))
