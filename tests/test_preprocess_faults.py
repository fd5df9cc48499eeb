"""Faults during preprocessing: SIGKILL mid-run, half-written and corrupted (or hostile) shards.

A rerun must finish the job without redoing finished shards (their files keep inode and mtime)
and must redo, never trust, a shard that fails its checksum or cannot be read.
"""

import json
import logging
import multiprocessing
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lbher_jax import media
from lbher_jax.data import preprocess as preprocess_lib
from lbher_jax.data import shards
from lbher_jax.datasets import Utterance
from lbher_jax.features.audio import AudioParams
from lbher_jax.features.video import VideoParams

PROJECT = Path(__file__).resolve().parents[1]
SETTINGS = preprocess_lib.Settings(
    AudioParams(sample_rate=16000, segment_seconds=0.5, n_fft=256, hop_length=128, height=16,
                width=24),
    VideoParams(frames_per_segment=4, height=12, width=20, face_detector="none"))
NUM_CLIPS = 12


def utterances(clips: Path) -> list[Utterance]:
  return [Utterance(p.stem, p, None, None, None, "sad", "s") for p in sorted(clips.iterdir())]


def run(clips: str, out: str) -> dict:
  """One shard per utterance, in this process (the child of the kill test runs this)."""
  return preprocess_lib.preprocess(utterances(Path(clips)), Path(out), SETTINGS,
                                   corpus={"name": "faults"}, workers=1, per_shard=1,
                                   rejects_path=Path(out) / "rejects.jsonl")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
  """NUM_CLIPS 1-s clips (copies of one), the one named clip_05 not a video at all."""
  d = tmp_path_factory.mktemp("clips")
  first = d / "clip_00.mp4"
  subprocess.run([media.ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-f",
                  "lavfi", "-i", "testsrc=size=32x24:rate=10:duration=1", "-f", "lavfi", "-i",
                  "sine=frequency=440:sample_rate=16000:duration=1", "-c:v", "libx264",
                  "-pix_fmt", "yuv444p", "-c:a", "aac", "-shortest", str(first)], check=True)
  for i in range(1, NUM_CLIPS):
    shutil.copy(first, d / f"clip_{i:02d}.mp4")
  (d / "clip_05.mp4").write_text("not a video")
  return d


def stamps(out: Path) -> dict[str, tuple[int, int]]:
  """(inode, mtime in ns) of every finished shard's files."""
  result = {}
  for info_path in out.glob("shard_*.json"):
    stem = info_path.name.removesuffix(".json")
    for path in (info_path, out / f"{stem}.audio.npy", out / f"{stem}.video.npy"):
      st = path.stat()
      result[path.name] = (st.st_ino, st.st_mtime_ns)
  return result


