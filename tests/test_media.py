"""Tests for lbher_jax.media on small synthetic files made with the bundled ffmpeg."""

import subprocess

import numpy as np
import pytest
import scipy.io.wavfile

from lbher_jax import media


def ffmpeg(*args):
  subprocess.run([media.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args],
                 check=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  d = tmp_path_factory.mktemp("media")
  out = {}
  # 64x48 test pattern + stereo 440 Hz tone at 22.05 kHz.
  out["av"] = d / "av.mp4"
  ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=2", "-f", "lavfi", "-i",
         "sine=frequency=440:sample_rate=22050:duration=2", "-ac", "2", "-c:v", "libx264",
         "-pix_fmt", "yuv420p", "-shortest", out["av"])
  # Gray level 16 + 4 N encodes the frame number N (lossless, so it survives decoding).
  index = "color=c=black:s=32x24:r=25:d=2,format=gray,geq=lum='16+N*4'"
  out["cfr"] = d / "cfr.mp4"
  ffmpeg("-f", "lavfi", "-i", index, "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p",
         out["cfr"])
  # Variable frame rate: frames 0-24 every 40 ms, then frames 25-49 every 100 ms from t = 1 s.
  out["vfr"] = d / "vfr.mp4"
  ffmpeg("-f", "lavfi", "-i", index + ",setpts='if(lt(N,25),N*0.04,1+(N-25)*0.1)/TB'",
         "-fps_mode", "passthrough", "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p",
         out["vfr"])
  # Top half red, bottom half blue, stored with a 90-degree (counter-clockwise) display rotation.
  plain = d / "plain.mp4"
  ffmpeg("-f", "lavfi", "-i",
         "color=c=red:s=64x48:r=25:d=1,drawbox=x=0:y=24:w=64:h=24:color=blue:t=fill",
         "-c:v", "libx264", "-pix_fmt", "yuv444p", plain)
  out["rotated"] = d / "rotated.mp4"
  ffmpeg("-display_rotation", "90", "-i", plain, "-c", "copy", out["rotated"])
  out["odd"] = d / "odd.mp4"
  ffmpeg("-f", "lavfi", "-i", "testsrc=size=17x9:rate=25:duration=1", "-c:v", "libx264",
         "-pix_fmt", "yuv444p", out["odd"])
  return out


def frame_numbers(frames):
  return np.rint((frames[..., 0].mean(axis=(1, 2)) - 16) / 4).astype(int)


def test_probe_reports_streams(files):
  info = media.probe(files["av"])
  assert info.duration == pytest.approx(2.0, abs=0.05)
  assert info.has_audio and info.has_video
  assert (info.width, info.height, info.fps) == (64, 48, 25.0)
  assert (info.audio_rate, info.audio_channels, info.rotation) == (22050, 2, 0.0)


def test_read_frames_picks_nearest_frame(files):
  times = [0.0, 0.03, 0.5, 1.0, 1.97, 0.5, 1.3]
  frames = media.read_frames(files["cfr"], times)
  assert frames.shape == (7, 24, 32, 3) and frames.dtype == np.uint8
  np.testing.assert_array_equal(frame_numbers(frames), [0, 1, 12, 25, 49, 12, 32])


def test_read_frames_past_end_gives_last_frame(files):
  np.testing.assert_array_equal(frame_numbers(media.read_frames(files["cfr"], [1.9, 5.0, 99.0])),
                                [47, 49, 49])


def test_read_frames_variable_frame_rate(files):
  frames = media.read_frames(files["vfr"], [0.52, 1.02, 1.3, 1.71, 3.3])
  np.testing.assert_array_equal(frame_numbers(frames), [13, 25, 28, 32, 48])


def test_read_frames_resizes_and_keeps_odd_sizes(files):
  assert media.read_frames(files["odd"], [0.2, 0.9]).shape == (2, 9, 17, 3)
  assert media.read_frames(files["odd"], [0.2], height=10, width=12).shape == (1, 10, 12, 3)


def test_rotation_is_applied_and_reported(files):
  info = media.probe(files["rotated"])
  assert (info.width, info.height, info.rotation) == (48, 64, 90.0)
  frame = media.read_frames(files["rotated"], [0.5])[0].astype(int)
  assert frame.shape == (64, 48, 3)
  # Rotated a quarter turn counter-clockwise, the red top half ends up on the left.
  left, right = frame[:, :20], frame[:, -20:]
  assert left[..., 0].mean() > 200 and left[..., 2].mean() < 60
  assert right[..., 2].mean() > 200 and right[..., 0].mean() < 60


