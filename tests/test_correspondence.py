"""Audio-visual correspondence metrics against hand-built embeddings with known rankings."""

import numpy as np
import pytest

from lbher_jax.evaluation import correspondence


def _one_hot(n, dim=8):
  return np.eye(dim)[:n]


def test_perfect_correspondence():
  # Every audio equals its own video and all videos are orthogonal: own distance 0, others sqrt 2.
  e = _one_hot(6)
  labels, clips = np.array([0, 0, 0, 1, 1, 1]), np.arange(6)
  m = correspondence.correspondence(e, e, labels, clips)
  assert m["auc_all"] == 1.0 and m["top1_all"] == 1.0
  assert m["auc_same_emotion"] == 1.0 and m["top1_same_emotion"] == 1.0
  assert m["candidates"] == 5.0 and m["candidates_same_emotion"] == 2.0
  assert m["distance_positive"] == pytest.approx(0.0, abs=1e-7)
  assert m["distance_negative"] == pytest.approx(np.sqrt(2.0))
  assert not m["collapsed"]


def test_collapsed_embeddings_score_chance_and_are_flagged():
  e = np.ones((5, 4))        # every clip the same embedding: all distances tie
  m = correspondence.correspondence(e, 3 * e, np.zeros(5), np.arange(5))
  assert m["auc_all"] == 0.5 and m["top1_all"] == 0.0 and m["collapsed"]


def test_known_partial_ranking():
  # Audio i sits at angle t_i on the unit circle, its own video at t_i + 0.3 rad, the others'
  # videos at t_j + 0.3. Clips at 0, 1, 2, 3 rad: anchor 0's own video (0.3) is nearer than
  # every other (1.3, 2.3, 3.3); anchor 3's own (3.3) is 0.3 away, the nearest other (2.3) 0.7.
  # Now move video 1 onto audio 0 exactly: anchor 0 then finds video 1 nearer than its own.
  t = np.array([0.0, 1.0, 2.0, 3.0])
  circle = lambda a: np.stack([np.cos(a), np.sin(a)], axis=1)
  audio, video = circle(t), circle(t + 0.3)
  video[1] = audio[0]
  labels, clips = np.array([0, 0, 1, 1]), np.arange(4)
  m = correspondence.correspondence(audio, video, labels, clips)
  # Anchor 0: candidates 1 (nearer: 0), 2, 3 (farther): AUC 2/3, not top-1.
  # Anchor 1: own video at angle 0 is 1 rad away; video 2 at 2.3 is 1.3, video 3 at 3.3 is 2.3,
  # video 0 at 0.3 is 0.7 away: nearer. AUC 2/3, not top-1.
  # Anchors 2 and 3: own at 0.3 rad; every candidate farther: AUC 1, top-1.
  assert m["auc_all"] == pytest.approx((2 / 3 + 2 / 3 + 1 + 1) / 4)
  assert m["top1_all"] == pytest.approx(0.5)
  # Same emotion only: anchor 0 vs video 1 (nearer): AUC 0; anchor 1 vs video 0 (nearer): 0;
  # anchors 2, 3: 1.
  assert m["auc_same_emotion"] == pytest.approx(0.5) and m["top1_same_emotion"] == 0.5
  assert m["candidates"] == 3.0 and m["candidates_same_emotion"] == 1.0


def test_segments_of_one_clip_are_not_candidates():
  # Segments 0 and 1 belong to clip 7. Video 0 is exactly audio 1, so it would beat segment 1's
  # own video if it counted; it does not, being of the same clip.
  e = np.eye(4)
  audio = np.stack([(e[0] + e[1]) / np.sqrt(2), e[1], e[2]])
  video = np.stack([e[1], (e[1] + e[3]) / np.sqrt(2), e[2]])
  m = correspondence.correspondence(audio, video, np.zeros(3), np.array([7, 7, 8]))
  assert m["candidates"] == pytest.approx((1 + 1 + 2) / 3)
  assert m["auc_all"] == 1.0 and m["top1_all"] == 1.0


def test_collapse_warning(caplog):
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  from lbher_jax import algorithm  # pylint: disable=import-outside-toplevel
  absl_logging.get_absl_logger().propagate = True
  with caplog.at_level("WARNING"):
    algorithm._warn_if_collapsed({"val_auc_all": 0.52}, "validation")
    algorithm._warn_if_collapsed({"auc_all": 0.97}, "test")
    algorithm._warn_if_collapsed({"auc_all": None}, "test")
  warnings = [r for r in caplog.records if r.levelname == "WARNING"]
  assert len(warnings) == 1 and "0.520" in warnings[0].getMessage()
