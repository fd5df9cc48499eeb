"""Classification metrics from a confusion matrix (paper §3.7, Eqs. 3-6), fold aggregation and
segment-to-clip aggregation. Numpy only.

Conventions (no NaN anywhere): a ratio whose denominator is 0 is 0 — precision of a class that is
never predicted, recall of a class with no test clips, F1 when precision + recall = 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lbher_jax import LABELS

FOLD_METRICS: tuple[str, ...] = ("accuracy", "unweighted_accuracy", "macro_f1", "weighted_f1")
"""The summary metrics that `aggregate_folds` averages over folds."""


def confusion_matrix(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
                     num_classes: int = len(LABELS)) -> np.ndarray:
  """Counts int64 [num_classes, num_classes]: rows = true class, columns = predicted class."""
  y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
  y_pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
  if y_true.shape != y_pred.shape:
    raise ValueError(f"confusion_matrix: {y_true.size} true labels but {y_pred.size} predictions")
  for name, ids in (("true", y_true), ("predicted", y_pred)):
    bad = ids[(ids < 0) | (ids >= num_classes)]
    if bad.size:
      raise ValueError(f"confusion_matrix: {name} class id {bad[0]} outside [0, {num_classes})")
  cm = np.zeros((num_classes, num_classes), dtype=np.int64)
  np.add.at(cm, (y_true, y_pred), 1)
  return cm


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  """num / den elementwise, 0 where den == 0."""
  num = np.asarray(num, dtype=np.float64)
  den = np.asarray(den, dtype=np.float64)
  return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def classification_metrics(cm: np.ndarray | Sequence[Sequence[int]],
                           labels: Sequence[str] = LABELS) -> dict[str, Any]:
  """The results.json metric fields for confusion matrix `cm` (rows true, columns predicted).

  * `accuracy` = trace / total, the overall (multi-class) accuracy. The paper's Eq. 6,
    (TP + TN) / (TP + TN + FP + FN), is a per-class one-vs-rest figure; its mean over K classes
    equals 1 - 2 (1 - accuracy) / K (each error is one FN and one FP), which flatters the model
    (0.5 accuracy reads as 0.75 with 4 classes), so the overall accuracy is what we report.
  * `unweighted_accuracy`: mean recall over classes with test clips (support > 0).
  * `macro_f1`: mean F1 over classes that occur in the truth or the predictions (a class that is
    predicted but has no support scores F1 = 0 and counts; one absent from both does not).
  * `weighted_f1`: F1 averaged with support as weights.
  * `per_class`: precision (Eq. 3), recall (Eq. 4), F1 (Eq. 5) and support of every label.
  """
  cm = np.asarray(cm, dtype=np.int64)
  k = len(labels)
  if cm.shape != (k, k):
    raise ValueError(f"confusion matrix has shape {cm.shape}, expected ({k}, {k}) for {labels}")
  if (cm < 0).any():
    raise ValueError("confusion matrix has negative counts")
  total = int(cm.sum())
  if total == 0:
    raise ValueError("confusion matrix is empty: no test clips to score")
  tp = np.diag(cm).astype(np.float64)
  support = cm.sum(axis=1)
  predicted = cm.sum(axis=0)
  precision = _ratio(tp, predicted)
  recall = _ratio(tp, support)
  f1 = _ratio(2 * precision * recall, precision + recall)
  present = (support > 0) | (predicted > 0)
  return {
      "labels": list(labels),
      "accuracy": float(tp.sum() / total),
      "unweighted_accuracy": float(recall[support > 0].mean()),
      "macro_f1": float(f1[present].mean()),
      "weighted_f1": float((f1 * support).sum() / total),
      "per_class": {
          label: {"precision": float(precision[i]), "recall": float(recall[i]),
                  "f1": float(f1[i]), "support": int(support[i])}
          for i, label in enumerate(labels)
      },
      "confusion_matrix": cm.tolist(),
      "num_test": total,
  }


def aggregate_folds(fold_metrics: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
  """{metric: {"mean", "std", "values"}} over folds for each of `FOLD_METRICS`.

  `std` is the sample standard deviation (ddof = 1): the folds are a sample of the splits one could
  draw, and ddof = 1 is the unbiased variance estimate; it is 0.0 for a single fold.
  """
  if not fold_metrics:
    raise ValueError("aggregate_folds: no folds given")
  out = {}
  for name in FOLD_METRICS:
    missing = [i for i, m in enumerate(fold_metrics) if name not in m]
    if missing:
      raise ValueError(f"aggregate_folds: fold {missing[0]} has no {name!r}")
    values = np.array([float(m[name]) for m in fold_metrics], dtype=np.float64)
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    out[name] = {"mean": float(values.mean()), "std": std, "values": values.tolist()}
  return out


def clip_probabilities(segment_probs: np.ndarray, segment_clip_ids: Sequence[str]
                       ) -> tuple[list[str], np.ndarray]:
  """Mean class probabilities of each clip's segments.

  Returns the clip ids in order of first appearance and float32 [num_clips, K] probabilities, so a
  clip of any length gets one prediction (the argmax of its row).
  """
  probs = np.asarray(segment_probs, dtype=np.float64)
  if probs.ndim != 2 or probs.shape[0] != len(segment_clip_ids):
    raise ValueError(f"clip_probabilities: probabilities of shape {probs.shape} for "
                     f"{len(segment_clip_ids)} segment clip ids; expected [segments, classes]")
  clip_ids, first, inverse = np.unique(np.asarray(segment_clip_ids, dtype=object),
                                       return_index=True, return_inverse=True)
  sums = np.zeros((len(clip_ids), probs.shape[1]), dtype=np.float64)
  np.add.at(sums, inverse, probs)
  means = sums / np.bincount(inverse, minlength=len(clip_ids))[:, None]
  order = np.argsort(first)
  return [str(c) for c in clip_ids[order]], means[order].astype(np.float32)
