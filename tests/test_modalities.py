"""Prediction uses the streams a file holds: faces without an audio track, the voice of an audio
file or of a segment without a face; only a file with neither is an error. Also the fast command
line over an export, which loads no training code."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from lbher_jax import LABELS, algorithm, export, media, predict
from lbher_jax.features import video as video_features
from lbher_jax.features.audio import AudioParams
from lbher_jax.features.video import VideoParams

PROJECT = Path(__file__).resolve().parents[1]
AUDIO = AudioParams(sample_rate=16000, segment_seconds=1.0, min_last_segment=0.5, n_fft=256,
                    hop_length=128, height=16, width=24)
VIDEO = VideoParams(frames_per_segment=4, height=12, width=20, face_detector="none")
HAAR = VideoParams(frames_per_segment=4, height=12, width=20, face_detector="haar")
# Each output layer of the fake model answers with its own class, so a segment's label says
# which layer answered: the joint output "happy", the voice "anger", the faces "sad".
ANSWER = {"probs": 0, "audio_probs": 1, "video_probs": 2}


def ffmpeg(*args) -> None:
  subprocess.run([media.ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                  *map(str, args)], check=True)


@pytest.fixture(scope="module")
def media_files(tmp_path_factory):
  """3-s files: no audio track; audio only; and a video whose first second is bright (the
  patched detector's "face") and the rest dark, with a tone."""
  d = tmp_path_factory.mktemp("modalities")
  files = {"mute": d / "mute.mp4", "voice": d / "voice.wav", "half_face": d / "half_face.mp4",
           "text": d / "notes.txt"}
  ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=3", "-c:v", "libx264",
         "-pix_fmt", "yuv420p", files["mute"])
  ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=3:sample_rate=16000", files["voice"])
  ffmpeg("-f", "lavfi", "-i", "color=c=white:size=64x48:rate=25:duration=1",
         "-f", "lavfi", "-i", "color=c=black:size=64x48:rate=25:duration=2",
         "-f", "lavfi", "-i", "sine=frequency=300:duration=3",
         "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]", "-map", "2:a",
         "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", files["half_face"])
  files["text"].write_text("not media\n")
  return files


@pytest.fixture(name="bright_is_a_face")
def patched_detector(monkeypatch):
  """The Haar detector replaced by one that finds a face in any bright frame."""
  monkeypatch.setattr(video_features, "detect_face",
                      lambda frame: (0.0, 0.0, 8.0, 8.0) if frame.mean() > 128 else None)


def fake(streams: tuple[str, ...], seen: list | None = None) -> predict.Classifier:
  outputs = ["probs", "audio_probs", "video_probs"] if len(streams) == 2 else ["probs"]

  def heads(batch):
    assert sorted(batch) == sorted(streams)       # only the streams the model reads
    n = len(batch[streams[0]])
    if seen is not None:
      seen.append({k: float(np.abs(x).max()) for k, x in batch.items()})
    out = {}
    for name in outputs:
      p = np.full((n, 4), 0.1, np.float32)
      p[:, ANSWER[name] if len(streams) == 2 else 3] = 0.7
      out[name] = p
    return out
  return predict.Classifier(streams, heads)


AV = ("audio", "video")


def test_a_video_without_audio_is_recognised_from_the_faces(media_files):
  seen = []
  result = predict.predict_video(media_files["mute"], fake(AV, seen), AUDIO, VIDEO)
  assert [s["modalities"] for s in result["segments"]] == [["video"]] * 3
  assert [s["face"] for s in result["segments"]] == [None] * 3   # no detector: central crop
  assert {s["label"] for s in result["segments"]} == {"sad"} and result["label"] == "sad"
  assert result["modalities"] == ["video"]
  assert seen[0]["audio"] == 0.0 and seen[0]["video"] > 0    # zeros stand in for the voice


def test_an_audio_file_is_recognised_from_the_voice(media_files):
  result = predict.predict_video(media_files["voice"], fake(AV), AUDIO, HAAR)
  assert [s["modalities"] for s in result["segments"]] == [["audio"]] * 3
  assert result["label"] == "anger" and result["face_found_fraction"] is None
  audio_model = predict.predict_video(media_files["voice"], fake(("audio",)), AUDIO, HAAR)
  assert audio_model["label"] == "neutral" and audio_model["modalities"] == ["audio"]


