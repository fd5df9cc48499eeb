"""--mode sweep: the statistics against hand-computed values, the plan, a tiny sweep end to end
with resume, and Table 2 as a protocol sweep."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from configs import demo as demo_config
from configs import table2 as table2_config
from lbher_jax import sweep
from lbher_jax.evaluation import report, stats

ROOT = Path(__file__).resolve().parents[1]


def test_summarize_matches_hand_computed_values():
  s = stats.summarize([0.5, 0.6, 0.7])
  # mean 0.6; std sqrt(((-.1)^2 + 0 + .1^2) / 2) = 0.1; t(0.975, 2) = 4.302653; half 0.1 / sqrt 3
  assert s["n"] == 3 and s["mean"] == pytest.approx(0.6) and s["std"] == pytest.approx(0.1)
  half = 4.302652729911275 * 0.1 / math.sqrt(3)
  assert s["ci95"] == pytest.approx([0.6 - half, 0.6 + half])


def test_one_unit_has_no_interval():
  assert stats.summarize([0.42]) == {"mean": 0.42, "std": None, "ci95": None, "n": 1}
  assert stats.paired([0.5], [0.4]) == {"mean_difference": pytest.approx(0.1), "ci95": None,
                                        "p_value": None, "n": 1}
  assert stats.format_interval(stats.summarize([0.42])) == "0.420 (n = 1: no interval)"


def test_paired_difference_interval_and_p_value():
  a, b = [0.60, 0.55, 0.70, 0.65], [0.50, 0.52, 0.58, 0.60]
  # differences 0.10, 0.03, 0.12, 0.05: mean 0.075, std 0.04203, se 0.021016; t = 3.5688 on 3
  # degrees of freedom: two-sided p = 0.03757; t(0.975, 3) = 3.182446.
  p = stats.paired(a, b)
  assert p["n"] == 4 and p["mean_difference"] == pytest.approx(0.075)
  se = math.sqrt(sum((d - 0.075) ** 2 for d in (0.10, 0.03, 0.12, 0.05)) / 3) / 2
  assert p["ci95"] == pytest.approx([0.075 - 3.182446305284263 * se,
                                     0.075 + 3.182446305284263 * se])
  assert p["p_value"] == pytest.approx(0.03757, abs=2e-5)
  assert stats.paired(b, a)["mean_difference"] == pytest.approx(-0.075)
  same = stats.paired([0.5, 0.6], [0.4, 0.5])    # every unit differs by exactly 0.1
  assert same["ci95"] == pytest.approx([0.1, 0.1]) and same["p_value"] == 0.0
  with pytest.raises(ValueError):
    stats.paired([0.1, 0.2], [0.1])


def test_stream_layers_of_a_two_stream_model_are_arms_of_their_own(tmp_path):
  """The hybrid's per-stream output layers (results.json "heads") are summarised and paired like
  models: each seed's folds pooled, against the single-stream model over the same seeds."""
  def matrix(right):   # 4 clips per class, `right[c]` of class c correct, the rest called 0 / 1
    cm = [[0] * 4 for _ in range(4)]
    for c, k in enumerate(right):
      cm[c][c] += k
      cm[c][1 if c == 0 else 0] += 4 - k
    return cm

  def write(model, seed, fold, right, heads=None):
    run = sweep.Run(model, "config", seed, fold)
    run.directory(tmp_path).mkdir(parents=True)
    res = {"accuracy": 0.0, "unweighted_accuracy": 0.0, "macro_f1": 0.0, "num_test": 16,
           "confusion_matrix": matrix(right)}
    if heads:
      res["heads"] = {k: {"confusion_matrix": matrix(v)} for k, v in heads.items()}
    (run.directory(tmp_path) / "results.json").write_text(json.dumps(res))
    return run

  runs = []
  for seed, (audio, rnn) in enumerate((((4, 4, 0, 0), (1, 1, 1, 1)), ((4, 4, 4, 0), (3, 3, 3, 3)))):
    for fold in (0, 1):
      runs.append(write("hybrid", seed, fold, (4, 4, 4, 4),
                        {"audio": audio, "video": (1, 1, 1, 1)}))
      runs.append(write("cnn_rnn", seed, fold, rnn))
  config = demo_config.get_config("tiny")
  result = sweep.collect(tmp_path, runs, config)
  audio = result["summary"]["hybrid:audio"]["unweighted_accuracy"]
  assert audio["n"] == 2 and audio["mean"] == pytest.approx((0.5 + 0.75) / 2)
  assert result["summary"]["hybrid:video"]["accuracy"]["mean"] == pytest.approx(0.25)
  # Each seed's unit: seed 1's audio layer gets 12 of 16 clips per fold, 3 of 4 classes right.
  assert result["units"]["hybrid:audio"]["1"]["unweighted_accuracy"] == pytest.approx(0.75)
  assert result["units"]["cnn_rnn"]["0"]["accuracy"] == pytest.approx(0.25)
  pair = next(p for p in result["paired"] if {p["a"], p["b"]} == {"cnn_rnn", "hybrid:audio"}
              and p["metric"] == "unweighted_accuracy")
  sign = 1 if pair["a"] == "hybrid:audio" else -1
  assert sign * pair["mean_difference"] == pytest.approx(((0.5 - 0.25) + (0.75 - 0.75)) / 2)
  # A layer whose fold is missing makes no unit, like a model's.
  (runs[-2].directory(tmp_path) / "results.json").unlink()
  assert result["summary"]["hybrid:audio"]["accuracy"]["n"] == 2
  assert sweep.collect(tmp_path, runs, config)["summary"]["hybrid:audio"]["accuracy"]["n"] == 1


