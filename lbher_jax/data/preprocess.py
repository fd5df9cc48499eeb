"""Corpus -> shards: paper §3.3 (audio) and §3.4 (video), in parallel worker processes.

Each worker turns a group of utterances into one shard, so memory is bounded by
`workers x shard size` whatever the corpus size (the paper's own pipeline needed > 12 GB).
A bad file is recorded with its reason and skipped; finished shards are never redone.
This module imports no JAX: workers are spawned and stay light.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import time
import zlib
from multiprocessing import connection
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from absl import logging

from lbher_jax import LABEL_TO_ID, files, media
from lbher_jax.data import shards
from lbher_jax.datasets import Utterance
from lbher_jax.features import audio as audio_features
from lbher_jax.features import video as video_features

INDEX = "index.json"
FRAME_CHUNK = 10  # segments whose frames are decoded together (the face box is found per chunk)
FINGERPRINT = "fingerprint.json"


class PreprocessError(RuntimeError):
  """Preprocessing cannot go on (e.g. shards made with other settings in this directory)."""


@dataclasses.dataclass(frozen=True)
class Settings:
  audio: audio_features.AudioParams
  video: video_features.VideoParams
  seed: int = 0

  def fingerprint(self) -> dict:
    return {"audio": dataclasses.asdict(self.audio), "video": dataclasses.asdict(self.video),
            "seed": self.seed}


def utterance_rng(seed: int, utt_id: str) -> np.random.Generator:
  """Noise padding randomness that depends only on the seed and the utterance."""
  return np.random.default_rng([seed, zlib.crc32(utt_id.encode())])


def featurize(utt: Utterance, settings: Settings) -> tuple[np.ndarray, np.ndarray, list[dict]]:
  """One utterance -> (spectrograms [n, F, T], frames [n, S, H, W, 3], n row records).

  A stream the utterance lacks is zeros, as in predict, with `has_audio` / `has_video` false in
  its records: an audio file has no frames, a video file without an audio track no spectrogram.
  Raises media.MediaError (its message names the file) when the utterance cannot be used.
  """
  source = utt.audio or utt.video
  window = utt.audio_window()
  wave, info = media.decode_audio_and_probe(source, settings.audio.sample_rate, *window,
                                            require_audio=utt.audio is not None)
  video = utt.video if utt.video != source or info.has_video else None
  if wave is not None:
    spec, duration = _spectrograms(wave, source, utt.id, settings)
  else:
    duration = _window_seconds(info, *window, source)
  bounds = audio_features.segment_bounds(duration, settings.audio)
  if wave is None:
    spec = np.zeros((len(bounds), settings.audio.height, settings.audio.width), np.float32)
  offset = utt.start or 0.0   # where the audio's time 0 is on the video's clock
  if video is not None:
    # A chunk of segments at a time, so a long video never has all its frames decoded at once.
    parts = [video_features.segment_frames(
        video, [(offset + a, offset + b) for a, b in bounds[i:i + FRAME_CHUNK]], utt.side,
        settings.video, info=info if video == source else None)
        for i in range(0, len(bounds), FRAME_CHUNK)]
    frames = np.concatenate([f for f, _ in parts])
    face = np.concatenate([fractions for _, fractions in parts]).mean()
  else:
    v = settings.video
    frames = np.zeros((len(bounds), v.frames_per_segment, v.height, v.width, 3), np.uint8)
    face = 0.0
  records = [{
      "id": f"{utt.id}#{k}", "utt": utt.id, "label": utt.label, "label_id": LABEL_TO_ID[utt.label],
      "speaker": utt.speaker, "session": utt.session, "segment": k, "num_segments": len(bounds),
      "start": offset + a, "end": offset + b, "source": str(utt.video or utt.audio),
      "has_audio": wave is not None, "has_video": video is not None,
      "face_fraction": round(float(face), 3), "media_seconds": round(duration, 3),
  } for k, (a, b) in enumerate(bounds)]
  return spec, frames, records


def _spectrograms(wave: np.ndarray, source: Path, utt_id: str,
                  settings: Settings) -> tuple[np.ndarray, float]:
  """(segment spectrograms, seconds) of a decoded wave; MediaError for one nothing can be
  learnt from."""
  if wave.size == 0:
    raise media.MediaError(source, "no audio samples in the requested window")
  if not np.isfinite(wave).all():
    raise media.MediaError(source, "audio has non-finite samples (NaN or Inf)")
  if np.max(np.abs(wave)) < 1e-6:
    raise media.MediaError(source, "audio is silent")
  spec = audio_features.spectrogram_segments(wave, settings.audio,
                                             utterance_rng(settings.seed, utt_id))
  if not np.isfinite(spec).all():
    raise media.MediaError(source, "spectrogram has non-finite values")
  return spec, wave.size / settings.audio.sample_rate


def _window_seconds(info: media.MediaInfo, start: float | None, end: float | None,
                    source: Path) -> float:
  """Length of [start, end) within a file of info.duration seconds."""
  seconds = min(info.duration, end if end is not None else np.inf) - (start or 0.0)
  if seconds <= 0:
    raise media.MediaError(source, "no video in the requested window")
  return float(seconds)


def _process_shard(task: tuple[int, list[Utterance], Settings, str]) -> dict:
  """Worker: featurize a group of utterances and write them as one shard."""
  shard_id, utts, settings, out_dir = task
  specs, frames, records, rejects = [], [], [], []
  seconds = 0.0
  for utt in utts:
    try:
      s, f, r = featurize(utt, settings)
    except Exception as e:  # pylint: disable=broad-except  # one bad file never stops the batch
      reason = (str(e) if isinstance(e, media.MediaError)
                else f"{utt.audio or utt.video}: {type(e).__name__}: {e}")
      rejects.append({"id": utt.id, "file": str(utt.video or utt.audio), "reason": reason})
      continue
    specs.append(s)
    frames.append(f)
    records.extend(r)
    seconds += r[0]["media_seconds"]
  a, v = settings.audio, settings.video
  arrays = {
      "audio": np.concatenate(specs) if specs else np.zeros((0, a.height, a.width), np.float16),
      "video": (np.concatenate(frames) if frames else
                np.zeros((0, v.frames_per_segment, v.height, v.width, 3), np.uint8)),
  }
  return shards.write_shard(Path(out_dir), shard_id, arrays, records, rejects,
                            meta={"utterances": len(utts), "media_seconds": seconds})


def plan(utterances: list[Utterance], per_shard: int) -> list[list[Utterance]]:
  """Groups utterances (in id order, so the plan is stable across reruns) into shards."""
  ordered = sorted(utterances, key=lambda u: u.id)
  return [ordered[i:i + per_shard] for i in range(0, len(ordered), per_shard)]


def _with_defaults(fingerprint: dict) -> dict:
  """A fingerprint with every feature setting it lacks at its default: a setting added after the
  shards were made has, at its default, the behaviour they were made with."""
  settings = fingerprint.get("settings", {})
  for key, params in (("audio", audio_features.AudioParams), ("video", video_features.VideoParams)):
    if isinstance(settings.get(key), dict):
      settings[key] = {**dataclasses.asdict(params()), **settings[key]}
  return fingerprint


def _check_fingerprint(out_dir: Path, fingerprint: dict) -> None:
  path = out_dir / FINGERPRINT
  if path.exists():
    existing = _with_defaults(json.loads(path.read_text()))
    if existing != fingerprint:
      raise PreprocessError(
          f"{out_dir} holds shards made with other settings or another corpus; use a new "
          "--workdir (finished work is never overwritten)")
  else:
    files.atomic_write_json(path, fingerprint)


def _finished(out_dir: Path, shard_id: int, expected_ids: list[str]) -> dict | None:
  """The shard's info if it is complete, intact and made from the same utterances."""
  try:
    info = shards.read_shard_info(out_dir, shard_id)
    if info is None:
      return None
    done = sorted({r["utt"] for r in info["records"]} | {r["id"] for r in info["rejects"]})
    if done != sorted(expected_ids):
      return None
    shards.verify_shard(out_dir, info)
    return info
  except shards.ShardError as e:
    logging.warning("preprocess: %s; redoing that shard", e)
    return None