def test_segments_without_a_face_use_the_voice(media_files, bright_is_a_face):
  result = predict.predict_video(media_files["half_face"], fake(AV), AUDIO, HAAR)
  segments = result["segments"]
  assert [(s["start"], s["end"]) for s in segments] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
  assert [s["modalities"] for s in segments] == [["audio", "video"], ["audio"], ["audio"]]
  # The box of the face read (the detector's, in the file's pixels); none where no face is read.
  assert [s["face"] for s in segments] == [[0, 0, 8, 8], None, None]
  assert [s["label"] for s in segments] == ["happy", "anger", "anger"]
  # Two frames of each segment examined: both bright in the first, both dark after.
  assert result["face_found_fraction"] == pytest.approx(1 / 3, abs=1e-3)
  expected = np.mean([[.7, .1, .1, .1], [.1, .7, .1, .1], [.1, .7, .1, .1]], axis=0)
  np.testing.assert_allclose([result["probabilities"][l] for l in LABELS], expected, atol=1e-6)


def test_a_face_model_skips_faceless_segments(media_files, bright_is_a_face):
  result = predict.predict_video(media_files["half_face"], fake(("video",)), AUDIO, HAAR)
  assert [s["modalities"] for s in result["segments"]] == [["video"], [], []]
  assert [s["label"] for s in result["segments"]] == ["neutral", None, None]
  assert result["segments"][1]["probabilities"] is None
  assert result["label"] == "neutral" and result["probabilities"]["neutral"] == pytest.approx(0.7)
  text = predict.format_timeline(result)
  assert text.count("no face found") == 2


@pytest.mark.parametrize("name, streams, problem", [
    ("mute", ("audio",), "no audio stream (the model needs an audio stream)"),
    ("voice", ("video",), "no video stream (the model needs a video stream)"),
    ("text", AV, "not a readable media file"),
])
def test_a_file_without_any_stream_the_model_reads_is_one_error(media_files, name, streams,
                                                                problem):
  with pytest.raises(media.MediaError) as err:
    predict.predict_video(media_files[name], fake(streams), AUDIO, VIDEO)
  assert str(err.value).startswith(f"{media_files[name]}: {problem}")


def test_no_face_anywhere_and_no_voice_is_an_error(media_files, monkeypatch):
  monkeypatch.setattr(video_features, "detect_face", lambda frame: None)
  with pytest.raises(media.MediaError, match="no audio stream and no face found"):
    predict.predict_video(media_files["mute"], fake(AV), AUDIO, HAAR)
  with pytest.raises(media.MediaError, match="no face found in any segment"):
    predict.predict_video(media_files["half_face"], fake(("video",)), AUDIO, HAAR)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
  """An export of a two-stream function of the test's input sizes (no Flax involved): the
  joint output follows the spectrogram's mean level, each stream layer its own input."""
  def apply(variables, batch):
    audio = batch["audio"].mean(axis=(1, 2))[:, None] * variables["w"]
    video = (batch["video"].astype(jnp.float32) / 255.0).mean(axis=(1, 2, 3, 4))[:, None]
    return {"probs": jax_softmax(audio + video * variables["w"]),
            "audio_probs": jax_softmax(audio), "video_probs": jax_softmax(video * variables["w"])}

  example = {"audio": np.zeros((1, AUDIO.height, AUDIO.width), np.float32),
             "video": np.zeros((1, VIDEO.frames_per_segment, VIDEO.height, VIDEO.width, 3),
                               np.uint8)}
  path = tmp_path_factory.mktemp("export") / "model"
  export.export_model(apply, {"w": np.array([1.0, -1.0, 2.0, 0.0], np.float32)}, example, path,
                      preprocessing={"audio": AUDIO, "video": VIDEO, "seed": 0})
  return path


