"""Audio spectrograms as in paper §3.3 (pure numpy / scipy, no JAX).

Per utterance: band-pass (1 Hz .. 30 kHz, clipped below Nyquist) -> 3-s segments (or the full
utterance) -> pad short segments to 3 s with white noise at SNR 1 (or zeros) -> spectral gating
(paper Figs. 9-11) -> power spectrogram in dB on one fixed absolute scale (+-60 dB, never normalised
per clip) -> drop the top 60 % of the frequency axis -> resize to 200 x 300, values in [-1, 1].

The dB scale is absolute: 10 log10 |X|^2 of an unnormalised, periodic-Hann STFT, so a sine of
amplitude A at a bin centre reads 20 log10(A n_fft / 4) dB, and silence reads -db_limit.
The floor and ceiling are clipped in the dB domain, so they are exact whatever the platform's
log10 rounds to (issue 25: float32 log10(1e-6) is one ulp low on some CPUs).

The STFT is written here rather than taken from librosa: librosa compiles numba gufuncs into an
on-disk cache in site-packages, and concurrent first use by several processes can leave that
cache inconsistent, which crashes every later process (numba#10128; BUILD_NOTES.md).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import scipy.fft
import scipy.ndimage
import scipy.signal

_GATE_FLOOR_DB = -100.0  # floor of the dB values the gate compares (finite for silence)
_NYQUIST_MARGIN = 0.98  # the band-pass high edge stays below this fraction of Nyquist
# Samples are clipped to +-this (full scale is 1): far louder than anything the +-db_limit scale can
# tell apart, and low enough that no intermediate power overflows float32.
MAX_AMPLITUDE = 1e4


@dataclasses.dataclass(frozen=True)
class AudioParams:
  """Spectrogram settings; the defaults are the paper's (44.1 kHz, 3 s, +-60 dB, 200 x 300)."""

  sample_rate: int = 44100
  segment_seconds: float = 3.0
  mode: str = "segments"  # or "full": one spectrogram per utterance
  min_last_segment: float = 1.0  # a shorter trailing remainder is dropped unless it is all there is
  bandpass_low: float = 1.0
  bandpass_high: float = 30000.0  # clipped below Nyquist
  pad: str = "noise"  # or "zeros": how segments shorter than segment_seconds are padded
  pad_snr: float = 1.0  # linear signal/noise power ratio of the injected noise (paper: SNR 1)
  denoise: bool = True  # spectral gating
  n_fft: int = 2048
  hop_length: int = 512
  db_limit: float = 60.0  # fixed dB scale for the whole corpus: clip to [-db_limit, +db_limit]
  top_crop: float = 0.6  # fraction of the frequency axis dropped from the top
  height: int = 200
  width: int = 300

  def __post_init__(self):
    if self.mode not in ("segments", "full"):
      raise ValueError(f"audio mode must be 'segments' or 'full', got {self.mode!r}")
    if self.pad not in ("noise", "zeros"):
      raise ValueError(f"audio pad must be 'noise' or 'zeros', got {self.pad!r}")
    if not 0.0 <= self.top_crop < 1.0:
      raise ValueError(f"top_crop must be in [0, 1), got {self.top_crop}")
    if self.pad_snr <= 0 or self.db_limit <= 0 or self.segment_seconds <= 0:
      raise ValueError("pad_snr, db_limit and segment_seconds must be positive")


def segment_bounds(duration: float, params: AudioParams) -> list[tuple[float, float]]:
  """(start, end) seconds of the segments of an utterance, relative to its start.

  Whole segments of segment_seconds, then the remainder if it lasts at least min_last_segment;
  always at least one segment. Mode "full": one segment covering the utterance.
  """
  if not (np.isfinite(duration) and duration >= 0):
    raise ValueError(f"duration must be a finite number >= 0, got {duration}")
  seg = params.segment_seconds
  if params.mode == "full" or duration <= seg:
    return [(0.0, float(duration))]
  n_full = int(np.floor(duration / seg + 1e-9))
  bounds = [(i * seg, (i + 1) * seg) for i in range(n_full)]
  rest = duration - n_full * seg
  if rest > 1e-9 and rest >= params.min_last_segment - 1e-9:
    bounds.append((n_full * seg, float(duration)))
  return bounds


