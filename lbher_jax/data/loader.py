"""Grain input pipeline over the shards: per-process sharding, shuffling, batching.

The host only reads and batches: training augmentation runs in the jitted step on the device
(train/augment.py).

Batches are dicts of numpy arrays {"audio" float32 [b, F, T], "video" uint8 [b, S, H, W, 3],
"label" int32 [b], "clip" int32 [b], "weight" float32 [b]} holding this process's share of the
global batch. "clip" numbers the source clips (utterances): the segments of one clip share it.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Iterator, Sequence

import grain
import numpy as np

from lbher_jax.data import shards


class SegmentSource:
  """Random access to chosen shard rows (a grain RandomAccessDataSource).

  `rows` are (shard, row) pairs and may repeat (oversampled training sets); `labels` and `clips`
  are the rows' class ids and clip ids (equal for the segments and the copies of one clip, so
  contrastive pairing never takes them for negatives of each other). Shards are memory mapped
  lazily per process; the source pickles without its open maps, so Grain workers reopen.
  """

  def __init__(self, directory: Path, rows: Sequence[tuple[int, int]], labels: Sequence[int],
               clips: Sequence[int]):
    self._directory = Path(directory)
    self._rows = np.asarray(rows, np.int64).reshape(-1, 2)
    self._labels = np.asarray(labels, np.int32)
    self._clips = np.asarray(clips, np.int32)
    if not len(self._rows) == len(self._labels) == len(self._clips):
      raise ValueError(f"{directory}: {len(self._rows)} rows, {len(self._labels)} labels and "
                       f"{len(self._clips)} clip ids")
    self._maps: dict[int, dict[str, np.ndarray]] = {}
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self._rows)

  def __repr__(self) -> str:
    # Grain saves repr(source) with an iterator's position and restores the position only into
    # a source of equal repr: name the rows, labels and clips, not the object's address.
    digest = hashlib.blake2b(digest_size=8)
    for array in (self._rows, self._labels, self._clips):
      digest.update(np.ascontiguousarray(array).tobytes())
    return f"SegmentSource({len(self)} rows, {digest.hexdigest()})"

  def _arrays(self, shard_id: int) -> dict[str, np.ndarray]:
    with self._lock:
      if shard_id not in self._maps:
        self._maps[shard_id] = shards.open_arrays(self._directory, shard_id)
      return self._maps[shard_id]

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    shard_id, row = self._rows[int(index)]
    arrays = self._arrays(int(shard_id))
    return {"audio": np.asarray(arrays["audio"][row], np.float32),
            "video": np.asarray(arrays["video"][row]),
            "label": self._labels[int(index)], "clip": self._clips[int(index)],
            "weight": np.float32(1.0)}

  def __getstate__(self):
    return {**self.__dict__, "_maps": {}, "_lock": None}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()


def source_from_records(directory: Path, records: Sequence[dict]) -> SegmentSource:
  """The rows of `records` (shard records); clip ids number their utterances ("utt")."""
  clip_ids: dict[str, int] = {}
  clips = [clip_ids.setdefault(r["utt"], len(clip_ids)) for r in records]
  return SegmentSource(directory, [(r["shard"], r["row"]) for r in records],
                       [r["label_id"] for r in records], clips)


def train_loader(source: SegmentSource, *, global_batch: int, seed: int,
                 workers: int = 0) -> grain.DataLoader:
  """An endless, shuffled loader yielding this process's share of each global batch.

  Its iterator's position is checkpointable (grain.checkpoint.CheckpointSave), so a resumed run
  sees exactly the batches an uninterrupted one would.
  """
  shard_options = grain.sharding.ShardByJaxProcess(drop_remainder=True)
  local_batch = global_batch // shard_options.shard_count
  if local_batch * shard_options.shard_count != global_batch:
    raise ValueError(f"global batch {global_batch} does not divide over "
                     f"{shard_options.shard_count} processes")
  sampler = grain.samplers.IndexSampler(len(source), shard_options=shard_options, shuffle=True,
                                        num_epochs=None, seed=seed)
  operations = [grain.transforms.Batch(local_batch, drop_remainder=True)]
  return grain.DataLoader(data_source=source, sampler=sampler, operations=operations,
                          worker_count=workers)


def eval_batches(source: SegmentSource, *, global_batch: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Every row once, in order; the last global batch is padded with weight-0 copies of row 0.

  Each process yields its contiguous slice of each global batch.
  """
  n = len(source)
  local = global_batch // process_count
  for begin in range(0, n, global_batch):
    items = []
    for i in range(begin + process_index * local, begin + (process_index + 1) * local):
      item = source[min(i, n - 1)] if n else None
      if i >= n:
        item = {**item, "weight": np.float32(0.0)}
      items.append(item)
    yield {k: np.stack([it[k] for it in items]) for k in items[0]}
