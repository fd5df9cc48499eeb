"""Table 2 of the paper: every model under every split protocol, trained and evaluated in turn.

Layout of the sweep's workdir DIR:
  DIR/shards/                 preprocessed once; each run's `shards` is a link to it
  DIR/<model>/<protocol>/     one Algorithm 1 run (results.json, checkpoints/, figures/, ...)
  DIR/table2.md, table2.csv   the table (accuracy / unweighted accuracy), the paper's beside it
  DIR/figures/table2.png      the paper's Fig. 13 as bars

Each run resumes like any Algorithm 1 run, so a killed sweep picks up where it stopped and
finished runs are only reported again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import ml_collections
from absl import logging

from lbher_jax import algorithm, files
from lbher_jax.evaluation import plots, report

PROTOCOLS: dict[str, tuple[str, float | None]] = {
    "90-10": ("random", 0.1),
    "80-20": ("random", 0.2),
    "70-30": ("random", 0.3),
    "speaker": ("speaker", None),
}
"""Table 2 protocol key -> (config.split.protocol, config.split.test_fraction or None = keep)."""


def run_config(config: ml_collections.ConfigDict, model: str,
               protocol: str) -> ml_collections.ConfigDict:
  """The config of one run of the sweep: `config` with the model and split protocol set."""
  if protocol not in PROTOCOLS:
    raise ValueError(f"unknown Table 2 protocol {protocol!r}; expected one of {list(PROTOCOLS)}")
  c = config.copy_and_resolve_references()
  c.model.name = model
  c.split.protocol, fraction = PROTOCOLS[protocol]
  if fraction is not None:
    c.split.test_fraction = fraction
  return c


def _link_shards(run_dir: Path, shards: Path) -> None:
  """Points run_dir/shards at the sweep's shards (relative, so DIR can be moved)."""
  run_dir.mkdir(parents=True, exist_ok=True)
  link = run_dir / algorithm.SHARDS
  if not (link.is_symlink() or link.exists()):
    try:
      link.symlink_to(os.path.relpath(shards, run_dir), target_is_directory=True)
    except FileExistsError:   # another process of a multi-host run made it first
      pass


def table_row(results: dict, model: str, protocol: str) -> dict:
  """One Table 2 row (the format of report.table2_markdown) from a run's results.json."""
  return {"model": model, "protocol": protocol, "accuracy": results["accuracy"],
          "unweighted_accuracy": results["unweighted_accuracy"],
          "num_test": results["num_test"], "leaky": bool(results.get("leaky"))}


def table_markdown(rows: list[dict], config: ml_collections.ConfigDict) -> str:
  """table2.md: this sweep's table, how it was made, then the paper's figures."""
  leaky = config.split.leaky_paper_oversampling
  balance = ("oversampled before the split, as the paper did (leaky)" if leaky
             else "balanced after the split, training part only")
  return "\n".join([
      "# Table 2: accuracy of each model under each protocol", "",
      f"Corpus `{config.data.name}`; seed {config.seed}; classes {balance}. Random splits put "
      "clips of the same speakers on both sides; the speaker-independent split does not.", "",
      report.table2_markdown(rows),
      "## The paper's Table 2 (accuracy only)", "",
      report.table2_markdown(list(report.PAPER_TABLE2)),
  ])


def write_tables(rows: list[dict], config: ml_collections.ConfigDict, workdir: Path) -> None:
  """DIR/table2.md, DIR/table2.csv and DIR/figures/table2.png."""
  files.atomic_write_text(workdir / "table2.md", table_markdown(rows, config))
  report.table2_csv(workdir / "table2.csv", rows)
  plots.plot_table2(rows, workdir / "figures" / "table2.png")


def run(config: ml_collections.ConfigDict, workdir: str | Path, mode: str = "all") -> list[dict]:
  """Runs `mode` of Algorithm 1 for config.table2.models x config.table2.protocols in `workdir`.

  Returns the Table 2 rows of the runs that have results (and writes the tables when any do).
  """
  workdir = Path(workdir)
  algorithm.run(config, workdir, "preprocess")
  if mode == "preprocess":
    return []
  rows = []
  for model in config.table2.models:
    for protocol in config.table2.protocols:
      run_dir = workdir / model / protocol
      _link_shards(run_dir, workdir / algorithm.SHARDS)
      logging.info("Table 2: model %s, protocol %s in %s", model, protocol, run_dir)
      algorithm.run(run_config(config, model, protocol), run_dir, mode)
      results = run_dir / "results.json"
      if results.exists():
        rows.append(table_row(json.loads(results.read_text()), model, protocol))
  if rows and jax.process_index() == 0:
    write_tables(rows, config, workdir)
    print(report.table2_markdown(rows))
    print(f"Table 2: {workdir / 'table2.md'}, {workdir / 'table2.csv'}, "
          f"{workdir / 'figures' / 'table2.png'}")
  return rows
