"""Training augmentation in the step (lbher_jax.train.augment) against a numpy / scipy reference:
the host version it replaced (area resize of the kept rows, scipy.ndimage.rotate, edge-padded
shifts), with the same draws; and the draws' distributions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from lbher_jax.features.audio import resize
from lbher_jax.train import augment

F, T = 40, 60


def reference_spectrogram(spec: np.ndarray, rows: int, angle: float) -> np.ndarray:
  out = np.asarray(spec, np.float32)
  if 0 < rows < spec.shape[0]:
    out = resize(out[:spec.shape[0] - rows], *spec.shape)
  if angle != 0.0:
    out = scipy.ndimage.rotate(out, angle, reshape=False, order=1, mode="constant",
                               cval=float(out.min()))
  return out


def reference_frames(frames: np.ndarray, flip: bool, dy: int, dx: int) -> np.ndarray:
  _, h, w, _ = frames.shape
  out = frames[:, :, ::-1] if flip else frames
  m = max(abs(dy), abs(dx))
  padded = np.pad(out, ((0, 0), (m, m), (m, m), (0, 0)), mode="edge")
  return padded[:, m - dy:m - dy + h, m - dx:m - dx + w]


def _device_spectrogram(spec, rows, angle, crop_top=10):
  stretch = jnp.asarray(augment.stretch_matrices(spec.shape[0], crop_top))
  return np.asarray(jax.jit(augment.crop_rotate)(jnp.asarray(spec), rows, jnp.float32(angle),
                                                 stretch))


@pytest.mark.parametrize("shape", [(16, 24), (64, 96), (200, 300)])
@pytest.mark.parametrize("rows, angle", [(0, 0.0), (3, 7.3), (10, -9.9), (1, 0.4)])
def test_spectrogram_matches_the_host_reference(shape, rows, angle):
  spec = np.random.default_rng(rows).uniform(-1, 1, shape).astype(np.float32)
  np.testing.assert_allclose(_device_spectrogram(spec, rows, angle),
                             reference_spectrogram(spec, rows, angle), atol=1e-4)


def test_nothing_is_cropped_when_nothing_would_be_left():
  spec = np.random.default_rng(0).uniform(-1, 1, (4, 6)).astype(np.float32)
  np.testing.assert_allclose(_device_spectrogram(spec, 5, 0.0), spec, atol=1e-6)


@pytest.mark.parametrize("flip, dy, dx", [(False, 0, 0), (True, 0, 0), (False, 2, -1),
                                          (True, -2, 2)])
def test_frames_match_the_host_reference_exactly(flip, dy, dx):
  frames = np.random.default_rng(0).integers(0, 256, (3, 6, 8, 3), dtype=np.uint8)
  out = jax.jit(augment.shift_flip)(frames, flip, dy, dx)
  np.testing.assert_array_equal(np.asarray(out), reference_frames(frames, flip, dy, dx))


def _draws(params, n=4000, frame_size=(30, 50)):
  keys = jax.random.split(jax.random.key(0), n)
  return jax.tree.map(np.asarray, jax.vmap(lambda k: augment.draw(k, params, frame_size))(keys))


def test_draws_follow_the_stated_distributions():
  d = _draws(augment.AugmentParams(crop_top=10, max_rotate_deg=10.0, frames_flip=True,
                                   frames_shift=0.06))
  counts = np.bincount(d.rows, minlength=11)
  assert len(counts) == 11 and counts.min() > 4000 / 11 * 0.7   # each of 0..10, about 1/11
  assert -10 <= d.angle.min() < -9 and 9 < d.angle.max() <= 10 and abs(d.angle.mean()) < 0.5
  assert 0.45 < d.flip.mean() < 0.55
  assert set(d.dy) == set(range(-2, 3)) and set(d.dx) == set(range(-3, 4))  # round(.06 x 30, 50)
  off = _draws(augment.AugmentParams())
  assert not off.flip.any() and not off.dy.any() and not off.dx.any()


def _batch(n=6, seed=0):
  rng = np.random.default_rng(seed)
  return {"audio": rng.uniform(-1, 1, (n, F, T)).astype(np.float32),
          "video": rng.integers(0, 256, (n, 2, 6, 8, 3), dtype=np.uint8),
          "label": np.zeros(n, np.int32)}


def test_batch_is_seeded_per_example_and_disabled_is_identity():
  batch = _batch()
  params = augment.AugmentParams(frames_flip=True, frames_shift=0.25)
  run = jax.jit(lambda b, k: augment.augment_batch(b, k, params))
  a, b = run(batch, jax.random.key(7)), run(batch, jax.random.key(7))
  c = run(batch, jax.random.key(8))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert not np.array_equal(a["audio"], c["audio"])
  assert a["audio"].dtype == jnp.float32 and a["video"].dtype == jnp.uint8
  np.testing.assert_array_equal(a["label"], batch["label"])
  # Example i is example i's own draw applied to it.
  keys = jax.random.split(jax.random.key(7), len(batch["label"]))
  for i in (0, 5):
    d = augment.draw(keys[i], params, (6, 8))
    audio, video = augment.apply(batch["audio"][i], batch["video"][i], d, params.crop_top)
    np.testing.assert_allclose(a["audio"][i], audio, atol=1e-5)   # jit vs eager rounding
    np.testing.assert_array_equal(a["video"][i], video)
  off = augment.augment_batch(batch, jax.random.key(7), augment.AugmentParams(enabled=False))
  assert off is batch


def test_never_flips_time():
  # Rotating a left-to-right ramp by at most 10 degrees keeps it increasing along time in the
  # centre; a horizontal flip would make it decrease.
  ramp = np.tile(np.linspace(-1, 1, T, dtype=np.float32), (F, 1))
  batch = {**_batch(20), "audio": np.tile(ramp, (20, 1, 1))}
  out = np.asarray(augment.augment_batch(batch, jax.random.key(0), augment.AugmentParams(
      crop_top=5, max_rotate_deg=10.0))["audio"])
  centre = out[:, F // 2 - 5:F // 2 + 5, T // 4:3 * T // 4]
  assert np.all(np.diff(centre, axis=2) > 0)
  assert np.all(out[:, :, -10:].mean(axis=(1, 2)) > out[:, :, :10].mean(axis=(1, 2)) + 1)


def test_top_crop_shifts_frequencies_up():
  # Row r holds value r. Cropping k top rows and stretching back moves content up: row r then
  # shows what was at about r * (F - k) / F, so no value increases; time is untouched.
  spec = np.tile(np.arange(F, dtype=np.float32)[:, None], (1, T))
  for rows in (1, 4, 10):
    out = _device_spectrogram(spec, rows, 0.0)
    assert np.all(out <= spec + 1e-4) and np.all(np.diff(out[:, 0]) >= -1e-4)
    np.testing.assert_allclose(out, np.tile(out[:, :1], (1, T)), atol=1e-5)
    assert out[-1, 0] < F - 1 - rows / 2
