"""Emotion recognition on any video: a per-segment timeline and an overall label.

The video is processed a chunk of segments at a time, so memory stays flat whatever its length.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import tqdm

from lbher_jax import LABELS, files, media
from lbher_jax.features import audio as audio_features
from lbher_jax.features import video as video_features

CHUNK_SEGMENTS = 10


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
  info = media.require_audio_video(Path(path))
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
    media.require_audio_video(paths[0])
  from lbher_jax import inference  # pylint: disable=import-outside-toplevel  # JAX: only here
  classify = inference.load_classifier(config, Path(workdir), CHUNK_SEGMENTS)
  audio_params = audio_features.AudioParams(**config.audio.to_dict())
  video_params = video_features.VideoParams(**config.video.to_dict())
  single = len(paths) == 1
  out_dir = Path(output) if output and not single else Path(workdir) / "predictions"
  summary, failures = [], 0
  bar = tqdm.tqdm(total=len(paths), unit="video", file=sys.stderr, disable=single)
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
        from lbher_jax import annotate as annotate_lib  # pylint: disable=import-outside-toplevel
        made.append(annotate_lib.annotate_video(f, result, target.with_suffix(".annotated.mp4")))
    except media.MediaError as e:
      if single:
        raise
      failures += 1
      bar.write(f"[{i}/{len(paths)}] error: {e}", file=sys.stdout)
      summary.append({"video": str(f), "label": "", "error": str(e)})
    else:
      bar.write(("" if single else f"[{i}/{len(paths)}] ") + format_timeline(result)
                + "\n  -> " + ", ".join(map(str, made)), file=sys.stdout)
      summary.append({"video": str(f), "label": result["label"], "error": "",
                      **{f"p_{l}": round(result["probabilities"][l], 4) for l in LABELS}})
    bar.update()
  bar.close()
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
