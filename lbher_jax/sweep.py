"""--mode sweep: Algorithm 1 for every model x protocol x seed x fold, with intervals.

Layout of the sweep's workdir DIR:
  DIR/shards/                                   preprocessed once, shared by every run
  DIR/runs/<model>/<protocol>/seed_<s>/fold_<k>/  one Algorithm 1 run (results.json, checkpoints,
                                                figures); seed_<s>/shards links to DIR/shards
  DIR/sweep.json, sweep.md, sweep.csv           every run, each arm's units (one per seed), the
                                                summary per arm, paired tests
  DIR/figures/sweep.png                         per-arm means with their intervals
  DIR/table2.md, table2.csv, figures/table2.png when the sweep is over protocols (Table 2)

An arm is one model under one protocol. Its unit is one seed's result with the confusion
matrices of all its folds summed, so every test clip counts once per seed (with a fixed fold or
fixed test speakers, that one fold). A finished run (its results.json) is never redone, so a
killed sweep resumes where it stopped.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import itertools
import json
import os
import sys
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import logging

from lbher_jax import LABELS, algorithm, files
from lbher_jax.data import splits as splits_lib
from lbher_jax.evaluation import metrics as metrics_lib
from lbher_jax.evaluation import plots, report, stats

METRICS = ("accuracy", "unweighted_accuracy", "macro_f1")

PROTOCOLS: dict[str, dict] = {
    "config": {},
    "speaker": {"protocol": "speaker"},
    "90-10": {"protocol": "random", "test_fraction": 0.1, "leaky_paper_oversampling": False},
    "80-20": {"protocol": "random", "test_fraction": 0.2, "leaky_paper_oversampling": False},
    "70-30": {"protocol": "random", "test_fraction": 0.3, "leaky_paper_oversampling": False},
    "paper-80-20": {"protocol": "random", "test_fraction": 0.2, "leaky_paper_oversampling": True},
}
"""Protocol key -> the config.split fields it sets. "config" keeps the config's own split;
"paper-80-20" is the paper's order (oversample, then split: copies of test clips in training)."""


@dataclasses.dataclass(frozen=True)
class Run:
  model: str
  protocol: str
  seed: int
  fold: int

  def directory(self, workdir: Path) -> Path:
    return workdir / "runs" / self.model / self.protocol / f"seed_{self.seed}" / f"fold_{self.fold}"


