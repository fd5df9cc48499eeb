"""Figures of an evaluation, each written to a PNG of fixed pixel size (figsize x DPI).

Figures are drawn on matplotlib's Agg canvas through the object API (`Figure`), never through
pyplot: nothing opens a window, no global figure registry keeps them alive, and each figure is
freed when the function returns.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lbher_jax import LABELS
from lbher_jax.evaluation import report

DPI = 100
CONFUSION_SIZE = (10.0, 4.5)   # inches; PNG pixels = size x DPI
CURVES_SIZE = (13.0, 4.0)
PER_CLASS_SIZE = (7.0, 4.0)
TABLE2_SIZE = (12.0, 4.5)
TIMELINE_SIZE = (10.0, 4.0)


def _figure(size: tuple[float, float]) -> Figure:
  fig = Figure(figsize=size, dpi=DPI, layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def _save(fig: Figure, path: str | Path) -> None:
  """Writes `fig` as PNG through a temporary file beside `path`."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      fig.savefig(f, format="png", dpi=DPI)
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise


def _matrix_panel(fig: Figure, ax, values: np.ndarray, labels: Sequence[str], title: str,
                  fmt: str, vmax: float) -> None:
  image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax)
  ax.set_xticks(range(len(labels)), labels)
  ax.set_yticks(range(len(labels)), labels)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  ax.set_title(title)
  for (i, j), v in np.ndenumerate(values):
    ax.text(j, i, format(v, fmt), ha="center", va="center",
            color="white" if v > 0.6 * vmax else "black")
  fig.colorbar(image, ax=ax, shrink=0.8)


def plot_confusion_matrix(cm: np.ndarray | Sequence[Sequence[int]], labels: Sequence[str],
                          path: str | Path) -> None:
  """Counts (left) and row-normalised recall (right); a class with no support shows zeros."""
  cm = np.asarray(cm, dtype=np.int64)
  rows = cm.sum(axis=1, keepdims=True).astype(np.float64)
  normalised = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
  fig = _figure(CONFUSION_SIZE)
  left, right = fig.subplots(1, 2)
  _matrix_panel(fig, left, cm, labels, f"counts (n = {cm.sum()})", "d", max(int(cm.max()), 1))
  _matrix_panel(fig, right, normalised, labels, "row-normalised (recall)", ".2f", 1.0)
  _save(fig, path)


