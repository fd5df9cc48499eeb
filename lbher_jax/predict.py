"""Emotion recognition on any video or audio file: a per-segment timeline and an overall label.

Two entry points share it: `--mode predict` of lbher_jax.main (a workdir's fine-tuned checkpoint
and its config) and `python -m lbher_jax.predict EXPORT_DIR FILE ...` (an `--mode export`
artifact: only jax, numpy, OpenCV and ffmpeg are loaded, so a fresh process starts in about a
second). The model reaches this module as a `Classifier`; it knows no JAX itself.

Each segment uses the streams the model reads that are there: a file without an audio track is
recognised from the faces, an audio file from the voice, and a segment where the detector finds no
face from the voice alone (a two-stream model's own per-stream output layers). When several faces
are in view and the model has time-keeping embeddings (`model.sync_dim`), each segment reads the
face whose mouth moves with the voice: the active speaker. The file is processed a chunk of
segments at a time, so memory stays flat whatever its length.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import tqdm

from lbher_jax import LABELS, STREAMS, answering_output, files, media
from lbher_jax.features import audio as audio_features
from lbher_jax.features import video as video_features

CHUNK_SEGMENTS = 10
MAX_FACES = 4   # face candidates per chunk for the active speaker
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Classifier:
  """A trained model as prediction sees it.

  `streams`: the inputs it reads, in STREAMS order. `heads(batch)` takes {"audio": [n, F, T],
  "video": [n, S, H, W, 3]} (the streams it reads; n <= CHUNK_SEGMENTS) and returns class
  probabilities [n, 4] of its output, "probs", and for a two-stream model also "audio_probs" and
  "video_probs", each from a stream's own output layer, which does not read the other stream.
  `sync(batch)`, where the model has one, takes {"audio", "video", "span"} and returns [n]
  distances between each row's voice and face (lower: the mouth moves with the voice).
  """

  streams: tuple[str, ...]
  heads: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
  sync: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None


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


@dataclasses.dataclass
class Chunk:
  """The inputs of one chunk of segments and the streams each segment can use."""
  bounds: list[tuple[float, float]]
  batch: dict[str, np.ndarray]
  used: list[tuple[str, ...]]   # per segment, in STREAMS order; () = nothing to recognise from
  faces: np.ndarray | None      # per segment, fraction of examined frames with a face (haar only)
  boxes: list                   # per segment, the (x, y, w, h) of the face read, or None


def active_speaker(spectrograms: np.ndarray, crops: np.ndarray, spans: np.ndarray,
                   sync: Callable[[dict[str, np.ndarray]], np.ndarray]) -> np.ndarray:
  """Per segment, the index of the face candidate (crops [K, segments, frames, H, W, 3]) whose
  frames go best with the segment's audio (the lowest `sync` distance)."""
  distances = np.stack([sync({"audio": spectrograms, "video": c, "span": spans}) for c in crops])
  return distances.argmin(axis=0)


def segment_inputs(info: media.MediaInfo, streams: tuple[str, ...],
                   audio_params: audio_features.AudioParams,
                   video_params: video_features.VideoParams, *, seed: int = 0,
                   chunk: int = CHUNK_SEGMENTS,
                   sync: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None):
  """Yields a `Chunk` per `chunk` segments, holding an input for each of `streams` (zeros where
  the file lacks that stream) and, per segment, which of them it holds: video where the detector
  found a face in the segment, or everywhere when no detector runs. With `sync` and several
  faces in view, each segment's video is the face that `active_speaker` picks."""
  bounds = audio_features.segment_bounds(info.duration, audio_params)
  rng = np.random.default_rng(seed)
  has = {"audio": info.has_audio and "audio" in streams,
         "video": info.has_video and "video" in streams}
  v = video_params
  for i in range(0, len(bounds), chunk):
    part = bounds[i:i + chunk]
    batch, faces, seen, boxes = {}, None, np.ones(len(part), bool), [None] * len(part)
    if has["audio"]:
      batch["audio"] = chunk_spectrograms(info, part, audio_params, rng)
    elif "audio" in streams:
      batch["audio"] = np.zeros((len(part), audio_params.height, audio_params.width), np.float32)
    if has["video"]:
      choose = sync is not None and has["audio"] and v.face_detector != "none"
      found = video_features.segment_faces(info.path, part, None, v, info=info,
                                           max_faces=MAX_FACES if choose else 1)
      pick = np.zeros(len(part), int)
      if len(found.boxes) > 1:
        spans = np.array([min(1.0, (b - a) / audio_params.segment_seconds) for a, b in part],
                         np.float32)
        pick = active_speaker(batch["audio"], found.crops, spans, sync)
      batch["video"] = found.crops[pick, np.arange(len(part))]
      boxes = [found.boxes[k] for k in pick]
      if v.face_detector != "none":
        faces, seen = found.found, found.found > 0
    elif "video" in streams:
      batch["video"] = np.zeros((len(part), v.frames_per_segment, v.height, v.width, 3), np.uint8)
    used = [tuple(s for s in STREAMS if has[s] and (s == "audio" or seen[k]))
            for k in range(len(part))]
    yield Chunk(part, batch, used, faces, boxes)