def test_grouped_bootstrap_resamples_whole_groups():
  # Two speakers, one clip each, values 0 and 1: a resample holds both (mean 0.5, probability
  # 1/2), only the first (0, 1/4) or only the second (1, 1/4); the percentile interval spans
  # [0, 1]. A statistic that is the same for every resample has a zero-width interval.
  values = np.array([0.0, 1.0])
  assert stats.grouped_bootstrap(lambda i: values[i].mean(), ["a", "b"]) == [0.0, 1.0]
  assert stats.grouped_bootstrap(lambda i: 0.25, ["a", "a", "b"]) == [0.25, 0.25]
  # Clips of one speaker move together: 5 clips of 0 and 3 of 1 resample as two groups (means
  # 0, 0.375 or 1), not as 8 clips, whose percentile interval would be far narrower.
  many = np.array([0.0] * 5 + [1.0] * 3)
  assert stats.grouped_bootstrap(lambda i: many[i].mean(), ["a"] * 5 + ["b"] * 3) == [0.0, 1.0]


def test_seed_ensemble_averages_each_clips_probabilities_over_the_seeds(tmp_path):
  """Two seeds, two folds each, four clips of four speakers; the folds differ between seeds.
  Seed 0 misses clip 2, seed 1 clip 1; their mean gets all four right."""
  probs = {  # seed -> clip -> probabilities over LABELS (happy, anger, sad, neutral)
    0: [[.7, .1, .1, .1], [.1, .6, .2, .1], [.4, .1, .3, .2], [.1, .1, .1, .7]],
    1: [[.6, .2, .1, .1], [.5, .3, .1, .1], [.1, .1, .8, .0], [.1, .1, .1, .7]]}
  truth = ["happy", "anger", "sad", "neutral"]
  folds = {0: ([0, 1], [2, 3]), 1: ([0, 2], [1, 3])}
  runs = []
  for seed, parts in folds.items():
    for fold, clips in enumerate(parts):
      run = sweep.Run("cnn_rnn", "config", seed, fold)
      d = run.directory(tmp_path)
      d.mkdir(parents=True)
      (d / "results.json").write_text(json.dumps(
        {"accuracy": 0.0, "unweighted_accuracy": 0.0, "macro_f1": 0.0, "num_test": 2,
         "confusion_matrix": [[1, 0, 0, 0]] * 4}))
      rows = [{"id": f"c{c}", "speaker": f"s{c}", "true": truth[c], "pred": "happy",
               "probs": probs[seed][c]} for c in clips]
      report.write_predictions_csv(d / "predictions.csv", rows)
      runs.append(run)
  e = sweep.collect(tmp_path, runs, demo_config.get_config("tiny"))["ensembles"]["cnn_rnn"]
  assert e["seeds"] == [0, 1] and e["clips"] == 4 and e["speakers"] == 4
  # Each member misses one class of four (UA 0.75); the mean has clip 1 at anger 0.45 > happy
  # 0.3 and clip 2 at sad 0.55 > happy 0.25.
  assert e["members_unweighted_accuracy"] == pytest.approx([0.75, 0.75])
  assert e["unweighted_accuracy"] == pytest.approx(1.0) and e["macro_f1"] == pytest.approx(1.0)
  g = e["gain_unweighted_accuracy"]
  assert g["mean_difference"] == pytest.approx(0.25)
  assert g["ci95"][0] <= g["mean_difference"] <= g["ci95"][1]
  # A seed with an unfinished fold takes no part; one seed makes no ensemble.
  (runs[-1].directory(tmp_path) / "results.json").unlink()
  assert sweep.collect(tmp_path, runs, demo_config.get_config("tiny"))["ensembles"] == {}


