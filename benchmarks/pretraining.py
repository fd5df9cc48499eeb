"""What contrastive pre-training learns, on a development fold (issue 21).

Pre-trains the hybrid of a config (`--mode pretrain` of Algorithm 1) in WORKDIR and reports the
audio-visual correspondence (`lbher_jax.evaluation.correspondence`) of the pre-trained weights
on the fold's test speakers and on the training clips. Choices are made on a development fold
(default 1), so that the reported fold (the config's, 0) is never looked at while choosing.

  python benchmarks/pretraining.py --workdir runs/pre_dev [--config configs/demo.py] [--fold 1]
      [--set pretrain.loss=infonce --set model.projection_dim=64 ...] [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np

from common import load_config, machine  # benchmarks/common.py (the script's own folder)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from lbher_jax import algorithm, config_checks, inference  # noqa: E402
from lbher_jax.data import loader  # noqa: E402
from lbher_jax.models import get_model  # noqa: E402
from lbher_jax.train import mesh as mesh_lib  # noqa: E402


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/demo.py")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--fold", type=int, default=1)
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)
  config = load_config(args.config, args.set)
  config.split.fold = args.fold
  config_checks.check(config)
  began = time.perf_counter()
  workdir = Path(args.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  utterances = algorithm.read_corpus(config, workdir)
  records = algorithm.preprocess(config, utterances, workdir)
  parts = algorithm.split(config, utterances, records, args.fold)
  mesh = mesh_lib.make_mesh()
  algorithm.train(config, parts, workdir, mesh, phases=("pretrain",))
  model = get_model(config.model)
  example = loader.source_from_records(workdir / algorithm.SHARDS, parts.test)[0]
  shapes = {k: (config.eval.batch_size, *np.shape(v)) for k, v in example.items()}
  state = inference.restore(model, mesh, workdir, shapes, phase="pretrain",
                                     prefer_best=False)
  out = {}
  for side, rows in (("test", parts.test), ("train", parts.pretrain)):
    m = algorithm.pretraining_metrics(model, state, workdir / algorithm.SHARDS, rows, mesh,
                                      config.eval.batch_size, config.audio.segment_seconds)
    m.pop("_distances")
    out[side] = m
  result = {"config": args.config, "overrides": args.set, "fold": args.fold, **out,
            "seconds": round(time.perf_counter() - began, 1), "machine": machine(),
            "date": datetime.date.today().isoformat()}
  for side in ("test", "train"):
    m = out[side]
    same = m["auc_same_emotion"]
    print(f"{side:5s} auc_all {m['auc_all']:.3f}  auc_same_emotion "
          f"{'-' if same is None else f'{same:.3f}'}  top1_all {m['top1_all']:.3f}  "
          f"({m['candidates']:.1f} candidates)")
  if args.json:
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
  return result


if __name__ == "__main__":
  main()
