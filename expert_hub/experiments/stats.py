"""The statistics experiments report: intervals over seeds and tasks, paired gains, regret and rank correlations.

Plain functions on sequences of numbers (no TensorFlow), built on scipy.stats: a result compared across models
carries a 95% Student-t confidence interval, and gains are paired (the same seeds, the same tasks).
"""

import math

import numpy as np
from scipy import stats as scipy_stats


def _vector(values, what):
  x = np.asarray(values, np.float64)
  if x.ndim != 1:
    raise ValueError(f"{what} of shape {x.shape}; expected a vector of numbers.")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{what} of non-finite values {x.tolist()}; expected finite numbers.")
  return x


def mean_interval(values, confidence=0.95):
  """(mean, half-width) of the Student-t confidence interval of the mean of `values`.

  The half-width is t_{(1+confidence)/2, n-1} * s / sqrt(n) (s the sample standard deviation); it is nan for a
  single value, where no interval exists, and 0 when all values are equal.

  Raises:
    ValueError: no values, non-finite values, or a confidence outside (0, 1).
  """
  x = _vector(values, "Interval")
  if not len(x):
    raise ValueError("Interval of no values; expected at least one.")
  if not 0 < confidence < 1:
    raise ValueError(f"confidence={confidence}; expected a number in (0, 1).")
  if len(x) == 1:
    return float(x[0]), math.nan
  sem = float(np.std(x, ddof=1)) / math.sqrt(len(x))
  return float(np.mean(x)), float(scipy_stats.t.ppf((1 + confidence) / 2, len(x) - 1)) * sem


def paired_gain(a, b, confidence=0.95):
  """(mean, half-width) of a - b over pairs (the same seeds or tasks): the interval of the mean difference.

  Raises:
    ValueError: a and b differ in length (they must be paired), or as mean_interval.
  """
  a, b = _vector(a, "Paired gain"), _vector(b, "Paired gain")
  if a.shape != b.shape:
    raise ValueError(f"Paired gain of {len(a)} and {len(b)} values; expected the same seeds or tasks for both.")
  return mean_interval(a - b, confidence)


def interval(values, baseline=None):
  """{"mean", "ci95"} of `values`, or of the paired differences values - baseline (mean_interval, paired_gain),
  rounded to 4 digits, as results files keep them; ci95 is None for a single value."""
  mean, half = mean_interval(values) if baseline is None else paired_gain(values, baseline)
  return {"mean": round(mean, 4), "ci95": None if math.isnan(half) else round(half, 4)}


def excludes_zero(mean, half_width):
  """True when the interval mean ± half_width lies wholly above or below 0."""
  return not math.isnan(half_width) and abs(mean) > half_width


def kendall_tau_b(x, y):
  """Kendall's tau-b (ties handled) of two paired vectors; nan when undefined (n < 2 or a constant vector)."""
  x, y = _paired(x, y)
  if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
    return math.nan
  return float(scipy_stats.kendalltau(x, y, variant="b").statistic)


def spearman_rho(x, y):
  """Spearman's rho (average ranks for ties) of two paired vectors; nan when undefined."""
  x, y = _paired(x, y)
  if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
    return math.nan
  return float(scipy_stats.spearmanr(x, y).statistic)


def _paired(x, y):
  x, y = _vector(x, "Rank correlation"), _vector(y, "Rank correlation")
  if x.shape != y.shape:
    raise ValueError(f"Rank correlation of shapes {x.shape} and {y.shape}; expected two vectors of one length.")
  return x, y


def oracle_of(accuracy):
  """(name, accuracy) of the best model in {name: accuracy}; ties go to the first name in sorted order."""
  if not accuracy:
    raise ValueError("No fine-tuned accuracies to take the oracle of.")
  best = max(sorted(accuracy), key=lambda n: accuracy[n])
  return best, accuracy[best]


def regret(accuracy, selected):
  """Oracle accuracy - the accuracy of `selected` (>= 0), rounded to 4 places as accuracies are."""
  if selected not in accuracy:
    raise KeyError(f"No fine-tuned accuracy for {selected!r}; fine-tuned: {sorted(accuracy)}.")
  return round(oracle_of(accuracy)[1] - accuracy[selected], 4)