def bandpass(wave: np.ndarray, sample_rate: int, low: float, high: float,
             order: int = 4) -> np.ndarray:
  """Zero-phase Butterworth band-pass (sosfiltfilt); `high` is clipped below Nyquist.

  The mean (below any low edge anyway) is removed first and the signal is zero-padded by 0.25 s:
  scipy's default odd extension makes a clip that starts or ends abruptly ring at the low edge,
  which would paint the lowest spectrogram rows.
  """
  high = min(high, _NYQUIST_MARGIN * sample_rate / 2)
  if not 0 < low < high:
    raise ValueError(f"band-pass needs 0 < low < high, got {low}, {high} at {sample_rate} Hz")
  wave = np.asarray(wave, np.float64)
  if len(wave) < 2:
    return wave.astype(np.float32)
  sos = scipy.signal.butter(order, [low, high], btype="bandpass", fs=sample_rate, output="sos")
  pad = sample_rate // 4
  padded = np.pad(wave - wave.mean(), pad)
  return scipy.signal.sosfiltfilt(sos, padded, padlen=0)[pad:pad + len(wave)].astype(np.float32)


def signal_power(wave: np.ndarray) -> float:
  """Mean power (mean square) of a waveform; 0 for an empty one."""
  return float(np.mean(np.square(wave, dtype=np.float64))) if len(wave) else 0.0


def white_noise(num_samples: int, power: float, rng: np.random.Generator) -> np.ndarray:
  """Gaussian white noise with the given mean power."""
  return (rng.standard_normal(num_samples) * np.sqrt(power)).astype(np.float32)


def pad_segment(wave: np.ndarray, num_samples: int, pad: str, snr: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
  """Pads `wave` at the end to num_samples; returns (padded, noise clip or None).

  pad="noise": the padding is the tail of a white-noise clip of num_samples whose power is the
  signal's own power / snr; the whole clip is returned so the spectral gate can use it as the
  noise reference (what the paper injects is what it then removes). pad="zeros": zero padding.
  """
  missing = num_samples - len(wave)
  if missing <= 0:
    return np.asarray(wave, np.float32), None
  if pad == "zeros":
    return np.pad(wave, (0, missing)).astype(np.float32), None
  noise = white_noise(num_samples, signal_power(wave) / snr, rng)
  return np.concatenate([wave, noise[len(wave):]]).astype(np.float32), noise


@functools.lru_cache(maxsize=8)
def hann(n: int) -> np.ndarray:
  """Periodic Hann window of length n (float32): the DFT-even window STFTs use."""
  return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)


def stft(wave: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
  """Complex64 STFT [1 + n_fft // 2, frames] (periodic Hann, centred frames), row 0 = 0 Hz.

  The wave is zero-padded by n_fft // 2 on both sides and framed every hop_length samples, so
  frame t is centred on sample t * hop_length; frames = 1 + len(wave) // hop_length.
  """
  half = n_fft // 2
  padded = np.pad(np.asarray(wave, np.float32), half)
  if len(padded) < n_fft:
    padded = np.pad(padded, (0, n_fft - len(padded)))
  frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]
  return scipy.fft.rfft(frames * hann(n_fft), axis=-1).T.astype(np.complex64)


