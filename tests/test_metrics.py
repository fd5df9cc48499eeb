"""Metrics against confusion matrices and figures worked out by hand."""

import math

import numpy as np
import pytest

from lbher_jax import LABELS
from lbher_jax.evaluation import metrics

# happy x4, anger x2, sad x4, neutral x0; anger is never predicted, neutral has no support.
Y_TRUE = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
Y_PRED = [0, 0, 0, 2, 0, 3, 2, 2, 2, 3]
CM = [[3, 0, 1, 0],
      [1, 0, 0, 1],
      [0, 0, 3, 1],
      [0, 0, 0, 0]]


def test_confusion_matrix_rows_true_columns_predicted():
  cm = metrics.confusion_matrix(Y_TRUE, Y_PRED)
  assert cm.dtype == np.int64
  np.testing.assert_array_equal(cm, CM)
  np.testing.assert_array_equal(metrics.confusion_matrix([1], [2], num_classes=3),
                                [[0, 0, 0], [0, 0, 1], [0, 0, 0]])


@pytest.mark.parametrize("y_true, y_pred, message", [
    ([0, 1], [0], "2 true labels but 1 predictions"),
    ([0, 4], [0, 1], "true class id 4"),
    ([0, 1], [-1, 1], "predicted class id -1"),
])
def test_confusion_matrix_rejects_bad_ids(y_true, y_pred, message):
  with pytest.raises(ValueError, match=message):
    metrics.confusion_matrix(y_true, y_pred)


