"""Console, CSV, JSON, Markdown and Table 2 reports carry the right numbers and parse back."""

import csv
import json

import pytest

from lbher_jax import LABELS
from lbher_jax.evaluation import metrics, report

CM = [[3, 0, 1, 0],
      [1, 0, 0, 1],
      [0, 0, 3, 1],
      [0, 0, 0, 0]]


def _rows(n):
  return [{"id": f"clip{i:02d}", "speaker": f"spk{i % 3}", "true": LABELS[i % 4],
           "pred": LABELS[(i * 3) % 4 if i % 2 else i % 4],
           "probs": [0.7, 0.1, 0.1, 0.1] if i % 2 else [0.25, 0.5, 0.125, 0.125]}
          for i in range(n)]


def test_format_results_table_and_truncation():
  rows = [{"id": "a1", "speaker": "s", "true": "sad", "pred": "sad", "probs": [0.1, 0.2, 0.6, 0.1]},
          {"id": "a2", "speaker": "s", "true": "happy", "pred": "anger",
           "probs": [0.3, 0.45, 0.2, 0.05]}]
  text = report.format_results(rows)
  lines = text.splitlines()
  assert lines[0].startswith("Results R (2 clips")
  assert lines[1].split() == ["id", "true", "predicted", "confidence"]
  assert lines[3].split() == ["a1", "sad", "sad", "0.600"]
  assert lines[4].split() == ["a2", "happy", "anger", "0.450", "x"]
  long = report.format_results(_rows(25), max_rows=20)
  assert "clip19" in long and "clip20" not in long
  assert long.splitlines()[-1] == "... 5 more clips"


def test_format_statistics_numbers_and_leaky_flag():
  m = metrics.classification_metrics(CM)
  text = report.format_statistics(m)
  lines = text.splitlines()
  header = next(line for line in lines if line.startswith("true \\ pred"))
  assert header.split()[3:] == list(LABELS)
  assert next(line for line in lines if line.startswith("anger ")).split() == [
      "anger", "1", "0", "0", "1"]
  assert ["happy", "0.7500", "0.7500", "0.7500", "4"] in [line.split() for line in lines]
  assert ["neutral", "0.0000", "0.0000", "0.0000", "0"] in [line.split() for line in lines]
  assert "accuracy             0.6000" in text
  assert "unweighted accuracy  0.5000" in text
  assert "macro F1             0.3750" in text
  assert "LEAKY" not in text
  flagged = report.format_statistics({**m, "leaky": True, "model": "cnn", "protocol": "90-10"})
  assert flagged.startswith("Statistics P (model cnn, protocol 90-10)\n!! " + report.LEAKY_NOTE)


def test_predictions_csv_parses_back(tmp_path):
  rows = _rows(3)
  path = tmp_path / "out" / "predictions.csv"
  report.write_predictions_csv(path, rows)
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    assert reader.fieldnames == ["id", "speaker", "true", "pred", "p_happy", "p_anger", "p_sad",
                                 "p_neutral"]
    back = list(reader)
  assert [r["id"] for r in back] == ["clip00", "clip01", "clip02"]
  assert back[1]["speaker"] == "spk1" and back[1]["true"] == "anger"
  assert back[1]["pred"] == rows[1]["pred"]
  assert [float(back[1][f"p_{c}"]) for c in LABELS] == [0.7, 0.1, 0.1, 0.1]
  assert sorted(p.name for p in path.parent.iterdir()) == ["predictions.csv"]
  with pytest.raises(ValueError, match="row clip00 has 3 probabilities"):
    report.write_predictions_csv(path, [{**rows[0], "probs": [0.5, 0.25, 0.25]}])


def test_results_json_contract(tmp_path):
  m = metrics.classification_metrics(CM)
  path = tmp_path / "results.json"
  report.write_results_json(path, m, protocol="speaker", model="hybrid", leaky=False)
  back = json.loads(path.read_text())
  for key in ("labels", "accuracy", "unweighted_accuracy", "macro_f1", "per_class",
              "confusion_matrix", "num_test", "protocol", "model"):
    assert key in back
  assert back["labels"] == ["happy", "anger", "sad", "neutral"]
  assert back["confusion_matrix"] == CM
  assert back["num_test"] == 10
  assert back["per_class"]["sad"]["support"] == 4
  assert (back["protocol"], back["model"], back["leaky"]) == ("speaker", "hybrid", False)
  assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
  with pytest.raises(ValueError, match="num_test"):
    report.write_results_json(path, m, num_test=3)


def test_report_md_single_evaluation(tmp_path):
  m = metrics.classification_metrics(CM)
  path = tmp_path / "report.md"
  report.write_report_md(path, {**m, "model": "hybrid", "protocol": "speaker", "leaky": True},
                         title="Demo run", extra_sections={"Notes": "Seed 0."})
  text = path.read_text()
  assert text.startswith("# Demo run\n")
  assert "model: `hybrid`; protocol: `speaker`" in text
  assert report.LEAKY_NOTE in text
  assert "| accuracy | 0.6000 |" in text
  assert "| unweighted accuracy | 0.5000 |" in text
  assert "| anger | 1 | 0 | 0 | 1 |" in text
  assert "| sad | 0.7500 | 0.7500 | 0.7500 | 4 |" in text
  assert "folds" not in text
  assert text.endswith("## Notes\n\nSeed 0.\n")


