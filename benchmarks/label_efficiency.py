"""What contrastive pre-training buys when labels are scarce (paper §3.5; issue 21).

For each fraction of the training clips' labels (`split.label_fraction`, stratified by class,
drawn with the seed) two sweeps of the hybrid over the same seeds and split: label-free
pre-training on every training clip then fine-tuning on the labelled fraction ("pretrained"),
and fine-tuning alone ("scratch"). Each sweep lives in WORKDIR/<arm>_<fraction> and resumes
like any `--mode sweep`; finished runs are not redone. Writes the table (mean and 95 % interval
of the hybrid's test UA per arm and fraction, the paired difference pre-trained - scratch over
the same seeds), WORKDIR/label_efficiency.md and WORKDIR/figures/label_efficiency.png.

  python benchmarks/label_efficiency.py --workdir runs/labeleff [--config configs/demo.py]
      [--fractions 0.1,0.25,1.0] [--seeds 0,1,2] [--set model.sync_dim=16 ...] [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

from common import load_config, machine  # benchmarks/common.py (the script's own folder)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from lbher_jax import config_checks, sweep  # noqa: E402
from lbher_jax.evaluation import plots, stats  # noqa: E402

ARMS = {"pretrained": {"pretrain.use_labels": False}, "scratch": {"pretrain.steps": 0}}
TITLES = {"pretrained": "pre-trained + fine-tuned", "scratch": "from scratch"}
METRIC = "unweighted_accuracy"


def arm_config(spec: str, overrides: list[str], arm: str, fraction: float, seeds: list[int]):
  """The sweep config of one arm at one label fraction: the hybrid only, the given seeds."""
  config = load_config(spec, overrides)
  config.update_from_flattened_dict({**ARMS[arm], "split.label_fraction": fraction})
  config.model.name = "hybrid"
  config.sweep.models = ("hybrid",)
  config.sweep.seeds = tuple(seeds)
  config_checks.check(config)
  return config


def seed_values(result: dict) -> dict[int, float]:
  """The hybrid's test UA per seed (one fold per seed: its run's value) from sweep.json."""
  runs = [r for r in result["runs"] if r["model"] == "hybrid"]
  if len({(r["seed"], r["fold"]) for r in runs}) != len({r["seed"] for r in runs}):
    raise ValueError("label efficiency compares one fold per seed; set split.fold >= 0")
  return {r["seed"]: r[METRIC] for r in runs}


def table(values: dict[str, dict[float, dict[int, float]]]) -> dict:
  """{"curves": {ARM: {FRACTION: summary}}, "paired": {FRACTION: paired}} over common seeds."""
  curves = {arm: {f: stats.summarize(list(by_seed.values())) for f, by_seed in fr.items()}
            for arm, fr in values.items()}
  paired = {}
  for f in values["pretrained"]:
    seeds = sorted(set(values["pretrained"][f]) & set(values["scratch"].get(f, {})))
    if seeds:
      paired[f] = stats.paired([values["pretrained"][f][s] for s in seeds],
                               [values["scratch"][f][s] for s in seeds])
  return {"curves": curves, "paired": paired}


def markdown(result: dict, command: str) -> str:
  """The table a person reads: per fraction, each arm's UA and the paired difference."""
  lines = ["# Label efficiency", "", f"Command: `{command}`", "",
           f"Hybrid test {METRIC.replace('_', ' ')}, mean [95 % interval] over seeds "
           f"({stats.INTERVAL_METHOD}); difference {stats.PAIRED_METHOD}.", "",
           "| labels | pre-trained + fine-tuned | from scratch | pre-trained - scratch | p | n |",
           "|---|---|---|---|---|---|"]
  for f in sorted(result["paired"]):
    p = result["paired"][f]
    diff = ("no interval" if p["ci95"] is None else
            f"{p['mean_difference']:+.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}]")
    pv = "-" if p["p_value"] is None else f"{p['p_value']:.2g}"
    lines.append(f"| {100 * f:g} % | "
                 f"{stats.format_interval(result['curves']['pretrained'][f])} | "
                 f"{stats.format_interval(result['curves']['scratch'][f])} | {diff} | {pv} | "
                 f"{p['n']} |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/demo.py")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--fractions", default="0.1,0.25,1.0")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)
  fractions = [float(f) for f in args.fractions.split(",")]
  seeds = [int(s) for s in args.seeds.split(",")]
  workdir = Path(args.workdir)
  command = " ".join(["python benchmarks/label_efficiency.py", *(argv or sys.argv[1:])])
  began = time.perf_counter()
  values: dict[str, dict[float, dict[int, float]]] = {arm: {} for arm in ARMS}
  for fraction in fractions:
    for arm in ARMS:
      config = arm_config(args.config, args.set, arm, fraction, seeds)
      result = sweep.run(config, workdir / f"{arm}_{fraction:g}", command=command)
      values[arm][fraction] = seed_values(result)
  out = {**table(values), "values": values, "metric": METRIC, "config": args.config,
         "overrides": args.set, "seeds": seeds, "command": command, "seconds": round(time.perf_counter() - began, 1),
         "machine": machine(), "date": datetime.date.today().isoformat()}
  (workdir / "label_efficiency.md").write_text(markdown(out, command))
  plots.plot_curves(
    {f"{TITLES[arm]} (hybrid)": points for arm, points in out["curves"].items()},
    workdir / "figures" / "label_efficiency.png", xlabel="training clips with labels",
    tick=lambda f: f"{100 * f:g} %")
  print(markdown(out, command))
  if args.json:
    Path(args.json).write_text(json.dumps(out, indent=1, default=str) + "\n")
  return out


if __name__ == "__main__":
  main()
