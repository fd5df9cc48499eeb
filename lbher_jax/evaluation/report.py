"""Reports of an evaluation: the paper's results R and statistics P on the console, and the workdir
files results.json, predictions.csv, report.md and the Table 2 comparison (Markdown / CSV).

A prediction row is a dict {"id", "speaker", "true", "pred", "probs"}: `true`/`pred` are label
names and `probs` holds one probability per label, in `LABELS` order.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lbher_jax import LABELS, files
from lbher_jax.evaluation.metrics import classification_metrics

LEAKY_NOTE = "LEAKY (paper's oversample-before-split order)"

TABLE2_MODELS: tuple[tuple[str, str], ...] = (
    ("cnn", "CNN"),
    ("cnn_lstm", "CNN+LSTM"),
    ("cnn_rnn", "CNN+RNN"),
    ("hybrid", "CNN+RNN+3DCNN (Proposed)"),
)
"""Table 2 rows: (model name in the config, name printed in the table)."""

TABLE2_PROTOCOLS: tuple[tuple[str, str], ...] = (
    ("90-10", "90-10 (Train-Test)"),
    ("80-20", "80-20 (Train-Test)"),
    ("70-30", "70-30 (Train-Test)"),
    ("speaker", "Speaker-independent"),
)
"""Table 2 columns: (protocol key of a Table 2 row, column heading)."""

PAPER_TABLE2: tuple[dict[str, Any], ...] = tuple(
    {"model": model, "protocol": protocol, "accuracy": acc}
    for model, accs in (("cnn", (0.8942, 0.8895, 0.8833)),
                        ("cnn_lstm", (0.9174, 0.9124, 0.906)),
                        ("cnn_rnn", (0.9341, 0.9293, 0.9228)),
                        ("hybrid", (0.952, 0.9472, 0.9406)))
    for protocol, acc in zip(("90-10", "80-20", "70-30"), accs))
"""The accuracies the paper reports in Table 2 (random splits after oversampling; no UA given)."""


def _confidence(row: Mapping[str, Any], labels: Sequence[str]) -> float:
  return float(row["probs"][list(labels).index(row["pred"])])


def _fixed_width(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
  """Left-aligned first column, right-aligned others, two spaces between columns."""
  widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
  def line(cells):
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
  return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in body)]


def format_results(rows: Sequence[Mapping[str, Any]], labels: Sequence[str] = LABELS,
                   max_rows: int = 20) -> str:
  """Results R: one line per test clip (id, true, predicted, confidence); wrong ones are marked.

  Shows the first `max_rows` clips and says how many more there are.
  """
  body = [[str(r["id"]), r["true"], r["pred"], f"{_confidence(r, labels):.3f}",
           "" if r["true"] == r["pred"] else "x"] for r in rows[:max_rows]]
  lines = [f"Results R ({len(rows)} clip{'' if len(rows) == 1 else 's'}; x = wrong)",
           *_fixed_width(["id", "true", "predicted", "confidence", ""], body)]
  if len(rows) > max_rows:
    lines.append(f"... {len(rows) - max_rows} more clips")
  return "\n".join(lines)


def _summary(metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
  return [("accuracy", f"{metrics['accuracy']:.4f}"),
          ("unweighted accuracy", f"{metrics['unweighted_accuracy']:.4f}"),
          ("macro F1", f"{metrics['macro_f1']:.4f}"),
          ("weighted F1", f"{metrics['weighted_f1']:.4f}"),
          ("test clips", str(metrics["num_test"]))]


def _per_class_rows(metrics: Mapping[str, Any]) -> list[list[str]]:
  return [[label, f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}",
           str(c["support"])] for label, c in metrics["per_class"].items()]


def format_statistics(metrics: Mapping[str, Any]) -> str:
  """Statistics P: confusion matrix (rows true, columns predicted), per-class table, summary."""
  labels = metrics["labels"]
  context = ", ".join(f"{k} {metrics[k]}" for k in ("model", "protocol") if k in metrics)
  lines = [f"Statistics P ({context})" if context else "Statistics P"]
  if metrics.get("leaky"):
    lines.append(f"!! {LEAKY_NOTE}: test clips have copies in training; figures are optimistic")
  lines += ["", "Confusion matrix (rows = true, columns = predicted)"]
  lines += _fixed_width(["true \\ pred", *labels],
                        [[label, *map(str, row)]
                         for label, row in zip(labels, metrics["confusion_matrix"])])
  lines += [""] + _fixed_width(["class", "precision", "recall", "F1", "support"],
                               _per_class_rows(metrics))
  lines.append("")
  summary = _summary(metrics)
  width = max(len(name) for name, _ in summary)
  lines += [f"{name.ljust(width)}  {value}" for name, value in summary]
  if metrics.get("heads"):
    lines += ["", "Each stream's own output layer: " + "; ".join(
        f"{name} UA {m['unweighted_accuracy']:.4f}" for name, m in metrics["heads"].items())]
  return "\n".join(lines)


def write_predictions_csv(path: str | Path, rows: Sequence[Mapping[str, Any]],
                          labels: Sequence[str] = LABELS) -> None:
  """predictions.csv: id, speaker, true, pred, then p_<label> for each label."""
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(["id", "speaker", "true", "pred", *(f"p_{label}" for label in labels)])
  for r in rows:
    if len(r["probs"]) != len(labels):
      raise ValueError(f"{path}: row {r['id']} has {len(r['probs'])} probabilities, "
                       f"expected {len(labels)}")
    writer.writerow([r["id"], r["speaker"], r["true"], r["pred"],
                     *(f"{float(p):.6f}" for p in r["probs"])])
  files.atomic_write_text(path, buf.getvalue())


def read_predictions_csv(path: str | Path, labels: Sequence[str] = LABELS
                         ) -> dict[str, tuple[str, int, np.ndarray]]:
  """predictions.csv -> clip id -> (speaker, true class index, probabilities [labels])."""
  with open(path, newline="") as f:
    return {r["id"]: (r["speaker"], list(labels).index(r["true"]),
                      np.array([float(r[f"p_{label}"]) for label in labels]))
            for r in csv.DictReader(f)}


def _json_default(value: Any) -> Any:
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, Path):
    return str(value)
  raise TypeError(f"{type(value).__name__} is not JSON serializable")


def write_results_json(path: str | Path, metrics: Mapping[str, Any], **extra: Any) -> None:
  """results.json: the metric fields plus `extra` (protocol, model, leaky, folds, ...)."""
  clash = [k for k in extra if k in metrics and metrics[k] != extra[k]]
  if clash:
    raise ValueError(f"{path}: {clash} given in metrics and as extra fields, with other values")
  text = json.dumps({**metrics, **extra}, indent=2, default=_json_default)
  files.atomic_write_text(path, text + "\n")


def _md_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
  return ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|",
          *("| " + " | ".join(row) + " |" for row in body)]


def _metrics_md(metrics: Mapping[str, Any]) -> list[str]:
  """Summary, confusion matrix and per-class tables of one set of `classification_metrics`."""
  labels = metrics["labels"]
  lines = ["### Summary", "", *_md_table(["metric", "value"], _summary(metrics)), ""]
  lines += ["### Confusion matrix", "", "Rows = true class, columns = predicted class.", ""]
  lines += _md_table(["true \\ pred", *labels],
                     [[label, *map(str, row)]
                      for label, row in zip(labels, metrics["confusion_matrix"])])
  lines += ["", "### Per class", ""]
  lines += _md_table(["class", "precision", "recall", "F1", "support"], _per_class_rows(metrics))
  return lines + [""]


def write_report_md(path: str | Path, metrics: Mapping[str, Any], *, title: str,
                    extra_sections: Mapping[str, str] | None = None) -> None:
  """report.md of one evaluation (`classification_metrics` fields) or of several folds.

  For folds, `metrics["folds"]` is the list of per-fold metrics and `metrics["aggregate"]` their
  `aggregate_folds`: the report gives mean ± std, one row per fold, and the metrics of the fold
  confusion matrices summed (every test clip of every fold counted once). `extra_sections`
  {heading: Markdown} come last.
  """
  folds = metrics.get("folds") or []
  if "confusion_matrix" not in metrics and not folds:
    raise ValueError(f"{path}: no metrics to report (neither a confusion matrix nor folds)")
  lines = [f"# {title}", ""]
  context = [f"{k}: `{metrics[k]}`" for k in ("model", "protocol") if k in metrics]
  if context:
    lines += ["; ".join(context), ""]
  if metrics.get("leaky") or any(f.get("leaky") for f in folds):
    lines += [f"> **{LEAKY_NOTE}**: copies of test clips are in the training set, so these "
              "figures overstate what the model does on unseen clips.", ""]
  if "confusion_matrix" in metrics:
    lines += ["## Test set", "", *_metrics_md(metrics)]
  if metrics.get("heads"):
    lines += ["## Each stream's own output layer", "",
              "The model's output beside the output layers of its audio and video streams "
              "(trained by the per-stream losses): what each modality gives alone inside this "
              "model, on the same test clips.", ""]
    lines += _md_table(["output layer", "accuracy", "unweighted accuracy", "macro F1",
                        "weighted F1"],
                       [[name, *(f"{m[k]:.4f}" for k in ("accuracy", "unweighted_accuracy",
                                                          "macro_f1", "weighted_f1"))]
                        for name, m in (("model output", metrics), *metrics["heads"].items())])
    lines.append("")
  if metrics.get("pretraining"):
    p = metrics["pretraining"]
    lines += ["## Contrastive pre-training: audio-visual correspondence", "",
              "Test speakers, pre-trained weights: how each segment's audio ranks its own video "
              "against other clips' videos (AUC chance 0.5; top-1 chance 1 / (1 + candidates))."
              + (" **Collapsed: no correspondence was learned.**" if p.get("collapsed") else ""),
              ""]
    num = lambda v: "–" if v is None else f"{v:.3f}"
    lines += _md_table(["against", "AUC", "top-1", "candidates"],
                       [["all other clips", num(p["auc_all"]), num(p["top1_all"]),
                         f"{p['candidates']:.1f}"],
                        ["same emotion only", num(p["auc_same_emotion"]),
                         num(p["top1_same_emotion"]), f"{p['candidates_same_emotion']:.1f}"]])
    lines.append("")
  if "aggregate" in metrics:
    lines += [f"## Over {len(folds) or 'the'} folds", "",
              "Mean ± sample standard deviation (ddof = 1) over folds.", ""]
    lines += _md_table(["metric", "mean ± std", "per fold"],
                       [[name, f"{a['mean']:.4f} ± {a['std']:.4f}",
                         ", ".join(f"{v:.4f}" for v in a["values"])]
                        for name, a in metrics["aggregate"].items()])
    lines.append("")
  if folds:
    lines += ["## Per fold", ""]
    lines += _md_table(["fold", *(name for name, _ in _summary(folds[0]))],
                       [[str(i), *(value for _, value in _summary(f))]
                        for i, f in enumerate(folds)])
    pooled = classification_metrics(np.sum([f["confusion_matrix"] for f in folds], axis=0),
                                    folds[0]["labels"])
    lines += ["", "## All folds' test clips together", "", *_metrics_md(pooled)]
  for heading, body in (extra_sections or {}).items():
    lines += [f"## {heading}", "", body.rstrip(), ""]
  if metrics.get("stack"):
    lines += ["## Software", "", ", ".join(f"{k} {v}" for k, v in metrics["stack"].items()),
              *([f"devices: {metrics['devices']}"] if metrics.get("devices") else []), ""]
  files.atomic_write_text(path, "\n".join(lines).rstrip() + "\n")


def table2_grid(rows: Sequence[Mapping[str, Any]]
                 ) -> tuple[list[tuple[str, str]], list[tuple[str, str]], dict]:
  """(models, protocols, {(model, protocol): row}): Table 2's rows and columns first, in the
  paper's order and always present, then any others in order of appearance."""
  models, protocols = list(TABLE2_MODELS), list(TABLE2_PROTOCOLS)
  cells = {}
  for r in rows:
    key = (r["model"], r["protocol"])
    if key in cells:
      raise ValueError(f"Table 2: two results for model {key[0]!r}, protocol {key[1]!r}")
    cells[key] = r
    if key[0] not in dict(models):
      models.append((key[0], key[0]))
    if key[1] not in dict(protocols):
      protocols.append((key[1], key[1]))
  return models, protocols, cells


