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
import jax
import numpy as np

from lbher_jax.data import shards


class SegmentSource:
  """Random access to chosen shard rows (a grain RandomAccessDataSource).

  `rows` are (shard, row) pairs and may repeat (oversampled training sets); `labels` and `clips`
  are the rows' class ids and clip ids (equal for the segments and the copies of one clip, so
  contrastive pairing never takes them for negatives of each other); `spans`, when given, the
  fraction of its spectrogram's window that each segment fills (a short last segment is padded
  to the window, while its frames spread over the segment itself), batched as "span". Shards are
  memory mapped lazily per process; the source pickles without its open maps, so Grain workers
  reopen.
  """

  def __init__(self, directory: Path, rows: Sequence[tuple[int, int]], labels: Sequence[int],
               clips: Sequence[int], spans: Sequence[float] | None = None):
    self._directory = Path(directory)
    self._rows = np.asarray(rows, np.int64).reshape(-1, 2)
    self._labels = np.asarray(labels, np.int32)
    self._clips = np.asarray(clips, np.int32)
    self._spans = None if spans is None else np.asarray(spans, np.float32)
    if not (len(self._rows) == len(self._labels) == len(self._clips)
            == len(self._clips if self._spans is None else self._spans)):
      raise ValueError(f"{directory}: {len(self._rows)} rows, {len(self._labels)} labels, "
                       f"{len(self._clips)} clip ids and "
                       f"{'no' if self._spans is None else len(self._spans)} spans")
    self._maps: dict[int, dict[str, np.ndarray]] = {}
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self._rows)

  def __repr__(self) -> str:
    # Grain saves repr(source) with an iterator's position and restores the position only into
    # a source of equal repr: name the rows, labels and clips, not the object's address.
    digest = hashlib.blake2b(digest_size=8)
    for array in (self._rows, self._labels, self._clips,
                  *(() if self._spans is None else (self._spans,))):
      digest.update(np.ascontiguousarray(array).tobytes())
    return f"SegmentSource({len(self)} rows, {digest.hexdigest()})"

  def _arrays(self, shard_id: int) -> dict[str, np.ndarray]:
    with self._lock:
      if shard_id not in self._maps:
        self._maps[shard_id] = shards.open_arrays(self._directory, shard_id)
      return self._maps[shard_id]

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {k: v[0] for k, v in self.read_batch(np.array([index])).items()}

  def read_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Rows `indices` stacked, as `__getitem__` gives them one by one, gathered shard by shard."""
    indices = np.asarray(indices, np.int64)
    rows = self._rows[indices]
    audio = video = None
    for shard_id in np.unique(rows[:, 0]):
      where = np.flatnonzero(rows[:, 0] == shard_id)
      arrays = self._arrays(int(shard_id))
      if audio is None:
        audio = np.empty((len(indices), *arrays["audio"].shape[1:]), np.float32)
        video = np.empty((len(indices), *arrays["video"].shape[1:]), arrays["video"].dtype)
      audio[where] = arrays["audio"][rows[where, 1]]
      video[where] = arrays["video"][rows[where, 1]]
    batch = {"audio": audio, "video": video, "label": self._labels[indices],
             "clip": self._clips[indices], "weight": np.ones(len(indices), np.float32)}
    if self._spans is not None:
      batch["span"] = self._spans[indices]
    return batch

  def __getstate__(self):
    return {**self.__dict__, "_maps": {}, "_lock": None}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()


def source_from_records(directory: Path, records: Sequence[dict],
                        window_seconds: float | None = None) -> SegmentSource:
  """The rows of `records` (shard records); clip ids number their utterances ("utt"). With
  `window_seconds` (the spectrogram window, config.audio.segment_seconds) batches carry each
  segment's "span", (end - start) / window_seconds, at most 1."""
  clip_ids: dict[str, int] = {}
  clips = [clip_ids.setdefault(r["utt"], len(clip_ids)) for r in records]
  spans = None if window_seconds is None else [
      min(1.0, (r["end"] - r["start"]) / window_seconds) for r in records]
  return SegmentSource(directory, [(r["shard"], r["row"]) for r in records],
                       [r["label_id"] for r in records], clips, spans)


class _TrainBatches:
  """The endless shuffled training order as Grain records: record k is this process's slice of
  global batch k. Epoch e = k // per_epoch visits the rows in the order of a permutation seeded
  by (seed, e); its last incomplete global batch is dropped. Reading a whole batch at a time
  (one gather per shard) is what lets the host keep up with an accelerator."""

  EPOCHS = 1 << 20   # "endless": a length the sampler walks lazily

  def __init__(self, source: SegmentSource, global_batch: int, seed: int, process_index: int,
               process_count: int):
    self._source, self._global, self._seed = source, global_batch, seed
    self._local = global_batch // process_count
    self._offset = process_index * self._local
    self._per_epoch = len(source) // global_batch
    if self._per_epoch == 0:
      raise ValueError(f"{len(source)} training examples are fewer than one global batch of "
                       f"{global_batch}")
    self._order: tuple[int, np.ndarray] | None = None
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return self._per_epoch * self.EPOCHS

  def __repr__(self) -> str:   # what Grain checks when it restores an iterator's position
    return f"TrainBatches({self._source!r}, batch {self._global}, seed {self._seed})"

  def _permutation(self, epoch: int) -> np.ndarray:
    with self._lock:
      if self._order is None or self._order[0] != epoch:
        rng = np.random.default_rng([self._seed, epoch])
        self._order = (epoch, rng.permutation(len(self._source)))
      return self._order[1]

  def __getitem__(self, k: int) -> dict[str, np.ndarray]:
    epoch, j = divmod(int(k), self._per_epoch)
    begin = j * self._global + self._offset
    return self._source.read_batch(self._permutation(epoch)[begin:begin + self._local])

  def __getstate__(self):
    return {**self.__dict__, "_order": None, "_lock": None}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()


def train_loader(source: SegmentSource, *, global_batch: int, seed: int,
                 workers: int = 0) -> grain.DataLoader:
  """An endless, shuffled loader yielding this process's share of each global batch.

  Its iterator's position is checkpointable (grain.checkpoint.CheckpointSave), so a resumed run
  sees exactly the batches an uninterrupted one would.
  """
  count = jax.process_count()
  if global_batch % count:
    raise ValueError(f"global batch {global_batch} does not divide over {count} processes")
  batches = _TrainBatches(source, global_batch, seed, jax.process_index(), count)
  sampler = grain.samplers.IndexSampler(len(batches), shard_options=grain.sharding.NoSharding(),
                                        shuffle=False, num_epochs=1, seed=seed)
  # Two reading threads and a few batches ahead: measured fastest on 2 cores (benchmarks/
  # loader.py); Grain's default of 16 threads polling 500 futures was 3x slower.
  return grain.DataLoader(data_source=batches, sampler=sampler, worker_count=workers,
                          read_options=grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))


def eval_batches(source: SegmentSource, *, global_batch: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Every row once, in order; the last global batch is padded with weight-0 copies of row 0.

  Each process yields its contiguous slice of each global batch.
  """
  n = len(source)
  local = global_batch // process_count
  for begin in range(0, n, global_batch):
    wanted = np.arange(begin + process_index * local, begin + (process_index + 1) * local)
    batch = source.read_batch(np.minimum(wanted, max(n - 1, 0)))
    batch["weight"] = (wanted < n).astype(np.float32)
    yield batch
