"""Input-pipeline throughput, and the cost of training augmentation in the step (issue 23).

Writes shards of random arrays of the model's input shapes (`lbher_jax.data.shards`) into a
temporary directory and reads them back through the training loader
(`lbher_jax.data.loader.train_loader`: shuffling and batching; augmentation is no longer on the
host) and onto the device (`mesh.to_global`), for paper and demo (small) sizes. Reports
examples/s delivered to the device after the first batch (the median of 5 windows), and the
ratio to the training step's examples/s at the same sizes, taken from benchmarks/train_step.py's JSON (or given with
--train-examples-per-s SCALE=X). Then times, at each scale, the jitted augmentation of a batch
(`lbher_jax.train.augment.augment_batch`) and the fine-tuning step with and without it.
Targets: >= 2,500 paper-scale examples/s delivered; the loader >= 3x what the step consumes; the
augmented step no slower than the plain step plus the host augmentation it replaced.

  python benchmarks/loader.py [--scales paper,small] [--batches 20] [--workers 0]
                              [--train-json benchmarks/results/train_step_cpu.json] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
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

import jax  # noqa: E402

from configs import at_scale  # noqa: E402
from lbher_jax import models  # noqa: E402
from lbher_jax.data import loader, shards  # noqa: E402
from lbher_jax.train import augment, mesh as mesh_lib, state as state_lib, steps  # noqa: E402

TARGETS = {"loader_over_train_step_min": 3.0, "paper_examples_per_s_min": 2500.0}
# The host augmentation this replaced, measured by this benchmark on 2026-11-24 (AMD EPYC,
# 2 CPUs): 0.0375 s of CPU per paper-scale batch of 8, 297 examples/s.
HOST_AUGMENT_S_PER_PAPER_EXAMPLE = 0.0375 / 8
WINDOWS = 5
DEFAULT_BATCH = {"paper": 32, "small": 16, "tiny": 4}   # the configs' training batches
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
  """examples/s of the training loader at `scale`'s input sizes, delivered to the device."""
  config = at_scale(scale)
  mesh = mesh_lib.make_mesh(jax.local_devices()[:1])
  with tempfile.TemporaryDirectory(prefix="lbher_loader_bench_") as tmp:
    source = write_shards(Path(tmp), config, rows=4 * batch,
                          per_shard=config.data.per_shard)
    iterator = iter(loader.train_loader(source, global_batch=batch, seed=0, workers=workers))
    next(iterator)  # start-up (and worker start) is not throughput
    rates, cpu = [], time.process_time()
    for _ in range(WINDOWS):   # the median of several windows: this VM's memory speed wanders
      start = time.perf_counter()
      for _ in range(batches):
        out = jax.block_until_ready(mesh_lib.to_global(next(iterator), mesh))
      rates.append(batch * batches / (time.perf_counter() - start))
    cpu = time.process_time() - cpu
  a, v = config.audio, config.video
  assert out["audio"].shape == (batch, a.height, a.width)
  return {"batch": batch, "batches": batches, "windows": WINDOWS, "workers": workers,
          "spectrogram": [a.height, a.width],
          "frames": [v.frames_per_segment, v.height, v.width],
          "examples_per_s": round(float(np.median(rates)), 2),
          "examples_per_s_windows": [round(r, 1) for r in rates],
          "process_cpu_s_per_batch": round(cpu / batches / WINDOWS, 4)}


def _median_s(fn, rounds: int) -> float:
  times = []
  for _ in range(rounds):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def bench_augment(scale: str, batch: int, rounds: int) -> dict:
  """Seconds per batch of the jitted augmentation alone and of the fine-tuning step with and
  without it (the paper's augmentation plus face mirroring and shifts)."""
  config = at_scale(scale)
  params = augment.AugmentParams(**{**config.augment.to_dict(), "frames_flip": True,
                                    "frames_shift": 0.06})
  rng = np.random.default_rng(0)
  spec = models.batch_spec(config, batch)
  host = {"audio": rng.uniform(-1, 1, spec["audio"].shape).astype(np.float32),
          "video": rng.integers(0, 256, spec["video"].shape, dtype=np.uint8),
          "label": (np.arange(batch) % 4).astype(np.int32),
          "clip": np.arange(batch, dtype=np.int32), "weight": np.ones(batch, np.float32)}
  mesh = mesh_lib.make_mesh(jax.local_devices()[:1])
  data = mesh_lib.to_global(host, mesh)
  key = jax.random.key(0)
  aug = jax.jit(lambda b: augment.augment_batch(b, key, params))
  jax.block_until_ready(aug(data))
  result = {"batch": batch, "augment": dataclasses.asdict(params),
            "augment_s_per_batch": round(_median_s(lambda: aug(data), rounds), 4)}
  model = models.get_model(config.model)
  tx, _ = state_lib.make_optimizer(1e-4, 0, 10, 1e-4, 1.0)
  runs, times = {}, {}
  for name, with_aug in (("step_s", False), ("augmented_step_s", True)):
    fn = steps.jit_train_step(steps.make_train_step(
        model, "finetune", aux_weight=1.0, augment_params=params if with_aug else None), mesh)
    holder = {"state": jax.jit(lambda k: state_lib.create(model, tx, spec, k))(jax.random.key(0))}

    def run(fn=fn, holder=holder):
      holder["state"], metrics = fn(holder["state"], data)
      return metrics["loss"]
    for _ in range(2):   # compilation, then the first execution's allocations
      jax.block_until_ready(run())
    runs[name], times[name] = run, []
  for _ in range(rounds):   # interleaved, so that load from elsewhere hits both alike
    for name, run in runs.items():
      times[name].append(_median_s(run, 1))
  result.update({name: round(float(np.median(t)), 4) for name, t in times.items()})
  result["augment_share_of_step"] = round(
      (result["augmented_step_s"] - result["step_s"]) / result["step_s"], 3)
  return result


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
  parser.add_argument("--rounds", type=int, default=7, help="timed steps per augmentation form")
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
    r["augmentation"] = g = bench_augment(scale, r["batch"], args.rounds)
    line = (f"{scale}: augmentation {g['augment_s_per_batch']:.4f} s per batch of {g['batch']}; "
            f"fine-tuning step {g['step_s']:.3f} s, with augmentation {g['augmented_step_s']:.3f} s")
    if scale == "paper":
      host_s = HOST_AUGMENT_S_PER_PAPER_EXAMPLE * g["batch"]
      g["replaced_host_augment_s_per_batch"] = round(host_s, 4)
      meets["paper_augmented_step"] = g["augmented_step_s"] <= g["step_s"] + host_s
      meets["paper_examples_per_s"] = r["examples_per_s"] >= TARGETS["paper_examples_per_s_min"]
      line += f" (the host augmentation it replaced: {host_s:.3f} s)"
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
