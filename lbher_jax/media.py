"""Media decoding with the ffmpeg binary that imageio-ffmpeg ships (no ffprobe, no shell).

Three calls cover everything the pipeline needs: `probe` (what is in a file), `decode_audio` (one
mono float32 window) and `read_frames` (a few RGB frames at given times). Each is one ffmpeg process
whose input seek (`-ss` before `-i`) keeps the work proportional to the window, not the file.

Frame timing. `read_frames` resamples the video stream to a constant grid of R frames per second
with ffmpeg's `fps` filter (R = the stream's frame rate, the larger of its `fps` and `tbr`) and
returns, for each requested time t, grid slot round(t * R). For constant-frame-rate video the grid
is the frames themselves, so this is the frame nearest t; for variable-frame-rate video it is the
frame on screen at the grid point nearest t. Rotation metadata is applied by ffmpeg's
autorotation, and `MediaInfo.width`/`height` are the displayed (rotated) size, so they match the
decoded frames.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import re
import signal
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import imageio_ffmpeg
import numpy as np

_MAX_GRID_RATE = 240.0  # a `tbr` above this is a timebase, not a frame rate
_DEFAULT_RATE = 25.0  # for streams that report no rate at all
_TRUNCATED = ("partial file", "ended prematurely")  # what ffmpeg's demuxers say of a cut file
_MAX_FRAMES_PER_CALL = 64  # ffmpeg cannot parse a select expression of a few hundred terms
_PARALLEL_CALLS = 2  # ffmpeg processes of one read_frames at a time (each decodes on one thread)
_LAYOUT_CHANNELS = {"mono": 1, "stereo": 2, "downmix": 2, "binaural": 2, "quad": 4,
                    "hexagonal": 6, "octagonal": 8, "cube": 8, "hexadecagonal": 16}


# One decoding thread per ffmpeg call: the callers run one call per worker process on every core
# already, and small frames decode faster on one thread than with threads' start-up and hand-offs.
_DECODE_THREADS = ("-threads", "1")
# An ffmpeg call that runs longer than this is killed and its file reported: a file that makes
# ffmpeg hang (or a stalled network mount) must not stall a batch job for ever. Decoding an
# hour-long audio track takes ~10 s here.
FFMPEG_TIMEOUT_S = 600.0


class MediaError(Exception):
  """A media file cannot be used; str() is one line, "<path>: <problem>"."""

  def __init__(self, path, problem: str):
    super().__init__(f"{path}: {problem}")


@dataclasses.dataclass(frozen=True)
class MediaInfo:
  """What `ffmpeg -i` reports about a file. Sizes are as displayed (after rotation); 0 = absent."""

  path: Path
  duration: float
  has_audio: bool
  has_video: bool
  width: int = 0
  height: int = 0
  fps: float = 0.0
  audio_rate: int = 0
  audio_channels: int = 0
  rotation: float = 0.0  # degrees, as ffmpeg's display matrix states it (counter-clockwise)


@functools.cache
def ffmpeg_exe() -> str:
  """Path of the ffmpeg binary bundled with imageio-ffmpeg."""
  return imageio_ffmpeg.get_ffmpeg_exe()


def _check_file(path) -> Path:
  path = Path(path)
  if not path.is_file():
    raise MediaError(path, "file not found")
  if path.stat().st_size == 0:
    raise MediaError(path, "empty file (0 bytes)")
  return path


def _input(path: Path) -> str:
  """The name ffmpeg is given: absolute, so that no file name ("concat:a|b") reads as a protocol."""
  return str(Path(path).absolute())


def _ffmpeg_problem(stderr: str, path: Path) -> str:
  """The informative line of an ffmpeg error, without the path ffmpeg puts in front of it."""
  if "matches no streams" in stderr:
    return "no such stream"
  lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
  lines = [ln for ln in lines if not ln.startswith(("At least one output", "Error opening"))]
  line = lines[-1] if lines else "ffmpeg failed"
  line = re.sub(r"^\[[^\]]*\]\s*|Error opening input( file)?:?\s*", "", line)
  for name in (_input(path), str(path)):
    line = line.replace(f"{name}: ", "").replace(f"'{name}'", "file")
  if "Invalid data found" in line or "moov atom not found" in stderr:
    return f"not a readable media file ({line})"
  return f"ffmpeg: {line}"


def _channels(layout: str) -> int:
  """Number of channels of an ffmpeg channel layout name ("stereo", "5.1(side)", "3 channels")."""
  layout = layout.strip()
  if m := re.fullmatch(r"(\d+) channels.*", layout):
    return int(m.group(1))
  if m := re.fullmatch(r"(\d+(?:\.\d+)+).*", layout):
    return sum(int(part) for part in m.group(1).split("."))
  return _LAYOUT_CHANNELS.get(layout.split("(")[0], 0)


def _rate(text: str) -> float:
  return float(text[:-1]) * 1000 if text.endswith("k") else float(text)


def _parse_probe(stderr: str, path: Path) -> MediaInfo:
  """Reads duration and the first audio and video stream of `ffmpeg -i` output."""
  if "Input #0" not in stderr:
    raise MediaError(path, _ffmpeg_problem(stderr, path))
  duration = 0.0
  if m := re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", stderr):
    duration = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
  video = audio = None
  for m in re.finditer(r"^\s*Stream #0:\d+\S*: (Video|Audio): (.*)$", stderr, re.M):
    kind, line = m.groups()
    if kind == "Video" and video is None and "(attached pic)" not in line:
      video = (line, stderr[m.end():].split("Stream #", 1)[0])
    elif kind == "Audio" and audio is None:
      audio = line
  if video is None and audio is None:
    raise MediaError(path, "no decodable audio or video stream")
  fields = {}
  if video is not None:
    line, details = video
    if m := re.search(r"[ ,]([1-9]\d*)x([1-9]\d*)(?=[ ,\[]|$)", line):
      fields["width"], fields["height"] = int(m.group(1)), int(m.group(2))
    fps = re.search(r"([\d.]+k?) fps", line)
    tbr = re.search(r"([\d.]+k?) tbr", line)
    rates = [_rate(fps.group(1))] if fps else []
    if tbr and _rate(tbr.group(1)) <= _MAX_GRID_RATE:
      rates.append(_rate(tbr.group(1)))
    fields["fps"] = max(rates, default=0.0)
    rot = re.search(r"rotation of (-?[\d.]+) degrees", details)
    tag = re.search(r"^\s*rotate\s*:\s*(-?[\d.]+)", details, re.M)
    rotation = float(rot.group(1)) if rot else -float(tag.group(1)) if tag else 0.0
    fields["rotation"] = rotation
    if round(rotation) % 180 == 90 and "width" in fields:
      fields["width"], fields["height"] = fields["height"], fields["width"]
  if audio is not None:
    if m := re.search(r"(\d+) Hz, ([^,]+)", audio):
      fields["audio_rate"], fields["audio_channels"] = int(m.group(1)), _channels(m.group(2))
  return MediaInfo(path=path, duration=duration, has_audio=audio is not None,
                   has_video=video is not None, **fields)


def _decoded_duration(path: Path) -> float:
  """Duration found by decoding, for containers whose header states none."""
  _, _, stderr = _ffmpeg(path, ["-i", _input(path), "-f", "null", "-"])
  times = re.findall(r"time=(\d+):(\d\d):(\d\d(?:\.\d+)?)", stderr)
  if not times:
    return 0.0
  h, m, s = times[-1]
  return int(h) * 3600 + int(m) * 60 + float(s)


def _ffmpeg(path: Path, args: list[str], *, stdout: bool = False) -> tuple[int, bytes, str]:
  """Runs ffmpeg on `path` (named in `args`); (return code, stdout bytes if asked for, stderr).

  stderr goes to a temporary file, so stdout (one pipe) is read in one go rather than through a
  select loop over two pipes.
  """
  with tempfile.TemporaryFile() as log:
    try:
      proc = subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", *args],
                            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL, stderr=log,
                            check=False, timeout=FFMPEG_TIMEOUT_S)
    except subprocess.TimeoutExpired:
      raise MediaError(path, _timeout_problem()) from None
    log.seek(0)
    return proc.returncode, proc.stdout or b"", log.read().decode(errors="replace")


def _timeout_problem() -> str:
  return f"ffmpeg did not finish within {FFMPEG_TIMEOUT_S:g} s (killed)"


def probe(path) -> MediaInfo:
  """Describes a media file; raises MediaError when it is missing, empty or not decodable."""
  path = _check_file(path)
  _, _, stderr = _ffmpeg(path, ["-i", _input(path)])
  return _with_duration(_parse_probe(stderr, path))


def _with_duration(info: MediaInfo) -> MediaInfo:
  if info.duration > 0:
    return info
  return dataclasses.replace(info, duration=_decoded_duration(info.path))


def _window_args(start: float | None, end: float | None) -> list[str]:
  """Input options that make ffmpeg read only [start, end)."""
  if start is not None and start < 0:
    raise ValueError(f"start must be >= 0, got {start}")
  if start is not None and end is not None and end <= start:
    raise ValueError(f"end ({end}) must be after start ({start})")
  args = ["-ss", f"{start:.6f}"] if start else []
  if end is not None:
    args += ["-t", f"{end - (start or 0.0):.6f}"]
  return args


def decode_audio(path, sample_rate: int, start: float | None = None,
                 end: float | None = None) -> np.ndarray:
  """The first audio stream of `path` between start and end (s), as float32 mono at sample_rate.

  Channels are averaged (ffmpeg's own downmix would add correlated stereo channels 3 dB louder,
  which would shift the fixed dB scale of the spectrograms).
  """
  return _decode_audio(_check_file(path), sample_rate, start, end)[0]


def decode_audio_and_probe(path, sample_rate: int, start: float | None = None,
                           end: float | None = None, *, require_audio: bool = True
                           ) -> tuple[np.ndarray | None, MediaInfo]:
  """`decode_audio` and `probe` in one ffmpeg call (the decoder reports what `probe` reads).

  A file without an audio stream raises MediaError, or gives (None, info) when not
  `require_audio` (a video-only clip, judged by its faces).
  """
  path = _check_file(path)
  wave, stderr = _decode_audio(path, sample_rate, start, end, require_audio=require_audio)
  return wave, _with_duration(_parse_probe(stderr, path))


def _decode_audio(path: Path, sample_rate: int, start: float | None, end: float | None, *,
                  require_audio: bool = True) -> tuple[np.ndarray | None, str]:
  """(mono wave, ffmpeg's stderr); a file without an audio stream raises MediaError, or gives
  a None wave when not `require_audio`."""
  returncode, stdout, stderr = _ffmpeg(
      path, ["-nostats", *_DECODE_THREADS, *_window_args(start, end), "-i", _input(path),
             "-map", "0:a:0", "-ar", str(int(sample_rate)), "-f", "f32le", "pipe:1"], stdout=True)
  if returncode != 0:
    if "Input #0" in stderr and "matches no streams" in stderr:
      if require_audio:
        raise MediaError(path, "no audio stream")
      return None, stderr
    raise MediaError(path, _ffmpeg_problem(stderr, path))
  if any(sign in stderr for sign in _TRUNCATED):
    raise MediaError(path, "truncated file (its data ends before its stated length)")
  out = re.search(r"Output #0.*?Audio: pcm_f32le, \d+ Hz, ([^,]+)", stderr, re.S)
  channels = _channels(out.group(1)) if out else 1
  wave = np.frombuffer(stdout, np.float32)
  if channels > 1:
    wave = wave[: len(wave) // channels * channels].reshape(-1, channels).mean(axis=1)
  return np.ascontiguousarray(wave, dtype=np.float32), stderr


def _grid_rate(info: MediaInfo) -> float:
  return info.fps if info.fps > 0 else _DEFAULT_RATE


def read_frames(path, times: Sequence[float], height: int | None = None,
                width: int | None = None, *, info: MediaInfo | None = None) -> np.ndarray:
  """uint8 RGB frames [len(times), H, W, 3] at the given absolute times (s).

  Seeks to just before the earliest time and decodes only up to the latest; holds only the frames
  asked for. Times past the end give the last frame. Without height/width the displayed size.
  `info` (the result of `probe(path)`) saves probing the file again. Many times (a long video)
  are read by several ffmpeg calls of at most `_MAX_FRAMES_PER_CALL` frames each, two at a time.
  """
  info = info or probe(path)
  path = info.path
  if not info.has_video:
    raise MediaError(path, "no video stream")
  if (height is None) != (width is None):
    raise ValueError("give both height and width, or neither")
  height, width = (height, width) if height else (info.height, info.width)
  if height <= 0 or width <= 0:
    raise MediaError(path, "unknown frame size")
  times = np.clip(np.asarray(times, np.float64), 0.0, info.duration)
  if times.size == 0:
    return np.zeros((0, height, width, 3), np.uint8)
  unique, inverse = np.unique(times, return_inverse=True)
  read = lambda i: _read_sorted(path, unique[i:i + _MAX_FRAMES_PER_CALL], _grid_rate(info),
                                height, width)
  starts = range(0, len(unique), _MAX_FRAMES_PER_CALL)
  if len(starts) == 1:
    return read(0)[inverse.reshape(-1)]
  with concurrent.futures.ThreadPoolExecutor(_PARALLEL_CALLS) as pool:  # separate processes
    parts = list(pool.map(read, starts))
  return np.concatenate(parts)[inverse.reshape(-1)]


def _read_sorted(path: Path, times: np.ndarray, rate: float, height: int,
                 width: int) -> np.ndarray:
  """One ffmpeg call: the frames at the sorted `times` on the constant grid of `rate` per second."""
  # Seek to a grid point two frames early so constant-rate frames land exactly on the grid.
  first = max(0, int(np.floor(times.min() * rate)) - 2)
  seek = first / rate
  slots = np.rint((times - seek) * rate).astype(np.int64)
  wanted = np.unique(slots)
  select = "+".join(f"eq(n,{k})" for k in wanted)
  # fps: resample onto the grid (start_time=0 pads the start); tpad clones the last frame so that
  # slots past the end of the stream exist (a finite count: with stop=-1 ffmpeg never returns);
  # select keeps only the slots asked for.
  vf = (f"fps={rate:.6f}:start_time=0,tpad=stop={wanted[-1] + 1}:stop_mode=clone,"
        f"select='{select}',scale={width}:{height}:flags=area")
  cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", *_DECODE_THREADS,
         "-ss", f"{seek:.6f}", "-i", _input(path), "-map", "0:v:0", "-vf", vf, "-fps_mode", "passthrough",
         "-frames:v", str(len(wanted)), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
  frame_bytes = height * width * 3
  frames = np.empty((len(wanted), height, width, 3), np.uint8)
  # stderr goes to a file: a pipe nobody reads while frames stream could fill up and block ffmpeg.
  with tempfile.TemporaryFile() as log, subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                                         stderr=log) as proc:
    watchdog = threading.Timer(FFMPEG_TIMEOUT_S, proc.kill)
    watchdog.start()
    got = 0
    while got < len(wanted):
      buf = proc.stdout.read(frame_bytes)
      if len(buf) < frame_bytes:
        break
      frames[got] = np.frombuffer(buf, np.uint8).reshape(height, width, 3)
      got += 1
    proc.stdout.close()
    proc.wait()
    watchdog.cancel()
    if got < len(wanted) and proc.returncode == -signal.SIGKILL:
      raise MediaError(path, _timeout_problem())
    log.seek(0)
    stderr = log.read().decode(errors="replace")
  if got < len(wanted):
    problem = _ffmpeg_problem(stderr, path) if stderr.strip() else "no decodable video frames"
    raise MediaError(path, problem)
  return frames[np.searchsorted(wanted, slots)]


def require_streams(path: Path, streams: Sequence[str]) -> MediaInfo:
  """Probes `path`; raises MediaError naming it unless it holds at least one of `streams`
  ("audio", "video": those a model reads) and a duration."""
  info = probe(path)
  held = [s for s in streams if (info.has_audio if s == "audio" else info.has_video)]
  if not held:
    wanted = " or ".join(f"an {s} stream" if s == "audio" else f"a {s} stream" for s in streams)
    raise MediaError(path, f"no {' and no '.join(streams)} stream (the model needs {wanted})")
  if info.duration <= 0:
    raise MediaError(path, "no duration (the streams hold no samples)")
  return info
