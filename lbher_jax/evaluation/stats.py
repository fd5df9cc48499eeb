"""Intervals and paired tests for comparing runs (numpy / scipy only).

The unit of every statistic is one independent run's result (e.g. one seed's fold-pooled
unweighted accuracy). Intervals are Student-t intervals of the mean; paired comparisons are
Student-t intervals of the mean difference with the paired t-test's two-sided p-value. With a
single unit no spread can be estimated, so std, interval and p-value are None, never invented.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import scipy.stats

INTERVAL_METHOD = "Student t 95 % interval of the mean over units (ddof 1)"
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_METHOD = (f"percentile 95 % interval over {BOOTSTRAP_RESAMPLES} resamples of whole "
                    "speakers with replacement (numpy seed 0)")
PAIRED_METHOD = ("paired over the same units: Student t 95 % interval of the mean difference, "
                 "two-sided paired t-test p-value")


def summarize(values: Sequence[float]) -> dict:
  """{"mean", "std", "ci95": [lo, hi], "n"}; std / ci95 None when n < 2."""
  x = np.asarray(values, np.float64)
  if x.size == 0:
    raise ValueError("summarize: no values")
  n, mean = int(x.size), float(x.mean())
  if n < 2:
    return {"mean": mean, "std": None, "ci95": None, "n": n}
  std = float(x.std(ddof=1))
  half = float(scipy.stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
  return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": n}


def paired(a: Sequence[float], b: Sequence[float]) -> dict:
  """a - b over paired units: {"mean_difference", "ci95", "p_value", "n"}.

  A zero spread of the differences gives a zero-width interval and p-value 1 if the mean
  difference is 0, else 0 (every unit differs by exactly the same amount).
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape or a.ndim != 1 or a.size == 0:
    raise ValueError(f"paired: need two equally long, non-empty 1-D lists, got {a.shape}, "
                     f"{b.shape}")
  d = a - b
  n, mean = int(d.size), float(d.mean())
  if n < 2:
    return {"mean_difference": mean, "ci95": None, "p_value": None, "n": n}
  std = float(d.std(ddof=1))
  if std == 0.0:
    return {"mean_difference": mean, "ci95": [mean, mean], "p_value": float(mean == 0.0),
            "n": n}
  se = std / math.sqrt(n)
  half = float(scipy.stats.t.ppf(0.975, n - 1)) * se
  p = float(2 * scipy.stats.t.sf(abs(mean) / se, n - 1))
  return {"mean_difference": mean, "ci95": [mean - half, mean + half], "p_value": p, "n": n}


def format_interval(s: dict, digits: int = 3) -> str:
  """'0.523 [0.481, 0.565]', or '0.523 (n = 1: no interval)'."""
  if s.get("ci95") is None:
    return f"{s['mean']:.{digits}f} (n = {s['n']}: no interval)"
  lo, hi = s["ci95"]
  return f"{s['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def grouped_bootstrap(statistic: Callable[[np.ndarray], float], groups: Sequence,
                      resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> list[float]:
  """[lo, hi]: the percentile 95 % interval of statistic(indices) over resamples that draw whole
  groups with replacement (one speaker's clips are not independent of each other)."""
  groups = np.asarray(groups)
  names = np.unique(groups)
  members = [np.flatnonzero(groups == g) for g in names]
  rng = np.random.default_rng(seed)
  draws = rng.integers(len(names), size=(resamples, len(names)))
  values = [statistic(np.concatenate([members[i] for i in draw])) for draw in draws]
  lo, hi = np.percentile(values, [2.5, 97.5])
  return [float(lo), float(hi)]
