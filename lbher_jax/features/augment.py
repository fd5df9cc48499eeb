"""Spectrogram augmentation of paper §3.3: a small frequency shift and a small rotation.

Never a horizontal flip: that would play the utterance backwards.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.ndimage

from lbher_jax.features.audio import resize


@dataclasses.dataclass(frozen=True)
class AugmentParams:
  """Paper: crop 10 rows off the top and resize back; rotate by up to +-10 degrees."""

  enabled: bool = True
  crop_top: int = 10  # at most this many top rows (highest frequencies) are cropped
  max_rotate_deg: float = 10.0


def augment_spectrogram(spec: np.ndarray, params: AugmentParams,
                        rng: np.random.Generator) -> np.ndarray:
  """Randomly shifted and rotated copy of a [F, T] spectrogram (row 0 = lowest frequency).

  Crops a uniform 0..crop_top rows off the top and stretches the rest back to F rows (a shift
  up in frequency), then rotates by a uniform angle in [-max_rotate_deg, max_rotate_deg] about
  the centre; corners are filled with the spectrogram's minimum (silence). The amount of cropping
  is random so that unaugmented (test) spectrograms stay inside the training distribution.
  Deterministic for a given rng state; identity when disabled.
  """
  if not params.enabled:
    return spec
  rows, angle = rng.integers(0, params.crop_top + 1), rng.uniform(-1, 1) * params.max_rotate_deg
  height, width = spec.shape
  out = np.asarray(spec, np.float32)
  if 0 < rows < height:
    out = resize(out[:height - rows], height, width)
  if angle != 0.0:
    out = scipy.ndimage.rotate(out, angle, reshape=False, order=1, mode="constant",
                               cval=float(out.min()))
  return out.astype(spec.dtype, copy=False)
