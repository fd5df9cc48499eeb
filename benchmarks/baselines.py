"""Classical baselines under the project's speaker-independent folds (issue 20).

Per clip: MFCC / log-mel statistics of the voice (mean and std over frames of 40 log-mel bands
and 20 MFCCs, 16 kHz, 25 ms Hann frames every 10 ms) and the pixels of the first face frame
(grayscale, 48x48). Each is a standardised multinomial logistic regression (scikit-learn) whose
C is chosen among 0.01, 0.1, 1 by a speaker-grouped inner cross-validation on the training
speakers only; the late fusion averages the two probability vectors. The outer folds are the
project's own (`data.splits.make_split`, protocol "speaker", `--num-folds`, one partition per
seed, as in `--mode sweep`), each model trained on all of a fold's training speakers, and the
predictions of all folds are pooled, so every clip is tested once per seed. The summary is the
mean over seeds with the sweep's Student-t interval.

  python benchmarks/baselines.py [--root ../shared/data/ravdess_fer_av] [--num-folds 6]
                                 [--seeds 0,1,2] [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy.fft

from common import machine  # benchmarks/common.py (the script's own folder)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from lbher_jax import LABELS, datasets, media  # noqa: E402
from lbher_jax.data import splits  # noqa: E402
from lbher_jax.evaluation import metrics, stats  # noqa: E402
from lbher_jax.features import audio  # noqa: E402

SAMPLE_RATE = 16000
N_FFT, HOP, N_MELS, N_MFCC, FACE = 400, 160, 40, 20, 48


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
  """[n_mels, 1 + n_fft // 2] triangular filters equally spaced on the HTK mel scale."""
  mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)
  hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)
  edges = hz(np.linspace(mel(0.0), mel(sample_rate / 2), n_mels + 2))
  freqs = np.linspace(0.0, sample_rate / 2, 1 + n_fft // 2)
  lower = (freqs[None, :] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
  upper = (edges[2:, None] - freqs[None, :]) / (edges[2:, None] - edges[1:-1, None])
  return np.clip(np.minimum(lower, upper), 0.0, None)


def voice_features(wave: np.ndarray) -> np.ndarray:
  """Mean and std over frames of log-mel energies and MFCCs: [2 * (N_MELS + N_MFCC)]."""
  power = np.abs(audio.stft(wave, N_FFT, HOP)) ** 2
  log_mel = np.log(mel_filterbank(SAMPLE_RATE, N_FFT, N_MELS) @ power + 1e-10)
  mfcc = scipy.fft.dct(log_mel, type=2, axis=0, norm="ortho")[:N_MFCC]
  both = np.concatenate([log_mel, mfcc])
  return np.concatenate([both.mean(axis=1), both.std(axis=1)])


def spectrogram_features(spec: np.ndarray) -> np.ndarray:
  """Mean and std over time of each row of a clip's spectrograms [segments, height, width] (the
  learned audio models' own input), the segments' frames pooled: [2 * height]. A regression on
  these asks what that input holds, model aside."""
  frames = np.concatenate(list(spec), axis=1)                   # [height, segments * width]
  return np.concatenate([frames.mean(axis=1), frames.std(axis=1)])


def face_features(path: Path) -> np.ndarray:
  """The first frame, grayscale, FACE x FACE, scaled to [0, 1]: [FACE * FACE]."""
  frame = media.read_frames(path, [0.0], FACE, FACE)[0].astype(np.float32).mean(axis=-1)
  return frame.ravel() / 255.0


def clip_features(utterances) -> dict[str, np.ndarray]:
  """The voice and face baselines' features of every clip: {"voice_mfcc", "face_pixels"}."""
  return {"voice_mfcc": np.stack([voice_features(media.decode_audio(
              u.audio, SAMPLE_RATE, u.start, u.end)) for u in utterances]),
          "face_pixels": np.stack([face_features(u.video) for u in utterances])}


def fit_classifier(x: np.ndarray, y: np.ndarray, speakers: np.ndarray):
  """Standardise + logistic regression, C chosen by GroupKFold over the training speakers."""
  # pylint: disable=import-outside-toplevel
  from sklearn.linear_model import LogisticRegression
  from sklearn.model_selection import GridSearchCV, GroupKFold
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler
  pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
  inner = min(5, len(set(speakers)))
  search = GridSearchCV(pipeline, {"logisticregression__C": [0.01, 0.1, 1.0]},
                        cv=GroupKFold(n_splits=inner), scoring="balanced_accuracy")
  return search.fit(x, y, groups=speakers)


def cross_validate(utterances, features: dict[str, np.ndarray], num_folds: int,
                   seed: int, train_speakers: int = 0, val_fraction: float = 0.1) -> dict:
  """Pooled clip predictions of each baseline over every speaker-independent fold.

  Each fold trains on all its non-test speakers; with `train_speakers` > 0, on the
  `train_speakers` training speakers that the learned models' split draws (`val_fraction`, the
  config's, sets their validation speakers aside first), so both learn from the same people.
  """
  ids = [u.id for u in utterances]
  index = {i: n for n, i in enumerate(ids)}
  y = np.array([LABELS.index(u.label) for u in utterances])
  speakers = np.array([u.speaker for u in utterances])
  probs = {name: np.zeros((len(ids), len(LABELS))) for name in (*features, "fusion")}
  folds = splits.num_folds_for(utterances, "speaker", num_folds)
  for fold in range(folds):
    part = splits.make_split(utterances, protocol="speaker", num_folds=num_folds, fold=fold,
                             val_fraction=val_fraction if train_speakers else 0.0, seed=seed,
                             train_speakers=train_speakers)
    train = [index[i] for i in part.train]
    test = [index[i] for i in part.test]
    for name, x in features.items():
      clf = fit_classifier(x[train], y[train], speakers[train])
      probs[name][test] = clf.predict_proba(x[test])
    probs["fusion"][test] = np.mean([probs[name][test] for name in features], axis=0)
  out = {}
  for name, p in probs.items():
    m = metrics.classification_metrics(
        metrics.confusion_matrix(y, p.argmax(axis=1), len(LABELS)), LABELS)
    out[name] = {k: m[k] for k in ("accuracy", "unweighted_accuracy", "macro_f1", "num_test")}
  out["folds"] = folds
  return out


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", default=str(PROJECT_ROOT.parent / "shared" / "data" /
                                            "ravdess_fer_av"))
  parser.add_argument("--corpus", default="ravdess")
  parser.add_argument("--num-folds", type=int, default=6)
  parser.add_argument("--seeds", default="0,1,2", help="fold partitions, as config.sweep.seeds")
  parser.add_argument("--limit", type=int, default=0, help="first N speakers only (smoke test)")
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)
  began = time.perf_counter()
  utterances = datasets.read(args.corpus, args.root)
  if args.limit:
    keep = sorted({u.speaker for u in utterances})[:args.limit]
    utterances = [u for u in utterances if u.speaker in keep]
  features = clip_features(utterances)
  seeds = [int(s) for s in args.seeds.split(",")]
  per_seed = [cross_validate(utterances, features, args.num_folds, seed) for seed in seeds]
  result = {"per_seed": dict(zip(map(str, seeds), per_seed)), "summary": {}}
  for name in ("voice_mfcc", "face_pixels", "fusion"):
    result["summary"][name] = {k: stats.summarize([r[name][k] for r in per_seed])
                               for k in ("accuracy", "unweighted_accuracy", "macro_f1")}
    s = result["summary"][name]
    print(f"{name:12s} UA {stats.format_interval(s['unweighted_accuracy'])}  "
          f"WA {stats.format_interval(s['accuracy'])}  macro-F1 "
          f"{stats.format_interval(s['macro_f1'])}  ({per_seed[0][name]['num_test']} clips, "
          f"{per_seed[0]['folds']} folds, seeds {seeds})")
  result.update(corpus=args.corpus, root=args.root, num_folds=args.num_folds, seeds=seeds,
                num_clips=len(utterances), seconds=round(time.perf_counter() - began, 1),
                machine=machine(), date=datetime.date.today().isoformat())
  if args.json:
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
  return result


if __name__ == "__main__":
  main()
