"""Preprocessing of real RAVDESS clips (../shared/data/ravdess_fer_av) into shards, small settings."""

from pathlib import Path

import numpy as np
import pytest

from lbher_jax import LABEL_TO_ID, datasets, media
from lbher_jax.data import preprocess, shards
from lbher_jax.features import audio, video

# RAVDESS file names: MM-VV-EE-II-SS-RR-AA, EE the emotion code.
EMOTION_CODES = {"01": "neutral", "03": "happy", "04": "sad", "05": "anger"}
AUDIO = audio.AudioParams(sample_rate=16000, n_fft=512, hop_length=160, height=32, width=48)
VIDEO = video.VideoParams(frames_per_segment=20, height=30, width=50, face_detector="haar")


@pytest.fixture(scope="module")
def run(ravdess_fer_av: Path, tmp_path_factory) -> tuple[list, Path, dict]:
  """One clip per emotion (sorted ids, so from different files), two clips per shard."""
  utterances = datasets.read("ravdess", ravdess_fer_av)
  by_label = {}
  for utt in utterances:
    by_label.setdefault(utt.label, utt)
  utts = sorted(by_label.values(), key=lambda u: u.id)
  assert len(utts) == 4
  out = tmp_path_factory.mktemp("shards")
  index = preprocess.preprocess(utts, out, preprocess.Settings(AUDIO, VIDEO), corpus={"t": 1},
                                workers=1, per_shard=2)
  return utts, out, index


def test_shards_hold_every_segment_with_its_label(run):
  utts, out, index = run
  assert index["num_shards"] == 2 and index["rejected"] == 0 and index["utterances"] == 4
  rows = 0
  for shard_id in range(index["num_shards"]):
    info = shards.read_shard_info(out, shard_id)
    arrays = shards.open_arrays(out, shard_id)
    n = info["rows"]
    rows += n
    assert arrays["audio"].shape == (n, 32, 48)
    assert arrays["video"].shape == (n, 20, 30, 50, 3) and arrays["video"].dtype == np.uint8
    spec = np.asarray(arrays["audio"], np.float32)
    assert np.isfinite(spec).all() and spec.min() >= -1.0 and spec.max() <= 1.0
    assert spec.std() > 0.05  # real speech, not a constant image
    for r in info["records"]:
      code = Path(r["source"]).stem.split("-")[2]
      assert r["label"] == EMOTION_CODES[code] and r["label_id"] == LABEL_TO_ID[r["label"]]
  assert rows == index["rows"]


def test_segment_counts_follow_the_clip_durations(run):
  utts, out, _ = run
  records = preprocess.load_records(out)
  for utt in utts:
    mine = [r for r in records if r["utt"] == utt.id]
    duration = len(media.decode_audio(utt.audio, AUDIO.sample_rate)) / AUDIO.sample_rate
    bounds = audio.segment_bounds(duration, AUDIO)
    assert [t for r in mine for t in (r["start"], r["end"])] == pytest.approx(
        [t for b in bounds for t in b], abs=1e-3)
    assert [r["segment"] for r in mine] == list(range(len(bounds)))
    # Clips last 3.1-4.6 s: one 3-s segment, plus the remainder when it lasts >= 1 s.
    assert 3.0 < duration < 5.0 and len(mine) == (2 if duration >= 4.0 else 1)


def test_faces_are_found(run):
  # The Haar cascade misses some FER2013 faces (about 1 clip in 5 of this corpus; two of these 4).
  _, out, index = run
  assert index["faces_found"] > 0.5
  fractions = {r["utt"]: r["face_fraction"] for r in preprocess.load_records(out)}
  assert sum(f == 1.0 for f in fractions.values()) >= 2


def test_load_records_in_shard_order(run):
  utts, out, index = run
  records = preprocess.load_records(out)
  assert len(records) == index["rows"]
  assert [r["utt"] for r in records] == sorted(r["utt"] for r in records)
  assert {r["utt"] for r in records} == {u.id for u in utts}
  expected = [(shard_id, row) for shard_id in range(index["num_shards"])
              for row in range(shards.read_shard_info(out, shard_id)["rows"])]
  assert [(r["shard"], r["row"]) for r in records] == expected
  # The (shard, row) of a record points at that record in its shard's description.
  for r in records:
    assert shards.read_shard_info(out, r["shard"])["records"][r["row"]]["id"] == r["id"]