def test_run_config_sets_model_protocol_seed_and_fold_and_leaves_the_base_alone():
  base = table2_config.get_config("tiny")
  assert base.sweep.models == ("cnn", "cnn_lstm", "cnn_rnn", "hybrid")
  assert base.sweep.protocols == ("90-10", "80-20", "70-30", "speaker")
  for protocol, fraction in (("90-10", 0.1), ("80-20", 0.2), ("70-30", 0.3)):
    c = sweep.run_config(base, sweep.Run("cnn_lstm", protocol, 3, 0))
    assert (c.model.name, c.split.protocol, c.split.test_fraction, c.seed) == (
        "cnn_lstm", "random", fraction, 3)
    assert not c.split.leaky_paper_oversampling
  assert sweep.run_config(base, sweep.Run("cnn", "paper-80-20", 0, 0)).split.leaky_paper_oversampling
  c = sweep.run_config(base, sweep.Run("hybrid", "speaker", 1, 2))
  assert (c.model.name, c.split.protocol, c.split.fold) == ("hybrid", "speaker", 2)
  assert (base.model.name, base.split.protocol, base.seed) == ("hybrid", "speaker", 0)
  base.sweep.protocols = ("50-50",)
  with pytest.raises(ValueError, match="unknown sweep protocol"):
    sweep.protocols_of(base)


def test_plan_covers_every_fold_of_every_seed():
  c = demo_config.get_config("tiny")       # 5 speakers
  c.sweep.models, c.sweep.seeds = ("cnn", "hybrid"), (0, 1)
  c.split.fold, c.split.num_folds = -1, 5
  utterances = [type("U", (), {"speaker": f"s{i}", "session": None, "id": f"u{i}"})()
                for i in range(5)]
  runs = sweep.plan(c, utterances)
  assert len(runs) == 2 * 2 * 5 and len(set(runs)) == len(runs)
  assert {r.fold for r in runs} == set(range(5)) and runs[0].seed == 0 and runs[-1].seed == 1
  c.split.fold = 3
  assert {r.fold for r in sweep.plan(c, utterances)} == {3}


def test_paper_scale_and_small_variants():
  paper, small = table2_config.get_config(), table2_config.get_config("small")
  assert (paper.audio.height, paper.audio.width) == (200, 300) and paper.data.name == "demo"
  assert (small.audio.height, small.audio.width) == (64, 96)
  assert small.train.steps < paper.train.steps
  with pytest.raises(ValueError, match="unknown variant"):
    table2_config.get_config("huge")