def _one_ahead(items: Iterator[T]) -> Iterator[T]:
  """`items`, the next one made in a thread while the caller works on the current one (decoding
  a chunk of the video, which runs mostly in ffmpeg and OpenCV, beside the model)."""
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    upcoming = pool.submit(next, items, None)
    while (item := upcoming.result()) is not None:
      upcoming = pool.submit(next, items, None)
      yield item


def predict_video(path: Path, classifier: Classifier, audio_params: audio_features.AudioParams,
                  video_params: video_features.VideoParams, *, seed: int = 0) -> dict:
  """The contract JSON for one video or audio file (docs/ARCHITECTURE.md, "Predict JSON")."""
  path = Path(path)
  info = media.require_streams(path, classifier.streams)
  segments, faces = [], []
  chunks = segment_inputs(info, classifier.streams, audio_params, video_params, seed=seed,
                          sync=classifier.sync)
  for chunk in _one_ahead(chunks):
    heads = classifier.heads(chunk.batch) if any(chunk.used) else {}
    if chunk.faces is not None:
      faces.extend(chunk.faces)
    for k, ((a, b), used, box) in enumerate(zip(chunk.bounds, chunk.used, chunk.boxes)):
      segment = {"start": round(a, 3), "end": round(b, 3), "label": None, "probabilities": None,
                 "modalities": list(used),
                 "face": [round(x) for x in box] if box and "video" in used else None}
      if used:
        p = np.asarray(heads[answering_output(used, heads)][k])
        segment.update(label=LABELS[int(p.argmax())],
                       probabilities={l: float(x) for l, x in zip(LABELS, p)})
      segments.append(segment)
  known = [s for s in segments if s["label"] is not None]
  if not known:
    raise media.MediaError(path, "no face found in any segment (the model reads only faces)"
                           if "audio" not in classifier.streams
                           else "no audio stream and no face found in any segment")
  overall = np.mean([[s["probabilities"][l] for l in LABELS] for s in known], axis=0)
  return {"video": str(path), "duration_s": round(info.duration, 3),
          "label": LABELS[int(overall.argmax())],
          "probabilities": {l: float(v) for l, v in zip(LABELS, overall)},
          "modalities": [m for m in STREAMS if any(m in s["modalities"] for s in segments)],
          "face_found_fraction": round(float(np.mean(faces)), 3) if faces else None,
          "face_detector": video_params.face_detector,
          "segments": segments}


def format_timeline(result: dict) -> str:
  """A readable timeline: one line per segment, then the overall label."""
  lines = [f"{result['video']}  ({result['duration_s']:.1f} s)"]
  for s in result["segments"]:
    what = "+".join(s["modalities"])
    if s["label"] is None:
      lines.append(f"  {s['start']:6.1f}-{s['end']:6.1f} s  {'-':<8} | no face found")
      continue
    bars = "  ".join(f"{l} {s['probabilities'][l]:.2f}" for l in LABELS)
    lines.append(f"  {s['start']:6.1f}-{s['end']:6.1f} s  {s['label']:<8} | {bars}  ({what})")
  note = "  (face detector off: fixed central crop)" if result["face_detector"] == "none" else ""
  lines.append(f"  overall: {result['label']} "
               f"({result['probabilities'][result['label']]:.2f}) from "
               f"{' and '.join(result['modalities'])}{note}")
  return "\n".join(lines)


