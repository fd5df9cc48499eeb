"""Video stream (paper §3.5): four 3-D conv layers, three 3-D max-pools, two dense layers."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lbher_jax.models import ops
from lbher_jax.models.audio import Classifier, norm_relu_pool, padding_mask


def _conv3d(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, window_strides=(1, 1, 1), padding="SAME",
                                      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))


def _conv3d_as_2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """The same convolution as one 2-D conv: the three temporal taps become input channels."""
  b, s, h, w, c = x.shape
  padded = jnp.pad(x, ((0, 0), (1, 1), (0, 0), (0, 0), (0, 0)))
  taps = jnp.concatenate([padded[:, t:t + s] for t in range(3)], axis=-1)
  kernel_2d = kernel.transpose(1, 2, 0, 3, 4).reshape(3, 3, 3 * c, kernel.shape[-1])
  y = ops.conv2d_same(taps.reshape(b * s, h, w, 3 * c), kernel_2d)
  return y.reshape(b, s, h, w, -1)


class Conv3D(nn.Module):
  """3x3x3 'SAME' convolution over [B, S, H, W, C]; stride 1.

  The 3-D convolutions dominate the model's cost, so they live in this one module: its body can
  change while the parameters ("kernel" [3, 3, 3, in, out], optional "bias" [out]) and thus the
  checkpoints stay. On CPU it runs as a 2-D convolution over stacked temporal taps, which XLA's
  CPU backend executes several times faster than its 3-D convolution (small scale, batch 16:
  first layer forward 0.71 s -> 0.04 s, whole hybrid training step 1.65 s -> 0.53 s; paper
  scale, forward and both gradients, with `lbher_jax.compiler`'s options: 2.2-2.6x faster per
  layer); other platforms use the native 3-D convolution.
  """
  features: int
  use_bias: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (3, 3, 3, x.shape[-1], self.features), jnp.float32)
    y = jax.lax.platform_dependent(x.astype(self.dtype), kernel.astype(self.dtype),
                                   cpu=_conv3d_as_2d, default=_conv3d)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(
        self.dtype)
    return y


class VideoStream(nn.Module):
  """Face frames uint8 [B, S, H, W, 3] -> embedding [B, embed_dim] (the second dense layer).

  Each conv is followed by BatchNorm and ReLU; the first len(pools) convs by a 3-D max-pool of
  that window. The last feature map is flattened (keeping where in the face and when a feature
  fired) into the two dense layers.
  """
  convs: tuple[int, ...]
  pools: tuple[tuple[int, int, int], ...]
  hidden: int
  embed_dim: int
  dropout: float
  dtype: Any = jnp.float32
  first_map: bool = False  # also return the first conv block's map [B, S', H', W', C] (timing)

  @nn.compact
  def __call__(self, frames: jax.Array, *, train: bool,
               mask: jax.Array | None = None) -> jax.Array | tuple[jax.Array, jax.Array]:
    x = frames.astype(self.dtype) / 127.5 - 1.0
    first = None
    for i, features in enumerate(self.convs):
      x = Conv3D(features, use_bias=False, dtype=self.dtype)(x)
      pool = self.pools[i] if i < len(self.pools) else None
      x = norm_relu_pool(x, pool, train=train, mask=mask, dtype=self.dtype)
      first = x if first is None else first
    x = x.reshape(x.shape[0], -1)
    for features in (self.hidden, self.embed_dim):
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
      x = nn.relu(nn.Dense(features, dtype=self.dtype)(x))
    return (x, first) if self.first_map else x


class VideoModel(nn.Module):
  """The video stream alone with an output layer (`video3d`)."""
  convs: tuple[int, ...]
  pools: tuple[tuple[int, int, int], ...]
  hidden: int
  embed_dim: int
  num_classes: int
  dropout: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, batch: dict[str, jax.Array], *, train: bool) -> dict[str, jax.Array]:
    embedding = VideoStream(self.convs, self.pools, self.hidden, self.embed_dim, self.dropout,
                            self.dtype, name="video")(
      batch["video"], train=train, mask=padding_mask(batch))
    logits = Classifier(self.num_classes, self.dropout, self.dtype, name="output")(
      embedding, train=train)
    return {"logits": logits, "video_embedding": embedding.astype(jnp.float32)}
