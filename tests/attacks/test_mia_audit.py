"""Attack statistics on arrays: ROC summaries, loss, LiRA and RMIA (the audit's statistics are
tested in tests/privacy/test_audit_statistics.py)."""

from __future__ import annotations

import numpy as np
import pytest

from medpriv.attacks.base import AttackInput, AttackResult, RocCurve
from medpriv.attacks.mia import (
    MIN_SHADOWS_FOR_VARIANCE,
    lira_scores,
    logit_confidence,
    loss_scores,
    rmia_scores,
    true_label_probability,
)
from medpriv.attacks.runner import shadow_in_mask


def test_roc_summaries_of_a_perfect_and_a_useless_attack():
    member = np.r_[np.ones(500), np.zeros(500)]
    perfect = AttackResult.from_input("x", AttackInput(member.copy(), member))
    assert perfect.auc == 1.0 and perfect.advantage == 1.0
    assert perfect.tpr_at_fpr() == {"0.001": 1.0, "0.01": 1.0}
    rng = np.random.default_rng(0)
    useless = AttackResult.from_input("x", AttackInput(rng.random(1000), member))
    assert abs(useless.auc - 0.5) < 0.05 and useless.tpr_at_fpr()["0.001"] < 0.02
    block = useless.to_dict()
    assert len(block["roc"]["fpr"]) <= 400 and block["n_members"] == 500


def test_attack_input_is_checked():
    with pytest.raises(ValueError, match="both members and non-members"):
        AttackInput(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="finite"):
        AttackInput(np.array([np.nan, 1.0]), np.array([0, 1]))


def test_tpr_at_fpr_never_exceeds_the_allowed_fpr():
    rng = np.random.default_rng(1)
    member = rng.random(2000) < 0.5
    roc = RocCurve.from_scores(member, rng.normal(size=2000) + member)
    for fpr in (0.001, 0.01, 0.1):
        best = roc.tpr_at(fpr)
        assert best == max(t for f, t in zip(roc.fpr, roc.tpr, strict=True) if f <= fpr)


def test_statistics_match_their_definitions():
    margin, labels = np.array([2.0, -1.0, 0.5]), np.array([1, 1, 0])
    np.testing.assert_allclose(logit_confidence(margin, labels), [2.0, -1.0, -0.5])
    p = true_label_probability(margin, labels)
    np.testing.assert_allclose(np.log(p / (1 - p)), logit_confidence(margin, labels))
    np.testing.assert_allclose(loss_scores(margin, labels), np.log(p))


def _simulated_lira(gap: float, k: int = 16, n: int = 2000, seed: int = 0):
    """Shadow statistics ~ N(base + gap·IN, 1); the target's members are IN for it."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 2, size=n)
    in_mask = shadow_in_mask(np.arange(n), k, seed)
    shadow = base + gap * in_mask + rng.normal(size=(k, n))
    member = rng.random(n) < 0.5
    target = base + gap * member + rng.normal(size=n)
    return target, shadow, in_mask, member


@pytest.mark.parametrize("online", [True, False])
def test_lira_finds_members_when_training_shifts_the_statistic(online: bool):
    target, shadow, in_mask, member = _simulated_lira(gap=2.0)
    scores = lira_scores(target, shadow, in_mask, online=online)
    roc = RocCurve.from_scores(member, scores)
    # A loss threshold ignores the per-record difficulty (base); LiRA calibrates it away.
    global_threshold = RocCurve.from_scores(member, target)
    assert roc.auc > 0.8 and roc.auc > global_threshold.auc + 0.15
    assert roc.tpr_at(0.01) > 0.05


def test_lira_is_at_chance_when_training_changes_nothing():
    target, shadow, in_mask, member = _simulated_lira(gap=0.0)
    for fixed in (True, False):
        scores = lira_scores(target, shadow, in_mask, fixed_variance=fixed)
        assert abs(RocCurve.from_scores(member, scores).auc - 0.5) < 0.04


def test_lira_per_record_variance_only_with_enough_shadows():
    target, shadow, in_mask, _ = _simulated_lira(gap=2.0, k=2 * MIN_SHADOWS_FOR_VARIANCE)
    fixed = lira_scores(target, shadow, in_mask, fixed_variance=True)
    own = lira_scores(target, shadow, in_mask, fixed_variance=False)
    assert not np.allclose(fixed, own)
    with pytest.raises(ValueError, match="each side"):
        lira_scores(target, shadow, np.ones_like(in_mask))


def test_shadow_masks_put_each_unit_in_exactly_half_and_keep_units_together():
    units = np.array([3, 3, 7, 9, 9, 9, 11])
    mask = shadow_in_mask(units, 16, seed=0)
    assert mask.shape == (16, 7) and np.all(mask.sum(axis=0) == 8)
    assert np.array_equal(mask[:, 0], mask[:, 1]) and np.array_equal(mask[:, 3], mask[:, 5])


def test_rmia_ranks_by_likelihood_ratio_against_the_population():
    rng = np.random.default_rng(0)
    k, n, m = 8, 1000, 500
    difficulty = rng.uniform(0.2, 0.9, size=n)  # reference models' P(true label)
    member = rng.random(n) < 0.5
    target = np.clip(difficulty + 0.08 * member + rng.normal(0, 0.02, n), 1e-3, 1)
    reference = np.clip(difficulty + rng.normal(0, 0.02, (k, n)), 1e-3, 1)
    pop_difficulty = rng.uniform(0.2, 0.9, size=m)
    pop_target = np.clip(pop_difficulty + rng.normal(0, 0.02, m), 1e-3, 1)
    pop_reference = np.clip(pop_difficulty + rng.normal(0, 0.02, (k, m)), 1e-3, 1)
    scores = rmia_scores(target, reference, pop_target, pop_reference)
    assert np.all((scores >= 0) & (scores <= 1))
    assert RocCurve.from_scores(member, scores).auc > 0.85
    assert RocCurve.from_scores(member, target).auc < 0.65  # raw confidence is fooled
