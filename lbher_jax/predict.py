"""Emotion recognition on any video: a per-segment timeline and an overall label.

The video is processed a chunk of segments at a time, so memory stays flat whatever its length.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from lbher_jax import LABELS, files, media
from lbher_jax.features import audio as audio_features
from lbher_jax.features import video as video_features

CHUNK_SEGMENTS = 10


def check_media(path: Path) -> media.MediaInfo:
  """Probes `path`; raises media.MediaError naming it unless it has audio and video streams."""
  info = media.probe(path)
  if not info.has_audio:
    raise media.MediaError(path, "no audio stream (LbHER needs the audio track)")
  if not info.has_video:
    raise media.MediaError(path, "no video stream (LbHER needs the face frames)")
  if info.duration <= 0:
    raise media.MediaError(path, "no duration (the streams hold no samples)")
  return info


def chunk_spectrograms(info: media.MediaInfo, part: list[tuple[float, float]],
                       audio_params: audio_features.AudioParams,
                       rng: np.random.Generator) -> np.ndarray:
  """float32 [len(part), F, T]: the spectrogram of each segment of one chunk (one audio decode)."""
  path = info.path
  start, end = part[0][0], part[-1][1]
  wave = media.decode_audio(path, audio_params.sample_rate, start, end)
  if not np.isfinite(wave).all():
    raise media.MediaError(path, "audio has non-finite samples (NaN or Inf)")
  if wave.size == 0 or np.max(np.abs(wave)) < 1e-6:
    wave = np.zeros(max(wave.size, 1), np.float32)   # silence is a valid (neutral-ish) input
  rel = dataclasses.replace(audio_params, mode="segments")
  spec = np.stack([
      audio_features.spectrogram_segments(
          wave[int((a - start) * rel.sample_rate):int((b - start) * rel.sample_rate)], rel,
          rng)[0]
      for a, b in part])
  if not np.isfinite(spec).all():
    raise media.MediaError(path, f"non-finite spectrogram values at {start:.1f}-{end:.1f} s")
  return spec.astype(np.float32)


def segment_inputs(info: media.MediaInfo, audio_params: audio_features.AudioParams,
                   video_params: video_features.VideoParams, *, seed: int = 0,
                   chunk: int = CHUNK_SEGMENTS):
  """Yields (bounds, {"audio": [n, F, T], "video": [n, S, H, W, 3]}, face_fraction) per chunk."""
  bounds = audio_features.segment_bounds(info.duration, audio_params)
  rng = np.random.default_rng(seed)
  for i in range(0, len(bounds), chunk):
    part = bounds[i:i + chunk]
    spec = chunk_spectrograms(info, part, audio_params, rng)
    frames, face = video_features.segment_frames(info.path, part, None, video_params, info=info)
    yield part, {"audio": spec, "video": frames}, face


def predict_video(path: Path, classify: Callable[[dict], np.ndarray],
                  audio_params: audio_features.AudioParams,
                  video_params: video_features.VideoParams, *, seed: int = 0) -> dict:
  """The contract JSON for one video; `classify(batch) -> probabilities [n, 4]`."""
  info = check_media(Path(path))
  segments, faces, weights = [], [], []
  for bounds, batch, face in segment_inputs(info, audio_params, video_params, seed=seed):
    probs = np.asarray(classify(batch))
    faces.append(face)
    weights.append(len(bounds))
    for (a, b), p in zip(bounds, probs):
      segments.append({"start": round(a, 3), "end": round(b, 3), "label": LABELS[int(p.argmax())],
                       "probabilities": {l: float(v) for l, v in zip(LABELS, p)}})
  overall = np.mean([[s["probabilities"][l] for l in LABELS] for s in segments], axis=0)
  face_fraction = float(np.average(faces, weights=weights))
  return {"video": str(path), "duration_s": round(info.duration, 3),
          "label": LABELS[int(overall.argmax())],
          "probabilities": {l: float(v) for l, v in zip(LABELS, overall)},
          "face_found_fraction": round(face_fraction, 3),
          "face_fallback": face_fraction == 0.0,
          "face_detector": video_params.face_detector,
          "segments": segments}


def format_timeline(result: dict) -> str:
  """A readable timeline: one line per segment, then the overall label."""
  lines = [f"{result['video']}  ({result['duration_s']:.1f} s)"]
  for s in result["segments"]:
    p = s["probabilities"]
    bars = "  ".join(f"{l} {p[l]:.2f}" for l in LABELS)
    lines.append(f"  {s['start']:6.1f}-{s['end']:6.1f} s  {s['label']:<8} | {bars}")
  note = ""
  if result["face_detector"] == "none":
    note = "  (face detector off: fixed central crop)"
  elif result["face_fallback"]:
    note = "  (no face found: fixed central crop used)"
  lines.append(f"  overall: {result['label']} "
               f"({result['probabilities'][result['label']]:.2f}){note}")
  return "\n".join(lines)


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
  on it, at the source's size and frame rate, with the source's audio.

  Frames stream from one ffmpeg process through OpenCV into another, one frame in memory at a time.
  """
  info = check_media(Path(path))
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
               "-r", f"{rate:.6f}", "-i", "pipe:0", "-i", src, "-map", "0:v:0", "-map", "1:a:0",
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
        if segment is not None:
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


def progress_bar(done: int, total: int, elapsed: float, width: int = 20) -> str:
  """`[#####-----] 3/6 videos, 12 s, ~12 s left`: how far a run over several videos is."""
  filled = round(width * done / total)
  left = elapsed / done * (total - done) if done else 0.0
  return (f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total} videos, {elapsed:.0f} s"
          + (f", ~{left:.0f} s left" if done < total else ""))


