"""Tests for the built-in demo corpus: real H.264/AAC files, deterministic, cached, with cues."""

import collections
import json
import os
import re
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest

from lbher_jax import LABELS, datasets
from lbher_jax.datasets import demo
from lbher_jax.features import audio as audio_features

TINY = dict(num_speakers=2, clips_per_emotion=1, min_duration=1.2, max_duration=2.4)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return demo.ensure(tmp_path_factory.mktemp("cache") / "demo", **TINY)


def _ffmpeg(*args) -> subprocess.CompletedProcess:
  return subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "info", *args],
                        capture_output=True, check=False)


def _audio(path) -> np.ndarray:
  out = _ffmpeg("-i", str(path), "-f", "f32le", "-ac", "1", "-ar", str(demo.SAMPLE_RATE), "-")
  assert out.returncode == 0, out.stderr.decode()
  return np.frombuffer(out.stdout, np.float32)


def _frames(path) -> np.ndarray:
  out = _ffmpeg("-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-")
  assert out.returncode == 0, out.stderr.decode()
  return np.frombuffer(out.stdout, np.uint8).reshape(-1, demo.HEIGHT, demo.WIDTH, 3)


def _manifest(root) -> dict:
  return json.loads((root / "demo.json").read_text())


def _clip(root, speaker, label):
  return root / speaker / f"{speaker}_{label}_0.mp4"


def test_scan_lists_every_clip_in_the_documented_layout(corpus):
  utterances, left_out = demo.scan(corpus, **TINY)
  assert left_out == collections.Counter()
  assert [u.id for u in utterances] == sorted(u.id for u in utterances)
  assert len(utterances) == 2 * 4
  assert collections.Counter(u.label for u in utterances) == {label: 2 for label in LABELS}
  assert {u.speaker for u in utterances} == {"spk01", "spk02"}
  for u in utterances:
    assert u.video == u.audio == corpus / u.speaker / f"{u.id}.mp4"
    assert u.id == f"{u.speaker}_{u.label}_0"
    assert (u.start, u.end, u.session, u.side) == (None, None, None, None)
  assert demo.read(corpus, **TINY) == utterances
  assert datasets.read("demo", corpus, **TINY) == utterances


def test_files_are_h264_and_aac_of_the_listed_duration(corpus):
  clips = _manifest(corpus)["clips"]
  for clip in clips:
    path = corpus / clip["file"]
    info = _ffmpeg("-i", str(path)).stderr.decode()
    assert re.search(r"Video: h264 .*128x128.* 25 fps", info), info
    assert re.search(r"Audio: aac .*16000 Hz, mono", info), info
    h, m, s = re.search(r"Duration: (\d+):(\d+):([\d.]+)", info).groups()
    assert float(s) + 60 * (int(m) + 60 * int(h)) == pytest.approx(clip["duration"], abs=0.1)
    assert TINY["min_duration"] - 0.02 <= clip["duration"] <= TINY["max_duration"] + 0.02
    assert len(_frames(path)) == round(clip["duration"] * demo.FPS)
    assert len(_audio(path)) / demo.SAMPLE_RATE == pytest.approx(clip["duration"], abs=0.03)
  assert _manifest(corpus)["total_duration"] == pytest.approx(sum(c["duration"] for c in clips))


def test_generation_is_deterministic_for_a_seed(corpus, tmp_path):
  again = demo.ensure(tmp_path / "again", **TINY)
  for clip in _manifest(corpus)["clips"]:
    assert (again / clip["file"]).read_bytes() == (corpus / clip["file"]).read_bytes()
  assert (again / "demo.json").read_bytes() == (corpus / "demo.json").read_bytes()
  path = _clip(corpus, "spk01", "happy")
  np.testing.assert_array_equal(_audio(_clip(again, "spk01", "happy")), _audio(path))

  other = demo.ensure(tmp_path / "other", **(TINY | dict(seed=1, num_speakers=1)))
  a, b = _audio(_clip(other, "spk01", "happy")), _audio(path)
  n = min(len(a), len(b))
  assert np.abs(a[:n] - b[:n]).mean() > 0.1 * np.abs(b).mean()
  speakers = _manifest(other)["speakers"]
  assert speakers["spk01"]["f0"] != _manifest(corpus)["speakers"]["spk01"]["f0"]


def test_second_call_reuses_the_corpus(corpus):
  files = sorted(corpus.rglob("*"))
  before = [os.stat(f).st_mtime_ns for f in files]
  assert demo.ensure(corpus, **TINY) == corpus
  assert sorted(corpus.rglob("*")) == files
  assert [os.stat(f).st_mtime_ns for f in files] == before
  assert [p.name for p in corpus.parent.iterdir()] == ["demo"]  # no temporary directories left


def test_other_parameters_raise_instead_of_overwriting(corpus):
  before = (corpus / "demo.json").read_bytes()
  with pytest.raises(datasets.CorpusError, match=r"demo.json.*other parameters.*seed"):
    demo.ensure(corpus, **(TINY | dict(seed=3)))
  with pytest.raises(datasets.CorpusError, match="clips_per_emotion"):
    demo.scan(corpus, **(TINY | dict(clips_per_emotion=2)))
  assert (corpus / "demo.json").read_bytes() == before


