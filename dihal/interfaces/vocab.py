"""Training-vocabulary helpers shared by the continuous-diffusion recovery parts.

Why a training vocabulary: the recovery parts only ever have to emit tokens that occur in their training
ids, and a softmax over the backbone's full vocabulary (tens of thousands of columns) is too slow to train
on CPU. Decoding over the K seen ids keeps training cheap, and reporting logits over the full vocabulary
with -inf elsewhere keeps the parts interchangeable with anything that expects full-vocabulary logits.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def training_vocab(ids: torch.Tensor, exclude: Iterable[int] = ()) -> torch.Tensor:
    """Sorted unique token ids present in `ids`, minus `exclude`."""
    vocab = torch.unique(ids.reshape(-1).long(), sorted=True)
    drop = torch.tensor(sorted({int(i) for i in exclude}), dtype=torch.long)
    if drop.numel():
        vocab = vocab[~torch.isin(vocab, drop)]
    return vocab


def check_vocab(vocab: torch.Tensor | Iterable[int], n_tokens: int) -> torch.Tensor:
    """`vocab` as a 1-D LongTensor, validated: non-empty, strictly increasing, inside [0, n_tokens)."""
    vocab = torch.as_tensor(vocab, dtype=torch.long).reshape(-1).cpu().contiguous()
    if vocab.numel() == 0:
        raise ValueError("training vocabulary is empty")
    if vocab.numel() > 1 and not bool((vocab[1:] > vocab[:-1]).all()):
        raise ValueError("training vocabulary must be sorted and unique (use training_vocab)")
    if int(vocab[0]) < 0 or int(vocab[-1]) >= n_tokens:
        raise ValueError(f"training vocabulary ids must lie in [0, {n_tokens}); got {int(vocab[0])}..{int(vocab[-1])}")
    return vocab


def to_class(ids: torch.Tensor, vocab: torch.Tensor) -> torch.Tensor:
    """Class indices in `vocab` (sorted, unique) of the token ids `ids`; ValueError on an id not in vocab."""
    ids = ids.long()
    vocab = vocab.to(ids.device)
    idx = torch.searchsorted(vocab, ids.contiguous()).clamp_(max=vocab.numel() - 1)
    missing = vocab[idx] != ids
    if bool(missing.any()):
        bad = int(ids[missing].reshape(-1)[0])
        raise ValueError(f"token id {bad} is not in the training vocabulary ({vocab.numel()} ids)")
    return idx


def full_logits(seen_logits: torch.Tensor, vocab: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """(..., K) logits over `vocab` -> (..., n_tokens) float32 logits with -inf outside `vocab`."""
    out = seen_logits.new_full((*seen_logits.shape[:-1], n_tokens), float("-inf"), dtype=torch.float32)
    return out.index_copy(-1, vocab.to(seen_logits.device), seen_logits.float())
