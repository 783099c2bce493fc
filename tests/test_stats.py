"""Experiment statistics against hand-computed values: intervals, paired gains, rank correlations, regret."""

import math

import numpy as np
import pytest

from expert_hub.experiments import stats


def test_mean_interval_hand_computed():
  # [1, 2, 3]: mean 2, s = 1, t(0.975, 2) = 4.302653: half-width 4.302653 / sqrt(3).
  mean, half = stats.mean_interval([1, 2, 3])
  assert mean == 2 and half == pytest.approx(4.302653 / math.sqrt(3), abs=1e-6)
  assert stats.mean_interval([0.5, 0.5, 0.5]) == (0.5, 0.0)
  mean, half = stats.mean_interval([4.0])
  assert mean == 4.0 and math.isnan(half)  # one value: no interval
  # 90%: t(0.95, 3) = 2.353363; [1, 2, 3, 4]: s = sqrt(5/3), sem = s / 2.
  assert stats.mean_interval([1, 2, 3, 4], 0.9)[1] == pytest.approx(2.353363 * math.sqrt(5 / 3) / 2, abs=1e-6)
  with pytest.raises(ValueError, match="no values"):
    stats.mean_interval([])
  with pytest.raises(ValueError, match="non-finite"):
    stats.mean_interval([1.0, float("nan")])
  with pytest.raises(ValueError, match="confidence=1.5"):
    stats.mean_interval([1, 2], 1.5)


def test_paired_gain_hand_computed():
  # differences [0.1, 0.1, 0.05]: mean 1/12, s = sqrt(1/1200), half-width t(0.975, 2) * s / sqrt(3).
  mean, half = stats.paired_gain([0.7, 0.8, 0.75], [0.6, 0.7, 0.7])
  assert mean == pytest.approx(1 / 12) and half == pytest.approx(4.302653 * math.sqrt(1 / 1200) / math.sqrt(3), abs=1e-6)
  assert stats.excludes_zero(mean, half) is True
  assert stats.excludes_zero(*stats.paired_gain([0.7, 0.6, 0.8], [0.65, 0.66, 0.7])) is False  # interval has 0
  assert stats.excludes_zero(0.5, math.nan) is False
  with pytest.raises(ValueError, match="3 and 2 values"):
    stats.paired_gain([1, 2, 3], [1, 2])


def test_interval_record_rounds_and_pairs():
  assert stats.interval([0.5]) == {"mean": 0.5, "ci95": None}  # one value: no interval
  assert stats.interval([0.1, 0.2, 0.3]) == {"mean": 0.2, "ci95": round(4.302653 * 0.1 / math.sqrt(3), 4)}
  # paired: differences [0.2, 0.3], s = sqrt(0.005), sem 0.05
  assert stats.interval([0.7, 0.9], [0.5, 0.6]) == {"mean": 0.25, "ci95": round(12.706205 * 0.05, 4)}


@pytest.mark.parametrize("x, y, tau, rho", [
    ([1, 2, 3, 4], [10, 20, 30, 40], 1.0, 1.0),
    ([1, 2, 3, 4], [4, 3, 2, 1], -1.0, -1.0),
    # 10 pairs, 2 discordant: (8 - 2) / 10; rho = 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 6 * 4 / 120.
    ([1, 2, 3, 4, 5], [1, 3, 2, 5, 4], 0.6, 0.8),
    # A tie in x: 5 concordant of 6 pairs, 1 tied in x: 5 / sqrt(5 * 6); ranks x = [1, 2.5, 2.5, 4]:
    # rho = 4.5 / sqrt(4.5 * 5).
    ([1, 2, 2, 3], [1, 2, 3, 4], 5 / math.sqrt(30), math.sqrt(0.9)),
    # Ties in both, one pair tied in both: 4 concordant, 1 tied in x, 2 in y: 4 / sqrt(5 * 4);
    # ranks [1.5, 1.5, 3, 4] and [1.5, 1.5, 3.5, 3.5]: rho = 4 / sqrt(4.5 * 4).
    ([1, 1, 2, 3], [1, 1, 2, 2], 4 / math.sqrt(20), 4 / math.sqrt(18)),
    # One concordant and one discordant pair cancel.
    ([1, 1, 2, 2], [1, 2, 1, 2], 0.0, 0.0),
])
def test_rank_correlations_hand_computed(x, y, tau, rho):
  assert stats.kendall_tau_b(x, y) == pytest.approx(tau, abs=1e-12)
  assert stats.spearman_rho(x, y) == pytest.approx(rho, abs=1e-12)
  assert stats.kendall_tau_b(y, x) == pytest.approx(tau, abs=1e-12)  # symmetric


def test_rank_correlations_undefined_and_bad_input():
  assert math.isnan(stats.kendall_tau_b([1, 1, 1], [1, 2, 3]))  # constant scores
  assert math.isnan(stats.spearman_rho([1, 2, 3], [5, 5, 5]))
  assert math.isnan(stats.kendall_tau_b([1], [2])) and math.isnan(stats.spearman_rho([1], [2]))
  with pytest.raises(ValueError, match=r"shapes \(3,\) and \(2,\)"):
    stats.kendall_tau_b([1, 2, 3], [1, 2])
  with pytest.raises(ValueError, match="non-finite"):
    stats.spearman_rho([1, np.nan], [1, 2])


def test_regret_and_oracle():
  accuracy = {"a": 0.61, "b": 0.55, "c": 0.61, "generalist": 0.5}
  assert stats.oracle_of(accuracy) == ("a", 0.61)  # ties go to the first name
  assert stats.regret(accuracy, "a") == 0.0 and stats.regret(accuracy, "c") == 0.0
  assert stats.regret(accuracy, "b") == 0.06 and stats.regret(accuracy, "generalist") == 0.11
  with pytest.raises(KeyError, match=r"No fine-tuned accuracy for 'd'; fine-tuned: \['a', 'b', 'c', 'generalist'\]"):
    stats.regret(accuracy, "d")
  with pytest.raises(ValueError, match="No fine-tuned accuracies"):
    stats.oracle_of({})