VIDEO_SUFFIXES = {".mp4", ".avi", ".flv", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus"}


def expand(paths: list[str]) -> list[Path]:
  """Files as given, and the video and audio files inside any directory given (sorted)."""
  out = []
  for p in map(Path, paths):
    if p.is_dir():
      out.extend(sorted(f for f in p.rglob("*")
                        if f.suffix.lower() in VIDEO_SUFFIXES | AUDIO_SUFFIXES))
    else:
      out.append(p)
  return out


def average_heads(members: Sequence[Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]]
                  ) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
  """Classifier heads that give, for each output layer, the mean of the members' probabilities
  (a seed ensemble)."""
  if len(members) == 1:
    return members[0]

  def heads(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    outs = [m(batch) for m in members]
    return {k: np.mean([o[k] for o in outs], axis=0) for k in outs[0]}
  return heads


def run(config, workdir: str, videos: list[str], output: str | None, *, plot: bool = False,
        annotate: bool = False, ensemble: Sequence[str] = ()) -> int:
  """--mode predict: the fine-tuned model of `workdir` on each file (`predict_files`); JSON
  written to `output` or WORKDIR/predictions. With `ensemble` (further workdirs trained with the
  same config, e.g. other seeds), every output layer's probabilities are the mean of all the
  models' (each calibrated by its own temperature); the face-voice match is WORKDIR's."""
  paths = _inputs(videos)
  # JAX and the model code: only here.
  from lbher_jax import inference  # pylint: disable=import-outside-toplevel
  from lbher_jax.models import input_keys  # pylint: disable=import-outside-toplevel
  members = [inference.load_classifier(config, Path(w), CHUNK_SEGMENTS)
             for w in (workdir, *ensemble)]
  classifier = Classifier(input_keys(config.model.name), average_heads(members),
                          inference.load_sync_scorer(config, Path(workdir), CHUNK_SEGMENTS))
  return predict_files(paths, classifier, audio_features.AudioParams(**config.audio.to_dict()),
                       video_features.VideoParams(**config.video.to_dict()),
                       seed=config.data.noise_seed, output=output,
                       default_dir=Path(workdir) / "predictions", plot=plot, annotate=annotate)


def _inputs(given: list[str]) -> list[Path]:
  """The files to predict; a single one is checked before any model is loaded (fail fast)."""
  paths = expand(given)
  if not paths:
    raise media.MediaError(" ".join(given) or "--video", "no video or audio file given or found")
  if len(paths) == 1:
    media.require_streams(paths[0], STREAMS)
  return paths


def predict_files(paths: list[Path], classifier: Classifier,
                  audio_params: audio_features.AudioParams,
                  video_params: video_features.VideoParams, *, seed: int, output: str | None,
                  default_dir: Path, plot: bool = False, annotate: bool = False) -> int:
  """One JSON per file (and a CSV summary for several), timelines printed; returns the exit
  status (1 when no file could be predicted).

  One file: its JSON goes to `output` (a file name) or `default_dir`/<stem>.json, and a bad file
  raises MediaError. Several: to the folder `output` or `default_dir`, each bad file reported
  and skipped. `plot` adds a timeline PNG beside each JSON, `annotate` a labelled copy of each
  video (<stem>.annotated.mp4).
  """
  import csv  # pylint: disable=import-outside-toplevel
  import json  # pylint: disable=import-outside-toplevel
  single = len(paths) == 1
  out_dir = Path(output) if output and not single else default_dir
  summary, failures = [], 0
  bar = tqdm.tqdm(total=len(paths), unit="file", file=sys.stderr, disable=single)
  for i, f in enumerate(paths, 1):
    try:
      result = predict_video(f, classifier, audio_params, video_params, seed=seed)
      target = Path(output) if (single and output) else out_dir / f"{f.stem}.json"
      target.parent.mkdir(parents=True, exist_ok=True)
      files.atomic_write_text(target, json.dumps(result, indent=1))
      made = [target]
      if plot:
        from lbher_jax.evaluation import plots  # pylint: disable=import-outside-toplevel
        plots.plot_timeline(result, target.with_suffix(".png"))
        made.append(target.with_suffix(".png"))
      if annotate and media.probe(f).has_video:   # an audio file has no frames to label
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
                      "modalities": "+".join(result["modalities"]),
                      **{f"p_{l}": round(result["probabilities"][l], 4) for l in LABELS}})
    bar.update()
  bar.close()
  if not single:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "summary.csv", "w", newline="") as fh:
      fields = ["video", "label", *[f"p_{l}" for l in LABELS], "modalities", "error"]
      writer = csv.DictWriter(fh, fieldnames=fields, restval="")
      writer.writeheader()
      writer.writerows(summary)
    print(f"{len(paths) - failures} of {len(paths)} files predicted; summary: "
          f"{out_dir / 'summary.csv'}")
  return 1 if failures == len(paths) else 0


