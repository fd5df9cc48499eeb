"""Cross-entropy (Eq. 1), contrastive loss (Eq. 2) and the pre-training pairs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lbher_jax.train import losses
from lbher_jax.train.losses import HARD, POSITIVE, SUPER_HARD

MARGIN = 2.0


def test_cross_entropy_is_weighted_mean_of_negative_log_softmax():
  logits = jnp.array([[0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0], [9.0, -9.0, 3.0, 1.0]])
  labels = jnp.array([1, 0, 2])
  row0 = np.log(4.0)
  row1 = -2.0 + np.log(np.exp(2.0) + 3.0)
  loss = losses.cross_entropy(logits, labels, jnp.array([1.0, 1.0, 0.0]))
  np.testing.assert_allclose(loss, (row0 + row1) / 2, rtol=1e-6)
  padded = losses.cross_entropy(logits, jnp.array([1, 0, 7]), jnp.array([1.0, 1.0, 0.0]))
  np.testing.assert_allclose(padded, loss, rtol=1e-6)  # a padding row's label is never read
  np.testing.assert_allclose(losses.cross_entropy(logits, labels, jnp.zeros(3)), 0.0)


def test_contrastive_terms_by_hand():
  audio = jnp.zeros((4, 2))
  video = jnp.array([[3.0, 4.0], [3.0, 4.0], [0.6, 0.8], [0.0, 0.0]])
  y = jnp.array([1.0, 0.0, 0.0, 0.0])
  per_row = []
  for i in range(4):
    per_row.append(losses.contrastive_loss(audio[i:i + 1], video[i:i + 1], y[i:i + 1],
                                           jnp.ones(1), MARGIN))
  # positive: d^2 = 25; negative beyond the margin (d = 5 > 2): exactly 0;
  # negative inside it (d = 1): (2 - 1)^2 = 1; identical embeddings (d = 0): 2^2 = 4.
  np.testing.assert_allclose(per_row[0], 25.0, rtol=1e-6)
  assert float(per_row[1]) == 0.0
  np.testing.assert_allclose(per_row[2], 1.0, rtol=1e-6)
  np.testing.assert_allclose(per_row[3], 4.0, rtol=1e-6)
  both = losses.contrastive_loss(audio, video, y, jnp.array([1.0, 1.0, 1.0, 0.0]), MARGIN)
  np.testing.assert_allclose(both, (25.0 + 0.0 + 1.0) / 3, rtol=1e-6)


@pytest.mark.parametrize("y", [0.0, 1.0])
def test_contrastive_gradient_is_finite_at_zero_distance(y):
  emb = jnp.array([[0.5, -1.0, 2.0]])
  grads = jax.grad(lambda a, v: losses.contrastive_loss(a, v, jnp.array([y]), jnp.ones(1),
                                                        MARGIN), argnums=(0, 1))(emb, emb)
  for g in grads:
    assert np.all(np.isfinite(g))


def _pair_loss(audio, video, labels, weights, proportions):
  clips = jnp.arange(len(labels))
  index, y, pair_weight, _ = losses.make_pairs(labels, clips, weights, jax.random.key(3),
                                               proportions)
  return losses.contrastive_loss(audio, video[index], y, pair_weight, MARGIN)


@pytest.mark.parametrize("proportions,labels,expected", [
  # positive: each audio with its own video; d = (1, 0.5) -> mean(1, 0.25).
  ((1.0, 0.0, 0.0), [0, 1], (1.0 + 0.25) / 2),
  # hard (labels differ): audio 0 with video 1 (d = |(1, 0.5) - (0, 0)| = sqrt(1.25)),
  # audio 1 with video 0 (d = |(1, 0) - (1, 0)| = 0) -> mean((2 - sqrt(1.25))^2, 2^2).
  ((0.0, 1.0, 0.0), [0, 1], ((MARGIN - np.sqrt(1.25)) ** 2 + MARGIN ** 2) / 2),
  # super-hard (same label, other clip): the same partners as above.
  ((0.0, 0.0, 1.0), [2, 2], ((MARGIN - np.sqrt(1.25)) ** 2 + MARGIN ** 2) / 2),
])
def test_pair_types_by_hand(proportions, labels, expected):
  audio = jnp.array([[0.0, 0.0], [1.0, 0.0]])
  video = jnp.array([[1.0, 0.0], [1.0, 0.5]])
  loss = _pair_loss(audio, video, jnp.array(labels), jnp.ones(2), proportions)
  np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_type_without_partner_gets_weight_zero():
  labels = jnp.array([1, 1, 1, 3])
  weights = jnp.array([1.0, 1.0, 1.0, 0.0])  # the only other label is padding
  _, _, pair_weight, pair_type = losses.make_pairs(labels, jnp.arange(4), weights,
                                                   jax.random.key(0), (0.0, 1.0, 0.0))
  assert np.all(np.asarray(pair_type) == HARD)
  np.testing.assert_array_equal(pair_weight, 0.0)
  _, _, pair_weight, _ = losses.make_pairs(jnp.array([0, 1]), jnp.arange(2), jnp.ones(2),
                                           jax.random.key(0), (0.0, 0.0, 1.0))
  np.testing.assert_array_equal(pair_weight, 0.0)


def test_pairs_over_a_big_batch():
  n = 2000
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, n)
  weights = (rng.uniform(size=n) > 0.1).astype(np.float32)
  proportions = (0.5, 0.3, 0.2)
  index, y, pair_weight, pair_type = map(np.asarray, jax.jit(
    losses.make_pairs, static_argnums=4)(jnp.asarray(labels), jnp.arange(n),
                                         jnp.asarray(weights), jax.random.key(1), proportions))
  real = weights > 0
  rows = np.arange(n)
  np.testing.assert_array_equal(pair_weight, weights)  # every type has partners in this batch
  np.testing.assert_array_equal(y, pair_type == POSITIVE)
  np.testing.assert_array_equal(index[pair_type == POSITIVE], rows[pair_type == POSITIVE])
  negative = pair_type != POSITIVE
  assert np.all(index[negative] != rows[negative])
  assert np.all(real[index[negative]])
  hard, super_hard = pair_type == HARD, pair_type == SUPER_HARD
  assert np.all(labels[index[hard]] != labels[hard])
  assert np.all(labels[index[super_hard]] == labels[super_hard])
  for kind, p in zip((POSITIVE, HARD, SUPER_HARD), proportions):
    assert abs(np.mean(pair_type[real] == kind) - p) < 0.04
  # Partners are spread out: k uniform draws among r rows hit about r (1 - exp(-k / r)) of them.
  k, r = np.sum(negative & real), real.sum()
  assert len(np.unique(index[negative & real])) > 0.9 * r * (1 - np.exp(-k / r))


def test_partner_is_uniform_among_candidates():
  labels = jnp.array([0, 1, 1, 0, 2, 1, 3])
  weights = jnp.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0])
  keys = jax.random.split(jax.random.key(2), 4000)
  clips = jnp.arange(7)
  index, *_ = jax.vmap(lambda k: losses.make_pairs(labels, clips, weights, k,
                                                   (0.0, 1.0, 0.0)))(keys)
  counts = np.bincount(np.asarray(index)[:, 0], minlength=7)
  # anchor 0 (label 0): hard candidates are rows 1, 2, 4, 6 (row 5 is padding, row 3 label 0).
  assert counts[[0, 3, 5]].sum() == 0
  np.testing.assert_allclose(counts[[1, 2, 4, 6]] / 4000, 0.25, atol=0.03)


def test_segments_of_the_same_clip_are_never_negatives():
  # Clip 5's three segments, clip 7's two, and single-segment clips 1 and 2 (one is padding).
  labels = jnp.array([0, 0, 0, 1, 1, 0, 1, 1])
  clips = jnp.array([5, 5, 5, 7, 7, 1, 2, 2])
  weights = jnp.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
  keys = jax.random.split(jax.random.key(4), 500)
  index, y, pair_weight, pair_type = map(np.asarray, jax.vmap(
    lambda k: losses.make_pairs(labels, clips, weights, k))(keys))
  rows = np.arange(8)
  clips, labels = np.asarray(clips), np.asarray(labels)
  counted = pair_weight > 0
  negative = counted & (pair_type != POSITIVE)
  assert negative.sum() > 1000
  assert not np.any(clips[index][negative] == np.broadcast_to(clips, index.shape)[negative])
  positive = pair_type == POSITIVE
  np.testing.assert_array_equal(index[positive], np.broadcast_to(rows, index.shape)[positive])
  np.testing.assert_array_equal(y, positive)
  # Super-hard partners of clip 5 (label 0): only row 5 (clip 1); of row 5: rows 0-2 (clip 5).
  super_hard = negative & (pair_type == SUPER_HARD)
  assert set(index[:, :3][super_hard[:, :3]]) == {5}
  assert set(index[:, 5][super_hard[:, 5]]) == {0, 1, 2}
  # Clip 7's rows have no same-label row of another real clip (row 7 is padding, row 6 is
  # clip 2): row 6 is their only super-hard partner, and row 6 has rows 3 and 4.
  assert set(index[:, 3:5][super_hard[:, 3:5]]) == {6}
  assert set(index[:, 6][super_hard[:, 6]]) == {3, 4}
  # A clip with no valid partner of the drawn type: the pair does not count.
  _, _, pair_weight, _ = losses.make_pairs(jnp.array([2, 2, 3]), jnp.array([0, 0, 1]),
                                           jnp.ones(3), jax.random.key(0), (0.0, 0.0, 1.0))
  np.testing.assert_array_equal(pair_weight, [0.0, 0.0, 0.0])


def test_info_nce_by_hand():
  # Unit embeddings at angles: audio 0 = (1, 0), audio 1 = (0, 1); video 0 = (1, 0),
  # video 1 = (0.6, 0.8). Similarities [[1, 0.6], [0, 0.8]] / T with T = 0.5.
  a = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  v = jnp.array([[1.0, 0.0], [0.6, 0.8]])
  s = np.array([[1.0, 0.6], [0.0, 0.8]]) / 0.5
  row = lambda i: -s[i, i] + np.log(np.exp(s[i]).sum())            # audio i picks video i
  col = lambda j: -s[j, j] + np.log(np.exp(s[:, j]).sum())         # video j picks audio j
  expected = np.mean([(row(0) + col(0)) / 2, (row(1) + col(1)) / 2])
  got = losses.info_nce(a, v, jnp.array([0, 1]), jnp.ones(2), 0.5)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_info_nce_ignores_padding_and_the_same_clip():
  a = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
  v = jnp.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
  two = losses.info_nce(a[:2], v[:2], jnp.array([0, 1]), jnp.ones(2), 0.5)
  # A padding row changes nothing; nor does a third row of clip 0 (never a candidate of row 0).
  padded = losses.info_nce(a, v, jnp.array([0, 1, 2]), jnp.array([1.0, 1.0, 0.0]), 0.5)
  np.testing.assert_allclose(padded, two, rtol=1e-6)
  alone = losses.info_nce(a[:1], v[:1], jnp.array([0]), jnp.ones(1), 0.5)
  same_clip = losses.info_nce(a[jnp.array([0, 2])], v[jnp.array([0, 2])], jnp.array([0, 0]), jnp.ones(2), 0.5)
  np.testing.assert_allclose(alone, 0.0, atol=1e-6)
  np.testing.assert_allclose(same_clip, 0.0, atol=1e-6)
