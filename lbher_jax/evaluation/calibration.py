"""Calibrated probabilities: expected calibration error and temperature scaling (numpy / scipy).

A temperature T divides the output layer's logits before the softmax; T is fitted on the
validation speakers' segments by maximum likelihood (the one-parameter temperature scaling of
Guo et al. 2017), so it changes how confident the model is, never which class it picks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.optimize
import scipy.special

FILE = "calibration.json"   # in the workdir, beside checkpoints/: {"temperature", ...}
ECE_BINS = 15
LOG_T_RANGE = (-4.0, 4.0)   # T in [0.018, 55]: far beyond any useful temperature


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
  return scipy.special.softmax(np.asarray(logits, np.float64) / temperature, axis=-1)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
  """Mean negative log-likelihood of `labels` under softmax(logits / temperature)."""
  logp = scipy.special.log_softmax(np.asarray(logits, np.float64) / temperature, axis=-1)
  return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
  """The temperature that minimises the validation NLL (bounded search over log T)."""
  labels = np.asarray(labels)
  if len(labels) == 0:
    return 1.0
  res = scipy.optimize.minimize_scalar(lambda log_t: nll(logits, labels, float(np.exp(log_t))),
                                       bounds=LOG_T_RANGE, method="bounded",
                                       options={"xatol": 1e-6})
  return float(np.exp(res.x))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray,
                               bins: int = ECE_BINS) -> float:
  """ECE with `bins` equal-width confidence bins over (0, 1]: the sum over bins of
  (share of examples) x |accuracy - mean confidence|."""
  probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
  if len(labels) == 0:
    return 0.0
  confidence = probs.max(axis=1)
  correct = probs.argmax(axis=1) == labels
  which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
  total = 0.0
  for b in range(bins):
    members = which == b
    if members.any():
      total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
  return float(total)


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict:
  """Per bin: mean confidence, accuracy and count (for the reliability diagram)."""
  probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
  confidence = probs.max(axis=1)
  correct = probs.argmax(axis=1) == labels
  which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
  out = {"confidence": [], "accuracy": [], "count": [], "edges": np.linspace(0, 1, bins + 1)}
  for b in range(bins):
    members = which == b
    out["count"].append(int(members.sum()))
    out["confidence"].append(float(confidence[members].mean()) if members.any() else None)
    out["accuracy"].append(float(correct[members].mean()) if members.any() else None)
  return out


def load_temperature(workdir: str | Path) -> float:
  """The temperature saved in WORKDIR/calibration.json; 1.0 (uncalibrated) when there is none."""
  try:
    return float(json.loads((Path(workdir) / FILE).read_text())["temperature"])
  except (OSError, ValueError, KeyError):
    return 1.0
