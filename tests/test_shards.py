"""Shard files: round trip, atomicity markers, checksum verification."""

import json

import numpy as np
import pytest

from lbher_jax.data import shards


def _arrays(n, seed=0):
  rng = np.random.default_rng(seed)
  return {"audio": rng.uniform(-1, 1, (n, 4, 6)).astype(np.float16),
          "video": rng.integers(0, 255, (n, 2, 3, 5, 3), dtype=np.uint8)}


def test_round_trip_and_verify(tmp_path):
  arrays = _arrays(3)
  records = [{"id": f"u{i}#0"} for i in range(3)]
  info = shards.write_shard(tmp_path, 7, arrays, records, rejects=[{"id": "bad"}])
  assert shards.read_shard_info(tmp_path, 7) == json.loads(json.dumps(info))
  opened = shards.open_arrays(tmp_path, 7)
  np.testing.assert_array_equal(opened["audio"], arrays["audio"])
  np.testing.assert_array_equal(opened["video"], arrays["video"])
  shards.verify_shard(tmp_path, info)
  assert not list(tmp_path.glob("*.tmp*"))   # no temporaries left behind


def test_unfinished_shard_reads_as_absent(tmp_path):
  assert shards.read_shard_info(tmp_path, 0) is None


def test_corrupted_array_fails_checksum(tmp_path):
  info = shards.write_shard(tmp_path, 0, _arrays(2), [{"id": "a"}, {"id": "b"}], [])
  path = tmp_path / "shard_00000.video.npy"
  data = bytearray(path.read_bytes())
  data[-1] ^= 0xFF                      # flip one pixel
  path.write_bytes(bytes(data))
  with pytest.raises(shards.ShardError, match="checksum"):
    shards.verify_shard(tmp_path, info)


def test_truncated_array_is_reported(tmp_path):
  info = shards.write_shard(tmp_path, 0, _arrays(2), [{"id": "a"}, {"id": "b"}], [])
  path = tmp_path / "shard_00000.audio.npy"
  path.write_bytes(path.read_bytes()[:-10])
  with pytest.raises(shards.ShardError, match="shard_00000.audio.npy"):
    shards.verify_shard(tmp_path, info)


def test_non_finite_spectrogram_is_refused(tmp_path):
  arrays = _arrays(1)
  arrays["audio"][0, 0, 0] = np.inf
  with pytest.raises(ValueError, match="non-finite"):
    shards.write_shard(tmp_path, 0, arrays, [{"id": "a"}], [])
  assert shards.read_shard_info(tmp_path, 0) is None


def test_row_count_must_match_records(tmp_path):
  with pytest.raises(ValueError, match="rows"):
    shards.write_shard(tmp_path, 0, _arrays(2), [{"id": "a"}], [])
