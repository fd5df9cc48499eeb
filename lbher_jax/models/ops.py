"""CPU-friendly forms of the models' heavy operations: 3x3 convolution and max-pooling.

Both keep the plain operations' values and gradients (up to float rounding); only how XLA runs
them changes. Why, measured on the 2-core CPU VM (see BUILD_NOTES.md, issue 7):

* XLA's CPU backend computes a convolution's kernel gradient (a "backward-filter" convolution)
  about 10x slower than the forward convolution of the same size. `conv2d_same` keeps XLA's
  forward and input-gradient convolutions and computes the kernel gradient as matmuls of
  patches, one output row at a time, so that each row's patches stay in cache.
* The gradient of `flax.linen.max_pool` (reduce_window) is XLA's select-and-scatter, which runs
  at well under 1 GFLOP/s on CPU. `max_pool` with non-overlapping windows is a reshape and a
  max; its gradient an elementwise select.
"""

from functools import partial

import jax
import jax.numpy as jnp

_NHWC = ("NHWC", "HWIO", "NHWC")


def _conv2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, window_strides=(1, 1), padding="SAME",
                                      dimension_numbers=_NHWC)


def _kernel_grad_native(x: jax.Array, dy: jax.Array, kernel: jax.Array) -> jax.Array:
  return jax.vjp(lambda k: _conv2d(x, k), kernel)[1](dy)[0]


def _kernel_grad_rows(x: jax.Array, dy: jax.Array, kernel: jax.Array) -> jax.Array:
  """sum over positions of patch(x) (x) dy, scanned over output rows: per row, the patches of
  every image in the batch [N, W, kh * kw * C] times that row of dy [N, W, O].

  Scanning rows rather than images keeps the batch axis inside each step, so a batch sharded
  over devices stays sharded (each device sums its rows; XLA adds the partial sums).
  """
  kh, kw, c, o = kernel.shape
  _, h, w, _ = x.shape
  padded = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))

  def add_row(total, row):
    window = jax.lax.dynamic_slice_in_dim(padded, row, kh, axis=1)
    patches = jnp.concatenate([window[:, i, j:j + w] for i in range(kh) for j in range(kw)],
                              axis=-1)
    grad_row = jax.lax.dynamic_index_in_dim(dy, row, axis=1, keepdims=False)
    return total + jax.lax.dot_general(patches, grad_row, (((0, 1), (0, 1)), ((), ())),
                                       preferred_element_type=jnp.float32), None

  total, _ = jax.lax.scan(add_row, jnp.zeros((kh * kw * c, o), jnp.float32), jnp.arange(h))
  return total.reshape(kernel.shape).astype(kernel.dtype)


@jax.custom_vjp
def conv2d_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """'SAME' 2-D convolution, stride 1, of x [N, H, W, C] with kernel [kh, kw, C, O] (odd kh, kw).

  On CPU the kernel gradient runs as row-by-row patch matmuls (`_kernel_grad_rows`); elsewhere
  as XLA's own backward-filter convolution.
  """
  return _conv2d(x, kernel)


def _conv2d_fwd(x: jax.Array, kernel: jax.Array):
  return _conv2d(x, kernel), (x, kernel)


def _conv2d_bwd(residuals, dy: jax.Array):
  x, kernel = residuals
  dx = jax.vjp(lambda v: _conv2d(v, kernel), x)[1](dy)[0]
  dkernel = jax.lax.platform_dependent(x, dy, kernel, cpu=_kernel_grad_rows,
                                       default=_kernel_grad_native)
  return dx, dkernel


conv2d_same.defvjp(_conv2d_fwd, _conv2d_bwd)


def _windows(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
  """x [N, *spatial, C] cropped to whole windows and reshaped to [N, n1, k1, n2, k2, ..., C]."""
  spatial = x.shape[1:-1]
  if len(window) != len(spatial):
    raise ValueError(f"window {window} does not match the {len(spatial)} pooled axes of "
                     f"{x.shape}")
  kept = tuple(size // k * k for size, k in zip(spatial, window))
  split = [x.shape[0]]
  for n, k in zip(kept, window):
    split += [n // k, k]
  return x[(slice(None), *(slice(0, n) for n in kept))].reshape(*split, x.shape[-1])


def _window_axes(window: tuple[int, ...]) -> tuple[int, ...]:
  return tuple(range(2, 2 * len(window) + 1, 2))


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
  """flax.linen.max_pool(x, window, strides=window) ('VALID') over the axes between batch and
  channels, as a reshape and a max.

  The gradient goes, through an elementwise select, to the first maximum of each window (in
  row-major window order), as in XLA's select-and-scatter: the same gradient as
  flax.linen.max_pool's, ties included (spreading it over tied maxima instead changed training
  trajectories and, in a tiny pre-training test, led to a non-finite gradient).
  """
  return _windows(x, window).max(axis=_window_axes(window))


def _max_pool_fwd(x: jax.Array, window: tuple[int, ...]):
  y = max_pool(x, window)
  return y, (x, y)


def _max_pool_bwd(window: tuple[int, ...], residuals, dy: jax.Array):
  x, y = residuals
  d = len(window)
  # Window elements last, in row-major order: [N, n1, ..., nd, C, k1 * ... * kd].
  order = (0, *range(1, 2 * d, 2), 2 * d + 1, *range(2, 2 * d + 1, 2))
  windows = _windows(x, window).transpose(order)
  flat = windows.reshape(*windows.shape[:d + 2], -1)
  is_max = flat == y[..., None]
  first = is_max & (jnp.cumsum(is_max, axis=-1) == 1)
  dx = jnp.where(first, dy[..., None], 0).astype(x.dtype).reshape(windows.shape)
  dx = dx.transpose(tuple(order.index(i) for i in range(2 * d + 2)))
  dx = dx.reshape(x.shape[0], *(n * k for n, k in zip(y.shape[1:-1], window)), x.shape[-1])
  pad = [(0, 0)] + [(0, full - part) for full, part in zip(x.shape[1:-1], dx.shape[1:-1])]
  return (jnp.pad(dx, pad + [(0, 0)]),)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