def test_metrics_with_unpredicted_class_and_class_without_support():
  m = metrics.classification_metrics(metrics.confusion_matrix(Y_TRUE, Y_PRED))
  assert m["labels"] == list(LABELS)
  assert m["num_test"] == 10
  assert m["confusion_matrix"] == CM
  assert m["accuracy"] == pytest.approx(6 / 10)
  # Recall over the three classes with support: (3/4 + 0/2 + 3/4) / 3.
  assert m["unweighted_accuracy"] == pytest.approx(0.5)
  pc = m["per_class"]
  assert pc["happy"] == pytest.approx({"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4})
  # anger: never predicted -> precision 0 (defined), recall 0/2, F1 0.
  assert pc["anger"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
  assert pc["sad"] == pytest.approx({"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4})
  # neutral: predicted twice, never true -> precision 0/2, recall 0 (no support), F1 0.
  assert pc["neutral"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
  # All four classes occur in the truth or the predictions: (0.75 + 0 + 0.75 + 0) / 4.
  assert m["macro_f1"] == pytest.approx(0.375)
  assert m["weighted_f1"] == pytest.approx((4 * 0.75 + 4 * 0.75) / 10)
  flat = [m[k] for k in ("accuracy", "unweighted_accuracy", "macro_f1", "weighted_f1")]
  flat += [v for c in pc.values() for v in c.values()]
  assert all(math.isfinite(v) for v in flat)


def test_metrics_precision_recall_f1_differ():
  cm = [[5, 1, 0, 0],
        [2, 3, 1, 0],
        [0, 0, 4, 0],
        [1, 0, 0, 3]]
  m = metrics.classification_metrics(cm)
  p, r = 5 / 8, 5 / 6
  assert m["per_class"]["happy"]["precision"] == pytest.approx(p)
  assert m["per_class"]["happy"]["recall"] == pytest.approx(r)
  assert m["per_class"]["happy"]["f1"] == pytest.approx(2 * p * r / (p + r))
  assert m["per_class"]["happy"]["f1"] == pytest.approx(5 / 7)
  assert m["per_class"]["anger"]["f1"] == pytest.approx(2 * (3 / 4) * (3 / 6) / (3 / 4 + 3 / 6))
  assert m["per_class"]["sad"]["precision"] == pytest.approx(4 / 5)
  assert m["per_class"]["neutral"]["recall"] == pytest.approx(3 / 4)
  assert m["accuracy"] == pytest.approx(15 / 20)
  assert m["unweighted_accuracy"] == pytest.approx((5 / 6 + 3 / 6 + 1 + 3 / 4) / 4)
  f1 = [5 / 7, 0.6, 8 / 9, 6 / 7]
  assert m["macro_f1"] == pytest.approx(sum(f1) / 4)
  assert m["weighted_f1"] == pytest.approx((6 * f1[0] + 6 * f1[1] + 4 * f1[2] + 4 * f1[3]) / 20)


def test_macro_f1_skips_class_absent_from_truth_and_predictions():
  cm = [[2, 0, 0, 0],
        [0, 1, 1, 0],
        [0, 0, 2, 0],
        [0, 0, 0, 0]]
  m = metrics.classification_metrics(cm)
  # happy F1 1, anger p 1 r 1/2 -> 2/3, sad p 2/3 r 1 -> 4/5; neutral absent from both: not counted.
  assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 4 / 5) / 3)
  assert m["unweighted_accuracy"] == pytest.approx((1 + 0.5 + 1) / 3)


def test_classification_metrics_other_labels_and_errors():
  m = metrics.classification_metrics([[1, 1], [0, 2]], labels=("a", "b"))
  assert list(m["per_class"]) == ["a", "b"]
  assert m["accuracy"] == pytest.approx(0.75)
  with pytest.raises(ValueError, match="shape"):
    metrics.classification_metrics([[1, 0], [0, 1]])
  with pytest.raises(ValueError, match="empty"):
    metrics.classification_metrics(np.zeros((4, 4), int))


def test_aggregate_folds_mean_and_sample_std():
  folds = [{"accuracy": 0.5, "unweighted_accuracy": 0.4, "macro_f1": 0.3, "weighted_f1": 0.2},
           {"accuracy": 0.7, "unweighted_accuracy": 0.6, "macro_f1": 0.3, "weighted_f1": 0.4},
           {"accuracy": 0.6, "unweighted_accuracy": 0.8, "macro_f1": 0.3, "weighted_f1": 0.6}]
  agg = metrics.aggregate_folds(folds)
  assert set(agg) == {"accuracy", "unweighted_accuracy", "macro_f1", "weighted_f1"}
  assert agg["accuracy"]["mean"] == pytest.approx(0.6)
  # sqrt((0.1^2 + 0.1^2 + 0^2) / (3 - 1)) = 0.1
  assert agg["accuracy"]["std"] == pytest.approx(0.1)
  assert agg["unweighted_accuracy"]["std"] == pytest.approx(0.2)
  assert agg["macro_f1"]["std"] == pytest.approx(0.0)
  assert agg["weighted_f1"]["values"] == pytest.approx([0.2, 0.4, 0.6])
  single = metrics.aggregate_folds(folds[:1])
  assert single["accuracy"] == {"mean": 0.5, "std": 0.0, "values": [0.5]}
  with pytest.raises(ValueError, match="fold 1 has no 'macro_f1'"):
    metrics.aggregate_folds([folds[0], {"accuracy": 1.0, "unweighted_accuracy": 1.0}])
  with pytest.raises(ValueError, match="no folds"):
    metrics.aggregate_folds([])


def test_clip_probabilities_means_segments_in_first_seen_order():
  probs = np.array([[0.8, 0.2, 0.0, 0.0],
                    [0.1, 0.1, 0.7, 0.1],
                    [0.4, 0.6, 0.0, 0.0],
                    [0.0, 0.0, 0.0, 1.0]], np.float32)
  ids, clip = metrics.clip_probabilities(probs, ["b", "a", "b", "c"])
  assert ids == ["b", "a", "c"]
  assert clip.dtype == np.float32
  np.testing.assert_allclose(clip, [[0.6, 0.4, 0.0, 0.0],
                                    [0.1, 0.1, 0.7, 0.1],
                                    [0.0, 0.0, 0.0, 1.0]], atol=1e-7)
  with pytest.raises(ValueError, match="3 segment clip ids"):
    metrics.clip_probabilities(probs, ["a", "b", "c"])
