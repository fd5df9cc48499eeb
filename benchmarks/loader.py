"""Input-pipeline throughput against what the training step consumes (issue 7).

Writes shards of random arrays of the model's input shapes (`lbher_jax.data.shards`) into a
temporary directory and reads them back through the training loader
(`lbher_jax.data.loader.train_loader`: shuffling, the paper's spectrogram augmentation with the
config's settings, batching) for paper and demo (small) sizes. Reports examples/s after the
first batch and the ratio to the training step's examples/s at the same sizes, taken from
benchmarks/train_step.py's JSON (or given with --train-examples-per-s SCALE=X). The target:
the loader delivers at least 3x what the step consumes.

  python benchmarks/loader.py [--scales paper,small] [--batches 20] [--workers 0]
                              [--train-json benchmarks/results/train_step_cpu.json] [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import machine  # benchmarks/common.py (the script's own folder)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from configs import at_scale  # noqa: E402
from lbher_jax import models  # noqa: E402
from lbher_jax.data import loader, shards  # noqa: E402
from lbher_jax.features import augment  # noqa: E402

TARGETS = {"loader_over_train_step_min": 3.0}
DEFAULT_BATCH = {"paper": 8, "small": 16, "tiny": 4}
TRAIN_JSON = PROJECT_ROOT / "benchmarks" / "results" / "train_step_cpu.json"


def write_shards(directory: Path, config, rows: int, per_shard: int) -> loader.SegmentSource:
  """`rows` random examples of the config's input shapes in shards of `per_shard` rows."""
  rng = np.random.default_rng(0)
  spec = models.batch_spec(config, 1)
  f, t = spec["audio"].shape[1:]
  s, h, w = spec["video"].shape[1:4]
  records = []
  for shard_id, begin in enumerate(range(0, rows, per_shard)):
    n = min(per_shard, rows - begin)
    arrays = {"audio": rng.uniform(-1, 1, (n, f, t)).astype(np.float16),
              "video": rng.integers(0, 256, (n, s, h, w, 3), dtype=np.uint8)}
    shard_records = [{"utt": f"u{begin + i}", "label_id": (begin + i) % 4, "shard": shard_id,
                      "row": i} for i in range(n)]
    shards.write_shard(directory, shard_id, arrays, shard_records, rejects=[])
    records += shard_records
  return loader.source_from_records(directory, records)


def bench_scale(scale: str, batch: int, batches: int, workers: int) -> dict:
  """examples/s of the training loader at `scale`'s input sizes and augmentation."""
  config = at_scale(scale)
  params = augment.AugmentParams(**config.augment.to_dict())
  with tempfile.TemporaryDirectory(prefix="lbher_loader_bench_") as tmp:
    source = write_shards(Path(tmp), config, rows=4 * batch,
                          per_shard=config.data.per_shard)
    iterator = iter(loader.train_loader(source, global_batch=batch, seed=0,
                                        augment_params=params, workers=workers))
    next(iterator)  # start-up (and worker start) is not throughput
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
      out = next(iterator)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
  a, v = config.audio, config.video
  assert out["audio"].shape == (batch, a.height, a.width)
  return {"batch": batch, "batches": batches, "workers": workers,
          "augment": config.augment.to_dict(), "spectrogram": [a.height, a.width],
          "frames": [v.frames_per_segment, v.height, v.width],
          "examples_per_s": round(batch * batches / wall, 2),
          "process_cpu_s_per_batch": round(cpu / batches, 4)}


def train_rates(path: Path, given: list[str]) -> dict[str, float]:
  """Training-step examples/s per scale: --train-examples-per-s, else train_step.py's JSON."""
  rates = {}
  if path.exists():
    for scale, result in json.loads(path.read_text())["scales"].items():
      rates[scale] = result["runs"]["jax_finetune"]["examples_per_s"]
  for item in given:
    scale, value = item.split("=")
    rates[scale] = float(value)
  return rates


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--scales", default="paper,small", help="comma-separated model scales")
  parser.add_argument("--batch", type=int, help=f"batch size (default per scale: {DEFAULT_BATCH})")
  parser.add_argument("--batches", type=int, default=20, help="timed batches per scale")
  parser.add_argument("--workers", type=int, default=0, help="Grain worker processes")
  parser.add_argument("--train-json", type=Path, default=TRAIN_JSON,
                      help="benchmarks/train_step.py's JSON (training-step examples/s)")
  parser.add_argument("--train-examples-per-s", action="append", default=[],
                      metavar="SCALE=X", help="training-step examples/s (overrides the JSON)")
  parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
  args = parser.parse_args()
  load_before = os.getloadavg()
  rates = train_rates(args.train_json, args.train_examples_per_s)
  results, meets = {}, {}
  for scale in args.scales.split(","):
    results[scale] = r = bench_scale(scale, args.batch or DEFAULT_BATCH[scale], args.batches,
                                     args.workers)
    line = f"{scale}: loader {r['examples_per_s']:.1f} examples/s (batch {r['batch']})"
    if scale in rates:
      r["train_step_examples_per_s"] = rates[scale]
      r["loader_over_train_step"] = round(r["examples_per_s"] / rates[scale], 2)
      meets[scale] = r["loader_over_train_step"] >= TARGETS["loader_over_train_step_min"]
      line += (f"; training step {rates[scale]:.2f} examples/s: {r['loader_over_train_step']:.1f}x "
               f"({'met' if meets[scale] else 'NOT met'}: >= "
               f"{TARGETS['loader_over_train_step_min']:.0f}x)")
    print(line, flush=True)
  if args.json:
    out = {"machine": machine(), "date": datetime.date.today().isoformat(),
           "loadavg_before": [round(x, 2) for x in load_before],
           "loadavg_after": [round(x, 2) for x in os.getloadavg()],
           "train_step_source": (str(args.train_json) if args.train_json.exists() else None),
           "scales": results, "targets": TARGETS, "meets_targets": meets or None}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
  main()
