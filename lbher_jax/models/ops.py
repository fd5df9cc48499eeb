"""The video stream's 2-D convolution, and CPU-friendly max-pooling and batch normalisation.

These forms keep the plain operations' values and gradients (up to float rounding and, for
pooling, how a tie is shared); only how XLA runs them changes. Measured on the 2-core CPU VM
(BUILD_NOTES.md, issue 7):

* The gradient of `flax.linen.max_pool` (reduce_window) is XLA's select-and-scatter, which took
  1.3 s of a 5.8-s paper-scale training step. `max_pool` takes the maximum of strided slices, one
  per window offset; its gradient is elementwise selects and pads (0.2 s).
* `flax.linen.BatchNorm` with a padding mask reduces `where(mask, x, 0)` over the whole feature
  map, which XLA:CPU runs at a tenth of a plain sum's speed, and autodiff adds more such passes.
  `batch_norm` sums each example's map first and weights the [B, C] sums, with the gradient
  written out by hand in the same form (largest video layer, forward + backward: 172 -> 83 ms).
* `batch_norm_relu_pool` is max_pool(relu(batch_norm(x))) with the pooling done first: the
  normalisation is a monotone map per channel (increasing or decreasing with the sign of
  scale / std), so each window's output comes from its largest or smallest input. Only the pooled
  map is normalised, and the backward pass is one elementwise pass over the full map (forward +
  backward, `benchmarks/blocks.py`: 1.4-4.7x faster per layer).

The convolutions are XLA's own; on CPU they are fast only with the compiler options of
`lbher_jax.compiler`, which the project's jitted steps use. The models use these forms on CPU only
(`jax.lax.platform_dependent`); elsewhere `plain_batch_norm`, the chain autodiff differentiates.
"""

import itertools
import math
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp


