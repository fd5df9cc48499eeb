"""Tests for the `python -m lbher_jax.stages` figure CLI."""

import subprocess
import sys

import numpy as np
import scipy.io.wavfile

from lbher_jax import stages


def test_writes_png(tmp_path):
  t = np.arange(8000) / 8000
  wave = (0.3 * np.sin(2 * np.pi * 300 * t) * (t > 0.3)).astype(np.float32)
  path = tmp_path / "speech.wav"
  scipy.io.wavfile.write(path, 8000, wave)
  out = tmp_path / "figs" / "stages.png"
  assert stages.main([str(path), "--out", str(out), "--sample-rate", "8000",
                      "--start", "0.1", "--end", "0.9"]) == 0
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20000


def test_bad_file_exits_1_with_one_line(tmp_path):
  bad = tmp_path / "bad.mp4"
  bad.write_text("no media here\n")
  proc = subprocess.run([sys.executable, "-m", "lbher_jax.stages", str(bad), "--out",
                         str(tmp_path / "x.png")], capture_output=True, text=True, check=False)
  assert proc.returncode == 1
  assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
  assert str(bad) in proc.stderr and not (tmp_path / "x.png").exists()
