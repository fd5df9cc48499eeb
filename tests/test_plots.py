"""Every figure is a PNG of the promised pixel size with something drawn on it."""

import json

import numpy as np
import pytest
from matplotlib import image as mpimg

from lbher_jax import LABELS
from lbher_jax.evaluation import metrics, plots, report

pytestmark = pytest.mark.filterwarnings("error")  # e.g. a 0/0 in the row normalisation

CM = [[3, 0, 1, 0],
      [1, 0, 0, 1],
      [0, 0, 3, 1],
      [0, 0, 0, 0]]  # neutral: no support


def _check_png(path, height, width):
  assert path.stat().st_size > 0
  pixels = mpimg.imread(path)
  assert pixels.shape == (height, width, 4)
  assert np.ptp(pixels[..., :3]) > 0.5  # not a blank canvas
  assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_confusion_matrix_png(tmp_path):
  path = tmp_path / "figures" / "confusion_matrix.png"
  plots.plot_confusion_matrix(CM, LABELS, path)
  _check_png(path, 450, 1000)


def test_training_curves_from_jsonl_and_records(tmp_path):
  records = [{"phase": "pretrain", "step": s, "loss": 1.0 / (s + 1), "lr": 1e-3} for s in range(5)]
  records += [{"phase": "finetune", "step": 5 + s, "loss": 0.5 - 0.05 * s,
               "accuracy": 0.3 + 0.1 * s, "lr": 1e-4} for s in range(5)]
  records.append({"phase": "finetune", "step": 9, "val_unweighted_accuracy": 0.55})
  jsonl = tmp_path / "metrics.jsonl"
  jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
  plots.plot_training_curves(jsonl, tmp_path / "curves.png")
  _check_png(tmp_path / "curves.png", 400, 1300)
  plots.plot_training_curves(records[:5], tmp_path / "pretrain_only.png")
  _check_png(tmp_path / "pretrain_only.png", 400, 1300)
  jsonl.write_text(json.dumps(records[0]) + "\n{broken\n")
  with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON object"):
    plots.plot_training_curves(jsonl, tmp_path / "bad.png")


def test_per_class_png(tmp_path):
  plots.plot_per_class(metrics.classification_metrics(CM), tmp_path / "per_class.png")
  _check_png(tmp_path / "per_class.png", 400, 700)


def test_table2_png(tmp_path):
  rows = [*report.PAPER_TABLE2,
          {"model": "hybrid", "protocol": "speaker", "accuracy": 0.6, "unweighted_accuracy": 0.55}]
  plots.plot_table2(rows, tmp_path / "table2.png")
  _check_png(tmp_path / "table2.png", 450, 1200)


def test_timeline_png(tmp_path):
  def probs(p):
    return dict(zip(LABELS, p))
  prediction = {
      "video": "/data/clip.mp4", "duration_s": 7.5, "label": "anger",
      "probabilities": probs([0.1, 0.6, 0.2, 0.1]),
      "segments": [
          {"start": 0.0, "end": 3.0, "label": "anger", "probabilities": probs([.1, .7, .1, .1])},
          {"start": 3.0, "end": 6.0, "label": "sad", "probabilities": probs([.1, .3, .5, .1])},
          {"start": 6.0, "end": 7.5, "label": "anger", "probabilities": probs([.1, .8, 0., .1])},
      ]}
  plots.plot_timeline(prediction, tmp_path / "timeline.png")
  _check_png(tmp_path / "timeline.png", 400, 1000)