def load_export(path: Path, cache_dir: Path | None = None
                ) -> tuple[Classifier, audio_features.AudioParams, video_features.VideoParams, int]:
  """(classifier, audio settings, video settings, noise seed) of an `--mode export` folder.

  The model loads in a background thread (importing jax, then compiling the model or reading it
  from the compilation cache in `cache_dir`: about a second), so that decoding the first file goes
  on meanwhile. Batches are padded to CHUNK_SEGMENTS rows: the model compiles for one shape only.
  """
  from lbher_jax import export  # pylint: disable=import-outside-toplevel  # no jax at import
  meta = export.read_metadata(path)
  streams = tuple(s for s in STREAMS if s in meta["inputs"])

  def pad(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    n = len(batch[streams[0]])
    return {k: np.concatenate([batch[k], np.repeat(batch[k][-1:], CHUNK_SEGMENTS - n, 0)])
            for k in streams}

  def load() -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    if cache_dir is not None:
      import jax  # pylint: disable=import-outside-toplevel
      jax.config.update("jax_compilation_cache_dir", str(cache_dir))
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    fn, _ = export.load_exported(path)
    fn({k: np.zeros([CHUNK_SEGMENTS, *spec["shape"][1:]], spec["dtype"])   # compile now
        for k, spec in meta["inputs"].items()})
    return fn

  pool = concurrent.futures.ThreadPoolExecutor(1)
  loading = pool.submit(load)
  pool.shutdown(wait=False)

  def heads(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    n = len(batch[streams[0]])
    return {k: v[:n] for k, v in loading.result()(pad(batch)).items()}

  prep = meta["preprocessing"]
  return (Classifier(streams, heads), audio_features.AudioParams(**prep["audio"]),
          video_features.VideoParams(**prep["video"]), int(prep["seed"]))


def main(argv: list[str] | None = None) -> int:
  """python -m lbher_jax.predict EXPORT_DIR FILE_OR_FOLDER ... [--output PATH] [--plot]
  [--annotate]: prediction from an export, without the training stack."""
  import argparse  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(
    prog="python -m lbher_jax.predict",
    description="Recognise emotions in videos or audio files with a model exported by "
                "--mode export (fast start: no training code is loaded).")
  parser.add_argument("export", type=Path, help="the export folder (model.jaxexport, model.json)")
  parser.add_argument("files", nargs="+", help="video or audio files, or folders of them")
  parser.add_argument("--output", help="JSON file (one input) or folder (default: ./predictions)")
  parser.add_argument("--plot", action="store_true", help="a timeline PNG beside each JSON")
  parser.add_argument("--annotate", action="store_true",
                      help="a labelled copy of each video, <stem>.annotated.mp4")
  args = parser.parse_args(argv)
  try:
    paths = _inputs(args.files)
    classifier, audio_params, video_params, seed = load_export(args.export,
                                                               args.export / "jax_cache")
    return predict_files(paths, classifier, audio_params, video_params, seed=seed,
                         output=args.output, default_dir=Path("predictions"), plot=args.plot,
                         annotate=args.annotate)
  except (media.MediaError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  status = main()
  sys.stdout.flush()
  sys.stderr.flush()
  # Every output is written and closed by now; the interpreter's teardown of jax would add
  # 0.15-0.35 s to a command whose point is a fast start.
  os._exit(status)
