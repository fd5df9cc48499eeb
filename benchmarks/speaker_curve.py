"""The learning curve over training speakers: how a model's speaker-independent UA grows with the
number of people it learns from, beside logistic regressions on the same people.

For each count K in --sizes, one sweep of --model over the config's speaker folds (every fold,
every seed) with `split.train_speakers=K`: each fold trains on K of its training speakers, a
seeded subset that grows with K (the speakers of a smaller K are among those of a larger one),
while its test and validation speakers stay those of the full split. The regressions of
benchmarks/baselines.py are fitted on the same K speakers of the same folds: on voice MFCC
statistics, on face pixels, and on the statistics of the learned audio models' own input
spectrograms (what that input holds, model aside). Each sweep lives in WORKDIR/speakers_K and
resumes like any `--mode sweep`. Per K: the mean and 95 % interval over seeds of each (a
hybrid's stream layers included). Over all (K, seed) values: the least-squares line
UA = a + b log2(K), so b is the gain per doubling of the training speakers, and the K at which
that line would reach --target (an extrapolation, and labelled so). Writes
WORKDIR/speaker_curve.md and WORKDIR/figures/speaker_curve.png.

  python benchmarks/speaker_curve.py --workdir runs/speaker_curve
      [--config configs/ravdess.py:fer_av] [--model cnn_rnn] [--sizes 4,7,10,13]
      [--seeds 0,1,2] [--target 0.60] [--set KEY=VALUE ...] [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import scipy.stats

from common import load_config, machine  # benchmarks/common.py (the script's own folder)
import baselines  # benchmarks/baselines.py

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from lbher_jax import algorithm, config_checks, sweep  # noqa: E402
from lbher_jax.data import preprocess  # noqa: E402
from lbher_jax.evaluation import plots, stats  # noqa: E402

METRIC = "unweighted_accuracy"
BASELINES = {"voice_mfcc": "MFCC logistic regression",
             "voice_spectrogram": "regression on the models' spectrogram statistics",
             "face_pixels": "face-pixel logistic regression"}


def size_config(spec: str, overrides: list[str], model: str, size: int, seeds: list[int]):
  """The sweep config at K = `size` training speakers: every speaker fold, one model."""
  config = load_config(spec, overrides)
  config.update_from_flattened_dict({"split.test_speakers": (), "split.fold": -1,
                                     "split.train_speakers": size})
  config.model.name = model
  config.sweep.models = (model,)
  config.sweep.seeds = tuple(seeds)
  config_checks.check(config)
  return config


def log_fit(points: list[tuple[int, float]], target: float) -> dict:
  """Least squares UA = a + b log2(K) over (K, UA) points: b with its Student t 95 % interval
  (n - 2 degrees of freedom; None for 2 points) and the K at which the line reaches `target`
  (None where the line does not rise)."""
  x = np.log2([k for k, _ in points])
  y = np.array([v for _, v in points], np.float64)
  n = len(x)
  if np.ptp(x) == 0:
    raise ValueError("the fit needs points at 2 sizes or more")
  b, a = np.polyfit(x, y, 1)
  ci = None
  if n > 2:
    residual = y - (a + b * x)
    se = math.sqrt(float(residual @ residual) / (n - 2) / float(((x - x.mean()) ** 2).sum()))
    half = float(scipy.stats.t.ppf(0.975, n - 2)) * se
    ci = [float(b - half), float(b + half)]
  reach = float(2.0 ** ((target - a) / b)) if b > 1e-9 else None   # flat or falling: never
  return {"intercept": float(a), "per_doubling": float(b), "per_doubling_ci95": ci, "n": n,
          "target": target, "speakers_to_target": reach}


def baseline_values(config, workdir: Path, sizes: list[int],
                    seeds: list[int]) -> dict[str, dict[int, dict[int, float]]]:
  """Each regression's UA per size and seed, on the sweeps' own folds and speakers."""
  utterances = algorithm.taking_part(config, algorithm.read_corpus(config, workdir))
  settings = algorithm.settings(config)
  features = {**baselines.clip_features(utterances),
              "voice_spectrogram": np.stack([baselines.spectrogram_features(
                  preprocess.featurize(u, settings)[0]) for u in utterances])}
  s = config.split
  out = {name: {size: {} for size in sizes} for name in BASELINES.values()}
  for size in sizes:
    for seed in seeds:
      result = baselines.cross_validate(utterances, features, s.num_folds, seed,
                                        train_speakers=size, val_fraction=s.val_fraction)
      for key, name in BASELINES.items():
        out[name][size][seed] = result[key][METRIC]
  return out


def markdown(out: dict) -> str:
  """The table a person reads."""
  names = list(out["curves"])
  lines = ["# UA against the number of training speakers", "", f"Command: `{out['command']}`", "",
           f"Test UA over every speaker fold, mean [95 % interval] over seeds "
           f"({stats.INTERVAL_METHOD}); each fold trains on K of its training speakers. "
           "MODEL:audio / MODEL:video are a two-stream model's own per-stream output layers.", "",
           "| training speakers K | " + " | ".join(names) + " |",
           "|---" * (len(names) + 1) + "|"]
  for k in out["sizes"]:
    lines.append(f"| {k} | " + " | ".join(stats.format_interval(out["curves"][name][str(k)])
                                         for name in names) + " |")
  lines += ["", "Least squares UA = a + b log2(K) over every (K, seed) value:", "",
            "| | gain per doubling of K [95 %] | K where the line reaches "
            f"{out['target']:.2f} (extrapolated) |", "|---|---|---|"]
  for name, fit in out["fits"].items():
    ci = fit["per_doubling_ci95"]
    ci = "(no interval)" if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"
    reach = fit["speakers_to_target"]
    lines.append(f"| {name} | {fit['per_doubling']:+.3f} {ci} | "
                 f"{'never' if reach is None else f'{reach:.0f}'} |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/ravdess.py:fer_av")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--model", default="cnn_rnn")
  parser.add_argument("--sizes", default="4,7,10,13")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--target", type=float, default=0.60)
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)
  sizes = sorted(int(k) for k in args.sizes.split(","))
  seeds = [int(s) for s in args.seeds.split(",")]
  workdir = Path(args.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  command = " ".join(["python benchmarks/speaker_curve.py", *(argv or sys.argv[1:])])
  began = time.perf_counter()
  values: dict[str, dict[int, dict[int, float]]] = {}
  for size in sizes:
    config = size_config(args.config, args.set, args.model, size, seeds)
    result = sweep.run(config, workdir / f"speakers_{size}", command=command)
    for arm, units in result["units"].items():   # the model, and a hybrid's stream layers
      values.setdefault(arm, {})[size] = {int(s): u[METRIC] for s, u in units.items()}
  values.update(baseline_values(config, workdir, sizes, seeds))
  curves = {name: {str(k): stats.summarize(list(v[k].values())) for k in sizes}
            for name, v in values.items()}
  fits = {name: log_fit([(k, u) for k in sizes for u in v[k].values()], args.target)
          for name, v in values.items()}
  out = {"model": args.model, "sizes": sizes, "seeds": seeds, "target": args.target,
         "curves": curves, "fits": fits,
         "values": {name: {str(k): {str(s): u for s, u in by_seed.items()}
                           for k, by_seed in v.items()} for name, v in values.items()},
         "metric": METRIC, "config": args.config, "overrides": args.set, "command": command,
         "seconds": round(time.perf_counter() - began, 1), "machine": machine(),
         "date": datetime.date.today().isoformat()}
  text = markdown(out)
  (workdir / "speaker_curve.md").write_text(text)
  plots.plot_curves({name: {float(k): s for k, s in c.items()} for name, c in curves.items()},
                    workdir / "figures" / "speaker_curve.png",
                    xlabel="training speakers per fold", tick=lambda k: f"{k:g}")
  print(text)
  if args.json:
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
  return out


if __name__ == "__main__":
  main()
