"""Tests for lbher_jax.features.augment."""

import numpy as np

from lbher_jax.features import augment

F, T = 40, 60


def time_ramp():
  return np.tile(np.linspace(-1, 1, T, dtype=np.float32), (F, 1))


def test_disabled_is_identity():
  spec = time_ramp()
  out = augment.augment_spectrogram(spec, augment.AugmentParams(enabled=False),
                                    np.random.default_rng(0))
  np.testing.assert_array_equal(out, spec)


def test_deterministic_for_a_seed():
  spec = np.random.default_rng(0).uniform(-1, 1, (F, T)).astype(np.float32)
  params = augment.AugmentParams()
  a = augment.augment_spectrogram(spec, params, np.random.default_rng(7))
  b = augment.augment_spectrogram(spec, params, np.random.default_rng(7))
  c = augment.augment_spectrogram(spec, params, np.random.default_rng(8))
  assert a.shape == spec.shape and a.dtype == spec.dtype
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_never_flips_time():
  # Rotating a left-to-right ramp by at most 10 degrees keeps it increasing along time in the
  # centre; a horizontal flip would make it decrease.
  spec = time_ramp()
  params = augment.AugmentParams(crop_top=5, max_rotate_deg=10.0)
  for seed in range(20):
    out = augment.augment_spectrogram(spec, params, np.random.default_rng(seed))
    centre = out[F // 2 - 5:F // 2 + 5, T // 4:3 * T // 4]
    assert np.all(np.diff(centre, axis=1) > 0), seed
    assert out[:, -10:].mean() > out[:, :10].mean() + 1


def test_rotation_angle_is_within_bounds_and_varies():
  # A horizontal line through the centre, rotated by theta, has slope tan(theta) in row units.
  spec = np.full((F, T), -1.0, np.float32)
  spec[F // 2] = 1.0
  params = augment.AugmentParams(crop_top=0, max_rotate_deg=10.0)
  slopes = []
  for seed in range(12):
    out = augment.augment_spectrogram(spec, params, np.random.default_rng(seed))
    cols = np.arange(10, T - 10)
    rows = np.array([np.sum(np.arange(F) * (out[:, c] + 1)) / np.sum(out[:, c] + 1) for c in cols])
    slopes.append(np.polyfit(cols, rows, 1)[0])
  angles = np.degrees(np.arctan(np.abs(slopes)))
  assert angles.max() <= 10.5 and angles.max() > 3
  assert min(slopes) < 0 < max(slopes)


def test_top_crop_shifts_frequencies_up():
  # Row r holds value r. Cropping k top rows and stretching back moves content up: row r then
  # shows what was at about r * (F - k) / F, so no value increases; k varies from draw to draw.
  spec = np.tile(np.arange(F, dtype=np.float32)[:, None], (1, T))
  params = augment.AugmentParams(crop_top=10, max_rotate_deg=0.0)
  tops = []
  for seed in range(10):
    out = augment.augment_spectrogram(spec, params, np.random.default_rng(seed))
    assert np.all(out <= spec + 1e-4)
    assert np.all(np.diff(out[:, 0]) >= -1e-4)  # still ordered low to high frequency
    np.testing.assert_allclose(out, np.tile(out[:, :1], (1, T)), atol=1e-5)  # time untouched
    tops.append(out[-1, 0])
  assert min(tops) < F - 1 - 5 and len(set(np.round(tops, 3))) > 3


def _frames(rng):
  return rng.integers(0, 256, (3, 6, 8, 3), dtype=np.uint8)


def test_frames_augmentation_disabled_is_identity_and_seeded():
  frames = _frames(np.random.default_rng(0))
  out = augment.augment_frames(frames, augment.AugmentParams(enabled=False),
                               np.random.default_rng(1))
  assert out is frames
  params = augment.AugmentParams(frames_flip=True, frames_shift=0.1)
  a = augment.augment_frames(frames, params, np.random.default_rng(7))
  np.testing.assert_array_equal(a, augment.augment_frames(frames, params, np.random.default_rng(7)))
  assert a.shape == frames.shape and a.dtype == np.uint8


def test_frames_flip_mirrors_every_frame_and_shift_moves_by_whole_pixels():
  frames = _frames(np.random.default_rng(0))
  flip_only = augment.AugmentParams(frames_flip=True)
  outs = [augment.augment_frames(frames, flip_only, np.random.default_rng(s)) for s in range(20)]
  flipped = [np.array_equal(o, frames[:, :, ::-1]) for o in outs]
  kept = [np.array_equal(o, frames) for o in outs]
  assert all(f != k for f, k in zip(flipped, kept)) and 3 <= sum(flipped) <= 17
  shift_only = augment.AugmentParams(frames_shift=0.25)
  moved = 0
  for seed in range(20):
    out = augment.augment_frames(frames, shift_only, np.random.default_rng(seed))
    moved += not np.array_equal(out, frames)
    # Some shift (|dy| <= 2, |dx| <= 2) reproduces the output; the inside is a pure translation.
    matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
               if np.array_equal(out[:, max(dy, 0):6 + min(dy, 0), max(dx, 0):8 + min(dx, 0)],
                                 frames[:, max(-dy, 0):6 - max(dy, 0),
                                        max(-dx, 0):8 - max(dx, 0)])]
    assert matches
  assert moved >= 15

