"""Training-time augmentation: paper §3.3 for spectrograms, plus light face-frame jitter.

Spectrograms get a small frequency shift and a small rotation, never a horizontal flip (that
would play the utterance backwards). Face frames (not in the paper, which augments audio only) can
get a mirror image and a small shift, the same for every frame of a segment so that its motion is
kept.
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
  # Face-frame jitter, off by default (configs/ravdess.py:fer_av turns both on).
  frames_flip: bool = False  # mirror a segment's faces with probability 1/2
  frames_shift: float = 0.0  # shift faces by up to this fraction of the height / width


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


def augment_frames(frames: np.ndarray, params: AugmentParams,
                   rng: np.random.Generator) -> np.ndarray:
  """Randomly mirrored and shifted copy of a segment's uint8 frames [S, H, W, C].

  One draw per segment. The shift moves the picture by whole pixels and repeats the edge pixels
  into the uncovered border. Deterministic for a given rng state; identity when disabled.
  """
  if not params.enabled:
    return frames
  _, height, width, _ = frames.shape
  out = frames[:, :, ::-1] if params.frames_flip and rng.random() < 0.5 else frames
  max_dy, max_dx = round(params.frames_shift * height), round(params.frames_shift * width)
  dy, dx = rng.integers(-max_dy, max_dy + 1), rng.integers(-max_dx, max_dx + 1)
  if dy or dx:
    padded = np.pad(out, ((0, 0), (max_dy, max_dy), (max_dx, max_dx), (0, 0)), mode="edge")
    out = padded[:, max_dy - dy:max_dy - dy + height, max_dx - dx:max_dx - dx + width]
  return np.ascontiguousarray(out, dtype=frames.dtype)
