"""Fixed-shape numpy shards: the only thing the loaders read.

A shard is three files in one directory, written atomically (temporary name, then rename):
  shard_00007.audio.npy   float16 [rows, F, T]        spectrogram segments in [-1, 1]
  shard_00007.video.npy   uint8   [rows, S, H, W, 3]  face frames of the same segments
  shard_00007.json        the rows' records, the shard's rejects, and a checksum of each array.
The JSON is written last, so its presence marks a finished shard; a crash leaves at most stray
temporary files, which the next run ignores and overwrites.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from lbher_jax import files

ARRAYS = ("audio", "video")
DTYPES = {"audio": np.float16, "video": np.uint8}


class ShardError(RuntimeError):
  """A shard is missing, truncated, or fails its checksum."""


def shard_stem(directory: Path, shard_id: int) -> Path:
  return Path(directory) / f"shard_{shard_id:05d}"


def checksum(array: np.ndarray) -> str:
  """blake2b of the array's bytes: fast enough to verify every shard on each resume."""
  return hashlib.blake2b(np.ascontiguousarray(array).data, digest_size=16).hexdigest()


def write_shard(directory: Path, shard_id: int, arrays: dict[str, np.ndarray],
                records: list[dict], rejects: list[dict], meta: dict | None = None) -> dict:
  """Writes one shard atomically and returns its JSON description."""
  stem = shard_stem(directory, shard_id)
  n = len(records)
  info = {"shard": shard_id, "rows": n, "records": records, "rejects": rejects,
          "meta": meta or {}, "arrays": {}}
  for name in ARRAYS:
    array = np.ascontiguousarray(arrays[name], dtype=DTYPES[name])
    if array.shape[0] != n:
      raise ValueError(f"shard {shard_id}: {name} has {array.shape[0]} rows for {n} records")
    if name == "audio" and not np.isfinite(array).all():
      raise ValueError(f"shard {shard_id}: non-finite spectrogram values")
    files.atomic_write(Path(f"{stem}.{name}.npy"), lambda f, a=array: np.save(f, a))
    info["arrays"][name] = {"shape": list(array.shape), "dtype": array.dtype.name,
                            "checksum": checksum(array)}
  files.atomic_write_json(Path(f"{stem}.json"), info)
  return info


def read_shard_info(directory: Path, shard_id: int) -> dict | None:
  """The shard's JSON, or None when the shard was never finished."""
  path = Path(f"{shard_stem(directory, shard_id)}.json")
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise ShardError(f"{path}: unreadable shard description ({e})") from e


def open_arrays(directory: Path, shard_id: int) -> dict[str, np.ndarray]:
  """Memory-maps a shard's arrays (no copy; pages are read on access)."""
  stem = shard_stem(directory, shard_id)
  out = {}
  for name in ARRAYS:
    path = Path(f"{stem}.{name}.npy")
    try:
      out[name] = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
      raise ShardError(f"{path}: cannot open ({e})") from e
  return out


def verify_shard(directory: Path, info: dict) -> None:
  """Raises ShardError unless every array has the recorded shape, dtype and checksum."""
  arrays = open_arrays(directory, info["shard"])
  for name, expected in info["arrays"].items():
    array = arrays[name]
    where = f"{shard_stem(directory, info['shard'])}.{name}.npy"
    if list(array.shape) != expected["shape"] or array.dtype.name != expected["dtype"]:
      raise ShardError(f"{where}: shape/dtype {array.shape}/{array.dtype} differ from the index")
    if checksum(array) != expected["checksum"]:
      raise ShardError(f"{where}: checksum mismatch (corrupted shard)")
