"""The sentences that say how far ℓ* and C1 can be trusted (dihal.analysis.verdicts)."""

from __future__ import annotations

import math

from dihal.analysis.verdicts import c1_verdict, confidence, contenders

SCORES = {"space": "bridge", "layers": [1, 2, 3, 4], "score": [0.1, 0.9, 0.85, -1.0]}


def _stab(lo: list[float], share: list[float]) -> dict:
    return {"layers": [1, 2, 3, 4], "g_lo": lo, "argmax_share": share, "n_boot": 200}


def test_a_layer_above_the_lower_end_of_its_interval_is_a_contender():
    stab = _stab([0.0, 0.8, 0.7, -1.2], [0.0, 0.6, 0.4, 0.0])
    assert contenders(2, SCORES["layers"], SCORES["score"], stab) == [3]
    sentence = confidence(2, SCORES, stab)
    assert sentence.startswith("ℓ* = 2 (bridge space) is uncertain: the argmax in 60% of 200 document resamples")
    assert sentence.endswith("3 is within its 95% interval of G")


def test_a_rare_argmax_is_a_contender_even_below_the_interval():
    stab = _stab([0.0, 0.88, 0.7, -1.2], [0.05, 0.9, 0.05, 0.0])
    assert contenders(2, SCORES["layers"], SCORES["score"], stab) == [3, 1]


def test_clear_needs_the_share_and_no_contender():
    stab = _stab([0.0, 0.88, 0.7, -1.2], [0.0, 0.97, 0.03, 0.0])
    assert confidence(2, SCORES, stab).startswith("ℓ* = 2 (bridge space) is clear")
    assert "no stability bootstrap" in confidence(2, SCORES, None)


def test_c1_leads_with_the_permutation_test_and_says_what_the_interval_covers():
    s = c1_verdict("bridge", -0.62, -0.8, -0.3, 0.01, 13)
    assert s.startswith("C1 in the bridge space: Spearman ρ(G, bridge loss) = -0.620; a higher G goes with a lower")
    assert "not the choice of layers" in s
    wrong_way = c1_verdict("scalar", 0.62, None, None, 0.01, 13)
    assert "HIGHER bridge loss" in wrong_way and "interval" not in wrong_way
    assert "not distinguishable from chance" in c1_verdict(None, -0.1, None, None, 0.7, 9)


def test_c1_without_a_number_says_so_instead_of_printing_nan():
    for rho in (math.nan, None):
        s = c1_verdict("bridge", rho, None, None, None, 1)
        assert "nan" not in s.lower() and "does not vary" in s