def istft(spec: np.ndarray, n_fft: int, hop_length: int, length: int) -> np.ndarray:
  """Inverse of `stft` by weighted overlap-add: float32 wave of `length` samples.

  Each frame's inverse FFT is windowed again and the sum is divided by the summed squared window
  (the least-squares inverse), so istft(stft(x)) == x up to rounding wherever a window covers x.
  """
  half = n_fft // 2
  window = hann(n_fft).astype(np.float64)
  n_frames = min(spec.shape[1], -(-(length + 2 * half) // hop_length))
  frames = scipy.fft.irfft(np.asarray(spec[:, :n_frames], np.complex128).T, n=n_fft, axis=-1)
  total = n_fft + hop_length * (n_frames - 1)
  out, weight = np.zeros(total), np.zeros(total)
  for t in range(n_frames):
    out[t * hop_length:t * hop_length + n_fft] += frames[t] * window
    weight[t * hop_length:t * hop_length + n_fft] += window ** 2
  covered = weight > np.finfo(np.float32).tiny
  out[covered] /= weight[covered]
  out = out[half:half + length]
  return np.pad(out, (0, length - len(out))).astype(np.float32)


def _db(power: np.ndarray, floor_db: float) -> np.ndarray:
  """10 log10 power, floored at exactly floor_db (clipped after the log, not before)."""
  tiny = np.asarray(10.0 ** (floor_db / 10.0 - 1.0), power.dtype)
  return np.maximum(10.0 * np.log10(np.maximum(power, tiny)), np.asarray(floor_db, power.dtype))


def _power(spec: np.ndarray) -> np.ndarray:
  return spec.real ** 2 + spec.imag ** 2


def power_db(spec: np.ndarray, db_limit: float) -> np.ndarray:
  """10 log10 |spec|^2 on the fixed absolute scale (ref 1), clipped to [-db_limit, db_limit]."""
  with np.errstate(over="ignore"):  # a power beyond float32 is inf, then clipped to the ceiling
    return np.minimum(_db(_power(spec), -db_limit), db_limit)


def smoothing_filter(n_freq: int = 2, n_time: int = 4) -> np.ndarray:
  """Triangular [2 n_freq + 1, 2 n_time + 1] kernel (sum 1) that smooths the gate's mask."""
  return np.outer(_triangle(n_freq), _triangle(n_time))


def _triangle(n: int) -> np.ndarray:
  tri = 1.0 - np.abs(np.arange(-n, n + 1)) / (n + 1)
  return tri / tri.sum()


@dataclasses.dataclass(frozen=True)
class GateStages:
  """Intermediate results of `spectral_gate_stages` (the paper's Figs. 8-11)."""

  signal_db: np.ndarray  # [F, T] dB of the input (Fig. 8)
  noise_mean_db: np.ndarray  # [F] (Fig. 9 left)
  noise_std_db: np.ndarray  # [F]
  threshold_db: np.ndarray  # [F] noise threshold per frequency
  smoothing_filter: np.ndarray  # (Fig. 9 right)
  mask: np.ndarray  # [F, T] smoothed mask in [0, 1], 1 = kept
  masked_db: np.ndarray  # [F, T] dB of the masked STFT (Fig. 10)
  recovered: np.ndarray  # waveform from the inverse STFT of the masked STFT
  recovered_db: np.ndarray  # [F, T] dB of the recovered waveform (Fig. 11)


def _gate(wave: np.ndarray, n_fft: int, hop_length: int, noise: np.ndarray | None, n_std: float,
          quiet_fraction: float) -> tuple[np.ndarray, ...]:
  """STFT, its dB, noise mean / std / threshold per frequency, and the smoothed mask."""
  spec = stft(wave, n_fft, hop_length)
  power = _power(spec)
  signal_db = _db(power, _GATE_FLOOR_DB)
  if noise is not None:
    noise_db = _db(_power(stft(noise, n_fft, hop_length)), _GATE_FLOOR_DB)
  else:
    n_quiet = max(1, int(round(quiet_fraction * spec.shape[1])))
    quiet = np.argsort(power.mean(axis=0), kind="stable")[:n_quiet]
    noise_db = signal_db[:, quiet]
  mean, std = noise_db.mean(axis=1), noise_db.std(axis=1)
  threshold = mean + n_std * std
  keep = (signal_db > threshold[:, None]).astype(np.float32)
  # The smoothing kernel is separable: two 1-D passes instead of one 2-D convolution.
  mask = scipy.ndimage.convolve1d(keep, _triangle(2), axis=0, mode="nearest")
  mask = scipy.ndimage.convolve1d(mask, _triangle(4), axis=1, mode="nearest")
  return spec, signal_db, mean, std, threshold, mask


def spectral_gate_stages(wave: np.ndarray, n_fft: int, hop_length: int,
                         noise: np.ndarray | None = None, n_std: float = 1.5,
                         quiet_fraction: float = 0.2) -> GateStages:
  """Spectral gating: keeps the time-frequency bins louder than the noise threshold.

  The noise statistics (mean and std of dB per frequency) come from `noise` (a noise-only clip)
  or, without one, from the quietest `quiet_fraction` of the signal's frames. threshold = mean +
  n_std * std; the 0/1 mask (bin above threshold) is smoothed by `smoothing_filter()`, multiplied
  into the STFT, and the waveform is recovered by the inverse STFT.
  """
  wave = np.asarray(wave, np.float32)
  spec, signal_db, mean, std, threshold, mask = _gate(wave, n_fft, hop_length, noise, n_std,
                                                      quiet_fraction)
  masked = spec * mask
  recovered = istft(masked, n_fft, hop_length, len(wave))
  return GateStages(signal_db=signal_db, noise_mean_db=mean, noise_std_db=std,
                    threshold_db=threshold, smoothing_filter=smoothing_filter(), mask=mask,
                    masked_db=_db(_power(masked), _GATE_FLOOR_DB), recovered=recovered,
                    recovered_db=_db(_power(stft(recovered, n_fft, hop_length)), _GATE_FLOOR_DB))


def spectral_gate(wave: np.ndarray, n_fft: int, hop_length: int, noise: np.ndarray | None = None,
                  n_std: float = 1.5, quiet_fraction: float = 0.2) -> np.ndarray:
  """Denoised waveform (same length); see `spectral_gate_stages`."""
  wave = np.asarray(wave, np.float32)
  spec, *_, mask = _gate(wave, n_fft, hop_length, noise, n_std, quiet_fraction)
  return istft(spec * mask, n_fft, hop_length, len(wave))


def crop_top(spec: np.ndarray, fraction: float) -> np.ndarray:
  """Drops the top `fraction` of the rows (highest frequencies) of a [F, T] spectrogram."""
  keep = max(1, int(round(spec.shape[0] * (1.0 - fraction))))
  return spec[:keep]


@functools.lru_cache(maxsize=64)
def _area_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
  """Indices and weights [n_out, taps] of area (box) resampling along one axis.

  Each output sample averages the span of input it covers. Stored as a few taps per output, not a
  dense matrix, so resizing needs no BLAS call (multi-threaded BLAS stalls on shared CPUs).
  """
  edges = np.linspace(0.0, n_in, n_out + 1)
  j = np.arange(n_in)[None, :]
  overlap = np.minimum(edges[1:, None], j + 1) - np.maximum(edges[:-1, None], j)
  weights = np.clip(overlap, 0.0, None)
  weights /= weights.sum(axis=1, keepdims=True)
  taps = int((weights > 0).sum(axis=1).max())
  index = np.argsort(weights <= 0, axis=1, kind="stable")[:, :taps]  # nonzero columns first
  return index, np.take_along_axis(weights, index, axis=1)


def resize(spec: np.ndarray, height: int, width: int) -> np.ndarray:
  """Area resampling of a [F, T] array to [height, width] (no aliasing when shrinking).

  Computed in float64 so that a constant input (e.g. silence at -1) stays exactly constant.
  """
  index, weights = _area_taps(spec.shape[0], height)
  spec = np.einsum("hk,hkt->ht", weights, np.asarray(spec, np.float64)[index])
  index, weights = _area_taps(spec.shape[1], width)
  return np.einsum("wk,hwk->hw", weights, spec[:, index]).astype(np.float32)


def spectrogram(wave: np.ndarray, params: AudioParams,
                noise: np.ndarray | None = None) -> np.ndarray:
  """float32 [height, width] in [-1, 1] of one (already padded) segment; row 0 = lowest frequency.

  `noise` is the noise reference for the gate (see `pad_segment`); None estimates it.
  """
  if params.denoise:
    wave = spectral_gate(wave, params.n_fft, params.hop_length, noise)
  spec = crop_top(stft(wave, params.n_fft, params.hop_length), params.top_crop)
  scaled = resize(power_db(spec, params.db_limit) / params.db_limit, params.height, params.width)
  return np.clip(scaled, np.float32(-1.0), np.float32(1.0))


def spectrogram_segments(wave: np.ndarray, params: AudioParams,
                         rng: np.random.Generator) -> np.ndarray:
  """float32 [n_segments, height, width] in [-1, 1] for one utterance sampled at params.sample_rate.

  `rng` draws the padding noise, so the result is deterministic for a given generator state.
  Any finite wave gives finite values (samples beyond +-MAX_AMPLITUDE are clipped first).
  """
  sr = params.sample_rate
  wave = np.clip(np.asarray(wave, np.float32), -MAX_AMPLITUDE, MAX_AMPLITUDE)
  wave = bandpass(wave, sr, params.bandpass_low, params.bandpass_high)
  seg_len = int(round(params.segment_seconds * sr))
  out = []
  for start, end in segment_bounds(len(wave) / sr, params):
    seg = wave[int(round(start * sr)):int(round(end * sr))]
    seg, noise = pad_segment(seg, seg_len, params.pad, params.pad_snr, rng)
    out.append(spectrogram(seg, params, noise))
  return np.stack(out).astype(np.float32)
