"""Audio stream (paper §3.5): a 2-D CNN over the spectrogram, read over time by an RNN.

Also the pieces both streams share: the normalisation after a convolution and the output layer.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lbher_jax.models import ops

RNN_CELLS = {"simple": nn.SimpleCell, "lstm": nn.LSTMCell}


def padding_mask(batch: dict[str, jax.Array]) -> jax.Array | None:
  """Rows that are real examples (True) rather than padding, from the optional "weight" key."""
  weight = batch.get("weight")
  return None if weight is None else weight > 0


class BatchNorm(nn.Module):
  """`flax.linen.BatchNorm(momentum=0.9)` over [B, ..., C]: the same parameters ("scale", "bias"),
  running statistics ("mean", "var"), values and gradients, computed on CPU by `ops.batch_norm`,
  which XLA:CPU runs about twice as fast. Rows where `mask` [B] is False (padding) do not count.

  With `pool` (a max-pool window) it returns max_pool(relu(batch_norm(x)), pool) instead,
  normalising only the pooled map on CPU (`ops.batch_norm_relu_pool`; same values, 1.4-4.7x
  faster). On other platforms both are `ops.plain_batch_norm` (the measured CPU speed-ups do not
  carry over by themselves).
  """
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None,
               pool: tuple[int, ...] | None = None) -> jax.Array:
    channels = (x.shape[-1],)
    mean = self.variable("batch_stats", "mean", jnp.zeros, channels, jnp.float32)
    var = self.variable("batch_stats", "var", jnp.ones, channels, jnp.float32)
    scale = self.param("scale", nn.initializers.ones, channels, jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, channels, jnp.float32)
    x = x.astype(self.dtype)
    if not train:
      factor = jax.lax.rsqrt(var.value + self.epsilon) * scale
      if pool is not None:
        return ops.affine_relu_pool(x, mean.value, factor, bias, pool)
      return ((x - mean.value) * factor + bias).astype(self.dtype)
    real = jnp.ones(x.shape[:1], jnp.float32) if mask is None else mask.astype(jnp.float32)
    positions = math.prod(x.shape[1:-1])
    weight = real / (jnp.maximum(jnp.sum(real), 1.0) * positions)
    eps = self.epsilon
    fused = ((lambda *a: ops.batch_norm(*a, eps)) if pool is None
             else (lambda *a: ops.batch_norm_relu_pool(*a, eps, pool)))
    # The hand-written forms were measured on CPU only; other platforms get the plain chain.
    y, batch_mean, batch_var = jax.lax.platform_dependent(
        x, scale, bias, weight, cpu=fused,
        default=lambda *a: ops.plain_batch_norm(*a, eps, pool))
    if not self.is_initializing():
      mean.value = self.momentum * mean.value + (1 - self.momentum) * batch_mean
      var.value = self.momentum * var.value + (1 - self.momentum) * batch_var
    return y


def norm_relu_pool(x: jax.Array, pool: tuple[int, ...] | None, *, train: bool,
                   mask: jax.Array | None, dtype: Any) -> jax.Array:
  """BatchNorm, ReLU and, with `pool`, a max-pool of that window (stride = window, 'VALID')
  after a convolution; call inside a compact method.

  BatchNorm statistics come from the rows where `mask` [B] is True (padding rows do not count).
  Under jit with the batch sharded over a device mesh, the mean and variance are reductions over
  the global batch: XLA inserts the cross-device all-reduce, so 1 and N devices give the same
  result.
  """
  x = BatchNorm(dtype=dtype)(x, train=train, mask=mask, pool=pool)
  return x if pool is not None else nn.relu(x)


class Classifier(nn.Module):
  """The output layer: dropout then a dense layer to float32 class logits."""
  num_classes: int
  dropout: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


class AudioStream(nn.Module):
  """Spectrogram [B, F, T] -> embedding [B, embed_dim] (the last hidden layer).

  Conv blocks (3x3 conv, BatchNorm, ReLU, 2x2 max-pool) treat [F, T] as a one-channel image. With a
  recurrent cell the feature map is read as a sequence over time (frequency x channels per step)
  and the last RNN output feeds the hidden layer; without one (`rnn_cell=None`, the plain CNN
  baseline) the map is averaged over frequency and time.
  """
  convs: tuple[int, ...]
  rnn_cell: str | None
  rnn_hidden: int
  embed_dim: int
  dropout: float
  dtype: Any = jnp.float32
  first_map: bool = False  # also return the first conv block's map [B, F/2, T/2, C] (timing)

  @nn.compact
  def __call__(self, spectrogram: jax.Array, *, train: bool,
               mask: jax.Array | None = None) -> jax.Array | tuple[jax.Array, jax.Array]:
    x = spectrogram.astype(self.dtype)[..., None]
    first = None
    for features in self.convs:
      x = nn.Conv(features, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype)(x)
      x = norm_relu_pool(x, (2, 2), train=train, mask=mask, dtype=self.dtype)
      first = x if first is None else first
    if self.rnn_cell is None:
      x = x.mean(axis=(1, 2))
    else:
      b, f, t, c = x.shape
      x = x.transpose(0, 2, 1, 3).reshape(b, t, f * c)
      # The recurrence runs in float32 (Flax creates the carry in the parameter dtype).
      cell = RNN_CELLS[self.rnn_cell](self.rnn_hidden, dtype=jnp.float32)
      x = nn.RNN(cell)(x.astype(jnp.float32))[:, -1]
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.relu(nn.Dense(self.embed_dim, dtype=self.dtype)(x))
    return (x, first) if self.first_map else x


class AudioModel(nn.Module):
  """The audio-only baselines of Table 2: cnn (rnn_cell=None), cnn_lstm, cnn_rnn."""
  convs: tuple[int, ...]
  rnn_cell: str | None
  rnn_hidden: int
  embed_dim: int
  num_classes: int
  dropout: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, batch: dict[str, jax.Array], *, train: bool) -> dict[str, jax.Array]:
    embedding = AudioStream(self.convs, self.rnn_cell, self.rnn_hidden, self.embed_dim,
                            self.dropout, self.dtype, name="audio")(
      batch["audio"], train=train, mask=padding_mask(batch))
    logits = Classifier(self.num_classes, self.dropout, self.dtype, name="output")(
      embedding, train=train)
    return {"logits": logits, "audio_embedding": embedding.astype(jnp.float32)}
