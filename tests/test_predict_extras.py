"""--mode predict extras without a trained model: timeline PNG, annotated video, progress bar,
seed ensembles."""

import csv
import json
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest

from configs import demo
from lbher_jax import LABELS, annotate, inference, media, predict

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def video(tmp_path_factory):
  """7 s of a moving test pattern (96x64, 25 fps) with a tone: three segments, the last short."""
  path = tmp_path_factory.mktemp("media") / "talk.mp4"
  subprocess.run([media.ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                  "testsrc=size=96x64:rate=25:duration=7", "-f", "lavfi", "-i",
                  "sine=frequency=220:duration=7", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                  "-c:a", "aac", "-shortest", str(path)], check=True)
  return path


def fake_classifier(batch: dict) -> dict[str, np.ndarray]:
  """Segment k of a chunk gets class k % 4 with probability 0.7, from every output layer."""
  probs = np.full((len(batch["audio"]), len(LABELS)), 0.1, np.float32)
  probs[np.arange(len(probs)), np.arange(len(probs)) % len(LABELS)] = 0.7
  return dict.fromkeys(("probs", "audio_probs", "video_probs"), probs)


@pytest.fixture(name="patched")
def patched_classifier(monkeypatch):
  monkeypatch.setattr(inference, "load_classifier", lambda *args: fake_classifier)
  return demo.get_config("tiny")


def test_segment_at():
  segments = [{"start": 0.0, "end": 3.0}, {"start": 3.0, "end": 5.5}]
  assert annotate.segment_at(segments, 0.0) is segments[0]
  assert annotate.segment_at(segments, 3.0) is segments[1]
  assert annotate.segment_at(segments, 5.5) is None


def test_plot_and_annotate_through_run(patched, video, tmp_path, capsys):
  out = tmp_path / "out" / "talk.json"
  assert predict.run(patched, str(tmp_path), [str(video)], str(out), plot=True,
                     annotate=True) == 0
  assert out.with_suffix(".png").read_bytes()[:8] == PNG_MAGIC
  annotated = out.with_suffix(".annotated.mp4")
  assert str(annotated) in capsys.readouterr().out

  src, dst = media.probe(video), media.probe(annotated)
  assert dst.has_audio and dst.has_video
  assert abs(dst.duration - src.duration) <= 0.2
  assert (dst.width, dst.height) == (src.width, src.height) == (96, 64)
  count = lambda p: imageio_ffmpeg.count_frames_and_secs(str(p))[0]
  assert count(annotated) == count(video) == 175

  # The label box is drawn at the top left only; the rest of the frame is the source's.
  before, after = (media.read_frames(p, [1.0, 6.5]).astype(int) for p in (video, annotated))
  assert np.abs(after[:, :12, :40] - before[:, :12, :40]).mean() > 40
  assert np.abs(after[:, 32:, 48:] - before[:, 32:, 48:]).mean() < 12


def test_several_videos_show_a_progress_bar(patched, video, tmp_path, capsys):
  missing = tmp_path / "missing.mp4"
  assert predict.run(patched, str(tmp_path), [str(video), str(missing)], str(tmp_path / "many"),
                     plot=True) == 0
  captured = capsys.readouterr()
  assert "2/2" in captured.err                          # the bar reached the end
  assert (tmp_path / "many" / "talk.png").read_bytes()[:8] == PNG_MAGIC
  rows = list(csv.DictReader(open(tmp_path / "many" / "summary.csv")))
  assert [r["video"] for r in rows] == [str(video), str(missing)]
  assert rows[0]["label"] in LABELS and not rows[0]["error"]
  assert not rows[1]["label"] and str(missing) in rows[1]["error"]


def test_ensemble_averages_the_members_probabilities(monkeypatch, video, tmp_path):
  """--ensemble: each segment's probabilities are the mean over the workdirs' models."""
  def other(batch):   # every segment "sad" at 0.9, from every output layer
    probs = np.full((len(batch["audio"]), len(LABELS)), 0.1 / 3, np.float32)
    probs[:, LABELS.index("sad")] = 0.9
    return dict.fromkeys(("probs", "audio_probs", "video_probs"), probs)
  members = {"a": fake_classifier, "b": other}
  monkeypatch.setattr(inference, "load_classifier", lambda config, workdir, n: members[workdir.name])
  config = demo.get_config("tiny")
  outputs = {}
  for name, ensemble in (("a", []), ("b", []), ("ab", ["b"])):
    out = tmp_path / f"{name}.json"
    assert predict.run(config, str(tmp_path / name[0]), [str(video)], str(out),
                       ensemble=[str(tmp_path / w) for w in ensemble]) == 0
    outputs[name] = json.loads(out.read_text())
  assert len(outputs["ab"]["segments"]) == 3
  for k, seg in enumerate(outputs["ab"]["segments"]):
    want = {l: (outputs["a"]["segments"][k]["probabilities"][l]
                + outputs["b"]["segments"][k]["probabilities"][l]) / 2 for l in LABELS}
    assert seg["probabilities"] == pytest.approx(want)
  # Segment 0: "happy" 0.7 and 0.1 / 3 average to 0.367 < "sad" (0.1 + 0.9) / 2 = 0.5.
  assert outputs["a"]["segments"][0]["label"] == "happy"
  assert outputs["ab"]["segments"][0]["label"] == "sad"


def test_average_heads_is_the_mean_of_each_output():
  one = lambda b: {"probs": np.array([[1.0, 0.0]]), "audio_probs": np.array([[0.5, 0.5]])}
  two = lambda b: {"probs": np.array([[0.0, 1.0]]), "audio_probs": np.array([[0.1, 0.9]])}
  got = predict.average_heads([one, two])({})
  np.testing.assert_allclose(got["probs"], [[0.5, 0.5]])
  np.testing.assert_allclose(got["audio_probs"], [[0.3, 0.7]])
  assert predict.average_heads([one]) is one
