"""Training-time augmentation inside the jitted step, on the device: paper §3.3 for spectrograms,
plus light face-frame jitter.

The host only reads and batches shards; each example draws its own transformation from a key
split off the step's key, so a run is deterministic given its seed and resumes exactly.

Spectrograms get a small frequency shift and a small rotation, never a horizontal flip (that
would play the utterance backwards). Face frames (not in the paper, which augments audio only)
can get a mirror image and a small shift, the same for every frame of a segment so that its
motion is kept.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lbher_jax.features.audio import resize


@dataclasses.dataclass(frozen=True)
class AugmentParams:
  """Paper: crop up to 10 rows off the top and resize back; rotate by up to +-10 degrees."""

  enabled: bool = True
  crop_top: int = 10  # at most this many top rows (highest frequencies) are cropped
  max_rotate_deg: float = 10.0
  # Face-frame jitter, off by default (configs/ravdess.py:fer_av turns both on).
  frames_flip: bool = False  # mirror a segment's faces with probability 1/2
  frames_shift: float = 0.0  # shift faces by up to this fraction of the height / width


@functools.lru_cache(maxsize=8)
def stretch_matrices(height: int, crop_top: int) -> np.ndarray:
  """float32 [crop_top + 1, height, height]: matrix r maps a spectrogram's rows to the area
  resampling (features.audio.resize) of its bottom height - r rows back to height rows."""
  out = np.zeros((crop_top + 1, height, height), np.float32)
  for rows in range(crop_top + 1):
    if 0 < rows < height:
      out[rows, :, :height - rows] = resize(np.eye(height - rows), height, height - rows)
    else:   # nothing to crop, or nothing would be left: unchanged
      out[rows] = np.eye(height)
  return out


def rotate(x: jax.Array, angle_deg: jax.Array, cval: jax.Array) -> jax.Array:
  """[H, W] rotated by `angle_deg` about its centre with bilinear interpolation; points that fall
  outside the input get `cval` (scipy.ndimage.rotate(x, angle, reshape=False, order=1,
  mode="constant", cval=cval))."""
  h, w = x.shape
  theta = jnp.deg2rad(angle_deg)
  c, s = jnp.cos(theta), jnp.sin(theta)
  r, q = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - (h - 1) / 2,
                      jnp.arange(w, dtype=jnp.float32) - (w - 1) / 2, indexing="ij")
  rows = c * r + s * q + (h - 1) / 2
  cols = -s * r + c * q + (w - 1) / 2
  tol = 1e-3   # as scipy: a point on the edge, up to rounding, is inside
  inside = (rows > -tol) & (rows < h - 1 + tol) & (cols > -tol) & (cols < w - 1 + tol)
  r0 = jnp.clip(jnp.floor(rows), 0, h - 1)
  c0 = jnp.clip(jnp.floor(cols), 0, w - 1)
  fr, fc = jnp.clip(rows - r0, 0, 1), jnp.clip(cols - c0, 0, 1)
  r0, c0 = r0.astype(jnp.int32), c0.astype(jnp.int32)
  r1, c1 = jnp.minimum(r0 + 1, h - 1), jnp.minimum(c0 + 1, w - 1)
  value = ((1 - fr) * ((1 - fc) * x[r0, c0] + fc * x[r0, c1])
           + fr * ((1 - fc) * x[r1, c0] + fc * x[r1, c1]))
  return jnp.where(inside, value, cval)


def crop_rotate(spec: jax.Array, rows: jax.Array, angle_deg: jax.Array,
                stretch: jax.Array) -> jax.Array:
  """A [F, T] spectrogram with its top `rows` rows cropped and the rest stretched back to F rows
  (a shift up in frequency), then rotated by `angle_deg`; corners get the minimum (silence)."""
  out = jnp.einsum("fg,gt->ft", stretch[rows], spec.astype(jnp.float32))
  return rotate(out, angle_deg, jnp.min(out))


def shift_flip(frames: jax.Array, flip: jax.Array, dy: jax.Array, dx: jax.Array) -> jax.Array:
  """Frames [S, H, W, C] mirrored (when `flip`) and moved by whole pixels (dy down, dx right),
  the uncovered border repeating the edge pixels."""
  _, h, w, _ = frames.shape
  cols = jnp.arange(w)
  cols = jnp.where(flip, w - 1 - cols, cols)
  cols = cols[jnp.clip(jnp.arange(w) - dx, 0, w - 1)]
  rows = jnp.clip(jnp.arange(h) - dy, 0, h - 1)
  return frames[:, rows][:, :, cols]


class Draw(NamedTuple):
  """One example's random transformation."""
  rows: jax.Array    # top rows cropped, uniform in 0..crop_top
  angle: jax.Array   # degrees, uniform in +-max_rotate_deg
  flip: jax.Array    # mirror the faces: probability 1/2 when frames_flip
  dy: jax.Array      # face shift in pixels, uniform in +-round(frames_shift x height)
  dx: jax.Array      # ... and +-round(frames_shift x width)


def draw(key: jax.Array, params: AugmentParams, frame_size: tuple[int, int]) -> Draw:
  """The transformation of one example (the distributions of the paper's host version)."""
  k_rows, k_angle, k_flip, k_dy, k_dx = jax.random.split(key, 5)
  h, w = frame_size
  max_dy, max_dx = round(params.frames_shift * h), round(params.frames_shift * w)
  return Draw(rows=jax.random.randint(k_rows, (), 0, params.crop_top + 1),
              angle=jax.random.uniform(k_angle, (), minval=-1.0, maxval=1.0)
              * params.max_rotate_deg,
              flip=jnp.logical_and(params.frames_flip, jax.random.bernoulli(k_flip)),
              dy=jax.random.randint(k_dy, (), -max_dy, max_dy + 1),
              dx=jax.random.randint(k_dx, (), -max_dx, max_dx + 1))


def apply(audio: jax.Array, video: jax.Array, d: Draw,
          crop_top: int) -> tuple[jax.Array, jax.Array]:
  """One example's (spectrogram [F, T], frames [S, H, W, C]) transformed by `d`."""
  stretch = jnp.asarray(stretch_matrices(audio.shape[0], crop_top))
  audio = crop_rotate(audio, d.rows, d.angle, stretch).astype(audio.dtype)
  return audio, shift_flip(video, d.flip, d.dy, d.dx)


def augment_batch(batch: dict[str, jax.Array], key: jax.Array,
                  params: AugmentParams) -> dict[str, jax.Array]:
  """The batch with "audio" and "video" augmented, each example by its own key (so the result
  does not depend on how the batch is sharded); unchanged when augmentation is disabled."""
  if not params.enabled:
    return batch
  keys = jax.random.split(key, batch["audio"].shape[0])
  frame_size = batch["video"].shape[2:4]
  one = lambda a, v, k: apply(a, v, draw(k, params, frame_size), params.crop_top)
  audio, video = jax.vmap(one)(batch["audio"], batch["video"], keys)
  return {**batch, "audio": audio, "video": video}