def test_a_folder_that_is_not_a_demo_corpus_is_left_alone(tmp_path):
  (tmp_path / "notes.txt").write_text("mine")
  with pytest.raises(datasets.CorpusError, match="not a demo corpus"):
    demo.ensure(tmp_path, **TINY)
  assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_interrupted_generation_leaves_no_corpus(tmp_path, monkeypatch):
  make_clip, calls = demo._make_clip, []

  def failing(clip, directory):
    calls.append(clip.id)
    if len(calls) == 3:
      raise KeyboardInterrupt
    make_clip(clip, directory)

  monkeypatch.setattr(demo, "_make_clip", failing)
  with pytest.raises(KeyboardInterrupt):
    demo.ensure(tmp_path / "demo", **TINY)
  assert list(tmp_path.iterdir()) == []


def test_invalid_parameters_raise(tmp_path):
  with pytest.raises(ValueError, match="num_speakers"):
    demo.ensure(tmp_path / "demo", num_speakers=0)
  with pytest.raises(ValueError, match="min_duration"):
    demo.ensure(tmp_path / "demo", min_duration=4.0, max_duration=2.0)
  assert not (tmp_path / "demo").exists()


def test_default_root_follows_lbher_cache_and_the_settings(tmp_path, monkeypatch):
  monkeypatch.setenv("LBHER_CACHE", str(tmp_path))
  root = demo.default_root()
  assert root.parent == tmp_path / f"demo-v{demo.VERSION}"
  assert demo.default_root(num_speakers=16, clips_per_emotion=3, seed=0) == root
  others = {demo.default_root(num_speakers=5), demo.default_root(clips_per_emotion=1),
            demo.default_root(seed=1), demo.default_root(min_duration=1.2),
            demo.default_root(max_duration=3.5)}
  assert len(others) == 5 and root not in others


def test_two_generator_settings_share_the_cache(tmp_path, monkeypatch):
  # A corpus made with other settings sits beside the first one instead of being refused.
  monkeypatch.setenv("LBHER_CACHE", str(tmp_path))
  first = demo.read(**TINY)
  second = demo.read(**{**TINY, "clips_per_emotion": 2})
  assert len(second) == 2 * len(first)
  more = {**TINY, "clips_per_emotion": 2}
  assert all(u.video.is_relative_to(demo.default_root(**TINY)) for u in first)
  assert all(u.video.is_relative_to(demo.default_root(**more)) for u in second)
  assert demo.read(**TINY) == first  # the first corpus is still there, reused


def test_mouth_opens_with_the_loudness_of_the_voice(corpus):
  speakers = _manifest(corpus)["speakers"]
  for clip in _manifest(corpus)["clips"]:
    path = corpus / clip["file"]
    frames, audio = _frames(path), _audio(path)
    per_frame = demo.SAMPLE_RATE // demo.FPS
    n = min(len(frames), len(audio) // per_frame)
    rms = np.sqrt(np.mean(audio[: n * per_frame].reshape(n, per_frame) ** 2, axis=1))
    x0, y0, x1, y1 = speakers[clip["speaker"]]["mouth_box"]
    darkness = 255.0 - frames[:n, y0:y1, x0:x1].mean(axis=(1, 2, 3))
    assert np.corrcoef(rms, darkness)[0, 1] > 0.5, clip["id"]


def _pitch(audio: np.ndarray, sr: int, frame_length: int, hop: int, fmin: float,
           fmax: float) -> np.ndarray:
  """Per-frame f0 (Hz) from the peak of the normalised autocorrelation in [1/fmax, 1/fmin]."""
  padded = np.pad(audio, frame_length // 2)
  frames = np.lib.stride_tricks.sliding_window_view(padded, frame_length)[::hop]
  frames = frames - frames.mean(axis=1, keepdims=True)
  spectrum = np.fft.rfft(frames, n=2 * frame_length, axis=1)
  acf = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, :frame_length]
  lags = np.arange(int(sr / fmax), int(sr / fmin) + 1)
  best = lags[np.argmax(acf[:, lags] / (acf[:, :1] + 1e-12), axis=1)]
  return sr / best


def _voice_measures(path) -> dict:
  audio = _audio(path)
  hop = 320
  f0 = _pitch(audio, demo.SAMPLE_RATE, 1024, hop, fmin=60, fmax=500)
  power = np.abs(audio_features.stft(audio, 1024, hop)) ** 2
  voiced = power.sum(0) > 0.1 * power.sum(0).max()  # the loud frames: syllable nuclei
  freqs = np.fft.rfftfreq(1024, 1 / demo.SAMPLE_RATE)
  high, low = power[(freqs > 1000) & (freqs < 4000)], power[freqs < 1000]
  return {"db": 10 * np.log10(power[:, voiced].sum(0).mean()),
          "f0": np.median(f0[: len(voiced)][voiced[: len(f0)]]),
          "brightness": 10 * np.log10(high[:, voiced].sum() / low[:, voiced].sum())}


def test_emotions_differ_in_loudness_pitch_and_brightness(corpus):
  for speaker in ("spk01", "spk02"):
    m = {label: _voice_measures(_clip(corpus, speaker, label)) for label in LABELS}
    assert m["anger"]["db"] > m["sad"]["db"] + 6
    assert min(m["happy"]["db"], m["neutral"]["db"]) > m["sad"]["db"] + 3
    assert m["happy"]["f0"] > m["neutral"]["f0"] * 1.15
    assert m["neutral"]["f0"] > m["sad"]["f0"] * 1.1
    assert m["anger"]["f0"] > m["sad"]["f0"] * 1.2
    assert m["anger"]["brightness"] > m["neutral"]["brightness"] > m["sad"]["brightness"]
    assert m["anger"]["brightness"] > m["sad"]["brightness"] + 10
