"""CPU-friendly forms of the models' 3x3 convolution and max-pooling.

Both keep the plain operation's values and gradients (up to float rounding and, for pooling, how
a tie is shared); only how XLA runs them changes. Measured on the 2-core CPU VM (BUILD_NOTES.md,
issue 7):

* XLA's CPU backend computes a convolution's kernel gradient (a "backward-filter" convolution)
  about 10x slower than the forward convolution of the same size. `conv2d_same` keeps XLA's
  forward and input-gradient convolutions and computes the kernel gradient as matmuls of patches,
  one output row at a time, so that each row's patches stay in cache.
* The gradient of `flax.linen.max_pool` (reduce_window) is XLA's select-and-scatter, which took
  1.3 s of a 5.8-s paper-scale training step. `max_pool` takes the maximum of strided slices, one
  per window offset; its gradient is elementwise selects and pads (0.2 s).
"""

import itertools

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


def max_pool(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
  """`flax.linen.max_pool(x, window, strides=window)` ('VALID') over the axes between batch and
  channels, as the maximum of one strided slice per offset inside the window.

  Same values as flax. The gradient is JAX's own: where several elements of a window tie for the
  maximum, it is shared among them (flax gives it all to the first). After a ReLU, ties at 0 get
  no gradient either way; ties above 0 are rare.
  """
  if len(window) != x.ndim - 2:
    raise ValueError(f"window {window} does not match input of shape {x.shape}")
  counts = [n // k for n, k in zip(x.shape[1:-1], window)]
  out = None
  for offsets in itertools.product(*(range(k) for k in window)):
    part = x[(slice(None), *(slice(o, o + n * k, k) for o, n, k in zip(offsets, counts, window)))]
    out = part if out is None else jnp.maximum(out, part)
  return out