def test_report_md_over_folds(tmp_path):
  fold0 = metrics.classification_metrics(CM)
  fold1 = metrics.classification_metrics([[1, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1], [0, 0, 0, 2]])
  summary = {"folds": [fold0, fold1], "aggregate": metrics.aggregate_folds([fold0, fold1]),
             "protocol": "speaker", "model": "cnn"}
  path = tmp_path / "report.md"
  report.write_report_md(path, summary, title="All folds")
  text = path.read_text()
  assert "## Test set" not in text and "LEAKY" not in text
  assert "## Over 2 folds" in text
  # accuracy 0.6 and 5/6: mean 0.7167, sample std |0.6 - 0.8333| / sqrt(2) = 0.1650.
  assert "| accuracy | 0.7167 ± 0.1650 | 0.6000, 0.8333 |" in text
  assert "| 1 | 0.8333 | 0.7500 |" in text  # UA (1 + 1 + 0 + 1) / 4
  # Pooled: [[4,0,1,0],[1,2,0,1],[0,0,3,2],[0,0,0,2]] -> 11 of 16 right.
  assert "| anger | 1 | 2 | 0 | 1 |" in text
  assert "| accuracy | 0.6875 |" in text
  with pytest.raises(ValueError, match="no metrics to report"):
    report.write_report_md(path, {"model": "cnn"}, title="x")


def test_table2_markdown_layout():
  rows = [{"model": "hybrid", "protocol": "speaker", "accuracy": 0.9123,
           "unweighted_accuracy": 0.8971},
          {"model": "cnn", "protocol": "90-10", "accuracy": 0.5}]
  lines = report.table2_markdown(rows).splitlines()
  table = [line for line in lines if line.startswith("|")]
  assert table[0] == ("| Model | 90-10 (Train-Test) | 80-20 (Train-Test) | 70-30 (Train-Test) | "
                      "Speaker-independent |")
  body = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
  assert [r[0] for r in body] == ["CNN", "CNN+LSTM", "CNN+RNN", "CNN+RNN+3DCNN (Proposed)"]
  assert body[0][1:] == ["0.500", "–", "–", "–"]
  assert body[3][4] == "0.912 / 0.897"
  with pytest.raises(ValueError, match="two results for model 'cnn'"):
    report.table2_markdown(rows + [rows[1]])


def test_table2_extra_model_and_paper_values(tmp_path):
  rows = [*report.PAPER_TABLE2,
          {"model": "video3d", "protocol": "speaker", "accuracy": 0.4, "unweighted_accuracy": 0.3}]
  text = report.table2_markdown(rows)
  assert "| CNN+RNN+3DCNN (Proposed) | 0.952 | 0.947 | 0.941 | – |" in text
  assert "| video3d | – | – | – | 0.400 / 0.300 |" in text
  # The paper's text gives each model's average over the three splits (88.90 % ... 94.66 %).
  averages = {}
  for r in report.PAPER_TABLE2:
    averages.setdefault(r["model"], []).append(r["accuracy"])
  assert {m: round(sum(v) / 3, 4) for m, v in averages.items()} == {
      "cnn": 0.889, "cnn_lstm": 0.9119, "cnn_rnn": 0.9287, "hybrid": 0.9466}

  path = tmp_path / "table2.csv"
  report.table2_csv(path, rows)
  with open(path, newline="") as f:
    back = list(csv.DictReader(f))
  assert [r["model"] for r in back] == ["CNN", "CNN+LSTM", "CNN+RNN", "CNN+RNN+3DCNN (Proposed)",
                                        "video3d"]
  assert back[1]["accuracy_80-20"] == "0.9124" and back[1]["ua_80-20"] == ""
  assert back[4]["accuracy_speaker"] == "0.4000" and back[4]["ua_speaker"] == "0.3000"
  assert back[0]["accuracy_speaker"] == ""


def test_report_and_statistics_show_each_streams_own_layer(tmp_path):
  m = metrics.classification_metrics(CM)
  # Audio layer: 2 of 4 classes always right; video layer: everything called happy.
  audio = metrics.classification_metrics([[2, 0, 0, 0], [0, 3, 0, 0], [4, 0, 0, 0], [0, 0, 0, 1]])
  video = metrics.classification_metrics([[2, 0, 0, 0], [3, 0, 0, 0], [4, 0, 0, 0], [1, 0, 0, 0]])
  heads = {name: {k: h[k] for k in ("accuracy", "unweighted_accuracy", "macro_f1",
                                    "weighted_f1")} for name, h in (("audio", audio),
                                                                    ("video", video))}
  path = tmp_path / "report.md"
  report.write_report_md(path, {**m, "heads": heads}, title="Hybrid")
  text = path.read_text()
  assert "## Each stream's own output layer" in text
  assert "| model output | 0.6000 | 0.5000 |" in text
  assert "| audio | 0.6000 | 0.7500 |" in text    # 6 of 10 right; recalls 1, 1, 0, 1
  assert "| video | 0.2000 | 0.2500 |" in text    # 2 of 10; recalls 1, 0, 0, 0
  statistics = report.format_statistics({**m, "heads": heads})
  assert statistics.endswith("Each stream's own output layer: audio UA 0.7500; video UA 0.2500")
  assert "own output layer" not in report.format_statistics(m)
