"""Training-step throughput and correctness on 1, 2, 4 simulated CPU devices (issue 7).

For each device count N, a fresh process (jax_num_cpu_devices = N) builds `hybrid` at the
chosen scale, the project's AdamW state (`lbher_jax.train.state`) replicated and the batch
split over the 'data' mesh axis (`lbher_jax.train.mesh`), and runs the jitted fine-tuning step
(`lbher_jax.train.steps`) on the same batch from the same initial state. Reports examples/s after
warm-up and checks the sharded run against N = 1: the first step (same state, same batch) must
give the same loss and gradient norm (rtol 1e-4). Later steps and the final parameters are
reported, not judged: Adam moves a weight whose gradient is ~0 by about the learning rate in
the direction of that gradient's sign, which float rounding under another summation order can
flip, so trajectories drift apart by rounding alone.

The simulated devices share this machine's cores, so N > 1 shows the cost of partitioning
(collectives, smaller per-device matmuls), not a speed-up.

  python benchmarks/scaling.py [--scale small] [--batch 16] [--devices 1,2,4] [--steps 4]
                               [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

from common import machine  # benchmarks/common.py (the script's own folder)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RTOL_METRICS = 1e-4


def child(spec: dict, out_dir: Path) -> None:
  """One device count (own process): time the step, save metrics and final parameters."""
  import jax  # pylint: disable=import-outside-toplevel  # the device count is set first
  jax.config.update("jax_num_cpu_devices", spec["devices"])
  sys.path.insert(0, str(PROJECT_ROOT))
  from configs import at_scale, default  # pylint: disable=import-outside-toplevel
  from lbher_jax import models  # pylint: disable=import-outside-toplevel
  from lbher_jax.train import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  from lbher_jax.train import state as state_lib  # pylint: disable=import-outside-toplevel
  from lbher_jax.train import steps  # pylint: disable=import-outside-toplevel

  config = at_scale(spec["scale"])
  model = models.get_model(config.model)
  batch_size = spec["batch"]
  train = default.get_config().train
  # No warm-up: full-size updates from the first step, against which the differences are judged.
  tx, _ = state_lib.make_optimizer(train.lr, 0, train.steps, train.weight_decay,
                                   train.clip_norm)
  mesh = mesh_lib.make_mesh()
  model_spec = models.batch_spec(config, batch_size)
  state = jax.jit(partial(state_lib.create, model, tx, model_spec),
                  out_shardings=mesh_lib.replicated(mesh))(jax.random.key(0))
  rng = np.random.default_rng(0)
  host_batch = {
    "audio": rng.uniform(-1, 1, model_spec["audio"].shape).astype(np.float32),
    "video": rng.integers(0, 256, model_spec["video"].shape, dtype=np.uint8),
    "label": (np.arange(batch_size) % config.model.num_classes).astype(np.int32),
    "clip": np.arange(batch_size, dtype=np.int32), "weight": np.ones(batch_size, np.float32)}
  batch = mesh_lib.to_global(host_batch, mesh)
  if spec["devices"] == 1:  # the starting point, for the size of the updates
    np.savez(out_dir / "params_init.npz", *jax.tree.leaves(jax.device_get(state.params)))
  step = steps.jit_train_step(steps.make_train_step(model, "finetune",
                                                    aux_weight=train.aux_weight), mesh)
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  history, walls = [], []
  for i in range(spec["steps"] + 1):  # step 0 is the warm-up
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    metrics = jax.device_get(metrics)
    if i:
      walls.append(time.perf_counter() - start)
    history.append({"loss": float(metrics["loss"]), "grad_norm": float(metrics["grad_norm"])})
  leaves = jax.tree.leaves(jax.device_get(state.params))
  np.savez(out_dir / f"params_{spec['devices']}.npz", *leaves)
  wall = float(np.median(walls))
  print(json.dumps({"devices": len(jax.devices()), "batch": batch_size, "steps": len(walls),
                    "compile_s": round(compile_s, 1), "step_s": round(wall, 4),
                    "step_s_rounds": [round(w, 4) for w in walls],
                    "examples_per_s": round(batch_size / wall, 3), "history": history,
                    "loadavg": [round(x, 2) for x in os.getloadavg()]}))


def run_child(spec: dict, out_dir: Path) -> dict:
  proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec), str(out_dir)],
                        stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT, check=False)
  if proc.returncode != 0:
    raise SystemExit(f"the {spec['devices']}-device run failed (exit {proc.returncode})")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def load(path: Path) -> list[np.ndarray]:
  with np.load(path) as data:
    return [data[f"arr_{i}"] for i in range(len(data.files))]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--scale", default="small", help="model scale (paper, small, tiny)")
  parser.add_argument("--batch", type=int, default=16, help="global batch (divisible by N)")
  parser.add_argument("--devices", default="1,2,4", help="comma-separated device counts")
  parser.add_argument("--steps", type=int, default=4, help="timed steps after one warm-up step")
  parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
  parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    child(json.loads(args.child[0]), Path(args.child[1]))
    return
  counts = [int(n) for n in args.devices.split(",")]
  if counts[0] != 1:
    counts.insert(0, 1)
  load_before = os.getloadavg()
  runs = []
  with tempfile.TemporaryDirectory(prefix="lbher_scaling_") as tmp:
    out_dir = Path(tmp)
    base = {"scale": args.scale, "batch": args.batch, "steps": args.steps}
    for n in counts:
      runs.append(run_child({**base, "devices": n}, out_dir))
      print(f"{n} device(s): {runs[-1]['examples_per_s']:.2f} examples/s", flush=True)
    init = load(out_dir / "params_init.npz")
    reference = load(out_dir / "params_1.npz")
    largest_change = max(float(np.abs(a - b).max()) for a, b in zip(reference, init))
    for run in runs:
      params = load(out_dir / f"params_{run['devices']}.npz")
      run["max_param_diff"] = max(float(np.abs(a - b).max()) for a, b in zip(params, reference))
      deviations = [[abs(mine[key] / ref[key] - 1.0) for key in ("loss", "grad_norm")]
                    for mine, ref in zip(run["history"], runs[0]["history"])]
      run["first_step_rel_diff"] = max(deviations[0])
      run["max_rel_diff_any_step"] = max(max(d) for d in deviations)
      run["matches_one_device"] = bool(run["first_step_rel_diff"] <= RTOL_METRICS)
      run["speed_vs_one_device"] = round(run["examples_per_s"] / runs[0]["examples_per_s"], 3)
  print(f"\n{'devices':>8} {'examples/s':>11} {'vs 1':>6} {'step 1 rel':>11} {'any step':>9} "
        f"{'max |dparam|':>13} {'matches':>8}")
  for run in runs:
    print(f"{run['devices']:>8} {run['examples_per_s']:>11.2f} {run['speed_vs_one_device']:>6.2f} "
          f"{run['first_step_rel_diff']:>11.1e} {run['max_rel_diff_any_step']:>9.1e} "
          f"{run['max_param_diff']:>13.2e} {str(run['matches_one_device']):>8}")
  all_match = all(run["matches_one_device"] for run in runs)
  print(f"sharded results match the 1-device run: {all_match} (largest parameter change over the "
        f"run {largest_change:.2e})")
  if args.json:
    out = {"machine": machine(), "date": datetime.date.today().isoformat(),
           "loadavg_before": [round(x, 2) for x in load_before],
           "loadavg_after": [round(x, 2) for x in os.getloadavg()],
           "settings": {**base, "model": "hybrid", "phase": "finetune",
                        "rtol_metrics": RTOL_METRICS,
                        "largest_param_change": largest_change},
           "runs": runs, "all_match": all_match}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
  main()
