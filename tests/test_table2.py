"""The Table 2 sweep: one config per (model, protocol), shards made once, tables, resume."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from configs import table2 as table2_config
from lbher_jax import table2

ROOT = Path(__file__).resolve().parents[1]


def test_run_config_sets_model_and_split_and_leaves_the_base_alone():
  base = table2_config.get_config("tiny")
  assert base.table2.models == ("cnn", "cnn_lstm", "cnn_rnn", "hybrid")
  assert base.table2.protocols == ("90-10", "80-20", "70-30", "speaker")
  for protocol, fraction in (("90-10", 0.1), ("80-20", 0.2), ("70-30", 0.3)):
    c = table2.run_config(base, "cnn_lstm", protocol)
    assert (c.model.name, c.split.protocol, c.split.test_fraction) == ("cnn_lstm", "random",
                                                                       fraction)
  c = table2.run_config(base, "hybrid", "speaker")
  assert (c.model.name, c.split.protocol) == ("hybrid", "speaker")
  assert (base.model.name, base.split.protocol) == ("hybrid", "speaker")
  with pytest.raises(ValueError, match="unknown Table 2 protocol"):
    table2.run_config(base, "cnn", "50-50")


def test_paper_scale_and_small_variants():
  paper, small = table2_config.get_config(), table2_config.get_config("small")
  assert paper.model.spectrogram == (200, 300) and paper.data.name == "demo"
  assert small.model.spectrogram == (64, 96) and small.train.steps < paper.train.steps
  with pytest.raises(ValueError, match="unknown variant"):
    table2_config.get_config("huge")


def _main(workdir: Path, cache: Path) -> subprocess.CompletedProcess:
  env = {**os.environ, "LBHER_CACHE": str(cache), "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_backend_optimization_level=0"}   # compile fast; tests only
  cmd = [sys.executable, "-m", "lbher_jax.main", "--config", "configs/table2.py:tiny",
         "--workdir", str(workdir), "--config.table2.models=cnn",
         "--config.table2.protocols=90-10", "--config.table2.protocols=speaker"]
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_sweep_shares_shards_writes_the_table_and_resumes(tmp_path):
  workdir, cache = tmp_path / "work", tmp_path / "cache"
  first = _main(workdir, cache)
  assert first.returncode == 0, first.stderr[-3000:]
  results = {p: json.loads((workdir / "cnn" / p / "results.json").read_text())
             for p in ("90-10", "speaker")}
  assert results["90-10"]["protocol"] == "random" and results["speaker"]["protocol"] == "speaker"
  assert results["90-10"]["num_test"] == 4          # one clip of each class of 10
  for p in results:
    link = workdir / "cnn" / p / "shards"
    assert link.is_symlink() and link.resolve() == (workdir / "shards").resolve()

  table = (workdir / "table2.md").read_text()
  r, s = results["90-10"], results["speaker"]
  assert (f"| CNN | {r['accuracy']:.3f} / {r['unweighted_accuracy']:.3f} | – | – | "
          f"{s['accuracy']:.3f} / {s['unweighted_accuracy']:.3f} |") in table
  assert "| CNN+RNN+3DCNN (Proposed) | 0.952 | 0.947 | 0.941 | – |" in table   # the paper's
  with open(workdir / "table2.csv") as f:
    rows = {row["model"]: row for row in csv.DictReader(f)}
  assert float(rows["CNN"]["accuracy_speaker"]) == pytest.approx(s["accuracy"], abs=1e-4)
  assert rows["CNN+LSTM"]["accuracy_90-10"] == ""
  assert (workdir / "figures" / "table2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

  shards = {p: p.stat().st_mtime_ns for p in (workdir / "shards").glob("shard_*")}
  again = _main(workdir, cache)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stderr.count("finished earlier") == 2
  assert {p: p.stat().st_mtime_ns for p in (workdir / "shards").glob("shard_*")} == shards
  assert (workdir / "table2.md").read_text() == table
