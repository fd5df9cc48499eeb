"""The label-efficiency comparison (benchmarks/label_efficiency.py) against hand-computed values."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(name="le", scope="module")
def label_efficiency_module():
  sys.path.insert(0, str(BENCHMARKS))     # the script imports its folder's common.py
  spec = importlib.util.spec_from_file_location("label_efficiency",
                                                BENCHMARKS / "label_efficiency.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  yield module
  sys.path.remove(str(BENCHMARKS))


def test_table_pairs_seeds_and_reports_intervals(le):
  values = {"pretrained": {0.1: {0: 0.5, 1: 0.6, 2: 0.7}, 1.0: {0: 0.9}},
            "scratch": {0.1: {2: 0.5, 0: 0.4, 1: 0.6}, 1.0: {0: 0.95}}}
  t = le.table(values)
  # Pre-trained at 10 %: mean 0.6, std 0.1, t(0.975, 2) = 4.3027 -> half width 0.24841.
  pre = t["curves"]["pretrained"][0.1]
  assert pre["mean"] == pytest.approx(0.6) and pre["std"] == pytest.approx(0.1)
  assert pre["ci95"] == pytest.approx([0.6 - 0.24841, 0.6 + 0.24841], abs=1e-5)
  # Differences by seed 0.1, 0.0, 0.2: mean 0.1, std 0.1, the same half width.
  d = t["paired"][0.1]
  assert d["mean_difference"] == pytest.approx(0.1) and d["n"] == 3
  assert d["ci95"] == pytest.approx([0.1 - 0.24841, 0.1 + 0.24841], abs=1e-5)
  # One seed: a difference, but no interval or p-value is invented.
  one = t["paired"][1.0]
  assert one["mean_difference"] == pytest.approx(-0.05) and one["ci95"] is None
  assert one["p_value"] is None
  text = le.markdown(t, "python benchmarks/label_efficiency.py --workdir w")
  assert "| 10 % | 0.600 [0.352, 0.848] | 0.500 [0.252, 0.748] | +0.100 [-0.148, +0.348] |" in text
  assert "| 100 % | 0.900 (n = 1: no interval) |" in text


def test_seed_values_need_one_fold_per_seed(le):
  runs = [{"model": "hybrid", "seed": 0, "fold": 0, "unweighted_accuracy": 0.5},
          {"model": "hybrid", "seed": 1, "fold": 0, "unweighted_accuracy": 0.7}]
  assert le.seed_values({"runs": runs}) == {0: 0.5, 1: 0.7}
  with pytest.raises(ValueError, match="one fold per seed"):
    le.seed_values({"runs": runs + [{"model": "hybrid", "seed": 0, "fold": 1,
                                     "unweighted_accuracy": 0.6}]})


def test_arm_configs_differ_only_in_pretraining(le):
  pre = le.arm_config("configs/demo.py:tiny", ["model.sync_dim=4"], "pretrained", 0.25, [0, 1])
  scratch = le.arm_config("configs/demo.py:tiny", ["model.sync_dim=4"], "scratch", 0.25, [0, 1])
  assert pre.split.label_fraction == scratch.split.label_fraction == 0.25
  assert pre.model.sync_dim == 4 and tuple(pre.sweep.seeds) == (0, 1)
  assert pre.pretrain.steps > 0 and not pre.pretrain.use_labels and scratch.pretrain.steps == 0


def test_label_efficiency_figure(le, tmp_path):
  from lbher_jax.evaluation import plots
  curves = {"pre-trained": {0.1: {"mean": 0.4, "ci95": [0.3, 0.5]}, 1.0: {"mean": 0.9,
                                                                          "ci95": None}},
            "scratch": {0.1: {"mean": 0.35, "ci95": [0.2, 0.5]}, 1.0: {"mean": 0.92,
                                                                       "ci95": [0.9, 0.94]}}}
  path = tmp_path / "label_efficiency.png"
  plots.plot_curves(curves, path, xlabel="training clips with labels")
  pixels = mpimg.imread(path)
  assert pixels.shape == (4.0 * plots.DPI, 6.0 * plots.DPI, 4) and np.ptp(pixels[..., :3]) > 0.5
