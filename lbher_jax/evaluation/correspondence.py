"""How well audio embeddings find their own video among others (numpy only).

For every segment i (the anchor), its own video embedding is the positive and the video
embeddings of the other segments are the candidates; segments of the same clip are left out
(they share the clip's face and voice, as in pre-training's pairs). "all" ranks the positive
against every candidate, "same_emotion" only against candidates with the anchor's label: the
super-hard case, where only the timing of the voice and the face can tell them apart.

* AUC: the probability that a random candidate is farther from the anchor's audio than its own
  video (ties count one half); chance 0.5. The mean over anchors that have candidates.
* top-1: the fraction of anchors whose own video is strictly nearer than every candidate;
  chance 1 / (1 + candidates).
Both are None when no anchor has a candidate (e.g. one clip per emotion).
"""

from __future__ import annotations

import numpy as np

COLLAPSE_AUC = 0.6
"""Below this held-out auc_all, pre-training is reported as collapsed (no correspondence)."""


def unit(x: np.ndarray) -> np.ndarray:
  """Rows scaled to unit length (as the contrastive loss sees them)."""
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def distances(audio: np.ndarray, video: np.ndarray) -> np.ndarray:
  """[N, N] Euclidean distances between unit audio row i and unit video row j."""
  a, v = unit(audio), unit(video)
  squared = (np.sum(a * a, 1)[:, None] + np.sum(v * v, 1)[None, :] - 2.0 * a @ v.T)
  return np.sqrt(np.maximum(squared, 0.0))


def _rank_scores(d: np.ndarray, candidates: np.ndarray) -> tuple[float, float, float]:
  """(mean AUC, top-1 rate, mean number of candidates) over anchors with candidates."""
  own = np.diag(d)[:, None]
  has = candidates.any(axis=1)
  if not has.any():
    return None, None, 0.0
  farther = ((d > own) & candidates).sum(1) + 0.5 * ((d == own) & candidates).sum(1)
  count = candidates.sum(1)
  auc = farther[has] / count[has]
  top1 = ~((d <= own) & candidates).any(axis=1)
  return float(auc.mean()), float(top1[has].mean()), float(count[has].mean())


def correspondence(audio: np.ndarray, video: np.ndarray, labels: np.ndarray,
                   clips: np.ndarray) -> dict:
  """{"auc_all", "auc_same_emotion", "top1_all", "top1_same_emotion", "candidates",
  "candidates_same_emotion", "distance_positive", "distance_negative", "collapsed"}.

  `candidates` is the mean number of candidates per anchor (so chance top-1 is
  1 / (1 + candidates)); the distances are the means over positives and over all candidates.
  """
  return from_distances(distances(audio, video), labels, clips)


def distance_groups(d: np.ndarray, labels: np.ndarray, clips: np.ndarray) -> dict:
  """The distances of [N, N] `d` split into positives, negatives of another emotion and
  negatives of the same emotion (other clips only), for the figure."""
  labels, clips = np.asarray(labels), np.asarray(clips)
  other = clips[:, None] != clips[None, :]
  same = labels[:, None] == labels[None, :]
  return {"positive": np.diag(d), "negative": d[other & ~same],
          "negative_same_emotion": d[other & same]}


def from_distances(d: np.ndarray, labels: np.ndarray, clips: np.ndarray) -> dict:
  """`correspondence` from the [N, N] audio-video distance matrix."""
  labels, clips = np.asarray(labels), np.asarray(clips)
  other = clips[:, None] != clips[None, :]
  same = labels[:, None] == labels[None, :]
  auc_all, top1_all, n_all = _rank_scores(d, other)
  auc_same, top1_same, n_same = _rank_scores(d, other & same)
  return {"auc_all": auc_all, "auc_same_emotion": auc_same, "top1_all": top1_all,
          "top1_same_emotion": top1_same, "candidates": n_all,
          "candidates_same_emotion": n_same,
          "distance_positive": float(np.diag(d).mean()),
          "distance_negative": float(d[other].mean()) if other.any() else None,
          "collapsed": auc_all is not None and auc_all < COLLAPSE_AUC}
