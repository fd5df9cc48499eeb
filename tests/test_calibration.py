"""Temperature scaling and ECE against hand-computed and brute-force references."""

import numpy as np
import pytest

from lbher_jax.evaluation import calibration


def test_ece_hand_computed():
  # Two of the 15 bins are used: confidence 0.9 falls in (0.8667, 0.9333], 0.6 in (0.5333, 0.6].
  probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
  labels = np.array([0, 1, 0, 0])
  # bin of 0.9: accuracy 1/2, confidence 0.9 -> |0.5 - 0.9| = 0.4, share 1/2
  # bin of 0.6: accuracy 1/2 (first right, second predicts class 1: wrong), conf 0.6 -> 0.1, 1/2
  assert calibration.expected_calibration_error(probs, labels) == pytest.approx(
      0.5 * 0.4 + 0.5 * 0.1)
  assert calibration.expected_calibration_error(np.eye(3), np.arange(3)) == 0.0


def test_fitted_temperature_matches_a_brute_force_search():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, 300)
  logits = rng.normal(size=(300, 4)) + 4.0 * np.eye(4)[labels] * rng.uniform(0, 1.5, (300, 1))
  fitted = calibration.fit_temperature(logits, labels)
  grid = np.exp(np.linspace(-3, 3, 20001))
  best = grid[np.argmin([calibration.nll(logits, labels, t) for t in grid])]
  assert fitted == pytest.approx(best, rel=1e-3)
  assert calibration.nll(logits, labels, fitted) <= calibration.nll(logits, labels, 1.0)


def test_overconfident_logits_get_a_temperature_above_one_and_a_lower_ece():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 4, 2000)
  # The true class gets +1 over noise, then everything is scaled by 5: too confident.
  logits = 5.0 * (rng.normal(size=(2000, 4)) + np.eye(4)[labels])
  t = calibration.fit_temperature(logits, labels)
  assert t > 2.0
  before = calibration.expected_calibration_error(calibration.softmax(logits), labels)
  after = calibration.expected_calibration_error(calibration.softmax(logits, t), labels)
  assert after < before / 2
  # The temperature never changes the predicted class.
  np.testing.assert_array_equal(calibration.softmax(logits, t).argmax(1), logits.argmax(1))


def test_temperature_file_round_trip(tmp_path):
  assert calibration.load_temperature(tmp_path) == 1.0
  (tmp_path / calibration.FILE).write_text('{"temperature": 1.7}')
  assert calibration.load_temperature(tmp_path) == 1.7