def test_sigkill_mid_run_then_rerun_finishes_without_redoing(clips, tmp_path):
  out = tmp_path / "shards"
  child = subprocess.Popen(
      [sys.executable, "-c", "import sys; from tests.test_preprocess_faults import run; "
       "run(sys.argv[1], sys.argv[2])", str(clips), str(out)],
      cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 120
  try:
    while not (out / "shard_00002.json").exists():
      assert child.poll() is None, "the child ended before it could be killed"
      assert time.monotonic() < deadline, "no shards appeared"
      time.sleep(0.005)
  finally:
    child.send_signal(signal.SIGKILL)
    child.wait()
  assert child.returncode == -signal.SIGKILL
  done = sorted(out.glob("shard_*.json"))
  assert 3 <= len(done) < NUM_CLIPS, "the kill did not land mid-run"
  assert not (out / preprocess_lib.INDEX).exists()      # the run never claimed to be finished
  for path in done:                                     # whatever is finished is whole
    info = shards.read_shard_info(out, int(path.stem.split("_")[1]))
    shards.verify_shard(out, info)
  before = stamps(out)

  index = run(str(clips), str(out))

  after = stamps(out)
  assert {k: after[k] for k in before} == before       # finished shards were not rewritten
  assert len(after) == 3 * NUM_CLIPS
  assert index["num_shards"] == index["utterances"] == NUM_CLIPS
  assert index["rows"] == 2 * (NUM_CLIPS - 1) and index["rejected"] == 1
  records = preprocess_lib.load_records(out)
  assert sorted({r["utt"] for r in records}) == sorted(
      f"clip_{i:02d}" for i in range(NUM_CLIPS) if i != 5)
  rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
  assert [r["id"] for r in rejects] == ["clip_05"]


# The child of the worker-kill test: a parallel run whose first worker process is SIGKILLed (as
# the OOM killer would) as soon as it exists; exits 3 with the error's message on stdout.
_KILL_A_WORKER = """
import multiprocessing, os, signal, sys, threading, time
from pathlib import Path
from tests.test_preprocess_faults import SETTINGS, utterances
from lbher_jax.data import preprocess as preprocess_lib

def kill_first_worker():
  while not multiprocessing.active_children():
    time.sleep(0.01)
  os.kill(multiprocessing.active_children()[0].pid, signal.SIGKILL)

threading.Thread(target=kill_first_worker, daemon=True).start()
try:
  preprocess_lib.preprocess(utterances(Path(sys.argv[1])), Path(sys.argv[2]), SETTINGS,
                            corpus={"name": "faults"}, workers=2, per_shard=1)
except preprocess_lib.PreprocessError as e:
  print(e)
  sys.exit(3)
"""


def test_killed_worker_fails_the_run_with_a_message_instead_of_hanging(clips, tmp_path):
  out = tmp_path / "shards"
  child = subprocess.run([sys.executable, "-c", _KILL_A_WORKER, str(clips), str(out)], cwd=PROJECT,
                         capture_output=True, text=True, timeout=300)
  assert child.returncode == 3, child.stdout + child.stderr[-2000:]
  message = child.stdout.strip()
  assert "worker process died" in message and "rerun" in message and str(out) in message
  assert "\n" not in message
  assert not (out / preprocess_lib.INDEX).exists()

  index = run(str(clips), str(out))                     # the rerun completes the job
  assert index["num_shards"] == NUM_CLIPS and index["rejected"] == 1


def test_an_error_in_a_worker_is_raised_in_the_parent_and_no_worker_is_left(tmp_path):
  """Not a death: the worker's own exception comes back, and every worker process is ended."""
  bad = [(0, [], "not settings", str(tmp_path)), (1, [], "not settings", str(tmp_path))]
  with pytest.raises(AttributeError, match="audio"):
    list(preprocess_lib._run(bad, 2, tmp_path))
  assert not multiprocessing.active_children()


class _Hostile:
  """Unpickling this creates a marker file: proof that a shard was unpickled."""

  def __init__(self, marker: Path):
    self.marker = marker

  def __reduce__(self):
    return (Path.touch, (self.marker,))


def _flip_last_byte(path: Path) -> None:
  data = bytearray(path.read_bytes())
  data[-1] ^= 0xFF
  path.write_bytes(bytes(data))


def _corrupt(kind: str, out: Path, marker: Path) -> str:
  """Damages shard 1 in one way; returns the file that a warning should name."""
  stem = out / "shard_00001"
  if kind == "flipped array byte":
    _flip_last_byte(Path(f"{stem}.audio.npy"))
    return f"{stem}.audio.npy"
  if kind == "truncated array":
    path = Path(f"{stem}.video.npy")
    path.write_bytes(path.read_bytes()[:-100])
    return str(path)
  if kind == "garbage description":
    Path(f"{stem}.json").write_text("{not json")
    return f"{stem}.json"
  if kind == "pickled object array":
    with open(f"{stem}.video.npy", "wb") as f:
      # What an attacker would plant: np.load(allow_pickle=True) would run Path.touch(marker).
      np.save(f, np.array([_Hostile(marker)], dtype=object), allow_pickle=True)
    return f"{stem}.video.npy"
  # Killed between writing the arrays and the description: arrays and temporaries, no JSON.
  Path(f"{stem}.json").unlink()
  Path(f"{stem}.audio.npy.tmp99999").write_bytes(b"partial")
  return ""


@pytest.fixture(scope="module")
def finished(clips, tmp_path_factory) -> tuple[list[Utterance], Path]:
  """The first three clips and the shards (one each) of a finished run over them."""
  three = tmp_path_factory.mktemp("three")
  for i in range(3):
    shutil.copy(clips / f"clip_{i:02d}.mp4", three)
  out = tmp_path_factory.mktemp("finished") / "shards"
  preprocess_lib.preprocess(utterances(three), out, SETTINGS, corpus={"name": "three"},
                            workers=1, per_shard=1)
  return utterances(three), out


@pytest.mark.parametrize("kind", ["flipped array byte", "truncated array", "garbage description",
                                  "pickled object array", "killed before the description"])
def test_damaged_shard_is_detected_and_redone(finished, tmp_path, kind, caplog):
  utts, done = finished
  out = tmp_path / "shards"
  shutil.copytree(done, out)
  original = shards.open_arrays(out, 1)["audio"].copy()
  marker = tmp_path / "UNPICKLED"
  named = _corrupt(kind, out, marker)
  before = stamps(out)
  caplog.set_level(logging.WARNING)

  index = preprocess_lib.preprocess(utts, out, SETTINGS, corpus={"name": "three"}, workers=1,
                                    per_shard=1)

  assert not marker.exists()                            # nothing user-supplied is unpickled
  after = stamps(out)
  for name in ("shard_00000.json", "shard_00002.audio.npy"):   # intact shards untouched
    assert after[name] == before[name]
  assert after["shard_00001.json"] != before.get("shard_00001.json")   # damaged one rewritten
  shards.verify_shard(out, shards.read_shard_info(out, 1))
  np.testing.assert_array_equal(shards.open_arrays(out, 1)["audio"], original)
  assert index["rows"] == 6 and index["rejected"] == 0
  if named:
    assert f"{named}:" in caplog.text and "redoing that shard" in caplog.text


def test_shards_of_other_settings_are_refused_and_a_later_setting_reads_as_its_default(tmp_path):
  settings = preprocess_lib.Settings(AudioParams(sample_rate=8000), VideoParams())
  fingerprint = {"settings": settings.fingerprint(), "corpus": "demo"}
  preprocess_lib._check_fingerprint(tmp_path, fingerprint)          # written
  preprocess_lib._check_fingerprint(tmp_path, fingerprint)          # the same: accepted
  other = preprocess_lib.Settings(AudioParams(sample_rate=16000), VideoParams())
  with pytest.raises(preprocess_lib.PreprocessError, match="other settings"):
    preprocess_lib._check_fingerprint(tmp_path, {"settings": other.fingerprint(), "corpus": "demo"})
  # Shards made before a setting existed (here, as if `denoise` had come later) were made with
  # its default; another value of it is other settings.
  path = tmp_path / preprocess_lib.FINGERPRINT
  old = json.loads(path.read_text())
  del old["settings"]["audio"]["denoise"]
  path.write_text(json.dumps(old))
  preprocess_lib._check_fingerprint(tmp_path, fingerprint)
  raw = preprocess_lib.Settings(AudioParams(sample_rate=8000, denoise=False), VideoParams())
  with pytest.raises(preprocess_lib.PreprocessError, match="other settings"):
    preprocess_lib._check_fingerprint(tmp_path, {"settings": raw.fingerprint(), "corpus": "demo"})