VIDEO_SUFFIXES = {".mp4", ".avi", ".flv", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


def expand(paths: list[str]) -> list[Path]:
  """Files as given, and the video files inside any directory given (sorted)."""
  out = []
  for p in map(Path, paths):
    if p.is_dir():
      out.extend(sorted(f for f in p.rglob("*") if f.suffix.lower() in VIDEO_SUFFIXES))
    else:
      out.append(p)
  return out


def example_batch(config, batch_size: int = 1) -> dict[str, np.ndarray]:
  """Zeros shaped like a model input batch of `config` (audio, video, label, weight)."""
  a, v = config.audio, config.video
  return {"audio": np.zeros((batch_size, a.height, a.width), np.float32),
          "video": np.zeros((batch_size, v.frames_per_segment, v.height, v.width, 3), np.uint8),
          "label": np.zeros(batch_size, np.int32), "weight": np.ones(batch_size, np.float32)}


def load_model(config, workdir: Path):
  """(model, state, mesh): the fine-tuned checkpoint that evaluation uses, on one device."""
  import jax  # pylint: disable=import-outside-toplevel
  from lbher_jax.models import get_model  # pylint: disable=import-outside-toplevel
  from lbher_jax.train import loop, mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  model = get_model(config.model)
  mesh = mesh_lib.make_mesh(jax.local_devices()[:1])
  shapes = {k: x.shape for k, x in example_batch(config).items()}
  state = loop.restore_for_inference(model, mesh, Path(workdir), shapes,
                                     prefer_best=config.eval.checkpoint == "best")
  return model, state, mesh


def load_classifier(config, workdir: Path) -> Callable[[dict], np.ndarray]:
  """The fine-tuned model in WORKDIR as a function batch -> probabilities (one compile per size),
  calibrated by the temperature of WORKDIR/calibration.json when evaluation has fitted one."""
  from lbher_jax.evaluation import calibration  # pylint: disable=import-outside-toplevel
  from lbher_jax.train import loop, mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  model, state, mesh = load_model(config, workdir)
  step = loop.compile_eval_step(model, mesh, temperature=calibration.load_temperature(workdir))

  def classify(batch: dict) -> np.ndarray:
    n = len(batch["audio"])
    padded = {k: np.concatenate([x, np.repeat(x[-1:], CHUNK_SEGMENTS - n, 0)])
              for k, x in batch.items()}   # one shape, one compilation
    padded["label"] = np.zeros(CHUNK_SEGMENTS, np.int32)
    padded["weight"] = (np.arange(CHUNK_SEGMENTS) < n).astype(np.float32)
    return np.asarray(step(state, mesh_lib.to_global(padded, mesh))["probs"])[:n]
  return classify


def run(config, workdir: str, videos: list[str], output: str | None, *, plot: bool = False,
        annotate: bool = False) -> int:
  """--mode predict: one JSON per video (and a CSV summary for several), timelines printed.

  `plot` adds a timeline PNG beside each JSON, `annotate` a labelled copy of the video
  (<stem>.annotated.mp4).
  """
  import csv  # pylint: disable=import-outside-toplevel
  import json  # pylint: disable=import-outside-toplevel
  paths = expand(videos)
  if not paths:
    raise media.MediaError(" ".join(videos) or "--video", "no video given or found")
  if len(paths) == 1:                          # fail fast, before loading the model
    check_media(paths[0])
  classify = load_classifier(config, Path(workdir))
  audio_params = audio_features.AudioParams(**config.audio.to_dict())
  video_params = video_features.VideoParams(**config.video.to_dict())
  single = len(paths) == 1
  out_dir = Path(output) if output and not single else Path(workdir) / "predictions"
  summary, failures, began = [], 0, time.perf_counter()
  for i, f in enumerate(paths, 1):
    try:
      result = predict_video(f, classify, audio_params, video_params, seed=config.data.noise_seed)
      target = Path(output) if (single and output) else out_dir / f"{f.stem}.json"
      target.parent.mkdir(parents=True, exist_ok=True)
      files.atomic_write_text(target, json.dumps(result, indent=1))
      made = [target]
      if plot:
        from lbher_jax.evaluation import plots  # pylint: disable=import-outside-toplevel
        plots.plot_timeline(result, target.with_suffix(".png"))
        made.append(target.with_suffix(".png"))
      if annotate:
        made.append(annotate_video(f, result, target.with_suffix(".annotated.mp4")))
    except media.MediaError as e:
      if single:
        raise
      failures += 1
      print(f"[{i}/{len(paths)}] error: {e}")
      summary.append({"video": str(f), "label": "", "error": str(e)})
    else:
      print(("" if single else f"[{i}/{len(paths)}] ") + format_timeline(result))
      print("  -> " + ", ".join(map(str, made)))
      summary.append({"video": str(f), "label": result["label"], "error": "",
                      **{f"p_{l}": round(result["probabilities"][l], 4) for l in LABELS}})
    if not single:
      print(progress_bar(i, len(paths), time.perf_counter() - began), file=sys.stderr)
  if not single:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "summary.csv", "w", newline="") as fh:
      fields = ["video", "label", *[f"p_{l}" for l in LABELS], "error"]
      writer = csv.DictWriter(fh, fieldnames=fields, restval="")
      writer.writeheader()
      writer.writerows(summary)
    print(f"{len(paths) - failures} of {len(paths)} videos predicted; summary: "
          f"{out_dir / 'summary.csv'}")
  return 1 if failures == len(paths) else 0
