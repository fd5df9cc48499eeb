"""The one command, as a user runs it: Algorithm 1 on a tiny demo corpus, resume, predict."""

import csv
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from configs import demo
from lbher_jax import LABELS, export, inference, media, predict

pytestmark = pytest.mark.slow  # subprocess / end-to-end runs

ROOT = Path(__file__).resolve().parents[1]


def _main(workdir: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "LBHER_CACHE": str(cache), "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_backend_optimization_level=0"}   # compile fast; tests only
  cmd = [sys.executable, "-m", "lbher_jax.main", "--config", "configs/demo.py:tiny",
         "--workdir", str(workdir), *args]
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _phase_records(workdir: Path, phase: str) -> list[dict]:
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return [r for r in map(json.loads, lines) if r["phase"] == phase]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  base = tmp_path_factory.mktemp("e2e")
  workdir, cache = base / "work", base / "cache"
  first = _main(workdir, cache)
  assert first.returncode == 0, first.stderr[-3000:]
  return workdir, cache, first


def test_all_outputs_follow_the_contract(run):
  workdir, _, first = run
  results = json.loads((workdir / "results.json").read_text())
  for key in ("labels", "accuracy", "unweighted_accuracy", "macro_f1", "per_class",
              "confusion_matrix", "num_test", "protocol", "model"):
    assert key in results, key
  assert results["labels"] == list(LABELS)
  assert results["protocol"] == "speaker" and results["model"] == "hybrid"
  cm = results["confusion_matrix"]
  assert sum(map(sum, cm)) == results["num_test"] > 0
  assert abs(results["accuracy"] - sum(cm[i][i] for i in range(4)) / results["num_test"]) < 1e-9
  # The hybrid's streams, each through its own output layer, on the same test clips.
  assert set(results["heads"]) == {"audio", "video"}
  for head in results["heads"].values():
    assert sum(map(sum, head["confusion_matrix"])) == results["num_test"]
    assert 0 <= head["unweighted_accuracy"] <= 1
  assert "## Each stream's own output layer" in (workdir / "report.md").read_text()
  # The software stack the figures were computed with, read from the installed packages.
  assert results["stack"]["jax"] == importlib.metadata.version("jax")
  assert results["stack"]["numpy"] == np.__version__
  assert {"flax", "optax", "orbax-checkpoint", "grain", "jaxlib", "platform"} <= set(results["stack"])
  assert re.fullmatch(r"\d+ x .+ \(cpu\)", results["devices"]), results["devices"]
  # Calibration: a temperature fitted on the validation speakers, saved for predict and export.
  cal = results["calibration"]
  assert cal["bins"] == 15 and cal["temperature"] > 0
  assert 0 <= cal["ece_before"] <= 1 and 0 <= cal["ece_after"] <= 1
  assert json.loads((workdir / "calibration.json").read_text())["temperature"] == cal["temperature"]
  assert (workdir / "figures" / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  # Pre-training's correspondence on the test speakers.
  assert {"auc_all", "auc_same_emotion", "top1_all", "top1_same_emotion", "candidates",
          "collapsed"} <= set(results["pretraining"])
  with open(workdir / "predictions.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == results["num_test"]
  assert set(rows[0]) >= {"id", "speaker", "true", "pred", *[f"p_{l}" for l in LABELS]}
  split = json.loads((workdir / "split.json").read_text())
  test_speakers = {r["speaker"] for r in rows}
  train_speakers = {i.split("_")[0] for i in split["train"] + split["val"]}
  assert not test_speakers & train_speakers            # speaker-independent
  assert (workdir / "figures" / "confusion_matrix.png").stat().st_size > 0
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["finetune", "pretrain"]
  phases = {json.loads(l)["phase"] for l in (workdir / "metrics.jsonl").read_text().splitlines()}
  assert phases == {"pretrain", "finetune"}
  assert "Statistics P" in first.stdout and "Results R" in first.stdout


def test_rerun_resumes_without_redoing_work(run):
  workdir, cache, _ = run
  shard_files = lambda: {p: p.stat().st_mtime_ns for p in (workdir / "shards").glob("shard_*")}
  before = shard_files()
  ckpts = sorted((workdir / "checkpoints" / "finetune").iterdir())
  results = (workdir / "results.json").read_text()
  again = _main(workdir, cache)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "finished earlier" in again.stderr
  assert shard_files() == before
  assert sorted((workdir / "checkpoints" / "finetune").iterdir()) == ckpts
  assert (workdir / "results.json").read_text() == results


def _check_prediction(path: Path, video: Path) -> dict:
  out = json.loads(path.read_text())
  assert out["video"] == str(video)
  assert out["label"] in LABELS and set(out["probabilities"]) == set(LABELS)
  assert abs(sum(out["probabilities"].values()) - 1) < 1e-4
  assert out["segments"] and out["segments"][0]["start"] == 0.0
  assert out["duration_s"] >= out["segments"][-1]["end"] - 1e-6
  return out


def test_predict_on_a_demo_video(run):
  workdir, cache, _ = run
  video = next((cache / "demo-v2").rglob("*.mp4"))
  result = _main(workdir, cache, "--mode", "predict", "--video", str(video))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "overall:" in result.stdout
  _check_prediction(workdir / "predictions" / f"{video.stem}.json", video)


def test_predict_gives_the_calibrated_probabilities_of_evaluation(run):
  # A test clip predicted from its file: the same (temperature-scaled) probabilities as the
  # evaluation's predictions.csv row.
  workdir, cache, _ = run
  with open(workdir / "predictions.csv") as f:
    row = next(csv.DictReader(f))
  video = next((cache / "demo-v2").rglob(f"{row['id']}.mp4"))
  result = _main(workdir, cache, "--mode", "predict", "--video", str(video))
  assert result.returncode == 0, result.stderr[-3000:]
  out = _check_prediction(workdir / "predictions" / f"{video.stem}.json", video)
  for label in LABELS:
    assert out["probabilities"][label] == pytest.approx(float(row[f"p_{label}"]), abs=2e-3)


def test_predict_on_a_real_recording(run, ravdess_fer_av, tmp_path):
  workdir, cache, _ = run
  video = ravdess_fer_av / "Actor_01" / "01-01-05-01-01-01-01.mp4"
  out = tmp_path / "real.json"
  result = _main(workdir, cache, "--mode", "predict", "--video", str(video), "--output", str(out))
  assert result.returncode == 0, result.stderr[-3000:]
  _check_prediction(out, video)


def test_bad_video_is_one_line_error(run, tmp_path):
  workdir, cache, _ = run
  bad = tmp_path / "notes.mp4"
  bad.write_text("not a video")
  result = _main(workdir, cache, "--mode", "predict", "--video", str(bad))
  assert result.returncode != 0
  assert "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith(f"error: {bad}")


def test_stages_one_by_one_and_all_folds(run, tmp_path):
  """--mode preprocess / pretrain / train / evaluate each alone; split.fold=-1 runs every fold."""
  _, cache, _ = run
  workdir = tmp_path / "stages"
  for mode, made in (("preprocess", "shards/index.json"), ("pretrain", "checkpoints/pretrain"),
                     ("train", "checkpoints/finetune"), ("evaluate", "results.json")):
    result = _main(workdir, cache, "--mode", mode)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (workdir / made).exists(), mode
    if mode == "pretrain":   # a stage does its own work only
      assert not (workdir / "checkpoints" / "finetune").exists()
      pretrain_log = _phase_records(workdir, "pretrain")
      assert pretrain_log
    if mode == "train":      # fine-tuning alone starts from the finished pre-training, not redone
      assert "starting from the pre-trained weights" in result.stderr
      assert _phase_records(workdir, "pretrain") == pretrain_log
      assert _phase_records(workdir, "finetune")
  assert set(json.loads((workdir / "results.json").read_text())["per_class"]) == set(LABELS)

  folds = tmp_path / "folds"
  result = _main(folds, cache, "--config.split.fold=-1", "--config.split.num_folds=2",
                 "--config.pretrain.steps=0")
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((folds / "results.json").read_text())
  per_fold = [json.loads((folds / f"fold_{k}" / "results.json").read_text()) for k in (0, 1)]
  assert summary["num_test"] == sum(f["num_test"] for f in per_fold) == 20   # every clip once
  pooled = [[sum(f["confusion_matrix"][i][j] for f in per_fold) for j in range(4)]
            for i in range(4)]
  assert summary["confusion_matrix"] == pooled
  accs = [f["accuracy"] for f in per_fold]
  assert abs(summary["aggregate"]["accuracy"]["mean"] - sum(accs) / 2) < 1e-9


def test_export_gives_the_in_process_outputs(run):
  """--mode export writes a model that needs no training code and predicts as the workdir does."""
  workdir, cache, _ = run
  result = _main(workdir, cache, "--mode", "export")
  assert result.returncode == 0, result.stderr[-3000:]
  exported, meta = export.load_exported(workdir / "export")
  config = demo.get_config("tiny")
  assert meta["labels"] == list(LABELS) and set(meta["inputs"]) == {"audio", "video"}
  assert meta["preprocessing"]["audio"] == config.audio.to_dict()
  assert meta["source"]["model"]["name"] == "hybrid"

  in_process = inference.load_classifier(config, workdir, predict.CHUNK_SEGMENTS)
  rng = np.random.default_rng(0)
  batch = {k: (rng.uniform(-1, 1, x.shape).astype(x.dtype) if k == "audio"
               else rng.integers(0, 256, x.shape).astype(x.dtype))
           for k, x in inference.example_batch(config, 3).items() if k in ("audio", "video")}
  ours, theirs = exported(batch), in_process(batch)
  assert sorted(ours) == sorted(theirs) == ["audio_probs", "probs", "video_probs"]
  for name in ours:
    np.testing.assert_allclose(ours[name], theirs[name], atol=1e-5)
  # A whole video, preprocessed from the export's own settings.
  clip = next((cache / "demo-v2").rglob("*.mp4"))
  from_export, *params, seed = predict.load_export(workdir / "export")
  assert seed == config.data.noise_seed
  ours, theirs = (predict.predict_video(clip, c, *params, seed=seed) for c in
                  (predict.Classifier(("audio", "video"), in_process), from_export))
  assert len(ours["segments"]) == len(theirs["segments"]) > 0
  for a, b in zip(ours["segments"], theirs["segments"]):
    assert a["label"] == b["label"] and a["modalities"] == b["modalities"] == ["audio", "video"]
    np.testing.assert_allclose(list(a["probabilities"].values()),
                               list(b["probabilities"].values()), atol=1e-5)
  # The fast command line gives the same file.
  out = workdir / "from_export.json"
  done = subprocess.run([sys.executable, "-m", "lbher_jax.predict", str(workdir / "export"),
                         str(clip), "--output", str(out)], capture_output=True, text=True,
                        cwd=ROOT, check=False, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert json.loads(out.read_text()) == json.loads(json.dumps(theirs))

  again = _main(workdir, cache, "--mode", "export", "--output", str(workdir / "export"))
  assert again.returncode == 0 and "kept" in again.stdout


def test_predict_plot_and_annotate(run, tmp_path):
  workdir, cache, _ = run
  clip = next((cache / "demo-v2").rglob("*.mp4"))
  out = tmp_path / "clip.json"
  result = _main(workdir, cache, "--mode", "predict", "--video", str(clip), "--output", str(out),
                 "--plot", "--annotate")
  assert result.returncode == 0, result.stderr[-3000:]
  _check_prediction(out, clip)
  assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  src, dst = media.probe(clip), media.probe(out.with_suffix(".annotated.mp4"))
  assert dst.has_audio and (dst.width, dst.height) == (src.width, src.height)
  assert abs(dst.duration - src.duration) <= 0.2
