"""MAUVE on the judge's own features (dihal.analysis.mauve_metric): identical sets, real against shuffled text, the
bootstrap interval, and agreement with the `mauve-text` package's own number."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dihal.analysis.mauve_metric import SETTINGS, buckets, mauve_interval, mauve_score

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def kjv_features():
    """The embedded backbone's judge features of 64 held-out KJV blocks (32 tokens), and of the first 32 with
    their tokens shuffled (the block-start token kept first): (real A, real B, A shuffled)."""
    from dihal.analysis.judge import judge
    from dihal.backbone import BackboneAdapter, load_backbone
    from dihal.data.blocks import sample_blocks
    from dihal.data.corpora import load_documents, split_documents
    from dihal.data.tokens import resolve_block_start
    from dihal.spec.schema import BackboneSpec, DataSpec

    bb = load_backbone(BackboneSpec())
    ad = BackboneAdapter(bb.model)
    data = DataSpec(source="kjv")
    start = resolve_block_start(bb.tokenizer, data.block_start)
    docs = split_documents(load_documents(data), data.splits)["validation"]
    blocks = sample_blocks(
        docs, bb.tokenizer, start_id=start.id, seq_len=32, n_blocks=64, seed=0, max_per_doc=2, split="validation"
    )
    ids = torch.from_numpy(np.asarray(blocks.ids)).long()
    g = torch.Generator().manual_seed(0)
    shuffled = ids[:32].clone()
    for row in shuffled:
        row[1:] = row[1:][torch.randperm(len(row) - 1, generator=g)]
    real = judge(ad, ids, 1).features
    return real[:32], real[32:], judge(ad, shuffled, 1).features


def test_identical_feature_sets_score_one():
    feats = np.random.default_rng(0).standard_normal((24, 16)).astype(np.float32)
    # equal histograms make every interior frontier point (1, 1); the package's tie order can give 0.75 there
    assert mauve_score(feats, feats) == pytest.approx(1.0, abs=1e-9)
    assert mauve_score(feats, feats[::-1]) == pytest.approx(1.0, abs=1e-9)  # order of the texts does not matter


def test_our_frontier_area_is_the_packages_where_nothing_ties(kjv_features):
    import mauve

    real_a, _, shuffled = kjv_features
    theirs = mauve.compute_mauve(p_features=real_a, q_features=shuffled, num_buckets=buckets(32, 32), **SETTINGS)
    assert 0 < theirs.mauve < 0.9
    assert mauve_score(real_a, shuffled) == pytest.approx(theirs.mauve, rel=1e-12)


def test_real_text_against_real_text_beats_real_against_shuffled_tokens(kjv_features):
    real_a, real_b, shuffled = kjv_features
    same_kind = mauve_score(real_a, real_b)
    broken = mauve_score(real_a, shuffled)
    assert same_kind > 0.8 and broken < 0.5 and same_kind - broken > 0.4, (same_kind, broken)


def test_the_interval_holds_the_estimate_and_is_reproducible(kjv_features):
    real_a, real_b, shuffled = kjv_features
    for q in (real_b, shuffled):
        got = mauve_interval(real_a, q, seed=3, n_boot=40)
        assert 0.0 <= got["mauve_lo"] <= got["mauve"] <= got["mauve_hi"] <= 1.0, got
        assert got["mauve"] == pytest.approx(mauve_score(real_a, q), rel=1e-12)
        assert got["mauve_hi"] > got["mauve_lo"], "resampling a few dozen texts moves MAUVE"
        assert mauve_interval(real_a, q, seed=3, n_boot=40) == got
    assert mauve_interval(real_a, shuffled, seed=4, n_boot=40) != mauve_interval(real_a, shuffled, seed=3, n_boot=40)


def test_bad_features_are_refused_before_clustering():
    good = np.ones((8, 4), np.float32)
    with pytest.raises(ValueError, match="q_features.*at least 2 texts"):
        mauve_score(good, good[:1])
    bad = good.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="p_features hold NaN"):
        mauve_score(bad, good)