def protocols_of(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The sweep's protocol keys; none configured means the config's own split."""
  keys = tuple(config.sweep.protocols) or ("config",)
  unknown = [k for k in keys if k not in PROTOCOLS]
  if unknown:
    raise ValueError(f"unknown sweep protocol(s) {unknown}; known: {list(PROTOCOLS)}")
  return keys


def run_config(config: ml_collections.ConfigDict, run: Run) -> ml_collections.ConfigDict:
  """The config of one run: `config` with its model, split protocol, seed and fold set."""
  c = config.copy_and_resolve_references()
  c.model.name = run.model
  c.split.update(PROTOCOLS[run.protocol])
  c.seed = run.seed
  c.split.fold = run.fold
  return c


def plan(config: ml_collections.ConfigDict, utterances) -> list[Run]:
  """Every run of the sweep, in the order they are done (seed-major, so that early units are
  complete for every arm)."""
  models = tuple(config.sweep.models) or (config.model.name,)
  runs = []
  for seed in config.sweep.seeds:
    for protocol in protocols_of(config):
      s = run_config(config, Run(models[0], protocol, seed, 0)).split
      if config.split.fold >= 0:
        folds = [config.split.fold]
      else:
        folds = range(splits_lib.num_folds_for(utterances, s.protocol, s.num_folds,
                                               tuple(s.test_speakers)))
      runs += [Run(m, protocol, int(seed), fold) for m in models for fold in folds]
  return runs


def _link_shards(seed_dir: Path, shards: Path) -> None:
  """Points seed_dir/shards (where fold_K runs look) at the sweep's shards, relative."""
  seed_dir.mkdir(parents=True, exist_ok=True)
  link = seed_dir / algorithm.SHARDS
  if not (link.is_symlink() or link.exists()):
    try:
      link.symlink_to(os.path.relpath(shards, seed_dir), target_is_directory=True)
    except FileExistsError:   # another process of a multi-host run made it first
      pass


def _duration(seconds: float) -> str:
  minutes = int(round(seconds / 60))
  return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def run(config: ml_collections.ConfigDict, workdir: str | Path, command: str | None = None
        ) -> dict:
  """Runs (or resumes) the whole sweep in `workdir`; writes and returns sweep.json's content."""
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  utterances = algorithm.read_corpus(config, workdir)
  algorithm.preprocess(config, utterances, workdir)
  runs = plan(config, algorithm.taking_part(config, utterances))
  began, done_here = time.monotonic(), 0
  for i, r in enumerate(runs, 1):
    run_dir = r.directory(workdir)
    where = f"model {r.model}, protocol {r.protocol}, seed {r.seed}, fold {r.fold}"
    if (run_dir / "results.json").exists():
      logging.info("sweep: run %d of %d (%s) finished earlier", i, len(runs), where)
      continue
    left = ""
    if done_here:
      per_run = (time.monotonic() - began) / done_here
      left = f"; about {_duration(per_run * (len(runs) - i + 1))} left"
    logging.info("sweep: run %d of %d (%s)%s", i, len(runs), where, left)
    _link_shards(run_dir.parent, workdir / algorithm.SHARDS)
    algorithm.run(run_config(config, r), run_dir, "all")
    done_here += 1
  result = collect(workdir, runs, config)
  result["command"] = command or " ".join(["python -m lbher_jax.main", *sys.argv[1:]])
  if jax.process_index() == 0:
    write_outputs(workdir, result, config)
    print(summary_markdown(result))
  return result


def _arm(run: Run, protocol_sweep: bool) -> str:
  """The summary key of a run's arm: its model, or model/protocol in a sweep over protocols."""
  return f"{run.model}/{run.protocol}" if protocol_sweep else run.model


def collect(workdir: Path, runs: list[Run], config: ml_collections.ConfigDict) -> dict:
  """sweep.json's content from the finished runs' results.json: runs, summary, paired."""
  protocol_sweep = bool(tuple(config.sweep.protocols))
  rows = []
  planned: collections.Counter = collections.Counter()   # (arm, seed) -> folds planned
  matrices: dict[tuple[str, int], list[np.ndarray]] = {}  # (arm, seed) -> finished folds' matrices
  arm_of = {}
  for r in runs:
    arm = _arm(r, protocol_sweep)
    planned[(arm, r.seed)] += 1
    arm_of[arm] = (r.model, r.protocol)
    path = r.directory(workdir) / "results.json"
    if not path.exists():
      continue
    res = json.loads(path.read_text())
    rows.append({"model": r.model, "protocol": r.protocol, "seed": r.seed, "fold": r.fold,
                 **{k: res[k] for k in METRICS}, "num_test": res["num_test"],
                 "leaky": bool(res.get("leaky"))})
    matrices.setdefault((arm, r.seed), []).append(np.array(res["confusion_matrix"]))
    for layer, head in (res.get("heads") or {}).items():
      # A two-stream model's own per-stream output layer: what that stream gives alone.
      arm_of[f"{arm}:{layer}"] = (f"{r.model}:{layer}", r.protocol)
      matrices.setdefault((f"{arm}:{layer}", r.seed), []).append(
        np.array(head["confusion_matrix"]))
  # One unit per (arm, seed), only when all its planned folds are done.
  units: dict[str, dict[int, dict]] = {}
  for (arm, seed), done in matrices.items():
    if len(done) == planned[(arm.split(":")[0], seed)]:
      units.setdefault(arm, {})[seed] = metrics_lib.classification_metrics(
        np.sum(done, axis=0), LABELS)
  summary = {arm: {k: stats.summarize([u[k] for u in by_seed.values()]) for k in METRICS}
             for arm, by_seed in units.items()}
  paired = []
  for a, b in itertools.combinations(units, 2):
    (ma, pa), (mb, pb) = arm_of[a], arm_of[b]
    if ma != mb and pa != pb:
      continue   # compare models under one protocol, or one model under two protocols
    seeds = sorted(set(units[a]) & set(units[b]))
    if not seeds:
      continue
    for k in METRICS:
      paired.append({"a": a, "b": b, "metric": k,
                     **stats.paired([units[a][s][k] for s in seeds],
                                    [units[b][s][k] for s in seeds])})
  complete = {arm: sorted(by_seed) for arm, by_seed in units.items() if ":" not in arm}
  per_seed = {arm: {str(seed): {k: u[k] for k in METRICS} for seed, u in sorted(by_seed.items())}
              for arm, by_seed in units.items()}
  return {"runs": rows, "summary": summary, "units": per_seed, "paired": paired,
          "ensembles": seed_ensembles(workdir, runs, complete, protocol_sweep),
          "methods": {"unit": "one seed's result, the confusion matrices of its folds summed "
                              "(every test clip once per seed)",
                      "interval": stats.INTERVAL_METHOD, "paired": stats.PAIRED_METHOD,
                      "layers": "ARM:audio / ARM:video: a two-stream model's own per-stream "
                                "output layers, scored on the same clips",
                      "ensemble": "each test clip's probabilities averaged over the seeds' "
                                  "runs that tested it; interval of the ensemble minus its "
                                  f"members' mean: {stats.BOOTSTRAP_METHOD}"},
          "planned_runs": len(runs), "finished_runs": len(rows)}


def seed_ensembles(workdir: Path, runs: list[Run], complete: dict[str, list[int]],
                   protocol_sweep: bool) -> dict:
  """Per arm with at least 2 complete seeds: the seed ensemble, each test clip's probabilities
  averaged over the seeds' runs (every one of which tested the clip without having trained on
  its speaker), scored on the clips that every seed tested, against its members on the same
  clips, with a speaker bootstrap interval of the difference in UA.

  It estimates what averaging K trainings gives (`--mode predict --ensemble`).
  """
  predictions: dict[tuple[str, int], dict] = {}
  for r in runs:
    arm = _arm(r, protocol_sweep)
    path = r.directory(workdir) / "predictions.csv"
    if r.seed in complete.get(arm, ()) and path.exists():
      predictions.setdefault((arm, r.seed), {}).update(report.read_predictions_csv(path))
  out = {}
  for arm, seeds in complete.items():
    seeds = [s for s in seeds if (arm, s) in predictions]
    if len(seeds) < 2:
      continue
    ids = sorted(set.intersection(*(set(predictions[(arm, s)]) for s in seeds)))
    if not ids:   # e.g. random splits whose test sets share no clip
      continue
    first = predictions[(arm, seeds[0])]
    truth = np.array([first[i][1] for i in ids])
    speakers = [first[i][0] for i in ids]
    probs = np.stack([[predictions[(arm, s)][i][2] for i in ids] for s in seeds])
    members, ensemble = probs.argmax(-1), probs.mean(0).argmax(-1)

    def scores(pred: np.ndarray, idx: np.ndarray) -> dict:
      cm = metrics_lib.confusion_matrix(truth[idx], pred[idx], len(LABELS))
      return metrics_lib.classification_metrics(cm, LABELS)

    def ua(pred: np.ndarray, idx: np.ndarray) -> float:
      return scores(pred, idx)["unweighted_accuracy"]

    def gain(idx: np.ndarray) -> float:
      return ua(ensemble, idx) - float(np.mean([ua(m, idx) for m in members]))

    every = np.arange(len(ids))
    whole = scores(ensemble, every)
    out[arm] = {"seeds": seeds, "clips": len(ids), "speakers": len(set(speakers)),
                **{k: whole[k] for k in METRICS},
                "members_unweighted_accuracy": [ua(m, every) for m in members],
                "gain_unweighted_accuracy": {"mean_difference": gain(every),
                                             "ci95": stats.grouped_bootstrap(gain, speakers)}}
  return out


def summary_markdown(result: dict) -> str:
  """The summary and paired tables of a sweep as Markdown."""
  lines = ["Mean and 95 % interval over seeds (n = number of seeds); each seed's value has every "
           "test clip once.", "",
           "| arm | n | accuracy (WA) | unweighted accuracy (UA) | macro-F1 |",
           "|---|---|---|---|---|"]
  for arm, s in result["summary"].items():
    lines.append(f"| {arm} | {s['accuracy']['n']} | "
                 + " | ".join(stats.format_interval(s[k]) for k in METRICS) + " |")
  if result["paired"]:
    lines += ["", "Paired differences a - b over the same seeds (and so the same folds):", "",
              "| a | b | metric | mean difference [95 % interval] | p | n |",
              "|---|---|---|---|---|---|"]
    for p in result["paired"]:
      ci = ("no interval" if p["ci95"] is None
            else f"{p['mean_difference']:+.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}]")
      pv = "–" if p["p_value"] is None else f"{p['p_value']:.3g}"
      lines.append(f"| {p['a']} | {p['b']} | {p['metric']} | {ci} | {pv} | {p['n']} |")
  if result.get("ensembles"):
    lines += ["", "Seed ensembles: each clip's probabilities averaged over the seeds' runs; "
              "minus the members' mean UA on the same clips, with a speaker bootstrap interval:",
              "", "| arm | seeds | clips | UA | members' UA | ensemble - members (UA) |",
              "|---|---|---|---|---|---|"]
    for arm, e in result["ensembles"].items():
      g = e["gain_unweighted_accuracy"]
      members = ", ".join(f"{u:.3f}" for u in e["members_unweighted_accuracy"])
      lines.append(f"| {arm} | {','.join(map(str, e['seeds']))} | {e['clips']} | "
                   f"{e['unweighted_accuracy']:.3f} | {members} | {g['mean_difference']:+.3f} "
                   f"[{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}] |")
  return "\n".join(lines) + "\n"


def write_outputs(workdir: Path, result: dict, config: ml_collections.ConfigDict) -> None:
  """sweep.json, sweep.md, sweep.csv, figures/sweep.png; Table 2 files for a protocol sweep."""
  files.atomic_write_json(workdir / "sweep.json", result)
  m = result["methods"]
  text = "\n".join([
      "# Sweep", "", f"Command: `{result['command']}`", "",
      f"{result['finished_runs']} of {result['planned_runs']} runs finished. Unit: {m['unit']}. "
      f"Intervals: {m['interval']}. Paired: {m['paired']}. {m['layers']}. Seed ensembles: "
      f"{m['ensemble']}.", "",
      summary_markdown(result)])
  files.atomic_write_text(workdir / "sweep.md", text)
  buf = io.StringIO()
  fields = ["model", "protocol", "seed", "fold", *METRICS, "num_test", "leaky"]
  writer = csv.DictWriter(buf, fields, lineterminator="\n")
  writer.writeheader()
  writer.writerows(result["runs"])
  files.atomic_write_text(workdir / "sweep.csv", buf.getvalue())
  if result["summary"]:
    plots.plot_sweep(result["summary"], workdir / "figures" / "sweep.png")
  if tuple(config.sweep.protocols):
    rows = table2_rows(result)
    files.atomic_write_text(workdir / "table2.md", table2_markdown(rows))
    report.table2_csv(workdir / "table2.csv", rows)
    plots.plot_table2(rows, workdir / "figures" / "table2.png")


def table2_rows(result: dict) -> list[dict]:
  """Table 2 rows (report.table2_markdown's format) from a protocol sweep's summary."""
  rows = []
  for arm, s in result["summary"].items():
    if ":" in arm:
      continue   # a stream layer of a two-stream model: not one of the paper's models
    model, protocol = arm.split("/")   # a protocol sweep: every arm is model/protocol
    rows.append({"model": model, "protocol": protocol, "accuracy": s["accuracy"]["mean"],
                 "unweighted_accuracy": s["unweighted_accuracy"]["mean"],
                 "accuracy_ci95": s["accuracy"]["ci95"],
                 "unweighted_accuracy_ci95": s["unweighted_accuracy"]["ci95"],
                 "n": s["accuracy"]["n"]})
  return rows


def table2_markdown(rows: list[dict]) -> str:
  """table2.md: this sweep's Table 2 with intervals, then the paper's figures."""
  return "\n".join([
      "# Table 2: accuracy of each model under each protocol", "",
      "Mean over seeds with the 95 % interval (sweep.md says how). Random splits put clips of the "
      "same speakers on both sides; the speaker-independent split does not.", "",
      report.table2_markdown(rows),
      "## The paper's Table 2 (accuracy only)", "",
      report.table2_markdown(list(report.PAPER_TABLE2)),
  ])