def _read_records(source: str | Path | Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
  if not isinstance(source, (str, Path)):
    return list(source)
  records = []
  with open(source, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      if line.strip():
        try:
          records.append(json.loads(line))
        except json.JSONDecodeError as e:
          raise ValueError(f"{source}:{n}: not a JSON object ({e.msg})") from None
  return records


def plot_training_curves(records: str | Path | Iterable[Mapping[str, Any]],
                         path: str | Path) -> None:
  """Loss, accuracy (train and validation UA; pre-training's validation correspondence AUCs) and
  learning rate against step, one line per phase.

  `records` is a metrics.jsonl path or its records: {"phase", "step", "loss", optional
  "accuracy", "lr", "val_unweighted_accuracy", "val_auc_all", "val_auc_same_emotion"}; a record
  lacking a key adds no point there.
  """
  records = _read_records(records)
  phases = list(dict.fromkeys(r.get("phase", "train") for r in records))
  fig = _figure(CURVES_SIZE)
  panels = dict(zip(("loss", "accuracy", "lr"), fig.subplots(1, 3)))
  series = [("loss", "loss", "-"), ("accuracy", "accuracy", "-"),
            ("accuracy", "val_unweighted_accuracy", "--"), ("accuracy", "val_auc_all", ":"),
            ("accuracy", "val_auc_same_emotion", "-."), ("lr", "lr", "-")]
  suffix = {"val_unweighted_accuracy": " val UA", "val_auc_all": " val AUC (all)",
            "val_auc_same_emotion": " val AUC (same emotion)"}
  for colour, phase in enumerate(phases):
    mine = [r for r in records if r.get("phase", "train") == phase]
    for panel, key, style in series:
      points = [(r["step"], r[key]) for r in mine if r.get(key) is not None]
      if points:
        x, y = zip(*points)
        label = phase + suffix.get(key, "")
        panels[panel].plot(x, y, style, color=f"C{colour}", label=label)
  for name, ax in panels.items():
    ax.set_xlabel("step")
    ax.set_title({"loss": "loss", "accuracy": "accuracy / correspondence AUC",
                  "lr": "learning rate"}[name])
    if ax.lines:
      ax.legend(fontsize="small")
    else:
      ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
  _save(fig, path)


def plot_pair_distances(distances: Mapping[str, np.ndarray], path: str | Path) -> None:
  """Histograms of the unit-embedding audio-video distances of positive pairs (a segment's own
  video), negatives of another emotion and negatives of the same emotion (other clips)."""
  fig = _figure((7.0, 4.0))
  ax = fig.subplots()
  bins = np.linspace(0.0, 2.0, 41)
  for key, title in (("positive", "own video (positive)"),
                     ("negative", "other clip, other emotion"),
                     ("negative_same_emotion", "other clip, same emotion")):
    values = np.asarray(distances.get(key, []))
    if values.size:
      ax.hist(values, bins, density=True, histtype="step", linewidth=1.5,
              label=f"{title} (n = {values.size})")
  ax.set_xlabel("distance between unit audio and video embeddings")
  ax.set_ylabel("density")
  ax.legend(fontsize="small")
  _save(fig, path)


def plot_reliability(before: Mapping[str, Any], after: Mapping[str, Any], temperature: float,
                     path: str | Path) -> None:
  """Reliability diagrams of the clip probabilities before and after temperature scaling
  (`calibration.reliability` of each): accuracy against mean confidence per bin."""
  fig = _figure((9.0, 4.0))
  for ax, data, title in zip(fig.subplots(1, 2), (before, after),
                             ("before (T = 1)", f"after (T = {temperature:.2f})")):
    edges = np.asarray(data["edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    acc = [np.nan if a is None else a for a in data["accuracy"]]
    ax.bar(centres, acc, width=edges[1] - edges[0], edgecolor="black", alpha=0.7,
           label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (max probability)")
    ax.set_title(title)
    ax.legend(fontsize="small", loc="upper left")
  _save(fig, path)


def plot_per_class(metrics: Mapping[str, Any], path: str | Path) -> None:
  """Per-class precision, recall and F1 as grouped bars, support under each class name."""
  per_class = metrics["per_class"]
  labels = list(per_class)
  x = np.arange(len(labels))
  fig = _figure(PER_CLASS_SIZE)
  ax = fig.subplots()
  for i, key in enumerate(("precision", "recall", "f1")):
    ax.bar(x + (i - 1) * 0.27, [per_class[c][key] for c in labels], 0.27, label=key)
  ax.set_xticks(x, [f"{c}\n(n = {per_class[c]['support']})" for c in labels])
  ax.set_ylim(0.0, 1.05)
  ax.set_title(f"per class (accuracy {metrics['accuracy']:.3f}, "
               f"UA {metrics['unweighted_accuracy']:.3f})")
  ax.legend(fontsize="small", loc="lower right")
  _save(fig, path)


def plot_table2(rows: Sequence[Mapping[str, Any]], path: str | Path) -> None:
  """The paper's Fig. 13: accuracy (left) and unweighted accuracy (right), models x protocols.

  `rows` as for `report.table2_markdown`; a protocol a model was not run under has no bar.
  """
  models, protocols, cells = report.table2_grid(rows)
  x = np.arange(len(models))
  width = 0.8 / len(protocols)
  fig = _figure(TABLE2_SIZE)
  for ax, key, title in zip(fig.subplots(1, 2), ("accuracy", "unweighted_accuracy"),
                            ("accuracy", "unweighted accuracy")):
    for i, (p, p_title) in enumerate(protocols):
      values = [cells.get((m, p), {}).get(key) for m, _ in models]
      bars = ax.bar(x + (i - (len(protocols) - 1) / 2) * width,
                    [np.nan if v is None else v for v in values], width, label=p_title,
                    yerr=_error_bars(values, [cells.get((m, p), {}).get(f"{key}_ci95")
                                              for m, _ in models]), capsize=2)
      ax.bar_label(bars, ["" if v is None else f"{v:.2f}" for v in values], fontsize="x-small")
    ax.set_xticks(x, [title.replace(" (", "\n(") for _, title in models], fontsize="small")
    ax.set_xlim(-0.5, len(models) - 0.5)
    ax.set_ylim(0.0, 1.05)
    ax.set_title(title)
  fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=len(protocols),
             fontsize="small")
  _save(fig, path)


def _error_bars(means, intervals) -> np.ndarray:
  """[2, N] distances below / above each mean for matplotlib's yerr (0 where no interval)."""
  out = np.zeros((2, len(means)))
  for j, (mean, ci) in enumerate(zip(means, intervals)):
    if mean is not None and ci is not None:
      out[:, j] = mean - ci[0], ci[1] - mean
  return out


def plot_sweep(summary: Mapping[str, Mapping[str, Any]], path: str | Path) -> None:
  """Each arm's mean accuracy, unweighted accuracy and macro-F1 with their 95 % intervals
  (sweep.json's summary); an arm of one seed has no error bar."""
  arms = list(summary)
  keys = (("accuracy", "accuracy (WA)"), ("unweighted_accuracy", "unweighted accuracy"),
          ("macro_f1", "macro-F1"))
  fig = _figure((max(6.0, 1.2 * len(arms) + 2.0), 4.0))
  ax = fig.subplots()
  x, width = np.arange(len(arms)), 0.8 / len(keys)
  for i, (key, title) in enumerate(keys):
    means = [summary[a][key]["mean"] for a in arms]
    ax.errorbar(x + (i - 1) * width, means, fmt="o", capsize=3, label=title,
                yerr=_error_bars(means, [summary[a][key]["ci95"] for a in arms]))
  ax.set_xticks(x, arms, rotation=20, ha="right", fontsize="small")
  ax.set_ylim(0.0, 1.0)
  ax.set_ylabel("mean over seeds, 95 % interval")
  ax.grid(axis="y", alpha=0.3)
  ax.legend(fontsize="small")
  _save(fig, path)


def plot_curves(curves: Mapping[str, Mapping[float, Mapping[str, Any]]], path: str | Path, *,
                xlabel: str, tick: Callable[[float], str] = "{:g}".format,
                metric: str = "unweighted accuracy") -> None:
  """One curve per arm: {ARM: {X: {"mean", "ci95"}}}, the metric against X (log axis, ticks
  written by `tick`), each point with its 95 % interval: e.g. the fraction of training labels,
  or the number of training speakers."""
  fig = _figure((6.0, 4.0))
  ax = fig.subplots()
  for i, (arm, points) in enumerate(curves.items()):
    xs = sorted(points)
    means = [points[x]["mean"] for x in xs]
    shift = 1.0 + 0.03 * (i - (len(curves) - 1) / 2)   # side by side, so the bars do not hide
    ax.errorbar([x * shift for x in xs], means, fmt="o-", capsize=3, label=arm,
                yerr=_error_bars(means, [points[x]["ci95"] for x in xs]))
  xs = sorted({x for points in curves.values() for x in points})
  ax.set_xscale("log")
  ax.set_xticks(xs, [tick(x) for x in xs])
  ax.minorticks_off()
  ax.set_xlabel(xlabel)
  ax.set_ylabel(f"{metric}\n(mean over seeds, 95 % interval)")
  ax.set_ylim(0.0, 1.05)
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small")
  _save(fig, path)


def plot_timeline(prediction: Mapping[str, Any], path: str | Path) -> None:
  """Class probabilities of each segment as stacked bars over time, the segment's label above it,
  from a predict output dict (docs/ARCHITECTURE.md, "Predict output")."""
  segments = prediction["segments"]
  labels = list(prediction.get("probabilities") or LABELS)
  starts = np.array([s["start"] for s in segments], dtype=np.float64)
  widths = np.array([s["end"] for s in segments], dtype=np.float64) - starts
  fig = _figure(TIMELINE_SIZE)
  ax = fig.subplots()
  bottom = np.zeros(len(segments))
  for colour, label in enumerate(labels):
    p = np.array([(s["probabilities"] or {}).get(label, 0.0) for s in segments],
                 dtype=np.float64)   # a segment with nothing to go on is left empty
    ax.bar(starts, p, widths, bottom=bottom, align="edge", color=f"C{colour}", edgecolor="white",
           linewidth=0.5, label=label)
    bottom += p
  for s in segments:
    ax.text((s["start"] + s["end"]) / 2, 1.02, s["label"] or "-", ha="center", va="bottom",
            fontsize="small")
  ax.set_xlim(0.0, max([prediction.get("duration_s") or 0.0]
                       + [s["end"] for s in segments]) or 1.0)
  ax.set_ylim(0.0, 1.1)
  ax.set_xlabel("time (s)")
  ax.set_ylabel("probability")
  overall = prediction.get("label", "?")
  if overall in (prediction.get("probabilities") or {}):
    overall += f" ({prediction['probabilities'][overall]:.2f})"
  ax.set_title(f"{Path(str(prediction.get('video', ''))).name}: {overall}")
  ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
  _save(fig, path)
