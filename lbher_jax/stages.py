"""Draws the audio preprocessing stages of the paper's Figs. 5-11 for one file, as one PNG.

  python -m lbher_jax.stages FILE --out PNG [--sample-rate SR] [--start S --end E]

Waveform, its spectrogram, the injected noise (white, at the configured SNR), the spectrogram with
noise, the gate's noise threshold per frequency and smoothing filter, the masked spectrogram and the
spectrogram recovered by the inverse STFT; all computed by `features.audio`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lbher_jax import media  # noqa: E402
from lbher_jax.features import audio  # noqa: E402


def draw_stages(wave: np.ndarray, params: audio.AudioParams, out: Path, title: str,
                seed: int = 0) -> None:
  """Writes the Figs. 5-11 panels for `wave` (sampled at params.sample_rate) to `out`."""
  sr, n_fft, hop, limit = params.sample_rate, params.n_fft, params.hop_length, params.db_limit
  wave = audio.bandpass(wave, sr, params.bandpass_low, params.bandpass_high)
  rng = np.random.default_rng(seed)
  noise = audio.white_noise(len(wave), audio.signal_power(wave) / params.pad_snr, rng)
  noisy = wave + noise
  stages = audio.spectral_gate_stages(noisy, n_fft, hop, noise=noise)
  spectrograms = {
      "Fig. 6: spectrogram": audio.power_db(audio.stft(wave, n_fft, hop), limit),
      f"Fig. 8: spectrogram with noise (SNR {params.pad_snr:g})": stages.signal_db,
      "Fig. 10: masked spectrogram": stages.masked_db,
      "Fig. 11: recovered spectrogram": stages.recovered_db,
  }
  time = np.arange(len(wave)) / sr
  extent = (0.0, len(wave) / sr, 0.0, sr / 2000)  # seconds, kHz
  fig, axes = plt.subplots(4, 2, figsize=(13, 13), constrained_layout=True)
  axes = axes.ravel()
  axes[0].plot(time, wave, lw=0.5)
  axes[0].set(title="Fig. 5: waveform", xlabel="s")
  axes[2].plot(time, noise, lw=0.5, color="tab:gray")
  axes[2].set(title="Fig. 7: noise signal", xlabel="s")
  for ax, (name, db) in zip(axes[[1, 3, 5, 7]], spectrograms.items()):
    image = ax.imshow(np.clip(db, -limit, limit), origin="lower", aspect="auto", extent=extent,
                      vmin=-limit, vmax=limit, cmap="magma")
    ax.set(title=name, xlabel="s", ylabel="kHz")
  fig.colorbar(image, ax=axes[[1, 3, 5, 7]], label="dB", shrink=0.6)
  freqs = np.arange(len(stages.threshold_db)) * sr / n_fft / 1000
  axes[4].plot(freqs, stages.noise_mean_db, label="mean power of noise")
  axes[4].plot(freqs, stages.noise_std_db, label="std of noise power")
  axes[4].plot(freqs, stages.threshold_db, label="noise threshold")
  axes[4].set(title="Fig. 9: threshold for mask", xlabel="kHz", ylabel="dB")
  axes[4].legend()
  axes[6].imshow(stages.smoothing_filter, cmap="Blues")
  axes[6].set(title="Fig. 9: filter for smoothing the mask", xlabel="time frames",
              ylabel="frequency bins")
  fig.suptitle(title)
  fig.savefig(out, dpi=80)
  plt.close(fig)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("file", type=Path, help="any audio or video file ffmpeg can read")
  parser.add_argument("--out", type=Path, required=True, help="PNG to write")
  parser.add_argument("--sample-rate", type=int, default=audio.AudioParams.sample_rate)
  parser.add_argument("--start", type=float, default=None, help="seconds")
  parser.add_argument("--end", type=float, default=None, help="seconds")
  args = parser.parse_args(argv)
  try:
    wave = media.decode_audio(args.file, args.sample_rate, args.start, args.end)
    if len(wave) == 0:
      raise media.MediaError(args.file, "no audio samples in the requested window")
    params = audio.AudioParams(sample_rate=args.sample_rate)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    draw_stages(wave, params, args.out, title=args.file.name)
  except (media.MediaError, ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