def preprocess(utterances: list[Utterance], out_dir: Path, settings: Settings, *,
               corpus: dict, workers: int = 2, per_shard: int = 16,
               rejects_path: Path | None = None, share: tuple[int, int] = (0, 1),
               barrier: Callable[[str], None] | None = None) -> dict:
  """Writes shards for `utterances` into `out_dir`, resuming; returns the index.

  With several processes (`share` = (process index, process count) and a `barrier(name)` that
  all of them call), each process makes only the shards s with s % count == index; after the
  barrier, process 0 checks every shard and writes the index and the rejects, and a second
  barrier lets the others read them. The shards are those a single process would make.
  """
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  _check_fingerprint(out_dir, {"settings": settings.fingerprint(), "corpus": corpus})
  groups = plan(utterances, per_shard)
  index_of, count = share
  infos: dict[int, dict] = {}
  todo = []
  for shard_id, group in enumerate(groups):
    if shard_id % count != index_of:
      continue
    info = _finished(out_dir, shard_id, [u.id for u in group])
    if info is None:
      todo.append((shard_id, group, settings, str(out_dir)))
    else:
      infos[shard_id] = info
  logging.info("preprocess: %d utterances in %d shards; of this process's %d, %d already done, "
               "%d to do (%d workers)", len(utterances), len(groups), len(infos) + len(todo),
               len(infos), len(todo), workers)
  start, seconds = time.perf_counter(), 0.0
  for info in _run(todo, workers, out_dir):
    infos[info["shard"]] = info
    seconds += info["meta"]["media_seconds"]
    elapsed = time.perf_counter() - start
    logging.info("preprocess: shard %d/%d done: %d segments, %d rejected; %.0f s of media in "
                 "%.1f s (%.1fx real time)", len(infos), len(groups), info["rows"],
                 len(info["rejects"]), seconds, elapsed, seconds / max(elapsed, 1e-9))
  if count > 1:
    barrier("preprocess: shards written")
    for shard_id, group in enumerate(groups):
      if shard_id not in infos:
        info = _finished(out_dir, shard_id, [u.id for u in group])
        if info is None:
          raise PreprocessError(f"{out_dir}: shard {shard_id} (process {shard_id % count}'s "
                                "share) is missing or damaged; rerun the same command")
        infos[shard_id] = info
  ordered = [infos[i] for i in range(len(groups))]
  rejects = [r for info in ordered for r in info["rejects"]]
  index = {"num_shards": len(ordered), "rows": sum(i["rows"] for i in ordered),
           "utterances": len(utterances), "rejected": len(rejects),
           "faces_found": _face_rate(ordered)}
  if index_of == 0:
    if rejects_path is not None:
      files.atomic_write_text(rejects_path, "".join(json.dumps(r) + "\n" for r in rejects))
    files.atomic_write_json(out_dir / INDEX, index)
  if count > 1:
    barrier("preprocess: index written")
  if rejects:
    logging.warning("preprocess: %d of %d files rejected (see %s)", len(rejects),
                    len(utterances), rejects_path or "the shard index")
  return index


