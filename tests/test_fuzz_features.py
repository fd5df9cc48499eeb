"""Property-based tests of lbher_jax.features.audio: finite input gives finite, well-shaped output.

`spectrogram_segments` takes any finite float32 wave (up to +-3.4e38; it clips at MAX_AMPLITUDE);
the single steps take waves within +-MAX_AMPLITUDE. Lengths run from 0 samples to a few segments,
at a tiny sample rate and FFT size so that each example takes milliseconds.
"""

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from lbher_jax.features import audio

SR = 4000
PARAMS = audio.AudioParams(sample_rate=SR, segment_seconds=0.1, min_last_segment=0.04,
                           bandpass_high=1900.0, n_fft=32, hop_length=16, height=6, width=5,
                           top_crop=0.5)
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def waves(limit: float | None = None, max_len: int = 3 * int(PARAMS.segment_seconds * SR)):
  """Finite float32 waves (within +-limit): arbitrary values, or a tone of arbitrary amplitude."""
  values = (st.floats(width=32, allow_nan=False, allow_infinity=False) if limit is None
            else st.floats(-limit, limit, width=32))
  limit = 3e38 if limit is None else limit
  arbitrary = hnp.arrays(np.float32, st.integers(0, max_len), elements=values)
  scaled = st.builds(lambda n, amp, f: (amp * np.sin(2 * np.pi * f * np.arange(n) / SR))
                     .astype(np.float32), st.integers(0, max_len),
                     st.floats(0, limit), st.floats(1, SR / 2))
  return st.one_of(arbitrary, scaled, st.builds(np.zeros, st.integers(0, max_len),
                                                st.just(np.float32)))


params_variants = st.builds(
    lambda mode, pad, denoise: dataclasses.replace(PARAMS, mode=mode, pad=pad, denoise=denoise),
    st.sampled_from(["segments", "full"]), st.sampled_from(["noise", "zeros"]), st.booleans())


@FUZZ
@given(waves(), params_variants, st.integers(0, 2**32 - 1))
def test_spectrogram_segments_any_finite_wave(wave, params, seed):
  spec = audio.spectrogram_segments(wave, params, np.random.default_rng(seed))
  n = len(audio.segment_bounds(len(wave) / SR, params))
  assert spec.shape == (n, params.height, params.width) and spec.dtype == np.float32
  assert np.isfinite(spec).all()
  assert spec.min() >= -1.0 and spec.max() <= 1.0


@FUZZ
@given(waves(audio.MAX_AMPLITUDE))
def test_bandpass_any_finite_wave(wave):
  out = audio.bandpass(wave, SR, PARAMS.bandpass_low, PARAMS.bandpass_high)
  assert out.shape == wave.shape and out.dtype == np.float32 and np.isfinite(out).all()


@FUZZ
@given(waves(audio.MAX_AMPLITUDE), st.booleans())
def test_spectral_gate_any_finite_wave(wave, with_noise):
  noise = np.random.default_rng(0).standard_normal(len(wave)).astype(np.float32)
  out = audio.spectral_gate(wave, PARAMS.n_fft, PARAMS.hop_length, noise if with_noise else None)
  assert out.shape == wave.shape and np.isfinite(out).all()


@FUZZ
@given(waves(audio.MAX_AMPLITUDE), st.integers(1, 2000), st.sampled_from(["noise", "zeros"]),
       st.floats(1e-3, 1e3), st.integers(0, 2**32 - 1))
def test_pad_segment_any_finite_wave(wave, num_samples, pad, snr, seed):
  padded, noise = audio.pad_segment(wave, num_samples, pad, snr, np.random.default_rng(seed))
  assert len(padded) == max(num_samples, len(wave)) and np.isfinite(padded).all()
  np.testing.assert_array_equal(padded[:len(wave)], wave)
  assert noise is None or (len(noise) == num_samples and np.isfinite(noise).all())


@FUZZ
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 9), st.integers(1, 9), st.just(2)),
                  elements=st.floats(width=32, allow_nan=False, allow_infinity=False)),
       st.floats(1.0, 200.0))
def test_power_db_any_finite_spectrum(parts, limit):
  spec = parts.view(np.complex64)[..., 0]   # real and imaginary parts: any finite float32
  db = audio.power_db(spec, limit)
  assert db.shape == spec.shape and np.isfinite(db).all()
  assert db.min() >= -limit - 1e-3 and db.max() <= limit


@FUZZ
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=40),
                  elements=st.floats(-1e6, 1e6, width=32)),
       st.integers(1, 30), st.integers(1, 30), st.floats(0.0, 0.99))
def test_crop_and_resize_any_finite_array(spec, height, width, fraction):
  cropped = audio.crop_top(spec, fraction)
  assert 1 <= cropped.shape[0] <= spec.shape[0] and cropped.shape[1] == spec.shape[1]
  np.testing.assert_array_equal(cropped, spec[:len(cropped)])
  out = audio.resize(cropped, height, width)
  assert out.shape == (height, width) and np.isfinite(out).all()
  # Area resampling averages: the output stays within the input's range.
  tol = 1e-6 * max(1.0, float(np.abs(cropped).max()))
  assert out.min() >= cropped.min() - tol and out.max() <= cropped.max() + tol


@settings(max_examples=300, deadline=None)
@given(st.floats(0.0, 1e5), st.floats(0.01, 100.0), st.floats(0.0, 1.0),
       st.sampled_from(["segments", "full"]))
def test_segment_bounds_invariants(duration, seg, min_last_fraction, mode):
  assume(duration / seg < 1e4)   # keeps each example fast
  params = dataclasses.replace(PARAMS, segment_seconds=seg, mode=mode,
                               min_last_segment=min_last_fraction * seg)
  bounds = audio.segment_bounds(duration, params)
  tol = 1e-6 * max(1.0, duration)
  assert bounds and bounds[0][0] == 0.0
  if mode == "full" or duration <= seg:
    assert bounds == [(0.0, duration)]
    return
  for (a, b), (c, _) in zip(bounds, bounds[1:]):
    assert b == c and abs((b - a) - seg) <= tol          # whole segments, back to back
  last_start, last_end = bounds[-1]
  assert 0 < last_end - last_start <= seg + tol and last_end <= duration + tol
  # What is left over is a remainder too short to keep (or nothing at all).
  assert duration - last_end < params.min_last_segment + tol or duration - last_end <= tol


@given(st.floats(max_value=-1e-300) | st.sampled_from([np.nan, np.inf, -np.inf]))
def test_segment_bounds_rejects_negative_or_non_finite_duration(duration):
  with pytest.raises(ValueError, match="duration must be a finite number >= 0"):
    audio.segment_bounds(duration, PARAMS)
