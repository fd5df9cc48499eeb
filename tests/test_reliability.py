"""Bad input end to end: batch preprocessing records and skips it; predict exits with one line.

A small corpus of generated clips (tiny frames, 1 s) mixes good but awkward files (8 kHz, 96 kHz,
5.1, variable frame rate, 17 x 9, rotated, 0.2 s, non-ASCII and shell-hostile names) with bad ones
(empty, text, truncated, no audio, no video, silent, NaN/Inf samples, missing). The 10-minute video
test is the slowest here (about 10 s).
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile

from lbher_jax import LABELS, media, predict
from lbher_jax.data import preprocess as preprocess_lib
from lbher_jax.data import shards
from lbher_jax.datasets import Utterance, manifest
from lbher_jax.features.audio import AudioParams
from lbher_jax.features.video import VideoParams

PROJECT = Path(__file__).resolve().parents[1]
AUDIO = AudioParams(sample_rate=16000, segment_seconds=0.5, min_last_segment=0.2, n_fft=256,
                    hop_length=128, height=16, width=24)
VIDEO = VideoParams(frames_per_segment=4, height=12, width=20, face_detector="none")
SETTINGS = preprocess_lib.Settings(AUDIO, VIDEO, seed=0)
HOSTILE = "it's a \"clip\"; $(touch PWNED) `touch PWNED` | x.mp4"   # must stay a plain file name


def ffmpeg(*args) -> None:
  subprocess.run([media.ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                  *map(str, args)], check=True)


def clip(path: Path, seconds: float = 1.0, *, size: str = "32x24", rate: int = 10,
         audio: str | None = "sine=frequency=440:sample_rate=16000", channels: int = 1,
         video_filter: str | None = None, video: bool = True, extra=()) -> Path:
  """An H.264 (yuv444p, so any size) + AAC file made from ffmpeg's test sources."""
  args = []
  if video:
    args += ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}:duration={seconds}"]
  if audio:
    args += ["-f", "lavfi", "-i", audio, "-t", str(seconds), "-ac", str(channels), "-c:a", "aac"]
  if video:
    args += ["-c:v", "libx264", "-pix_fmt", "yuv444p", "-preset", "ultrafast"]
    if video_filter:
      args += ["-vf", video_filter, "-fps_mode", "vfr"]
  ffmpeg(*args, *extra, path)
  return path