def _cell(row: Mapping[str, Any] | None) -> str:
  if row is None:
    return "–"
  ua = row.get("unweighted_accuracy")
  return (_value(row["accuracy"], row.get("accuracy_ci95"))
          + ("" if ua is None else f" / {_value(ua, row.get('unweighted_accuracy_ci95'))}"))


def _value(mean: float, ci95: Sequence[float] | None) -> str:
  return f"{mean:.3f}" + ("" if ci95 is None else f" [{ci95[0]:.3f}, {ci95[1]:.3f}]")


def table2_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
  """Table 2 as Markdown: one row per model, one column per protocol, cells "accuracy / UA".

  `rows` are {"model", "protocol", "accuracy", "unweighted_accuracy" (optional),
  "accuracy_ci95" / "unweighted_accuracy_ci95" (optional [lo, hi], shown after the mean)}, one
  per cell; protocol keys are those of `TABLE2_PROTOCOLS`.
  """
  models, protocols, cells = table2_grid(rows)
  lines = ["Cells: accuracy / unweighted accuracy (mean per-class recall), each with its 95 % "
           "interval where there is one; – = not run.", ""]
  lines += _md_table(["Model", *(title for _, title in protocols)],
                     [[title, *(_cell(cells.get((m, p))) for p, _ in protocols)]
                      for m, title in models])
  return "\n".join(lines) + "\n"


def table2_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
  """Table 2 as CSV: model, then `accuracy_<protocol>` and `ua_<protocol>` per protocol (empty =
  not run)."""
  models, protocols, cells = table2_grid(rows)
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(["model", *(f"{m}_{p}" for p, _ in protocols for m in ("accuracy", "ua"))])
  for m, title in models:
    out = [title]
    for p, _ in protocols:
      r = cells.get((m, p), {})
      out += [f"{r['accuracy']:.4f}" if "accuracy" in r else "",
              f"{r['unweighted_accuracy']:.4f}" if r.get("unweighted_accuracy") is not None
              else ""]
    writer.writerow(out)
  files.atomic_write_text(path, buf.getvalue())