def test_decode_audio_window_and_rate(files):
  wave = media.decode_audio(files["av"], 16000, start=0.5, end=1.25)
  assert wave.dtype == np.float32 and abs(len(wave) - 12000) <= 2
  spectrum = np.abs(np.fft.rfft(wave))
  assert np.argmax(spectrum) * 16000 / len(wave) == pytest.approx(440, abs=3)


def test_decode_audio_and_probe_is_both_in_one_call(files):
  wave = media.decode_audio(files["av"], 16000, start=0.5)
  both, info = media.decode_audio_and_probe(files["av"], 16000, start=0.5)
  np.testing.assert_array_equal(both, wave)
  assert info == media.probe(files["av"])   # the window does not change what the file holds
  with pytest.raises(media.MediaError, match="no audio stream"):
    media.decode_audio_and_probe(files["cfr"], 16000)


def test_decode_audio_averages_channels(tmp_path):
  t = np.arange(8000) / 8000
  tone = np.sin(2 * np.pi * 200 * t).astype(np.float32)
  path = tmp_path / "st.wav"
  scipy.io.wavfile.write(path, 8000, np.stack([0.5 * tone, 0.1 * tone], axis=1))
  wave = media.decode_audio(path, 8000)
  np.testing.assert_allclose(wave, 0.3 * tone, atol=1e-4)


@pytest.mark.parametrize("name, codec, channels", [
    ("a.wav", "pcm_s16le", 1), ("a.flac", "flac", 6), ("a.avi", "pcm_s16le", 2),
    ("a.flv", "libmp3lame", 2), ("a.mp4", "aac", 1)])
def test_decode_audio_formats(tmp_path, name, codec, channels):
  path = tmp_path / name
  ffmpeg("-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000:duration=1", "-ac",
         str(channels), "-c:a", codec, path)
  assert media.probe(path).audio_channels == channels
  wave = media.decode_audio(path, 22050)
  assert abs(len(wave) - 22050) < 0.05 * 22050
  peak = np.argmax(np.abs(np.fft.rfft(wave[:16384]))) * 22050 / 16384
  assert peak == pytest.approx(1000, abs=5)


def test_errors_name_file_and_problem(files, tmp_path):
  empty = tmp_path / "empty.mp4"
  empty.touch()
  text = tmp_path / "text.mp4"
  text.write_text("not a video\n" * 50)
  truncated = tmp_path / "truncated.mp4"
  truncated.write_bytes(files["av"].read_bytes()[:200])
  cases = [(empty, media.probe, "empty"), (text, media.probe, "not a readable media file"),
           (truncated, media.probe, "not a readable media file"),
           (tmp_path / "missing.mp4", media.probe, "not found"),
           (files["cfr"], lambda p: media.decode_audio(p, 16000), "no audio stream"),
           (text, lambda p: media.decode_audio(p, 16000), "not a readable media file"),
           (empty, lambda p: media.read_frames(p, [0.0]), "empty")]
  for path, fn, problem in cases:
    with pytest.raises(media.MediaError) as err:
      fn(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and problem in message and "\n" not in message


def test_read_frames_without_video_stream(tmp_path):
  path = tmp_path / "tone.wav"
  scipy.io.wavfile.write(path, 8000, np.zeros(800, np.float32))
  with pytest.raises(media.MediaError, match="no video stream"):
    media.read_frames(path, [0.0])


def test_a_hanging_ffmpeg_call_is_killed_and_reported(files, monkeypatch):
  """No ffmpeg process can start, decode and exit within a millisecond: both kinds of call
  (run to completion; frames streamed through a pipe) hit the time limit."""
  monkeypatch.setattr(media, "FFMPEG_TIMEOUT_S", 1e-3)
  with pytest.raises(media.MediaError,
                     match=r"av\.mp4: ffmpeg did not finish within 0.001 s \(killed\)"):
    media.decode_audio(files["av"], 16000)
  info = media.MediaInfo(path=files["av"], duration=2.0, has_audio=True, has_video=True,
                         width=64, height=48, fps=25.0)
  with pytest.raises(media.MediaError, match=r"av\.mp4: ffmpeg did not finish"):
    media.read_frames(files["av"], [0.5, 1.0], info=info)