def float_wav(path: Path, bad_value: float) -> Path:
  """A 1-s float32 WAV at 16 kHz (no resampling, so the bad sample survives decoding)."""
  wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
  wave[8000] = bad_value
  scipy.io.wavfile.write(path, 16000, wave)
  return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
  """Generated clips in a folder whose name has spaces and non-ASCII characters.

  Returns {"root": folder, "good": {id: (path, segments)}, "bad": {id: (path, problem)}}.
  """
  root = tmp_path_factory.mktemp("rel").resolve() / "corpus dir é 情"
  d = root / "clips"
  d.mkdir(parents=True)
  good = {
      "mono_8k": (clip(d / "mono 8k.mp4", audio="sine=frequency=440:sample_rate=8000"), 2),
      "stereo_96k": (clip(d / "stereo 96k.mp4", audio="sine=frequency=440:sample_rate=96000",
                          channels=2), 2),
      "surround_51": (clip(d / "surround 5.1.mp4", audio="sine=frequency=440:sample_rate=48000",
                           channels=6), 2),
      "short": (clip(d / "short.mp4", 0.2), 1),
      # Frames 0-9 every 50 ms, then every 100 ms: 1.5 s of variable frame rate.
      "vfr": (clip(d / "vfr.mp4", 1.5, rate=20,
                   video_filter="setpts='if(lt(N,10),N*0.05,0.5+(N-10)*0.1)/TB'"), 3),
      "odd_size": (clip(d / "odd 17x9.mp4", size="17x9"), 2),
      "non_ascii": (clip(d / "émotion ü 情.mp4"), 2),
      "hostile_name": (clip(d / HOSTILE), 2),
  }
  plain = clip(d.parent / "plain.mp4")
  ffmpeg("-display_rotation", "90", "-i", plain, "-c", "copy", d / "rotated phone.mp4")
  good["rotated"] = (d / "rotated phone.mp4", 2)
  scipy.io.wavfile.write(d / "speech.wav", 16000,
                         (0.3 * np.sin(np.arange(16000) / 3)).astype(np.float32))
  good["audio_utterance"] = (d / "speech.wav", 2)          # audio column only: no frames needed

  (d / "empty.mp4").touch()
  (d / "text.mp4").write_text("this is not a video\n" * 100)
  whole = clip(d.parent / "whole.mp4").read_bytes()
  (d / "truncated.mp4").write_bytes(whole[:len(whole) // 2])  # index (moov) at the end: lost
  fast = clip(d.parent / "fast.mp4", extra=["-movflags", "+faststart"]).read_bytes()
  (d / "truncated fast.mp4").write_bytes(fast[:len(fast) // 2])  # index first, data cut
  # One stream only: kept, the other stream zeros (the manifest names both as its video).
  good["no_audio"] = (clip(d / "no audio.mp4", audio=None), 2)
  good["audio_only"] = (clip(d / "audio only.m4a", video=False), 2)
  clip(d / "silent.mp4", audio="anullsrc=r=16000:cl=mono")
  (d.parent / "words.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
  ffmpeg("-i", d.parent / "words.srt", d / "subtitles only.mkv")
  float_wav(d / "nan.wav", np.nan)
  ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x24:rate=10:duration=1", "-i",
         float_wav(d.parent / "inf.wav", np.inf), "-c:v", "libx264", "-pix_fmt", "yuv444p",
         "-c:a", "copy", d / "inf audio.mkv")
  bad = {
      "empty": (d / "empty.mp4", "empty file (0 bytes)"),
      "text": (d / "text.mp4", "not a readable media file"),
      "truncated": (d / "truncated.mp4", "not a readable media file"),
      "truncated_fast": (d / "truncated fast.mp4", "truncated file"),
      "silent": (d / "silent.mp4", "audio is silent"),
      "subtitles": (d / "subtitles only.mkv", "no decodable audio or video stream"),
      "nan": (d / "nan.wav", "non-finite samples"),
      "inf": (d / "inf audio.mkv", "non-finite samples"),
  }
  rows = [["id", "video", "audio", "label", "speaker"]]
  for i, (utt, (path, _)) in enumerate(sorted({**good, **bad}.items())):
    column = "audio" if path.suffix == ".wav" else "video"
    rel = str(path.relative_to(root))
    rows.append([utt, rel if column == "video" else "", rel if column == "audio" else "",
                 LABELS[i % 4], f"s{i % 3}"])
  rows.append(["listed_missing", "clips/not there.mp4", "", "sad", "s0"])
  with (root / "manifest.csv").open("w", newline="", encoding="utf-8") as f:
    csv.writer(f).writerows(rows)
  return {"root": root, "good": good, "bad": bad}


@pytest.fixture(scope="module")
def preprocessed(corpus, tmp_path_factory) -> dict:
  """The corpus preprocessed once; one extra utterance names a file deleted after the scan."""
  utterances, left_out = manifest.scan(corpus["root"])
  assert left_out == {"missing media": 1}                 # the label names a missing file
  gone = corpus["root"] / "clips" / "deleted.mp4"
  utterances.append(Utterance("deleted", gone, None, None, None, "sad", "s0"))
  work = tmp_path_factory.mktemp("work")
  cwd = os.getcwd()
  os.chdir(work)                                           # where a shell would have run `touch`
  try:
    index = preprocess_lib.preprocess(utterances, work / "shards", SETTINGS, corpus={"name": "t"},
                                      workers=1, per_shard=4,
                                      rejects_path=work / "rejects.jsonl")
  finally:
    os.chdir(cwd)
  return {"work": work, "index": index, "gone": gone, "n": len(utterances)}


def test_batch_records_every_bad_file_with_its_reason(corpus, preprocessed):
  lines = (preprocessed["work"] / "rejects.jsonl").read_text(encoding="utf-8").splitlines()
  rejects = {r["id"]: r for r in map(json.loads, lines)}
  expected = dict(corpus["bad"])
  expected["deleted"] = (preprocessed["gone"], "file not found")
  assert sorted(rejects) == sorted(expected)
  for utt, (path, problem) in expected.items():
    reason = rejects[utt]["reason"]
    assert reason.startswith(f"{path}: ") and problem in reason, (utt, reason)
    assert "\n" not in reason and rejects[utt]["file"] == str(path)
  assert preprocessed["index"]["rejected"] == len(expected)


def test_batch_keeps_every_good_file_and_shards_are_finite(corpus, preprocessed):
  out = preprocessed["work"] / "shards"
  records = preprocess_lib.load_records(out)
  segments = {}
  for r in records:
    segments[r["utt"]] = segments.get(r["utt"], 0) + 1
  assert segments == {k: n for k, (_, n) in corpus["good"].items()}
  by_utt = {r["utt"]: r for r in records}
  for utt in ("mono_8k", "stereo_96k", "surround_51", "rotated", "odd_size"):
    assert by_utt[utt]["media_seconds"] == pytest.approx(1.0, abs=0.05), utt
  held = {u: (by_utt[u]["has_audio"], by_utt[u]["has_video"])
          for u in ("audio_utterance", "audio_only", "no_audio", "vfr")}
  assert held == {"audio_utterance": (True, False), "audio_only": (True, False),
                  "no_audio": (False, True), "vfr": (True, True)}
  assert by_utt["no_audio"]["media_seconds"] == pytest.approx(1.0, abs=0.05)
  for shard_id in range(preprocessed["index"]["num_shards"]):
    arrays = shards.open_arrays(out, shard_id)
    assert np.isfinite(arrays["audio"]).all()
    assert arrays["audio"].min() >= -1 and arrays["audio"].max() <= 1
    assert arrays["video"].shape[1:] == (4, 12, 20, 3)
  # The rotated phone clip (portrait after rotation) still fills the frame with the test pattern.
  rot = next(r for r in records if r["utt"] == "rotated")
  frames = shards.open_arrays(out, rot["shard"])["video"][rot["row"]]
  assert frames.std() > 20


def test_file_names_never_reach_a_shell(preprocessed):
  assert not list(preprocessed["work"].rglob("PWNED")) and not Path("PWNED").exists()


def test_one_crashing_file_does_not_stop_the_batch(corpus, tmp_path, monkeypatch):
  """An unexpected exception (a library bug, a hostile file) is recorded like any bad file."""
  from lbher_jax.features import video as video_features  # pylint: disable=import-outside-toplevel
  real = video_features.segment_frames
  crash = corpus["good"]["odd_size"][0]

  def flaky(path, *args, **kwargs):
    if Path(path) == crash:
      raise IndexError("simulated bug")
    return real(path, *args, **kwargs)

  monkeypatch.setattr(video_features, "segment_frames", flaky)
  utts = [Utterance(k, corpus["good"][k][0], None, None, None, "sad", "s")
          for k in ("odd_size", "short")]
  index = preprocess_lib.preprocess(utts, tmp_path / "s", SETTINGS, corpus={}, workers=1,
                                    rejects_path=tmp_path / "rejects.jsonl")
  assert index["rows"] == 1 and index["rejected"] == 1
  reject = json.loads((tmp_path / "rejects.jsonl").read_text())
  assert reject["reason"] == f"{crash}: IndexError: simulated bug"


@pytest.mark.slow
def test_ten_minute_video_is_processed_in_bounded_time_and_memory(tmp_path):
  """600 s of 32x32 video at 5 fps with 8 kHz audio, one utterance of 200 3-s segments.

  The slowest test of this file. Frames are read a chunk of segments at a time (ffmpeg cannot
  parse a frame list of hundreds), so memory stays near that of the waveform itself. Runs in a
  child process to measure its peak.
  """
  path = clip(tmp_path / "long.mp4", 600, size="32x32", rate=5,
              audio="sine=frequency=300:sample_rate=8000")
  code = (
      "import resource, sys, time\n"
      "from pathlib import Path\n"
      "from lbher_jax.data import preprocess as pp\n"
      "from lbher_jax.datasets import Utterance\n"
      "from lbher_jax.features.audio import AudioParams\n"
      "from lbher_jax.features.video import VideoParams\n"
      "settings = pp.Settings(AudioParams(sample_rate=16000, n_fft=256, hop_length=128,"
      " height=16, width=24), VideoParams(4, 12, 20, 'none'))\n"
      "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
      "t = time.perf_counter()\n"
      "spec, frames, recs = pp.featurize(Utterance('long', Path(sys.argv[1]), None, None, None,"
      " 'sad', 's'), settings)\n"
      "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base\n"
      "print(len(recs), spec.shape[0], frames.shape[0], time.perf_counter() - t, peak / 1024)\n")
  proc = subprocess.run([sys.executable, "-c", code, str(path)], cwd=PROJECT, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  n, n_spec, n_frames, seconds, peak_mb = proc.stdout.split()
  assert int(n) == int(n_spec) == int(n_frames) == 200
  # The 16 kHz waveform alone is 38 MB; band-pass and STFT work on copies of it.
  assert float(peak_mb) < 600, proc.stdout
  assert float(seconds) < 120, proc.stdout


@pytest.mark.parametrize("name, files, problem", [
    ("ravdess", {}, "no .mp4 or .wav files"),
    ("manifest", {"manifest.csv": "video,label,speaker\nx.mp4,sad,s\nx.mp4,joy,s\n",
                  "x.mp4": ""}, "manifest.csv:3: label 'joy'"),
])
def test_empty_corpus_or_malformed_label_file_exits_with_one_line(tmp_path, name, files, problem):
  root = tmp_path / "corpus"
  root.mkdir()
  for file, text in files.items():
    (root / file).write_text(text)
  proc = subprocess.run(
      [sys.executable, "-m", "lbher_jax.main", "--config", "configs/demo.py", "--workdir",
       str(tmp_path / "work"), "--mode", "preprocess", f"--config.data.name={name}",
       f"--config.data.root={root}"], cwd=PROJECT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: {root}") and problem in last, proc.stderr


# ------------------------------------------------------------------------ predict, one file


def run_predict(video: str, workdir: Path) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, "-m", "lbher_jax.main", "--config", "configs/demo.py", "--workdir",
       str(workdir), "--mode", "predict", "--video", video],
      cwd=PROJECT, capture_output=True, text=True, timeout=300,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})


@pytest.mark.parametrize("name, problem", [
    ("empty", "empty file (0 bytes)"), ("text", "not a readable media file"),
    ("truncated", "not a readable media file"), ("missing", "file not found")])
def test_predict_bad_file_exits_with_one_line(corpus, tmp_path, name, problem):
  path = corpus["root"] / "clips" / "nowhere.mp4" if name == "missing" else corpus["bad"][name][0]
  proc = run_predict(str(path), tmp_path / "work")
  assert proc.returncode == 1
  assert "Traceback" not in proc.stderr + proc.stdout
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: {path}: ") and problem in last, proc.stderr
  assert not (tmp_path / "work" / "checkpoints").exists()   # failed before loading any model


@pytest.mark.parametrize("kind, name", [("good", "non_ascii"), ("good", "no_audio"),
                                        ("good", "audio_only")])
def test_predict_without_checkpoint_exits_with_one_line(corpus, tmp_path, kind, name):
  # A file with one of the two streams is predictable: it gets as far as loading the model.
  proc = run_predict(str(corpus[kind][name][0]), tmp_path / "work")
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "no fine-tuned checkpoint" in last, proc.stderr


def fake_classifier(seen: list) -> predict.Classifier:
  """Stands in for the hybrid: checks what would reach it, returns uniform probabilities."""
  def heads(batch):
    n = len(batch["audio"])
    assert batch["audio"].shape == (n, AUDIO.height, AUDIO.width)
    assert batch["video"].shape == (n, VIDEO.frames_per_segment, VIDEO.height, VIDEO.width, 3)
    assert np.isfinite(batch["audio"]).all(), "non-finite input reached the model"
    assert batch["audio"].min() >= -1 and batch["audio"].max() <= 1
    seen.append(n)
    return dict.fromkeys(("probs", "audio_probs", "video_probs"), np.full((n, 4), 0.25, np.float32))
  return predict.Classifier(("audio", "video"), heads)


@pytest.mark.parametrize("name", ["short", "vfr", "odd_size", "rotated", "surround_51",
                                  "stereo_96k", "silent"])
def test_predict_awkward_but_valid_videos(corpus, name):
  path = {**corpus["good"], **corpus["bad"]}[name][0]    # silence is fine for predict
  seen = []
  result = predict.predict_video(path, fake_classifier(seen), AUDIO, VIDEO)
  assert sum(seen) == len(result["segments"]) >= 1
  assert result["video"] == str(path) and np.isfinite(list(result["probabilities"].values())).all()


@pytest.mark.parametrize("name, problem", [("inf", "non-finite samples"),
                                           ("truncated_fast", "truncated file")])
def test_predict_refuses_what_would_poison_the_model(corpus, name, problem):
  path = corpus["bad"][name][0]
  seen = []
  with pytest.raises(media.MediaError) as err:
    predict.predict_video(path, fake_classifier(seen), AUDIO, VIDEO)
  assert str(err.value).startswith(f"{path}: ") and problem in str(err.value)
  assert not seen


# ------------------------------------------------------------------------------ hostile input


def test_file_name_is_never_read_as_an_ffmpeg_protocol(corpus, tmp_path, monkeypatch):
  """A relative name like "concat:a|b" is a file, not ffmpeg's concat protocol over two clips."""
  monkeypatch.chdir(tmp_path)
  (tmp_path / "a.mp4").write_bytes(corpus["good"]["mono_8k"][0].read_bytes())
  Path("concat:a.mp4|a.mp4").write_text("not media")
  with pytest.raises(media.MediaError, match=r"^concat:a.mp4\|a.mp4: not a readable media file"):
    media.probe("concat:a.mp4|a.mp4")


def test_no_shell_and_no_pickle_in_the_package():
  """Static guard: the package never starts a shell nor unpickles anything."""
  banned = ("shell=True", "os.system(", "os.popen(", "import pickle", "allow_pickle=True",
            "pickle.load", "torch.load(")
  for path in (PROJECT / "lbher_jax").rglob("*.py"):
    text = path.read_text()
    found = [b for b in banned if b in text]
    assert not found, f"{path}: {found}"

