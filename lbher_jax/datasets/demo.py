"""The built-in demo corpus: synthetic speakers whose face and voice both show the emotion.

Real H.264/AAC .mp4 files, generated on first use into a cache directory and reused afterwards, so
a newcomer's first command exercises the whole pipeline (ffmpeg decoding, spectrograms, face crops,
contrastive pre-training, fine-tuning) in CPU minutes. The emotion cues are the same for every
speaker, while speakers differ in pitch, timbre, face geometry and colours, so a model trained on
some speakers recognises the others. The mouth opens with the loudness of the voice frame by frame,
which gives the audio-visual correspondence that contrastive pre-training needs.

Layout: `root/<speaker>/<speaker>_<label>_<k>.mp4` and `root/demo.json` (the generation parameters,
the speakers and the clips).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from absl import logging
import cv2
import imageio_ffmpeg
import numpy as np
from scipy import signal
from scipy.io import wavfile

from lbher_jax import LABEL_TO_ID, LABELS
from lbher_jax.datasets import CorpusError, Utterance

VERSION = 2  # Bump whenever the generated content changes, so stale caches no longer match.
WIDTH = 128
HEIGHT = 128
FPS = 25
SAMPLE_RATE = 16000
_SAMPLES_PER_FRAME = SAMPLE_RATE // FPS
_MAX_HARMONIC_HZ = 7600.0  # below Nyquist (8 kHz), so no harmonic aliases
_MAX_HARMONICS = 48  # higher ones are too weak to matter for all but the lowest voices
_SHIFT = 4  # cv2 fractional bits: coordinates are drawn with 1/16-pixel precision
_WORKERS = 2  # threads: numpy, cv2 and the ffmpeg processes do the work outside the GIL


@dataclasses.dataclass(frozen=True)
class _Emotion:
  """How one emotion sounds and looks; face sizes are fractions of the head's half-width."""

  # Voice.
  pitch: float  # f0 relative to the speaker's base
  syllable_slope: float  # f0 change across one syllable (rising > 0)
  utterance_slope: float  # f0 change across the whole clip
  accent_pitch: float  # f0 raise on a stressed syllable
  stress: str  # which syllables are stressed: 'random' or 'alternate'
  stress_depth: float  # how much softer an unstressed syllable is
  fade: float  # loudness declination across the clip
  loudness: float  # RMS of the voiced sound
  rate: float  # syllables per second
  voiced: float  # voiced fraction of each syllable slot
  attack: float  # syllable envelope sin(pi u) ** attack: small = abrupt onsets
  tilt: float  # harmonic k has amplitude k ** -tilt: small = bright
  breath: float  # aspiration noise relative to the voice
  # Face.
  mouth_width: float  # half-width
  mouth_curve: float  # corner lift: smile > 0, frown < 0
  mouth_open: float  # opening at full loudness
  lip: float  # lip thickness: thin when pressed
  brow_raise: float
  brow_inner: float  # downward shift of the inner brow ends
  brow_outer: float  # downward shift of the outer brow ends
  brow_arch: float
  brow_thickness: float
  eye_open: float  # visible fraction of the eye below the upper lid
  gaze: float  # downward shift of the irises, in eye heights
  head_drop: float  # downward shift of the head, in head half-heights
  bob: float  # head nod per unit loudness


