"""The active speaker: with several faces in view, prediction reads the one whose mouth moves with
the voice, by the time-keeping embeddings of contrastive pre-training (issue 21, item 5)."""

import json
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest

from configs import demo as demo_config
from lbher_jax import algorithm, inference, media, predict
from lbher_jax.features import audio as audio_features
from lbher_jax.features import video as video_features


def test_face_tracks_group_recurring_faces_and_drop_strays():
  left, right = (10.0, 20.0, 40.0, 40.0), (200.0, 22.0, 50.0, 50.0)
  nudged = (12.0, 18.0, 42.0, 42.0)        # the left face, moved by less than half its width
  stray = (100.0, 100.0, 30.0, 30.0)        # seen in 1 of 5 frames with a face: < 1/4
  detections = [[right, left], [right, nudged], [right], [left, right, stray], [], [left, right]]
  tracks = video_features.face_tracks(detections, max_faces=4)
  # Right: 5 sightings, first; left: 4 (x 10, 12, 10, 10: median 10, and so on).
  assert tracks == [right, (10.0, 20.0, 40.0, 40.0)]
  assert video_features.face_tracks(detections, max_faces=1) == [right]
  assert video_features.face_tracks([[], []], max_faces=4) == []


def test_face_regions_stop_halfway_to_the_other_faces():
  # Faces centred at x 64 and 192 of a 256 x 128 frame: each region ends at x 128. A third face
  # below the first (centre y 100, x 60: further apart in y than in x) cuts its region at y 82.
  left, right, below = (40.0, 40.0, 48.0, 48.0), (168.0, 40.0, 48.0, 48.0), (40.0, 80.0, 40.0, 40.0)
  assert video_features.face_regions([left], 128, 256) == [(0, 0, 128, 256)]
  assert video_features.face_regions([left, right], 128, 256) == [(0, 0, 128, 128),
                                                                 (0, 128, 128, 256)]
  regions = video_features.face_regions([left, right, below], 128, 256)
  assert regions[0] == (0, 0, 82, 128) and regions[2] == (82, 0, 128, 126)


def test_active_speaker_picks_the_lowest_distance_per_segment():
  # Candidate k's frames are filled with the value k; the fake distance of a row is how far that
  # value is from the segment's wanted face, so segment s must pick wanted[s].
  wanted = np.array([2, 0, 1])
  crops = np.stack([np.full((3, 2, 4, 4, 3), k, np.uint8) for k in range(3)])
  audio = wanted[:, None, None].astype(np.float32) * np.ones((3, 5, 6), np.float32)

  def sync(batch):
    assert batch["span"].shape == (3,)
    return np.abs(batch["video"][:, 0, 0, 0, 0].astype(float) - batch["audio"][:, 0, 0])
  pick = predict.active_speaker(audio, crops, np.ones(3, np.float32), sync)
  assert pick.tolist() == wanted.tolist()


def _all_frames(path, fps=25):
  info = media.probe(path)
  times = (np.arange(int(info.duration * fps)) + 0.5) / fps
  return media.read_frames(path, times, info.height, info.width, info=info)


def _two_faces(voice, other, out, voice_left: bool) -> None:
  """A video of two drawn speakers side by side with the sound of `voice`'s clip: one face moves
  its mouth with that sound, the other with a sound not heard."""
  a, b = _all_frames(voice), _all_frames(other)
  n = min(len(a), len(b))
  frames = np.concatenate([a[:n], b[:n]] if voice_left else [b[:n], a[:n]], axis=2)
  h, w = frames.shape[1:3]
  subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "rawvideo",
                  "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", "25", "-i", "-", "-i", str(voice),
                  "-map", "0:v:0", "-map", "1:a:0", "-t", f"{n / 25:.3f}", "-c:v", "libx264",
                  "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(out)],
                 input=np.ascontiguousarray(frames).tobytes(), check=True)


@pytest.mark.slow
def test_the_lip_synced_face_is_chosen(tmp_path, monkeypatch):
  # Pre-training with time-keeping embeddings on Haar-detected face crops of drawn speakers
  # (the crops prediction will read), then two-face videos of held-out speakers.
  monkeypatch.setenv("LBHER_CACHE", str(tmp_path / "cache"))
  c = demo_config.get_config()
  c.data.demo.update(dict(num_speakers=8, clips_per_emotion=2, max_duration=4.5))
  c.video.face_detector = "haar"
  c.split.test_speakers = ("spk03", "spk07")   # faces the Haar cascade finds in every frame
  c.model.sync_dim = 16
  c.pretrain.update(dict(steps=80, use_labels=False, checkpoint_every=80))
  workdir = tmp_path / "work"
  algorithm.run(c, str(workdir), "pretrain")
  sync = inference.load_sync_scorer(c, workdir, predict.CHUNK_SEGMENTS)
  assert sync is not None

  def heads(batch):   # the emotion is not what this test is about
    return {"probs": np.full((len(batch["audio"]), 4), 0.25, np.float32)}
  classifier = predict.Classifier(("audio", "video"), heads, sync)
  split = json.loads((workdir / "split.json").read_text())
  clips = {p.stem: p for p in (tmp_path / "cache").rglob("*.mp4")}
  held_out = sorted(split["test"])
  rng = np.random.default_rng(0)
  right = total = 0
  boxes = []
  for i in range(16):
    voice, other = rng.choice(held_out, 2, replace=False)
    path = tmp_path / f"two_{i}.mp4"
    voice_left = i % 2 == 0
    _two_faces(clips[voice], clips[other], path, voice_left)
    result = predict.predict_video(path, classifier,
                                   audio_features.AudioParams(**c.audio.to_dict()),
                                   video_features.VideoParams(**c.video.to_dict()))
    width = media.probe(path).width
    for s in result["segments"]:
      x, _, w, _ = s["face"]
      boxes.append(s["face"])
      right += (x + w / 2 < width / 2) == voice_left
      total += 1
  assert total >= 10
  assert right >= 0.9 * total, (right, total, boxes)
