"""A labelled copy of a video: each frame with its segment's predicted emotion drawn on it."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np

from lbher_jax import media


def segment_at(segments: list[dict], t: float) -> dict | None:
  """The segment of a predict result that contains time `t` (s), or None."""
  for s in segments:
    if s["start"] <= t < s["end"]:
      return s
  return None


def draw_label(frame: np.ndarray, text: str) -> None:
  """Draws `text` in white on a dark box at the top left of an RGB frame, in place."""
  h = frame.shape[0]
  scale = max(0.4, h / 480)
  thickness = max(1, round(2 * scale))
  (w, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
  pad = max(2, round(6 * scale))
  cv2.rectangle(frame, (0, 0), (w + 2 * pad, th + base + 2 * pad), (0, 0, 0), cv2.FILLED)
  cv2.putText(frame, text, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
              thickness, cv2.LINE_AA)


def annotate_video(path: Path, result: dict, out: Path) -> Path:
  """Writes `out` (H.264 + AAC .mp4): `path` with each frame's segment label and probability drawn
  on it, at the source's size and frame rate, with the source's audio (if it has any).

  Frames stream from one ffmpeg process through OpenCV into another, one frame in memory at a time.
  """
  info = media.require_streams(Path(path), ("video",))
  rate = info.fps if info.fps > 0 else 25.0
  width, height = info.width, info.height
  frame_bytes = width * height * 3
  exe = media.ffmpeg_exe()
  src = str(Path(path).absolute())
  read_cmd = [exe, "-nostdin", "-loglevel", "error", "-i", src, "-map", "0:v:0",
              "-vf", f"fps={rate:.6f}", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
  out = Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
  write_cmd = [exe, "-nostdin", "-y", "-loglevel", "error",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
               "-r", f"{rate:.6f}", "-i", "pipe:0", "-i", src, "-map", "0:v:0", "-map", "1:a:0?",
               "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",   # yuv420p needs even sizes
               "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
               "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", str(tmp)]
  with tempfile.TemporaryFile() as read_log, tempfile.TemporaryFile() as write_log, \
      subprocess.Popen(read_cmd, stdout=subprocess.PIPE, stderr=read_log) as reader, \
      subprocess.Popen(write_cmd, stdin=subprocess.PIPE, stderr=write_log, bufsize=0) as writer:
    i = 0
    try:
      while len(buf := reader.stdout.read(frame_bytes)) == frame_bytes:
        frame = np.frombuffer(buf, np.uint8).reshape(height, width, 3).copy()
        segment = segment_at(result["segments"], i / rate)
        if segment is not None and segment["label"] is not None:
          draw_label(frame, f"{segment['label']} {segment['probabilities'][segment['label']]:.2f}")
        writer.stdin.write(frame.tobytes())
        i += 1
      writer.stdin.close()
    except BrokenPipeError:   # the encoder stopped; its log says why
      reader.kill()
    problems = [log for proc, log in ((writer, write_log), (reader, read_log)) if proc.wait()]
    if problems or i == 0:
      tmp.unlink(missing_ok=True)
      log = problems[0] if problems else read_log
      log.seek(0)
      lines = log.read().decode(errors="replace").strip().splitlines() or ["no frames decoded"]
      raise media.MediaError(path, f"annotating failed: {lines[-1]}")
  os.replace(tmp, out)
  return out
