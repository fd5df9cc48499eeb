"""The learning curve over training speakers (benchmarks/speaker_curve.py) and the baselines'
speaker subsets, against hand-computed values."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from lbher_jax.data import splits
from lbher_jax.datasets import Utterance

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
  spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(name="curve", scope="module")
def speaker_curve_module():
  sys.path.insert(0, str(BENCHMARKS))     # the scripts import their folder's modules
  yield _load("speaker_curve")
  sys.path.remove(str(BENCHMARKS))


@pytest.fixture(name="baselines", scope="module")
def baselines_module():
  sys.path.insert(0, str(BENCHMARKS))
  yield _load("baselines")
  sys.path.remove(str(BENCHMARKS))


def test_fit_of_an_exact_line(curve):
  # UA = 0.30 + 0.05 log2 K: 0.40 at 4, 0.45 at 8, 0.50 at 16; 0.60 at 2^6 = 64.
  fit = curve.log_fit([(4, 0.40), (8, 0.45), (16, 0.50)], target=0.60)
  assert fit["per_doubling"] == pytest.approx(0.05) and fit["intercept"] == pytest.approx(0.30)
  assert fit["per_doubling_ci95"] == pytest.approx([0.05, 0.05])
  assert fit["speakers_to_target"] == pytest.approx(64.0)


def test_fit_interval_by_hand(curve):
  # log2 K = 1, 1, 2, 2 with UA .4 .5 .6 .5: slope 0.1, residuals +-0.05, SSR 0.01, Sxx 1,
  # se = sqrt(0.01 / 2 / 1), t(0.975, 2) = 4.302653 -> half width 0.304243.
  fit = curve.log_fit([(2, 0.4), (2, 0.5), (4, 0.6), (4, 0.5)], target=0.60)
  assert fit["per_doubling"] == pytest.approx(0.1)
  assert fit["per_doubling_ci95"] == pytest.approx([0.1 - 0.304243, 0.1 + 0.304243], abs=1e-6)
  assert fit["speakers_to_target"] == pytest.approx(2.0 ** 2.5)   # a = 0.35
  falling = curve.log_fit([(2, 0.5), (4, 0.4)], target=0.60)
  assert falling["speakers_to_target"] is None and falling["per_doubling_ci95"] is None
  with pytest.raises(ValueError, match="2 sizes"):
    curve.log_fit([(4, 0.4), (4, 0.5)], target=0.6)


def test_main_runs_one_sweep_per_size_and_writes_its_outputs(curve, tmp_path, monkeypatch):
  seen = []

  def fake_sweep(config, workdir, command=None):   # UA = 0.2 + 0.05 log2 K + 0.01 seed
    seen.append((config.split.train_speakers, config.split.fold, tuple(config.split.test_speakers),
                 tuple(config.sweep.models), Path(workdir).name))
    k = config.split.train_speakers
    line = lambda s: {"unweighted_accuracy": 0.2 + 0.05 * np.log2(k) + 0.01 * s}
    return {"units": {"cnn_rnn": {str(s): line(s) for s in config.sweep.seeds},
                      "cnn_rnn:audio": {str(s): line(s) for s in config.sweep.seeds}}}

  monkeypatch.setattr(curve.sweep, "run", fake_sweep)
  monkeypatch.setattr(curve, "baseline_values", lambda config, workdir, sizes, seeds: {
      name: {k: {s: 0.5 for s in seeds} for k in sizes} for name in curve.BASELINES.values()})
  out_json = tmp_path / "curve.json"
  out = curve.main(["--config", "configs/ravdess.py:fer_av", "--workdir", str(tmp_path / "w"),
                    "--sizes", "8,2,4", "--seeds", "0,2", "--json", str(out_json)])
  assert seen == [(k, -1, (), ("cnn_rnn",), f"speakers_{k}") for k in (2, 4, 8)]
  assert out["curves"]["cnn_rnn"]["4"]["mean"] == pytest.approx(0.31)   # 0.2 + 0.1 + 0.01
  assert out["curves"]["cnn_rnn:audio"] == out["curves"]["cnn_rnn"]     # a layer: its own curve
  fit = out["fits"]["cnn_rnn"]
  assert fit["per_doubling"] == pytest.approx(0.05)
  assert fit["speakers_to_target"] == pytest.approx(2.0 ** ((0.60 - 0.21) / 0.05))
  assert out["fits"]["MFCC logistic regression"]["speakers_to_target"] is None   # flat: never
  assert json.loads(out_json.read_text())["values"]["cnn_rnn"]["8"]["2"] == pytest.approx(0.37)
  text = (tmp_path / "w" / "speaker_curve.md").read_text()
  assert ("| 4 | 0.310 [0.183, 0.437] | 0.310 [0.183, 0.437] | 0.500 [0.500, 0.500] | "
          "0.500 [0.500, 0.500] |") in text
  # Residuals +-0.01 at log2 K = 1, 2, 3: se = sqrt(6e-4 / 4 / 4), t(0.975, 4) = 2.776445 ->
  # half width 0.0170; a = 0.21, so 0.60 at 2^7.8 = 223 speakers.
  assert "| cnn_rnn | +0.050 [+0.033, +0.067] | 223 |" in text
  assert "| MFCC logistic regression | +0.000 [-0.000, +0.000] | never |" in text
  pixels = mpimg.imread(tmp_path / "w" / "figures" / "speaker_curve.png")
  assert np.ptp(pixels[..., :3]) > 0.5


def test_baseline_trains_on_the_speakers_of_the_learned_models(baselines, monkeypatch):
  utterances = [Utterance(f"s{s}-{label}-{k}", Path("x.mp4"), None, None, None, label, f"s{s}")
                for s in range(12) for label in ("happy", "sad") for k in range(2)]
  trained_on = []

  class Always:   # predicts "happy" and records the speakers it was fitted on
    def predict_proba(self, x):
      return np.tile([1.0, 0.0, 0.0, 0.0], (len(x), 1))

  def fit(x, y, speakers):
    trained_on.append(set(speakers))
    return Always()

  monkeypatch.setattr(baselines, "fit_classifier", fit)
  features = {"voice": np.zeros((len(utterances), 3))}
  out = baselines.cross_validate(utterances, features, num_folds=3, seed=1, train_speakers=5,
                                 val_fraction=0.1)
  assert out["voice"]["unweighted_accuracy"] == pytest.approx(0.5)
  assert len(trained_on) == 3
  for fold, speakers in enumerate(trained_on):
    part = splits.make_split(utterances, num_folds=3, fold=fold, val_fraction=0.1, seed=1,
                             train_speakers=5)
    assert speakers == {u.speaker for u in utterances if u.id in set(part.train)}
    assert len(speakers) == 5
  trained_on.clear()
  baselines.cross_validate(utterances, features, num_folds=3, seed=1)   # all non-test speakers
  assert [len(s) for s in trained_on] == [8, 8, 8]


def test_spectrogram_statistics_pool_the_segments_by_hand(baselines):
  spec = np.array([[[0, 1, 2], [3, 3, 3]], [[4, 5, 6], [3, 3, 3]]], np.float32)
  # Row 0 pools 0 1 2 4 5 6: mean 3, std sqrt(28 / 6); row 1 is constant 3.
  np.testing.assert_allclose(baselines.spectrogram_features(spec),
                             [3.0, 3.0, np.sqrt(28 / 6), 0.0], rtol=1e-6)
