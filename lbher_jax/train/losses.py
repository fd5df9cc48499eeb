"""The paper's losses: cross-entropy (Eq. 1), contrastive margin loss (Eq. 2) and its pairs.

All losses are weighted means over the global batch: rows with weight 0 (padding) count neither
in the sum nor in the denominator.
"""

import jax
import jax.numpy as jnp
import optax

POSITIVE, HARD, SUPER_HARD = 0, 1, 2
"""Pair types: the anchor itself (y=1); other clip, other emotion; other clip, same emotion
(y=0)."""


def weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
  """sum(w * v) / sum(w); 0 when all weights are 0."""
  weights = weights.astype(jnp.float32)
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1e-12)


def cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
  """Eq. 1: mean over real rows of -log softmax(logits)[label] (padding rows' labels unused)."""
  labels = jnp.where(weights > 0, labels, 0)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  return weighted_mean(losses, weights)


def embedding_distance(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Row-wise (||a - b||_2, ||a - b||_2^2); the norm's gradient is 0 (not NaN) where a == b."""
  squared = jnp.sum(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)), axis=-1)
  positive = squared > 0
  distance = jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)
  return distance, squared


def contrastive_loss(audio_emb: jax.Array, video_emb: jax.Array, y: jax.Array,
                     weights: jax.Array, margin: float) -> jax.Array:
  """Eq. 2: mean of y d^2 + (1 - y) max(margin - d, 0)^2 with d = ||f_v - f_a||_2 per pair."""
  distance, squared = embedding_distance(video_emb, audio_emb)
  y = y.astype(jnp.float32)
  losses = y * squared + (1.0 - y) * jnp.square(jnp.maximum(margin - distance, 0.0))
  return weighted_mean(losses, weights)


def info_nce(audio_emb: jax.Array, video_emb: jax.Array, clips: jax.Array, weights: jax.Array,
             temperature: float) -> jax.Array:
  """Batch-wise InfoNCE on unit embeddings: each audio must pick its own video among the
  batch's videos, and each video its own audio (the symmetric cross-entropy of the cosine
  similarities / temperature). Other rows of the anchor's clip and padding rows are no
  candidates; rows with weight 0 are no anchors."""
  a, v = audio_emb.astype(jnp.float32), video_emb.astype(jnp.float32)
  logits = a @ v.T / temperature
  n = logits.shape[0]
  eye = jnp.eye(n, dtype=bool)
  real = weights > 0
  allowed = (eye | (clips[:, None] != clips[None, :])) & real[None, :] & real[:, None]
  logits = jnp.where(allowed, logits, -1e9)
  audio_to_video = -jnp.diagonal(jax.nn.log_softmax(logits, axis=1))
  video_to_audio = -jnp.diagonal(jax.nn.log_softmax(logits, axis=0))
  return weighted_mean((audio_to_video + video_to_audio) / 2, weights)


def make_pairs(labels: jax.Array, clips: jax.Array, weights: jax.Array, rng: jax.Array,
               proportions: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3),
               ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Chooses a video partner for every anchor audio of the batch (jit-friendly, on device).

  Each anchor i draws its pair type with probabilities `proportions` (positive, hard,
  super-hard) and then a partner uniformly among the valid rows: itself for a positive; a real
  row of another clip with another label for a hard negative; a real row of another clip with
  the same label for a super-hard negative. Rows sharing the anchor's clip id (other segments or
  copies of its clip) and padding rows (weight 0) are never negatives. When the drawn type has no
  valid partner in the batch the pair gets weight 0 rather than another type, so the types keep
  their configured proportions among the pairs that count.

  Returns (video_index int32 [B], y float32 [B] (1 = positive), pair_weight float32 [B],
  pair_type int32 [B]).
  """
  n = labels.shape[0]
  type_rng, partner_rng = jax.random.split(rng)
  p = jnp.asarray(proportions, jnp.float32)
  pair_type = jax.random.categorical(type_rng, jnp.log(p / p.sum()), shape=(n,)).astype(jnp.int32)

  real = weights > 0
  same_label = labels[:, None] == labels[None, :]
  other_clip = clips[:, None] != clips[None, :]
  candidates = jnp.where((pair_type == HARD)[:, None], ~same_label, same_label)
  candidates = candidates & other_clip & real[None, :]
  scores = jnp.where(candidates, jax.random.gumbel(partner_rng, (n, n)), -jnp.inf)
  negative = jnp.argmax(scores, axis=1).astype(jnp.int32)
  has_partner = jnp.any(candidates, axis=1)

  is_positive = pair_type == POSITIVE
  self_index = jnp.arange(n, dtype=jnp.int32)
  valid = real & (is_positive | has_partner)
  video_index = jnp.where(is_positive | ~has_partner, self_index, negative)
  y = is_positive.astype(jnp.float32)
  pair_weight = jnp.where(valid, weights, 0.0).astype(jnp.float32)
  return video_index, y, pair_weight, pair_type
