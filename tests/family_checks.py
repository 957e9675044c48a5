"""The three exactness checks every backbone family must pass (issue 11), shared by the family tests.

For a tiny random model of the family: the adapter's h_ℓ equals HF's `output_hidden_states` slot for every ℓ;
running blocks ℓ+1..L, the final norm and the head from the true h_ℓ reproduces HF's logits for every ℓ;
extraction runs no block above the deepest requested layer and never the head.
"""

from __future__ import annotations

import torch

from dihal.backbone import BackboneAdapter


def ids(batch: int = 2, length: int = 12, vocab: int = 256, bos: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(3, vocab, (batch, length), generator=g)
    x[:, 0] = bos
    return x


def check_hidden_states(model, x: torch.Tensor, atol: float = 1e-5) -> BackboneAdapter:
    """h_ℓ for ℓ = 0..L-1 against HF's slots; h_L after the final norm against HF's last (normed) slot."""
    ad = BackboneAdapter(model)
    with torch.no_grad():
        ref = model(x, output_hidden_states=True)
    hs = ad.hidden_states(x, list(range(ad.n_layers + 1)))
    assert len(ref.hidden_states) == ad.n_layers + 1
    for layer in range(ad.n_layers):
        torch.testing.assert_close(hs[layer], ref.hidden_states[layer], rtol=atol, atol=atol, msg=f"h_{layer}")
    torch.testing.assert_close(ad.final_norm(hs[ad.n_layers]), ref.hidden_states[-1], rtol=atol, atol=atol)
    return ad


def check_splice(model, x: torch.Tensor, atol: float = 1e-5) -> None:
    """logits_from(true h_ℓ, ℓ) == HF's logits, for every ℓ in 0..L."""
    ad = BackboneAdapter(model)
    with torch.no_grad():
        ref = model(x).logits
    hs = ad.hidden_states(x, list(range(ad.n_layers + 1)))
    for layer in range(ad.n_layers + 1):
        torch.testing.assert_close(ad.logits_from(hs[layer], layer), ref, rtol=atol, atol=atol, msg=f"from h_{layer}")


def check_stops_early(model, x: torch.Tensor, layers=(1, 2)) -> None:
    """Extraction of `layers` calls blocks 1..max(layers) only, and never the LM head."""
    ad = BackboneAdapter(model)
    called, head = [], []
    handles = [blk.register_forward_hook(lambda *_, i=i: called.append(i)) for i, blk in enumerate(ad.blocks, 1)]
    handles.append(ad.lm_head.register_forward_hook(lambda *_: head.append(1)))
    try:
        ad.hidden_states(x, list(layers))
    finally:
        for h in handles:
            h.remove()
    assert called == list(range(1, max(layers) + 1)) and not head, (called, head)
