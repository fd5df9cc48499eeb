"""Smoke test of the benchmark scripts: each runs at tiny sizes and writes its JSON figures.

The four scripts run as concurrent subprocesses (one jax start-up each), with XLA's backend
optimisation off: tiny programs, where LLVM time would dominate.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # subprocess / end-to-end runs

PROJECT_ROOT = Path(__file__).resolve().parents[1]
HAS_TORCH = importlib.util.find_spec("torch") is not None


def _command(name: str, json_path: Path) -> list[str]:
  script = str(PROJECT_ROOT / "benchmarks" / f"{name}.py")
  args = {"train_step": ["--scales", "tiny", "--rounds", "1"] + ([] if HAS_TORCH
                                                                   else ["--no-torch"]),
          "loader": ["--scales", "tiny", "--batches", "2", "--rounds", "1",
                     "--train-examples-per-s", "tiny=1"],
          "scaling": ["--scale", "tiny", "--batch", "4", "--devices", "1,2", "--steps", "1"],
          "blocks": ["--scale", "tiny", "--batch", "4", "--rounds", "1"]}
  return [sys.executable, script, *args[name], "--json", str(json_path)]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, dict]:
  tmp = tmp_path_factory.mktemp("bench")
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0")}
  procs = {name: subprocess.Popen(_command(name, tmp / f"{name}.json"), cwd=PROJECT_ROOT,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
           for name in ("train_step", "loader", "scaling", "blocks")}
  out = {}
  for name, proc in procs.items():
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"{name} failed:\n{log[-3000:]}"
    out[name] = json.loads((tmp / f"{name}.json").read_text())
  return out


def test_train_step_json(results):
  r = results["train_step"]
  assert {"machine", "date", "loadavg_before", "loadavg_after", "scales", "targets"} <= r.keys()
  tiny = r["scales"]["tiny"]
  assert tiny["model_gflop_per_example"] > 0 and tiny["matmul_peak_gflops"] > 0
  runs = {"jax_finetune", "jax_pretrain"} | ({"torch_finetune"} if HAS_TORCH else set())
  assert set(tiny["runs"]) == runs
  for run in tiny["runs"].values():
    assert run["examples_per_s"] > 0 and run["mfu"] >= 0
  assert ("jax_over_torch" in tiny) == HAS_TORCH


def test_loader_json(results):
  tiny = results["loader"]["scales"]["tiny"]
  assert tiny["examples_per_s"] > 0 and tiny["train_step_examples_per_s"] == 1.0
  assert tiny["loader_over_train_step"] == pytest.approx(tiny["examples_per_s"], rel=1e-2)
  g = tiny["augmentation"]
  assert g["augment_s_per_batch"] > 0 and g["augmented_step_s"] > 0 and g["step_s"] > 0
  assert g["augment"]["frames_flip"] and g["augment"]["enabled"]
  assert "loadavg_before" in results["loader"]


def test_scaling_json(results):
  r = results["scaling"]
  assert [run["devices"] for run in r["runs"]] == [1, 2]
  assert r["all_match"] and all(run["examples_per_s"] > 0 for run in r["runs"])
  assert "loadavg_before" in r


def test_blocks_json(results):
  """Every pooled conv layer of the tiny hybrid (3 video, 2 audio), timed in both forms, whose
  gradients agree."""
  r = results["blocks"]
  assert list(r["layers"]) == ["video 1", "video 2", "video 3", "audio 1", "audio 2"]
  assert r["layers"]["video 1"]["shape"] == [4, 4, 12, 16, 2]
  for layer in r["layers"].values():
    assert layer["plain_ms"] > 0 and layer["fused_ms"] > 0
    assert layer["max_rel_grad_diff"] < 1e-4 and layer["input_grads_differing"] == 0


def test_baselines_on_the_real_clips(ravdess_fer_av, tmp_path):
  # Six actors, three folds of two, one partition: every clip predicted once by each baseline.
  out = tmp_path / "baselines.json"
  done = subprocess.run(
      [sys.executable, str(PROJECT_ROOT / "benchmarks" / "baselines.py"), "--root",
       str(ravdess_fer_av), "--limit", "6", "--num-folds", "3", "--seeds", "0", "--json",
       str(out)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads(out.read_text())
  assert result["num_clips"] == 96 and result["per_seed"]["0"]["folds"] == 3
  for name in ("voice_mfcc", "face_pixels", "fusion"):
    run = result["per_seed"]["0"][name]
    assert run["num_test"] == 96 and 0.0 <= run["unweighted_accuracy"] <= 1.0
    assert result["summary"][name]["unweighted_accuracy"]["ci95"] is None    # one seed
  assert result["per_seed"]["0"]["voice_mfcc"]["unweighted_accuracy"] > 0.25   # above chance


def test_mel_filterbank_is_a_partition_of_the_middle_band():
  sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
  import baselines  # pylint: disable=import-outside-toplevel
  fb = baselines.mel_filterbank(16000, 400, 40)
  assert fb.shape == (40, 201) and fb.min() >= 0 and fb.max() <= 1
  # Adjacent triangles overlap so that between the first and last peaks they sum to one.
  peaks = fb.argmax(axis=1)
  np.testing.assert_allclose(fb.sum(axis=0)[peaks[0] + 1:peaks[-1]], 1.0, atol=1e-9)


def test_pretraining_benchmark_reports_correspondence(tmp_path):
  out = tmp_path / "pre.json"
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "LBHER_CACHE": str(tmp_path / "cache"),
         "XLA_FLAGS": "--xla_backend_optimization_level=0"}
  done = subprocess.run(
      [sys.executable, str(PROJECT_ROOT / "benchmarks" / "pretraining.py"), "--config",
       "configs/demo.py:tiny", "--workdir", str(tmp_path / "w"), "--set", "pretrain.loss=infonce",
       "--set", "pretrain.steps=2", "--json", str(out)], cwd=PROJECT_ROOT, env=env,
      capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads(out.read_text())
  assert result["fold"] == 1 and result["overrides"] == ["pretrain.loss=infonce", "pretrain.steps=2"]
  for side in ("test", "train"):
    assert 0.0 <= result[side]["auc_all"] <= 1.0 and result[side]["candidates"] > 0