def conv2d_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """'SAME' 2-D convolution, stride 1, of x [N, H, W, C] with kernel [kh, kw, C, O] (odd kh, kw)."""
  return jax.lax.conv_general_dilated(x, kernel, window_strides=(1, 1), padding="SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def max_pool(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
  """`flax.linen.max_pool(x, window, strides=window)` ('VALID') over the axes between batch and
  channels, as the maximum of one strided slice per offset inside the window.

  Same values as flax. The gradient is JAX's own: where several elements of a window tie for the
  maximum, it is shared among them (flax gives it all to the first). After a ReLU, ties at 0 get
  no gradient either way; ties above 0 are rare.
  """
  out = None
  for part in _window_parts(x, window):
    out = part if out is None else jnp.maximum(out, part)
  return out


def _window_parts(x: jax.Array, window: tuple[int, ...]) -> list[jax.Array]:
  """One strided slice of x [B, ..., C] per offset inside a pooling window (row-major over the
  window's axes), each of the pooled shape; trailing positions that fill no window are dropped."""
  if len(window) != x.ndim - 2:
    raise ValueError(f"window {window} does not match input of shape {x.shape}")
  counts = [n // k for n, k in zip(x.shape[1:-1], window)]
  return [x[(slice(None), *(slice(o, o + n * k, k) for o, n, k in zip(offsets, counts, window)))]
          for offsets in itertools.product(*(range(k) for k in window))]


def _example_sums(x: jax.Array) -> jax.Array:
  """[B, ..., C] -> float32 [B, C]: each example's sum over the axes between batch and channels."""
  return jnp.sum(x.astype(jnp.float32), axis=tuple(range(1, x.ndim - 1)))


def _batch_stats(x: jax.Array, weight: jax.Array) -> tuple[jax.Array, jax.Array]:
  mean = weight @ _example_sums(x)
  var = jnp.maximum(weight @ _example_sums(jnp.square(x.astype(jnp.float32))) - mean**2, 0.0)
  return mean, var


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def batch_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, weight: jax.Array,
               epsilon: float) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Batch normalisation of x [B, ..., C] over every axis but the channels; returns (y, mean, var).

  `weight` [B] is each example's share of the statistics: 1 / (real examples x positions per
  example) for real examples, 0 for padding rows. The variance is E[x^2] - E[x]^2 (flax's
  `use_fast_variance`). Only y is differentiated; mean and var are for the running averages.
  """
  return _batch_norm_fwd(x, scale, bias, weight, epsilon)[0]


def _batch_norm_fwd(x, scale, bias, weight, epsilon):
  mean, var = _batch_stats(x, weight)
  inv = jax.lax.rsqrt(var + epsilon)
  y = (x - mean) * (inv * scale) + bias
  return (y.astype(x.dtype), mean, var), (x, scale, weight, mean, inv)


def _batch_norm_bwd(epsilon, residuals, cotangents):
  del epsilon
  x, scale, weight, mean, inv = residuals
  dy = cotangents[0].astype(jnp.float32)
  x32 = x.astype(jnp.float32)
  dbias = jnp.sum(_example_sums(dy), axis=0)
  dscale = inv * (jnp.sum(_example_sums(dy * x32), axis=0) - mean * dbias)  # sum of dy * x_hat
  w = weight.reshape(weight.shape + (1,) * (x.ndim - 1))
  x_hat = (x32 - mean) * inv
  dx = (scale * inv) * (dy - w * (dbias + x_hat * dscale))
  return dx.astype(x.dtype), dscale, dbias, jnp.zeros_like(weight)


batch_norm.defvjp(_batch_norm_fwd, _batch_norm_bwd)


def _offset_dtype(window: tuple[int, ...]) -> jnp.dtype:
  return jnp.dtype(jnp.int8 if math.prod(window) <= 127 else jnp.int32)


def _pool_extreme(x: jax.Array, scale: jax.Array, window: tuple[int, ...]
                  ) -> tuple[jax.Array, jax.Array]:
  """Per window and channel: the largest x (the smallest where `scale` [C] < 0; the first on
  ties, as flax's max_pool) and its offset in the window, in `_window_parts`' order."""
  sign = jnp.where(scale < 0, -1.0, 1.0).astype(x.dtype)
  dtype = _offset_dtype(window)
  best = offset = None
  for i, part in enumerate(_window_parts(x, window)):
    part = sign * part
    if best is None:
      best, offset = part, jnp.zeros(part.shape, dtype)
    else:
      larger = part > best
      best = jnp.where(larger, part, best)
      offset = jnp.where(larger, jnp.asarray(i, dtype), offset)
  return sign * best, offset


def _window_offsets(shape: tuple[int, ...], window: tuple[int, ...]) -> jax.Array:
  """[B, n1, k1, n2, k2, ..., C]: each position's offset in its window, as `_window_parts`
  numbers them, for the cropped map viewed with every pooled axis split into (count, window)."""
  dtype = _offset_dtype(window)
  offsets, stride = None, 1
  for axis in reversed(range(len(window))):
    part = jax.lax.broadcasted_iota(dtype, shape, 2 + 2 * axis) * jnp.asarray(stride, dtype)
    offsets = part if offsets is None else offsets + part
    stride *= window[axis]
  return offsets


@partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def batch_norm_relu_pool(x: jax.Array, scale: jax.Array, bias: jax.Array, weight: jax.Array,
                         epsilon: float, window: tuple[int, ...]
                         ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """max_pool(relu(batch_norm(x)), window) for x [B, ..., C]; returns (y, mean, var).

  The same values as `max_pool(relu(batch_norm(x, scale, bias, weight, epsilon)[0]), window)`;
  the gradient goes to the first maximum of a window on ties (flax's rule). `weight` as in
  `batch_norm`; the statistics come from the whole map, including what the pooling drops.
  """
  return _batch_norm_relu_pool_fwd(x, scale, bias, weight, epsilon, window)[0]


def _batch_norm_relu_pool_fwd(x, scale, bias, weight, epsilon, window):
  mean, var = _batch_stats(x, weight)
  inv = jax.lax.rsqrt(var + epsilon)
  pooled, offset = _pool_extreme(x, scale, window)
  h = (pooled - mean) * (inv * scale) + bias
  y = jnp.maximum(h, 0.0)
  return (y.astype(x.dtype), mean, var), (x, pooled, offset, h, scale, weight, mean, inv)


def _batch_norm_relu_pool_bwd(epsilon, window, residuals, cotangents):
  del epsilon
  x, pooled, offset, h, scale, weight, mean, inv = residuals
  dh = jnp.where(h > 0, cotangents[0].astype(jnp.float32), 0.0)
  axes = tuple(range(dh.ndim - 1))
  dbias = jnp.sum(dh, axis=axes)
  centred = jnp.sum(dh * (pooled.astype(jnp.float32) - mean), axis=axes)
  dscale = inv * centred
  # h depends on x through the pooled value and through mean and E[x^2] (var = E[x^2] - mean^2).
  dvar = -0.5 * scale * centred * inv**3
  dmean = -(inv * scale) * dbias - 2.0 * mean * dvar
  w = weight.reshape(weight.shape + (1,) * (x.ndim - 1))
  dx = w * (dmean + 2.0 * dvar * x.astype(jnp.float32))
  # Each window's gradient goes to the position its pooled value came from.
  b, c = x.shape[0], x.shape[-1]
  counts = [n // k for n, k in zip(x.shape[1:-1], window)]
  split = (b, *itertools.chain(*zip(counts, window)), c)
  spread = (b, *itertools.chain(*((n, 1) for n in counts)), c)
  dpooled = (dh * (inv * scale)).reshape(spread)
  chosen = _window_offsets(split, window) == offset.reshape(spread)
  cropped = (b, *(n * k for n, k in zip(counts, window)), c)
  dx_pool = jnp.where(chosen, dpooled, 0.0).reshape(cropped)
  dx = dx + jnp.pad(dx_pool, [(0, n - m) for n, m in zip(x.shape, cropped)])
  return dx.astype(x.dtype), dscale, dbias, jnp.zeros_like(weight)


batch_norm_relu_pool.defvjp(_batch_norm_relu_pool_fwd, _batch_norm_relu_pool_bwd)


def plain_batch_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, weight: jax.Array,
                     epsilon: float, window: tuple[int, ...] | None = None
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`batch_norm` (window None) or `batch_norm_relu_pool` as the plain chain that autodiff
  differentiates: normalise the whole map, ReLU, flax's `max_pool` (reduce_window). The form the
  models use off CPU, where the hand-written forms above were never measured."""
  mean, var = _batch_stats(x, weight)
  y = ((x - mean) * (jax.lax.rsqrt(var + epsilon) * scale) + bias).astype(x.dtype)
  if window is not None:
    y = nn.max_pool(jnp.maximum(y, 0), window, strides=window, padding="VALID")
  return y, jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)


def affine_relu_pool(x: jax.Array, mean: jax.Array, scale: jax.Array, bias: jax.Array,
                     window: tuple[int, ...]) -> jax.Array:
  """max_pool(relu((x - mean) * scale + bias), window) with the pooling first (inference)."""
  pooled, _ = _pool_extreme(x, scale, window)
  return jnp.maximum((pooled - mean) * scale + bias, 0.0).astype(x.dtype)
