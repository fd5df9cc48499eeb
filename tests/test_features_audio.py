"""Tests for lbher_jax.features.audio against hand-computed references."""

import dataclasses

import numpy as np
import pytest

from lbher_jax.features import audio

SR = 16000


def tone(freq, seconds, amplitude=1.0, sr=SR):
  return (amplitude * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(
      np.float32)


def rms_db(x):
  return 10 * np.log10(np.mean(np.square(x, dtype=np.float64)))


def tone_snr_db(y, clean):
  """SNR of `y` with respect to the clean tone: least-squares fit of the tone vs. the residual."""
  gain = np.dot(y, clean) / np.dot(clean, clean)
  return rms_db(gain * clean) - rms_db(y - gain * clean)


@pytest.mark.parametrize("snr", [1.0, 4.0])
def test_padding_noise_has_requested_snr(snr):
  rng = np.random.default_rng(0)
  signal = tone(500, 1.0, amplitude=0.5)  # power 0.125
  padded, noise = audio.pad_segment(signal, 3 * SR, "noise", snr, rng)
  assert padded.shape == (3 * SR,) and noise.shape == (3 * SR,)
  np.testing.assert_array_equal(padded[:SR], signal)
  np.testing.assert_array_equal(padded[SR:], noise[SR:])
  assert np.mean(padded[SR:] ** 2) == pytest.approx(0.125 / snr, rel=0.04)


def test_zero_padding_and_no_padding():
  rng = np.random.default_rng(0)
  padded, noise = audio.pad_segment(tone(500, 1.0), 2 * SR, "zeros", 1.0, rng)
  assert noise is None and padded.shape == (2 * SR,) and not padded[SR:].any()
  long, noise = audio.pad_segment(tone(500, 2.5), 2 * SR, "noise", 1.0, rng)
  assert noise is None and long.shape == (int(2.5 * SR),)


def test_bandpass_attenuates_out_of_band_tones():
  middle = slice(SR // 4, -SR // 4)  # away from the filter's start-up at the edges
  for freq, expected_db in [(50, -20), (7000, -20), (1000, 0)]:
    x = tone(freq, 1.0)
    y = audio.bandpass(x, SR, 300.0, 3000.0)
    gain = rms_db(y[middle]) - rms_db(x[middle])
    if expected_db < 0:
      assert gain < expected_db, freq
    else:
      assert abs(gain) < 0.5, freq


def test_bandpass_high_edge_is_clipped_below_nyquist():
  x = tone(1000, 0.5)
  y = audio.bandpass(x, SR, 1.0, 30000.0)  # 30 kHz is above the 8 kHz Nyquist frequency
  assert np.all(np.isfinite(y)) and abs(rms_db(y) - rms_db(x)) < 0.5


def test_spectral_gate_with_noise_clip_raises_snr():
  rng = np.random.default_rng(1)
  clean = tone(1000, 2.0, amplitude=0.1)
  noisy = clean + 0.1 * rng.standard_normal(len(clean)).astype(np.float32)
  noise_clip = 0.1 * rng.standard_normal(len(clean)).astype(np.float32)
  before = tone_snr_db(noisy, clean)  # about -3 dB
  after = tone_snr_db(audio.spectral_gate(noisy, 512, 128, noise_clip), clean)
  assert after > before + 10


def test_spectral_gate_estimates_noise_from_quiet_frames():
  rng = np.random.default_rng(2)
  clean = tone(1000, 3.0, amplitude=0.1)
  clean[: SR] = 0  # the tone sounds only in the last two seconds, the noise throughout
  noisy = clean + 0.05 * rng.standard_normal(len(clean)).astype(np.float32)
  stages = audio.spectral_gate_stages(noisy, 512, 128)
  assert stages.recovered.shape == noisy.shape
  assert tone_snr_db(stages.recovered, clean) > tone_snr_db(noisy, clean) + 10
  # The noise threshold is white-noise flat: power per bin 0.05**2 * sum(hann**2) = 0.48 (-3.2 dB)
  # on average; its dB mean sits 2.5 dB lower (exponential distribution), its std near 5.6 dB.
  assert np.median(stages.noise_mean_db) == pytest.approx(-3.2 - 2.5, abs=1.0)
  assert np.median(stages.noise_std_db) == pytest.approx(5.6, abs=1.0)
  assert stages.mask.min() >= 0 and stages.mask.max() <= 1


def test_smoothing_filter_is_triangular_and_normalised():
  kernel = audio.smoothing_filter(2, 4)
  assert kernel.shape == (5, 9) and kernel.sum() == pytest.approx(1.0)
  np.testing.assert_allclose(kernel[:, 4] / kernel[2, 4], [1 / 3, 2 / 3, 1, 2 / 3, 1 / 3])


def test_stft_frames_match_a_direct_dft():
  # Frame t is centred on sample t * hop (zero padding of n_fft // 2) and windowed by the periodic
  # Hann window; each column is the DFT of that frame, computed here as an explicit sum.
  n_fft, hop = 64, 16
  x = np.random.default_rng(0).standard_normal(200).astype(np.float32)
  spec = audio.stft(x, n_fft, hop)
  assert spec.shape == (n_fft // 2 + 1, 1 + len(x) // hop) and spec.dtype == np.complex64
  padded = np.pad(x.astype(np.float64), n_fft // 2)
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
  k, n = np.arange(n_fft // 2 + 1)[:, None], np.arange(n_fft)[None, :]
  for t in (0, 5, spec.shape[1] - 1):
    frame = padded[t * hop:t * hop + n_fft] * window
    expected = (frame * np.exp(-2j * np.pi * k * n / n_fft)).sum(axis=1)
    np.testing.assert_allclose(spec[:, t], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("length", [0, 5, 999, 4000])
def test_istft_inverts_stft(length):
  x = np.random.default_rng(1).standard_normal(length).astype(np.float32)
  for n_fft, hop in [(256, 64), (512, 128), (1024, 320)]:
    y = audio.istft(audio.stft(x, n_fft, hop), n_fft, hop, length)
    assert y.shape == (length,) and y.dtype == np.float32
    np.testing.assert_allclose(y, x, atol=1e-5)


def test_istft_pads_or_trims_to_length():
  x = np.ones(1000, np.float32)
  spec = audio.stft(x, 256, 64)
  np.testing.assert_allclose(audio.istft(spec, 256, 64, 600), x[:600], atol=1e-5)
  longer = audio.istft(spec, 256, 64, 1500)
  np.testing.assert_allclose(longer[:1000], x, atol=1e-5)
  assert longer.shape == (1500,)


def test_power_db_fixed_scale():
  # A sine of amplitude A at a bin centre gives |X| = A * n_fft / 4 with a periodic Hann window.
  n_fft, amplitude = 512, 0.1
  x = tone(32 * SR / n_fft, 1.0, amplitude)  # bin 32
  db = audio.power_db(audio.stft(x, n_fft, 128), 60.0)
  expected = 20 * np.log10(amplitude * n_fft / 4)  # 22.14 dB
  assert np.median(db[32, 4:-4]) == pytest.approx(expected, abs=0.05)
  loud = audio.power_db(audio.stft(tone(32 * SR / n_fft, 1.0, 8.0), n_fft, 128), 60.0)
  assert np.all(loud[32, 4:-4] == 60.0)  # 20 log10(8 * 128) = 60.2 dB is clipped
  silent = audio.power_db(audio.stft(np.zeros(SR, np.float32), n_fft, 128), 60.0)
  assert np.all(silent == -60.0)


@pytest.mark.parametrize("denoise", [True, False])
def test_silence_is_exactly_minus_one(denoise):
  params = audio.AudioParams(sample_rate=8000, n_fft=256, hop_length=64, height=20, width=30,
                             denoise=denoise)
  spec = audio.spectrogram_segments(np.zeros(12000, np.float32), params, np.random.default_rng(0))
  assert spec.shape == (1, 20, 30) and np.all(spec == -1.0)


def test_scale_is_absolute_not_per_clip():
  # Doubling the amplitude adds 20 log10(2) = 6.02 dB to every bin: no per-clip normalisation.
  params = audio.AudioParams(sample_rate=8000, n_fft=256, hop_length=64, height=20, width=30,
                             denoise=False)
  noise = 0.1 * np.random.default_rng(3).standard_normal(24000).astype(np.float32)
  quiet = audio.spectrogram_segments(noise, params, np.random.default_rng(0))
  loud = audio.spectrogram_segments(2 * noise, params, np.random.default_rng(0))
  np.testing.assert_allclose(loud - quiet, 20 * np.log10(2) / 60, atol=1e-4)


@pytest.mark.parametrize("duration, expected", [
    (0.0, [(0.0, 0.0)]), (0.2, [(0.0, 0.2)]), (2.9, [(0.0, 2.9)]), (3.0, [(0.0, 3.0)]),
    (4.2, [(0.0, 3.0), (3.0, 4.2)]), (9.5, [(0.0, 3.0), (3.0, 6.0), (6.0, 9.0)]),
    (10.0, [(0.0, 3.0), (3.0, 6.0), (6.0, 9.0), (9.0, 10.0)])])
def test_segment_bounds(duration, expected):
  bounds = audio.segment_bounds(duration, audio.AudioParams())
  np.testing.assert_allclose(bounds, expected)


def test_segment_bounds_full_mode():
  assert audio.segment_bounds(9.5, audio.AudioParams(mode="full")) == [(0.0, 9.5)]


def test_spectrogram_segments_shapes_and_determinism():
  params = audio.AudioParams(sample_rate=8000, n_fft=256, hop_length=64, height=20, width=30)
  wave = tone(440, 4.2, 0.3, sr=8000)
  spec = audio.spectrogram_segments(wave, params, np.random.default_rng(0))
  assert spec.shape == (2, 20, 30) and spec.dtype == np.float32
  assert spec.min() >= -1 and spec.max() <= 1
  np.testing.assert_array_equal(spec, audio.spectrogram_segments(wave, params,
                                                                 np.random.default_rng(0)))
  # The second segment (1.2 s) is padded with random noise, so another seed changes it.
  other = audio.spectrogram_segments(wave, params, np.random.default_rng(1))
  np.testing.assert_array_equal(spec[0], other[0])
  assert not np.array_equal(spec[1], other[1])
  full = audio.spectrogram_segments(wave, dataclasses.replace(params, mode="full"),
                                    np.random.default_rng(0))
  assert full.shape == (1, 20, 30)


def test_row_zero_is_lowest_frequency_and_top_is_cropped():
  # At 8 kHz with top_crop 0.5 the image spans 0-2 kHz: a 500 Hz tone sits a quarter of the way up,
  # a 3 kHz tone is cropped away entirely.
  params = audio.AudioParams(sample_rate=8000, n_fft=256, hop_length=64, height=40, width=30,
                             top_crop=0.5, denoise=False, pad="zeros")
  low = audio.spectrogram_segments(tone(500, 3.0, 0.5, sr=8000), params, np.random.default_rng(0))
  assert abs(np.argmax(low[0].mean(axis=1)) - 10) <= 1
  high = audio.spectrogram_segments(tone(3000, 3.0, 0.5, sr=8000), params,
                                    np.random.default_rng(0))
  assert high[0].max() < low[0].max() - 0.5


def test_crop_top_and_resize():
  spec = np.arange(10.0)[:, None] * np.ones((1, 4))
  np.testing.assert_array_equal(audio.crop_top(spec, 0.6)[:, 0], [0, 1, 2, 3])
  np.testing.assert_allclose(audio.resize(np.arange(6.0)[None, :], 1, 3), [[0.5, 2.5, 4.5]])
  assert audio.resize(np.ones((410, 259)), 200, 300).shape == (200, 300)


def test_params_are_validated():
  with pytest.raises(ValueError, match="mode"):
    audio.AudioParams(mode="halves")
  with pytest.raises(ValueError, match="pad"):
    audio.AudioParams(pad="reflect")