EMOTIONS: dict[str, _Emotion] = {
    "happy": _Emotion(
        pitch=1.30, syllable_slope=0.20, utterance_slope=0.10, accent_pitch=0.07,
        stress="alternate", stress_depth=0.25, fade=0.05, loudness=0.13, rate=5.0, voiced=0.75,
        attack=0.6, tilt=1.15, breath=0.04,
        mouth_width=0.46, mouth_curve=0.17, mouth_open=0.26, lip=0.075, brow_raise=0.06,
        brow_inner=0.0, brow_outer=0.0, brow_arch=0.05, brow_thickness=0.08, eye_open=1.0,
        gaze=0.0, head_drop=0.0, bob=0.05),
    "anger": _Emotion(
        pitch=1.20, syllable_slope=-0.14, utterance_slope=-0.06, accent_pitch=0.12,
        stress="random", stress_depth=0.5, fade=0.05, loudness=0.21, rate=5.5, voiced=0.8,
        attack=0.35, tilt=0.7, breath=0.03,
        mouth_width=0.30, mouth_curve=-0.03, mouth_open=0.20, lip=0.045, brow_raise=-0.05,
        brow_inner=0.10, brow_outer=-0.03, brow_arch=0.0, brow_thickness=0.11, eye_open=1.0,
        gaze=0.0, head_drop=0.0, bob=0.07),
    "sad": _Emotion(
        pitch=0.82, syllable_slope=-0.05, utterance_slope=-0.20, accent_pitch=0.0,
        stress="random", stress_depth=0.1, fade=0.35, loudness=0.035, rate=2.5, voiced=0.65,
        attack=1.3, tilt=2.1, breath=0.08,
        mouth_width=0.34, mouth_curve=-0.14, mouth_open=0.13, lip=0.075, brow_raise=0.02,
        brow_inner=-0.11, brow_outer=0.05, brow_arch=0.0, brow_thickness=0.08, eye_open=0.45,
        gaze=0.35, head_drop=0.06, bob=0.015),
    "neutral": _Emotion(
        pitch=1.0, syllable_slope=0.0, utterance_slope=-0.04, accent_pitch=0.03,
        stress="random", stress_depth=0.12, fade=0.1, loudness=0.08, rate=3.5, voiced=0.72,
        attack=0.7, tilt=1.5, breath=0.06,
        mouth_width=0.37, mouth_curve=0.0, mouth_open=0.18, lip=0.075, brow_raise=0.0,
        brow_inner=0.0, brow_outer=0.0, brow_arch=0.02, brow_thickness=0.08, eye_open=0.75,
        gaze=0.0, head_drop=0.0, bob=0.025),
}

# Vowel formants (Hz, adult male); a speaker's vocal tract scales them.
_VOWELS = np.array([
    [730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410],
], np.float32)
_FORMANT_GAIN = np.array([1.0, 0.6, 0.35], np.float32)
_FORMANT_WIDTH = np.array([90.0, 120.0, 160.0], np.float32)

_SKIN = [(255, 224, 196), (241, 194, 150), (224, 172, 105), (198, 134, 66), (141, 85, 36),
         (96, 60, 30)]
_HAIR = [(30, 20, 15), (80, 50, 30), (150, 110, 60), (200, 170, 110), (70, 70, 70)]
_IRIS = [(70, 45, 25), (60, 100, 140), (70, 110, 70), (100, 80, 50)]


