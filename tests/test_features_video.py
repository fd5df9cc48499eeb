"""Tests for lbher_jax.features.video on synthetic videos and a few real clips."""

import subprocess

import numpy as np
import pytest

from lbher_jax import media
from lbher_jax.features import video

SMALL = video.VideoParams(frames_per_segment=4, height=12, width=20, face_detector="none")


def ffmpeg(*args):
  subprocess.run([media.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args],
                 check=True)


@pytest.fixture(scope="module")
def split_screen(tmp_path_factory):
  """3 s, 64x48: left half red, right half blue (like a two-actor split-screen recording)."""
  path = tmp_path_factory.mktemp("video") / "split.mp4"
  ffmpeg("-f", "lavfi", "-i",
         "color=c=red:s=64x48:r=25:d=3,drawbox=x=32:y=0:w=32:h=48:color=blue:t=fill",
         "-c:v", "libx264", "-pix_fmt", "yuv444p", path)
  return path


def test_frame_times_spread_over_clamped_span():
  times = video.frame_times([(0.0, 3.0), (3.0, 6.0)], duration=2.0, n=4)
  np.testing.assert_allclose(times, [[0.25, 0.75, 1.25, 1.75], [2.0, 2.0, 2.0, 2.0]])
  np.testing.assert_allclose(video.frame_times([(1.0, 1.4)], 5.0, 2), [[1.1, 1.3]])


def test_crop_box_fallback_and_face():
  # Fallback: the largest centred rectangle of the aspect ratio (width / height).
  assert video.crop_box(100, 200, 2.0, None) == (0, 0, 100, 200)
  assert video.crop_box(144, 144, 100 / 60, None) == (29, 0, 86, 144)
  # A 20x20 face at (40, 30): crop height 1.3 * 20 = 26, width 26 * 5/3 = 43.3, centred on (50, 40).
  assert video.crop_box(200, 300, 100 / 60, (40.0, 30.0, 20.0, 20.0)) == (27, 28, 26, 43)
  # Near the border the crop is shifted inside the frame.
  assert video.crop_box(200, 300, 100 / 60, (0.0, 0.0, 20.0, 20.0)) == (0, 0, 26, 43)
  # A face filling a square frame keeps its whole height (eyes to mouth), not a 5:3 band of it:
  # 1.3 * 120 = 156 rows, cut to the frame's 144; width 260, cut to 144.
  assert video.crop_box(144, 144, 100 / 60, (12.0, 12.0, 120.0, 120.0)) == (0, 0, 144, 144)


@pytest.mark.parametrize("side, colour", [("L", 0), ("R", 2)])
def test_side_crop_picks_the_right_half(split_screen, side, colour):
  bounds = [(0.0, 1.5), (1.5, 3.0)]
  frames, fraction = video.segment_frames(split_screen, bounds, side, SMALL)
  assert frames.shape == (2, 4, 12, 20, 3) and frames.dtype == np.uint8
  np.testing.assert_array_equal(fraction, [0.0, 0.0])  # no detector ran
  mean = frames.reshape(-1, 3).mean(axis=0)
  assert mean[colour] > 200 and mean[2 - colour] < 40


def test_whole_frame_keeps_both_halves(split_screen):
  frames, _ = video.segment_frames(split_screen, [(0.0, 3.0)], None, SMALL)
  left, right = frames[0, :, :, :6].mean(axis=(0, 1, 2)), frames[0, :, :, -6:].mean(axis=(0, 1, 2))
  assert left[0] > 200 and right[2] > 200


def test_odd_size_rotated_and_gray_video(tmp_path):
  odd = tmp_path / "odd.mp4"
  ffmpeg("-f", "lavfi", "-i", "testsrc=size=17x9:rate=25:duration=1", "-c:v", "libx264",
         "-pix_fmt", "yuv444p", odd)
  rotated = tmp_path / "rotated.mp4"
  ffmpeg("-display_rotation", "90", "-i", odd, "-c", "copy", rotated)
  gray = tmp_path / "gray.mkv"
  ffmpeg("-f", "lavfi", "-i", "testsrc=size=40x30:rate=25:duration=1", "-pix_fmt", "gray",
         "-c:v", "ffv1", gray)
  params = video.VideoParams(frames_per_segment=3, height=6, width=10)
  for path in (odd, rotated, gray):
    frames, _ = video.segment_frames(path, [(0.0, 1.0)], "L", params)
    assert frames.shape == (1, 3, 6, 10, 3)
  frames, _ = video.segment_frames(gray, [(0.0, 1.0)], None, params)
  np.testing.assert_array_equal(frames[..., 0], frames[..., 1])
  np.testing.assert_array_equal(frames[..., 0], frames[..., 2])


def test_no_video_stream(tmp_path):
  path = tmp_path / "tone.wav"
  ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=0.5", path)
  with pytest.raises(media.MediaError, match="no video stream"):
    video.segment_frames(path, [(0.0, 0.5)], None, SMALL)


def test_real_clips_find_faces(ravdess_fer_av):
  clips = ["Actor_01/01-01-01-01-01-01-01.mp4", "Actor_01/01-01-04-01-01-02-01.mp4",
           "Actor_02/01-01-01-01-02-01-02.mp4"]
  params = video.VideoParams()
  for clip in clips:
    path = ravdess_fer_av / clip
    duration = media.probe(path).duration
    frames, fraction = video.segment_frames(path, [(0.0, 3.0), (3.0, duration)], None, params)
    assert frames.shape == (2, 20, 60, 100, 3) and frames.dtype == np.uint8
    assert fraction.shape == (2,) and fraction.min() >= 0.5 and fraction.mean() >= 0.75, clip
    assert frames.std() > 10  # real image content, not a flat fill