def _face_rate(infos: list[dict]) -> float | None:
  rows = [r for info in infos for r in info["records"] if r["has_video"]]
  return round(float(np.mean([r["face_fraction"] for r in rows])), 3) if rows else None


def _run(todo: list, workers: int, out_dir: Path) -> Iterable[dict]:
  if workers <= 1 or len(todo) <= 1:
    yield from map(_process_shard, todo)
    return
  # Spawned workers (the parent may hold JAX's threads, which do not survive fork), each with its
  # own pipe and one task at a time. A pool's shared task queue has a lock that a worker killed
  # while holding it (e.g. by the OOM killer) never releases, and the pool can then hang instead
  # of failing (seen with concurrent.futures under load); a dead worker's pipe always reads EOF.
  context = multiprocessing.get_context("spawn")
  tasks = iter(todo)
  busy: dict = {}  # connection -> (process, shard id)
  finished = 0
  try:
    for _ in range(min(workers, len(todo))):
      parent, child = context.Pipe()
      process = context.Process(target=_worker, args=(child,), daemon=True)
      process.start()
      child.close()
      busy[parent] = (process, None)
      _hand_out(parent, busy, tasks)
    while busy:
      for conn in connection.wait(list(busy)):
        process, shard_id = busy[conn]
        try:
          ok, payload = conn.recv()
        except (EOFError, OSError):
          process.join(5)
          raise PreprocessError(
              f"{out_dir}: a preprocessing worker process died (exit code {process.exitcode}, "
              f"on shard {shard_id}; killed, e.g. out of memory?). The {finished} shards "
              "finished in this run are kept; rerun the same command to resume") from None
        if not ok:
          raise payload
        finished += 1
        yield payload
        _hand_out(conn, busy, tasks)
  finally:
    for conn, (process, _) in busy.items():
      conn.close()
      process.terminate()
      process.join()


def _hand_out(conn, busy: dict, tasks) -> None:
  """Sends `conn`'s worker its next task, or lets it exit when none are left."""
  process = busy[conn][0]
  task = next(tasks, None)
  if task is None:
    conn.send(None)
    conn.close()
    process.join()
    del busy[conn]
  else:
    conn.send(task)
    busy[conn] = (process, task[0])


def _worker(conn) -> None:
  """A worker process: makes the shards it is sent until it is sent None."""
  while (task := conn.recv()) is not None:
    try:
      conn.send((True, _process_shard(task)))
    except Exception as e:  # pylint: disable=broad-except  # re-raised in the parent
      conn.send((False, e))


def load_records(out_dir: Path) -> list[dict]:
  """All row records of a finished preprocessing run, in shard order, with their locations."""
  out_dir = Path(out_dir)
  index_path = out_dir / INDEX
  if not index_path.exists():
    raise PreprocessError(f"{out_dir}: no finished preprocessing here (run --mode preprocess)")
  index = json.loads(index_path.read_text())
  records = []
  for shard_id in range(index["num_shards"]):
    info = shards.read_shard_info(out_dir, shard_id)
    if info is None:
      raise shards.ShardError(f"{shards.shard_stem(out_dir, shard_id)}.json: missing")
    for row, r in enumerate(info["records"]):
      records.append({**r, "shard": shard_id, "row": row})
  return records