def _main(workdir: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "LBHER_CACHE": str(cache), "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_backend_optimization_level=0"}   # compile fast; tests only
  cmd = [sys.executable, "-m", "lbher_jax.main", "--workdir", str(workdir), "--mode", "sweep",
         *args]
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_tiny_sweep_over_seeds_and_folds_resumes(tmp_path):
  # Two models x two seeds x every fold of the 5-speaker tiny demo in 2 folds: 8 runs.
  workdir, cache = tmp_path / "work", tmp_path / "cache"
  args = ("--config", "configs/demo.py:tiny", "--config.split.fold=-1",
          "--config.split.num_folds=2",
          "--config.sweep.models=('cnn','cnn_rnn')", "--config.sweep.seeds=(0,1)",
          "--config.pretrain.steps=0", "--config.train.steps=2", "--config.train.checkpoint_every=2")
  first = _main(workdir, cache, *args)
  assert first.returncode == 0, first.stderr[-3000:]
  result = json.loads((workdir / "sweep.json").read_text())
  assert len(result["runs"]) == result["planned_runs"] == 8
  assert "run 8 of 8" in first.stderr and "left" in first.stderr
  for model in ("cnn", "cnn_rnn"):
    for seed in (0, 1):
      runs = [r for r in result["runs"] if r["model"] == model and r["seed"] == seed]
      assert sorted(r["fold"] for r in runs) == [0, 1]
      assert sum(r["num_test"] for r in runs) == 20      # every clip tested once per seed
    s = result["summary"][model]
    assert set(s) == {"accuracy", "unweighted_accuracy", "macro_f1"}
    assert s["accuracy"]["n"] == 2 and len(s["accuracy"]["ci95"]) == 2
  # A unit is a seed's pooled result: recompute one from the runs.
  cnn0 = [r for r in result["runs"] if r["model"] == "cnn" and r["seed"] in (0,)]
  cnn1 = [r for r in result["runs"] if r["model"] == "cnn" and r["seed"] in (1,)]
  acc = [sum(r["accuracy"] * r["num_test"] for r in rs) / 20 for rs in (cnn0, cnn1)]
  assert result["summary"]["cnn"]["accuracy"]["mean"] == pytest.approx(sum(acc) / 2)
  expected = stats.summarize(acc)
  assert result["summary"]["cnn"]["accuracy"]["std"] == pytest.approx(expected["std"])
  assert result["summary"]["cnn"]["accuracy"]["ci95"] == pytest.approx(expected["ci95"])
  assert {(p["a"], p["b"]) for p in result["paired"]} == {("cnn", "cnn_rnn")}
  assert {p["metric"] for p in result["paired"]} == {"accuracy", "unweighted_accuracy",
                                                     "macro_f1"}
  assert "Student t" in result["methods"]["interval"] and "configs/demo.py:tiny" in result["command"]
  for model in ("cnn", "cnn_rnn"):   # every clip tested by both seeds, so all 20 in the ensemble
    e = result["ensembles"][model]
    assert e["seeds"] == [0, 1] and e["clips"] == 20 and e["speakers"] == 5
  md = (workdir / "sweep.md").read_text()
  assert "configs/demo.py:tiny" in md and "| cnn_rnn | 2 |" in md and "| cnn_rnn | 0,1 | 20 |" in md
  with open(workdir / "sweep.csv") as f:
    assert len(list(csv.DictReader(f))) == 8
  assert (workdir / "figures" / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  run_dir = workdir / "runs" / "cnn" / "config" / "seed_1" / "fold_1"
  assert (run_dir / "results.json").exists() and (run_dir / "checkpoints").is_dir()
  assert (run_dir.parent / "shards").resolve() == (workdir / "shards").resolve()

  # Killed after some runs: delete one run's results (as if it never finished), rerun.
  shards = {p: p.stat().st_mtime_ns for p in (workdir / "shards").glob("shard_*")}
  done = (workdir / "runs" / "cnn_rnn" / "config" / "seed_0" / "fold_1" / "results.json")
  done.unlink()
  again = _main(workdir, cache, *args)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stderr.count("finished earlier") == 7
  assert {p: p.stat().st_mtime_ns for p in (workdir / "shards").glob("shard_*")} == shards
  rerun = json.loads((workdir / "sweep.json").read_text())
  assert rerun["runs"] == result["runs"]          # deterministic: the redone run is identical


@pytest.mark.slow
def test_table2_is_a_protocol_sweep_with_the_papers_figures(tmp_path):
  workdir, cache = tmp_path / "work", tmp_path / "cache"
  result = _main(workdir, cache, "--config", "configs/table2.py:tiny",
                 "--config.sweep.models=('cnn',)",
                 "--config.sweep.protocols=('90-10','speaker')")
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads((workdir / "sweep.json").read_text())
  assert set(out["summary"]) == {"cnn/90-10", "cnn/speaker"}
  assert {(p["a"], p["b"]) for p in out["paired"]} == {("cnn/90-10", "cnn/speaker")}
  r = {x["protocol"]: x for x in out["runs"]}
  assert r["90-10"]["num_test"] == 4          # one clip of each class of 10
  table = (workdir / "table2.md").read_text()
  assert (f"| CNN | {r['90-10']['accuracy']:.3f} / {r['90-10']['unweighted_accuracy']:.3f} | – | – "
          f"| {r['speaker']['accuracy']:.3f} / {r['speaker']['unweighted_accuracy']:.3f} |") in table
  assert "| CNN+RNN+3DCNN (Proposed) | 0.952 | 0.947 | 0.941 | – |" in table   # the paper's
  with open(workdir / "table2.csv") as f:
    rows = {row["model"]: row for row in csv.DictReader(f)}
  assert float(rows["CNN"]["accuracy_speaker"]) == pytest.approx(r["speaker"]["accuracy"],
                                                                 abs=1e-4)
  assert (workdir / "figures" / "table2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