@dataclasses.dataclass(frozen=True)
class _Speaker:
  """One synthetic speaker's voice and face."""

  name: str
  sex: str
  f0: float  # base pitch (Hz)
  tract: float  # formant scale
  tilt: float  # added to the emotion's spectral tilt
  gain: float  # loudness scale
  room_noise: float  # RMS of the background noise
  center: tuple[float, float]  # head centre (x, y) in pixels
  head: tuple[float, float]  # head half-width, half-height in pixels
  skin: tuple[int, int, int]
  hair: tuple[int, int, int]
  iris: tuple[int, int, int]
  background: tuple[int, int, int]
  shirt: tuple[int, int, int]
  sensor_noise: float  # standard deviation of the per-pixel video noise

  def mouth_box(self) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) pixels that hold the mouth in every clip: for tests and inspection."""
    a, b = self.head
    x, y = self.center[0], self.center[1] + 0.5 * b
    return (int(x - 0.5 * a - 3), int(y - 0.35 * a - 3), int(np.ceil(x + 0.5 * a + 3)),
            int(np.ceil(y + 0.06 * b + 0.4 * a + 3)))


def default_root(*, seed: int = 0, num_speakers: int = 16, clips_per_emotion: int = 3,
                 min_duration: float = 1.5, max_duration: float = 6.0) -> Path:
  """Where the demo corpus of these generator settings lives when no root is configured.

  One folder per setting under $LBHER_CACHE (or ~/.cache/lbher_jax)/demo-vVERSION/, so corpora
  made with different settings (configs/demo.py and its :tiny variant) sit side by side.
  """
  base = os.environ.get("LBHER_CACHE") or Path.home() / ".cache" / "lbher_jax"
  name = (f"{num_speakers}spk-{clips_per_emotion}clips-seed{seed}-"
          f"{float(min_duration):g}-{float(max_duration):g}s")
  return Path(base) / f"demo-v{VERSION}" / name


def _vary(rng: np.random.Generator, colour, spread: float) -> tuple[int, int, int]:
  return tuple(int(np.clip(c + rng.uniform(-spread, spread), 0, 255)) for c in colour)


def _make_speaker(seed: int, index: int) -> _Speaker:
  rng = np.random.default_rng([seed, 0, index])
  female = index % 2 == 0
  a = rng.uniform(27.0, 33.0)
  b = a * rng.uniform(1.2, 1.35)
  return _Speaker(
      name=f"spk{index + 1:02d}",
      sex="female" if female else "male",
      f0=rng.uniform(185.0, 240.0) if female else rng.uniform(98.0, 135.0),
      tract=rng.uniform(1.1, 1.2) if female else rng.uniform(0.92, 1.02),
      tilt=rng.uniform(-0.2, 0.2),
      gain=rng.uniform(0.85, 1.15),
      room_noise=rng.uniform(0.001, 0.003),
      # Brows to chin centred in the frame, so a central crop holds the whole expression.
      center=(WIDTH / 2 + rng.uniform(-6.0, 6.0), HEIGHT / 2 - 0.1 * b + rng.uniform(-4.0, 3.0)),
      head=(a, b),
      skin=_vary(rng, _SKIN[rng.integers(len(_SKIN))], 10),
      hair=_vary(rng, _HAIR[rng.integers(len(_HAIR))], 10),
      iris=_vary(rng, _IRIS[rng.integers(len(_IRIS))], 10),
      background=tuple(int(c) for c in rng.integers(60, 200, 3)),
      shirt=tuple(int(c) for c in rng.integers(20, 235, 3)),
      sensor_noise=rng.uniform(2.0, 5.0),
  )


@dataclasses.dataclass(frozen=True)
class _Clip:
  speaker: _Speaker
  label: str
  index: int
  duration: float  # a whole number of video frames
  seed: tuple[int, ...]

  @property
  def id(self) -> str:
    return f"{self.speaker.name}_{self.label}_{self.index}"

  @property
  def file(self) -> str:
    return f"{self.speaker.name}/{self.id}.mp4"


def _plan(params: dict) -> tuple[list[_Speaker], list[_Clip]]:
  """The speakers and clips that `params` describe (cheap: nothing is synthesised)."""
  speakers = [_make_speaker(params["seed"], i) for i in range(params["num_speakers"])]
  clips = []
  for i, speaker in enumerate(speakers):
    for label in LABELS:
      for k in range(params["clips_per_emotion"]):
        seed = (params["seed"], 1, i, LABEL_TO_ID[label], k)
        seconds = np.random.default_rng(seed + (0,)).uniform(params["min_duration"],
                                                             params["max_duration"])
        clips.append(_Clip(speaker, label, k, round(seconds * FPS) / FPS, seed))
  return speakers, clips


# ---------------------------------------------------------------------------------------------
# Voice.


def _syllables(em: _Emotion, duration: float, rate: float, rng: np.random.Generator):
  """(start, end) seconds of each voiced syllable, with pauses between some words."""
  t, end, out = rng.uniform(0.08, 0.2), duration - rng.uniform(0.1, 0.2), []
  while True:
    slot = rng.uniform(0.75, 1.25) / rate
    if t + slot * em.voiced > end:
      break
    out.append((t, t + slot * em.voiced))
    t += slot
    if rng.random() < 0.15:
      t += rng.uniform(0.5, 1.0) / rate
  if not out:  # too short for a whole slot: one syllable fills what there is
    out.append((t, end))
  return out


def _voice(sp: _Speaker, em: _Emotion, duration: float, rng: np.random.Generator):
  """Returns the waveform (float32, with background noise) and its loudness envelope.

  A harmonic sound whose pitch contour, loudness, tempo and spectral tilt follow the emotion, cut
  into syllables with a vowel each; the envelope (1 = a stressed syllable's peak) drives the mouth.
  """
  n = round(duration * SAMPLE_RATE)
  f0_base = sp.f0 * em.pitch * rng.uniform(0.95, 1.05)
  rate = em.rate * rng.uniform(0.9, 1.1)
  syllables = _syllables(em, duration, rate, rng)
  env = np.zeros(n, np.float32)
  f0 = np.full(n, f0_base, np.float32)
  vowel = np.zeros(n, np.int64)
  first_stress = rng.integers(2)
  for i, (start, end) in enumerate(syllables):
    s0, s1 = round(start * SAMPLE_RATE), min(round(end * SAMPLE_RATE), n)
    u = np.linspace(0.0, 1.0, s1 - s0, dtype=np.float32)
    p = 0.5 * (start + end) / duration
    stressed = (i + first_stress) % 2 == 0 if em.stress == "alternate" else rng.random() < 0.4
    level = (1.0 - em.stress_depth * (not stressed)) * (1.0 - em.fade * p)
    env[s0:s1] = level * np.sin(np.pi * u).clip(0.0) ** em.attack
    factor = (1.0 + em.syllable_slope * (u - 0.5) + em.utterance_slope * (p - 0.5)
              + em.accent_pitch * stressed + rng.normal(0.0, 0.015))
    f0[s0:s1] = f0_base * factor
    vowel[s0:] = rng.integers(len(_VOWELS))
  t = np.arange(n) / SAMPLE_RATE
  f0 *= (1.0 + 0.008 * np.sin(2 * np.pi * 5.5 * t + rng.uniform(0, 2 * np.pi))).astype(np.float32)

  # Harmonic amplitudes per 5 ms block: the vowel's formants times the emotion's spectral tilt.
  hop = 80  # divides a video frame's samples, hence n
  f0_blocks = f0.reshape(-1, hop).mean(1)
  count = min(_MAX_HARMONICS, int(_MAX_HARMONIC_HZ / f0_blocks.min()))
  k = np.arange(1, count + 1, dtype=np.float32)[:, None]
  freq = k * f0_blocks  # [K, C]
  peaks = (_VOWELS[vowel[hop // 2 :: hop]] * sp.tract).T[:, None, :]  # [3, 1, C]
  shape = np.exp(-0.5 * ((freq - peaks) / _FORMANT_WIDTH[:, None, None]) ** 2)
  gain = 0.15 + np.einsum("f,fkc->kc", _FORMANT_GAIN, shape)
  amp = k ** -(em.tilt + sp.tilt) * gain * (freq < _MAX_HARMONIC_HZ)
  cycles = np.cumsum(f0, dtype=np.float64) / SAMPLE_RATE
  cycles = k.astype(np.float64) * cycles + rng.uniform(0.0, 1.0, (count, 1))
  cycles -= np.floor(cycles)  # the fraction keeps float32 sines exact (np.mod is slow)
  waves = np.sin(2 * np.pi * cycles.astype(np.float32)).reshape(count, -1, hop)
  voiced = np.einsum("kch,kc->ch", waves, amp).ravel()
  breath = signal.lfilter([1.0, -0.9], [1.0], rng.standard_normal(n))  # aspiration: high-passed
  voiced = voiced / np.sqrt(np.mean(voiced**2)) + em.breath * breath / np.std(breath)
  voice = voiced * env * (em.loudness * sp.gain * rng.uniform(0.9, 1.1))
  room = signal.lfilter([1.0], [1.0, -0.95], rng.standard_normal(n))  # mostly low rumble
  noise = room / np.std(room) + 0.3 * rng.standard_normal(n)
  wave = voice + sp.room_noise * noise / np.std(noise)
  return np.clip(wave, -0.99, 0.99).astype(np.float32), env


# ---------------------------------------------------------------------------------------------
# Face.


def _pt(x: float, y: float) -> tuple[int, int]:
  return round(x * (1 << _SHIFT)), round(y * (1 << _SHIFT))


def _fixed(points) -> np.ndarray:
  """[P, 2] (x, y) pixels as cv2's fixed-point int32."""
  return np.round(np.asarray(points, np.float32) * (1 << _SHIFT)).astype(np.int32)


def _curve(img, points, colour, thickness: int):
  cv2.polylines(img, [_fixed(points)], False, colour, thickness, cv2.LINE_AA, _SHIFT)


def _ellipse(img, centre, axes, colour, start=0, end=360, thickness=-1):
  cv2.ellipse(img, _pt(*centre), _pt(*axes), 0, start, end, colour, thickness, cv2.LINE_AA,
              _SHIFT)


def _scene(sp: _Speaker) -> np.ndarray:
  """The static part of every frame: background gradient and shoulders."""
  ramp = np.linspace(0.85, 1.1, HEIGHT, dtype=np.float32)[:, None, None]
  img = np.clip(np.array(sp.background, np.float32) * ramp, 0, 255)
  img = np.broadcast_to(img, (HEIGHT, WIDTH, 3)).astype(np.uint8).copy()
  cx, a = sp.center[0], sp.head[0]
  _ellipse(img, (cx, HEIGHT + 0.4 * a), (1.9 * a, 1.3 * a), sp.shirt)
  return img


def _draw_face(img, sp: _Speaker, em: _Emotion, strength: float, cx: float, cy: float,
               opening: float):
  """Draws the head at (cx, cy) with the emotion's expression and the mouth opened by `opening`."""
  a, b = sp.head
  skin, tone = sp.skin, np.array(sp.skin, np.float32)
  shade = tuple(int(c) for c in tone * 0.8)
  socket = tuple(int(c) for c in tone * 0.88)
  lips = tuple(int(c) for c in tone * np.array([0.75, 0.45, 0.48]))
  _ellipse(img, (cx, cy + 1.05 * b), (0.38 * a, 0.5 * b), shade)  # neck
  _ellipse(img, (cx, cy - 0.08 * b), (1.08 * a, 1.02 * b), sp.hair)
  for side in (-1, 1):
    _ellipse(img, (cx + side * a, cy + 0.02 * b), (0.14 * a, 0.24 * b), skin)
  _ellipse(img, (cx, cy), (a, b), skin)
  _ellipse(img, (cx, cy - 0.5 * b), (1.0 * a, 0.52 * b), sp.hair, 180, 360)

  eye_y = cy - 0.12 * b
  eye_w, eye_h = 0.2 * a, 0.13 * a
  eye_open = 0.75 + strength * (em.eye_open - 0.75)
  for side in (-1, 1):
    ex = cx + side * 0.38 * a
    _ellipse(img, (ex, eye_y - 0.1 * eye_h), (1.5 * eye_w, 1.9 * eye_h), socket)
    _ellipse(img, (ex, eye_y), (eye_w, eye_h), (236, 236, 230))
    iris_y = eye_y + em.gaze * eye_h
    cv2.circle(img, _pt(ex, iris_y), round(0.75 * eye_h * (1 << _SHIFT)), sp.iris, -1,
               cv2.LINE_AA, _SHIFT)
    cv2.circle(img, _pt(ex, iris_y), round(0.35 * eye_h * (1 << _SHIFT)), (15, 10, 10), -1,
               cv2.LINE_AA, _SHIFT)
    lid = eye_y + eye_h - 2 * eye_h * eye_open  # upper lid edge
    cv2.rectangle(img, _pt(ex - eye_w - 1, eye_y - eye_h - 2), _pt(ex + eye_w + 1, lid), socket,
                  -1, cv2.LINE_AA, _SHIFT)
    _curve(img, [(ex - eye_w, lid + 0.3), (ex, lid - 0.15 * eye_h), (ex + eye_w, lid + 0.3)],
           (40, 25, 20), 1)

    inner, outer = ex - side * 0.7 * eye_w, ex + side * 1.15 * eye_w
    brow_y = eye_y - 0.3 * a - strength * em.brow_raise * a
    _curve(img, [(inner, brow_y + strength * em.brow_inner * a),
                 ((inner + outer) / 2, brow_y - strength * em.brow_arch * a),
                 (outer, brow_y + strength * em.brow_outer * a)],
           sp.hair, max(1, round(em.brow_thickness * a)))

  _curve(img, [(cx, eye_y + 0.05 * b), (cx - 0.04 * a, cy + 0.18 * b),
               (cx + 0.08 * a, cy + 0.22 * b)], shade, 1)

  mouth_y, half = cy + 0.5 * b, em.mouth_width * a
  curve = strength * em.mouth_curve * a
  x = np.linspace(-1.0, 1.0, 17)
  middle = mouth_y - curve * (x**2 - 0.5)  # corners lifted by `curve` around the mouth centre
  gap = 0.5 * opening * (1.0 - x**2)
  upper = np.stack([cx + half * x, middle - gap], 1)
  lower = np.stack([cx + half * x, middle + gap], 1)
  thickness = max(1, round(em.lip * a))
  _curve(img, upper, lips, thickness)
  _curve(img, lower, lips, thickness + 1)
  cv2.fillPoly(img, [_fixed(np.concatenate([upper, lower[::-1]]))], (35, 8, 12), cv2.LINE_AA,
               _SHIFT)  # over the lips, so the opening shows in full


def _frames(sp: _Speaker, em: _Emotion, env: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Renders uint8 [n, H, W, 3] frames; frame i shows the loudness of audio frame i."""
  loud = env.reshape(-1, _SAMPLES_PER_FRAME).mean(1)
  loud = loud / max(loud.max(), 1e-6)
  strength = rng.uniform(0.8, 1.1)
  dx, dy = rng.uniform(-2.0, 2.0, 2)
  brightness = rng.uniform(0.9, 1.1)
  scene = _scene(sp)
  # Sensor noise: a random window of one pool per frame, much cheaper than fresh noise.
  pixels = HEIGHT * WIDTH * 3
  noise_pool = rng.standard_normal(2 * pixels, dtype=np.float32) * sp.sensor_noise
  a, b = sp.head
  cx, cy = sp.center[0] + dx, sp.center[1] + dy + em.head_drop * b
  out = np.empty((len(loud), HEIGHT, WIDTH, 3), np.uint8)
  for i, level in enumerate(loud):
    img = scene.copy()
    _draw_face(img, sp, em, strength, cx, cy + em.bob * a * level, em.mouth_open * a * level**0.8)
    start = rng.integers(pixels)
    noise = noise_pool[start : start + pixels].reshape(img.shape)
    noisy = img.astype(np.float32) * brightness + noise
    out[i] = np.clip(noisy, 0, 255)
  return out


# ---------------------------------------------------------------------------------------------
# Files.


def _encode(frames: np.ndarray, wave: np.ndarray, path: Path):
  """Writes an H.264 + AAC .mp4; one encoder thread keeps the bytes the same run to run."""
  wav = path.with_suffix(".wav")
  wavfile.write(wav, SAMPLE_RATE, np.round(wave * 32767).astype(np.int16))
  cmd = [
      imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error",
      "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{WIDTH}x{HEIGHT}", "-r", str(FPS), "-i", "-",
      "-i", str(wav), "-map", "0:v:0", "-map", "1:a:0",
      "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
      "-threads", "1", "-c:a", "aac", "-b:a", "64k", "-ac", "1",
      "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", str(path),
  ]
  try:
    result = subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), capture_output=True,
                            check=False)
  finally:
    wav.unlink(missing_ok=True)
  if result.returncode != 0:
    message = result.stderr.decode(errors="replace").strip().splitlines() or ["no message"]
    raise CorpusError(f"{path}: ffmpeg failed to encode the demo clip: {message[-1]}")


def _make_clip(clip: _Clip, directory: Path):
  rng = np.random.default_rng(clip.seed)
  em = EMOTIONS[clip.label]
  wave, env = _voice(clip.speaker, em, clip.duration, rng)
  frames = _frames(clip.speaker, em, env, rng)
  _encode(frames, wave, directory / clip.file)


def _params(seed, num_speakers, clips_per_emotion, min_duration, max_duration) -> dict:
  if num_speakers < 1 or clips_per_emotion < 1:
    raise ValueError("demo corpus: num_speakers and clips_per_emotion must be at least 1, got "
                     f"{num_speakers} and {clips_per_emotion}")
  if not 0.5 <= min_duration <= max_duration:
    raise ValueError(f"demo corpus: need 0.5 <= min_duration <= max_duration, got {min_duration} "
                     f"and {max_duration}")
  return {"version": VERSION, "seed": int(seed), "num_speakers": int(num_speakers),
          "clips_per_emotion": int(clips_per_emotion), "min_duration": float(min_duration),
          "max_duration": float(max_duration), "width": WIDTH, "height": HEIGHT, "fps": FPS,
          "sample_rate": SAMPLE_RATE}


def _existing(root: Path, params: dict) -> bool:
  """True if `root` holds the corpus for `params`; raises if it holds anything else."""
  manifest = root / "demo.json"
  if not manifest.is_file():
    if root.is_dir() and any(root.iterdir()):
      raise CorpusError(f"{root}: not empty and has no demo.json, so it is not a demo corpus; "
                        "choose another data root")
    return False
  try:
    found = json.loads(manifest.read_text())["params"]
  except (ValueError, KeyError) as e:
    raise CorpusError(f"{manifest}: unreadable ({e}); delete {root} to regenerate") from e
  if found != params:
    diff = {k: (found.get(k), params.get(k)) for k in params.keys() | found.keys()
            if found.get(k) != params.get(k)}
    raise CorpusError(f"{manifest}: the demo corpus there was generated with other parameters "
                      f"(found, wanted): {diff}; delete it or choose another data root")
  return True


def ensure(root: str | Path, *, seed: int = 0, num_speakers: int = 16, clips_per_emotion: int = 3,
           min_duration: float = 1.5, max_duration: float = 6.0) -> Path:
  """Generates the demo corpus in `root` unless it is already there; returns `root`.

  Generation happens in a temporary sibling directory that is renamed into place when complete,
  so an interrupted run never leaves a corpus that looks finished. An existing corpus made with
  other parameters raises rather than being overwritten. The same parameters give the same files.
  """
  root = Path(root).expanduser().absolute()
  params = _params(seed, num_speakers, clips_per_emotion, min_duration, max_duration)
  if _existing(root, params):
    return root
  speakers, clips = _plan(params)
  root.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".partial", dir=root.parent))
  try:
    logging.info("Generating the demo corpus (%d speakers, %d clips) in %s", len(speakers),
                 len(clips), root)
    began = time.monotonic()
    for sp in speakers:
      (tmp / sp.name).mkdir()
    pool = concurrent.futures.ThreadPoolExecutor(_WORKERS)
    try:
      jobs = [pool.submit(_make_clip, clip, tmp) for clip in clips]
      for done, job in enumerate(concurrent.futures.as_completed(jobs), 1):
        job.result()
        if done % 20 == 0 or done == len(jobs):
          logging.info("demo corpus: %d/%d clips (%.0f s)", done, len(jobs),
                       time.monotonic() - began)
    finally:
      pool.shutdown(cancel_futures=True)  # after an error or Ctrl-C, stop rather than finish
    manifest = {
        "params": params,
        "speakers": {sp.name: dataclasses.asdict(sp) | {"mouth_box": sp.mouth_box()}
                     for sp in speakers},
        "clips": [{"id": c.id, "file": c.file, "label": c.label, "speaker": c.speaker.name,
                   "duration": c.duration} for c in clips],
        "total_duration": round(sum(c.duration for c in clips), 2),
    }
    (tmp / "demo.json").write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.chmod(0o755)  # mkdtemp makes it private; the corpus is ordinary data
    try:
      tmp.rename(root)  # atomic; also replaces an empty directory
    except OSError:
      if not _existing(root, params):  # another process finished first with the same corpus
        raise
    logging.info("Demo corpus ready in %s (%.0f s of media, made in %.0f s)", root,
                 manifest["total_duration"], time.monotonic() - began)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return root


def scan(root: str | Path | None = None, **options) -> tuple[list[Utterance], collections.Counter]:
  """Ensures the corpus exists (`options` go to `ensure`) and lists its clips, sorted by id.

  `root` None or "" means `default_root(**options)`. Nothing is ever left out, so the Counter is
  empty.
  """
  root = ensure(root or default_root(**options), **options)
  manifest = json.loads((root / "demo.json").read_text())
  utterances = []
  for clip in manifest["clips"]:
    path = root / clip["file"]
    if not path.is_file():
      raise CorpusError(f"{path}: demo clip is missing; delete {root} to regenerate the corpus")
    utterances.append(Utterance(id=clip["id"], video=path, audio=path, start=None, end=None,
                                label=clip["label"], speaker=clip["speaker"]))
  return sorted(utterances, key=lambda u: u.id), collections.Counter()


def read(root: str | Path | None = None, **options) -> list[Utterance]:
  """The clips of the demo corpus in `root` (generated there on first use)."""
  return scan(root, **options)[0]