def jax_softmax(x):
  e = jnp.exp(x - x.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.slow
def test_fast_command_line_predicts_from_an_export_without_training_code(tiny_export,
                                                                         media_files, tmp_path):
  out = tmp_path / "out"
  script = (
      "import sys\n"
      "from lbher_jax import predict\n"
      f"code = predict.main([{str(tiny_export)!r}, {str(media_files['mute'])!r}, "
      f"{str(media_files['voice'])!r}, {str(media_files['text'])!r}, '--output', {str(out)!r}])\n"
      "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
      "('flax', 'optax', 'orbax', 'grain', 'ml_collections', 'absl', 'tensorboardX'))\n"
      "print('HEAVY', heavy, 'CODE', code)\n")
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(PROJECT)}
  done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                        cwd=tmp_path, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "HEAVY [] CODE 0" in done.stdout, done.stdout[-2000:]
  mute, voice = (json.loads((out / f"{n}.json").read_text()) for n in ("mute", "voice"))
  assert mute["modalities"] == ["video"] and voice["modalities"] == ["audio"]
  # The voice-only segments come from the export's audio layer: the model's own numbers.
  spec = predict.chunk_spectrograms(media.probe(media_files["voice"]), [(0.0, 1.0)], AUDIO,
                                    np.random.default_rng(0))
  level = float(spec.mean()) * np.array([1.0, -1.0, 2.0, 0.0])
  want = np.exp(level - level.max()) / np.exp(level - level.max()).sum()
  np.testing.assert_allclose(list(voice["segments"][0]["probabilities"].values()), want,
                             atol=1e-5)
  assert (tiny_export / "jax_cache").is_dir()        # the next process loads, not compiles
  rows = (out / "summary.csv").read_text().splitlines()
  assert len(rows) == 4 and "not a readable media file" in rows[3]


def test_command_line_reports_a_bad_single_file_in_one_line(media_files, tmp_path, capsys):
  assert predict.main([str(tmp_path / "no_export"), str(media_files["text"])]) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith(f"error: {media_files['text']}: ")
  assert predict.main([str(tmp_path / "no_export"), str(media_files["voice"])]) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "not a complete model export" in err[0]


def test_real_face_then_a_dark_screen(ravdess_fer_av, tmp_path):
  """The Haar detector on a real actor for 3 s, then a black screen while the sound goes on."""
  path = tmp_path / "dark.mp4"
  ffmpeg("-i", ravdess_fer_av / "Actor_01" / "01-01-05-01-01-01-01.mp4", "-vf",
         "tpad=stop_mode=clone:stop_duration=3,"
         "drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill:enable='gte(t,3)'",
         "-af", "apad=pad_dur=3", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", path)
  result = predict.predict_video(path, fake(AV), AudioParams(), VideoParams())
  used = [s["modalities"] for s in result["segments"]]
  assert len(used) >= 2 and used[0] == ["audio", "video"]
  assert used[1:] == [["audio"]] * (len(used) - 1)


def test_evaluation_judges_a_clip_by_the_stream_it_holds():
  rows = [{"utt": "a", "has_audio": True, "has_video": True},
          {"utt": "b", "has_audio": True, "has_video": False},
          {"utt": "b", "has_audio": True, "has_video": False},
          {"utt": "c", "has_audio": False, "has_video": True}]
  assert algorithm.streams_used(rows, AV) == [AV, ("audio",), ("audio",), ("video",)]
  assert algorithm.streams_used(rows, ("video",)) == [("video",), (), (), ("video",)]
  assert algorithm.streams_used(rows, ("audio",)) == [("audio",)] * 3 + [()]
  probs = np.full((4, 4), 0.25, np.float32)
  heads = {"audio_probs": np.eye(4, dtype=np.float32)[[1, 1, 2, 2]],
           "video_probs": np.eye(4, dtype=np.float32)[[3, 3, 3, 0]]}
  got = algorithm.from_streams_used(probs, heads, algorithm.streams_used(rows, AV))
  np.testing.assert_array_equal(got, [[.25] * 4, [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]])
  np.testing.assert_array_equal(probs, 0.25)                      # the input is left alone
  # A single-stream model has no stream layers: its output stands.
  np.testing.assert_array_equal(algorithm.from_streams_used(probs, {}, [("audio",)] * 4), probs)
