"""Training-step throughput of `hybrid`: JAX against the same model in PyTorch, and MFU (issue 7).

For each model scale (paper: 200x300 spectrograms, 20 faces of 60x100; small: the demo's
64x96 and 20x30x50), on random inputs of the model's shapes:
  * JAX fine-tuning step (forward, backward, AdamW update; `lbher_jax.train.steps`, jitted on
    all local devices, state donated) and contrastive pre-training step: examples/s after
    warm-up;
  * the PyTorch reference (benchmarks/torch_reference.py): same layers, shapes, batch, float32
    and thread count; examples/s and the ratio JAX / PyTorch;
  * FLOPs per example: XLA's cost analysis of the JAX step. On CPU the step runs its kernel
    gradients as loops, whose bodies the cost analysis counts once, so the model FLOPs are
    taken from the same step lowered for a GPU (every convolution one HLO op; lowering needs
    no GPU); the compiled CPU program's own count is reported beside it;
  * the machine's float32 matmul rate, measured in every round (2048^3 jnp matmul), and
    MFU = model FLOP/s achieved / that rate.
JAX and PyTorch run in separate processes; rounds interleave matmul, JAX steps and PyTorch step,
so that load from other processes hits them alike; figures are medians over rounds, and the load
average is recorded.

  python benchmarks/train_step.py [--scales paper,small] [--batch N] [--rounds 5] [--no-torch]
                                  [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

from common import machine  # benchmarks/common.py (the script's own folder)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from configs import at_scale, default  # noqa: E402
from lbher_jax import models  # noqa: E402
from lbher_jax.train import mesh as mesh_lib  # noqa: E402
from lbher_jax.train import state as state_lib  # noqa: E402
from lbher_jax.train import steps  # noqa: E402

TARGETS = {"paper_jax_over_torch_min": 1.2, "paper_mfu_min": 0.4}
DEFAULT_BATCH = {"paper": 8, "small": 16, "tiny": 4}
MATMUL_N = 2048


def timed(fn, *args) -> tuple[float, float, object]:
  """(wall s, process CPU s, result) of fn(*args), waiting for JAX results."""
  wall, cpu = time.perf_counter(), time.process_time()
  out = jax.block_until_ready(fn(*args))
  return time.perf_counter() - wall, time.process_time() - cpu, out


def matmul_rate() -> tuple[object, float]:
  """A compiled float32 matmul and its FLOPs: the machine's practical peak."""
  a = jnp.ones((MATMUL_N, MATMUL_N), jnp.float32)
  compiled = jax.jit(lambda x, y: x @ y).lower(a, a).compile()
  jax.block_until_ready(compiled(a, a))
  return partial(compiled, a, a), 2.0 * MATMUL_N ** 3


def random_batch(config, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
  """Inputs of the model's shapes, labels cycling over the classes, every clip distinct."""
  rng = np.random.default_rng(seed)
  spec = models.batch_spec(config, batch)
  return {"audio": rng.uniform(-1, 1, spec["audio"].shape).astype(np.float32),
          "video": rng.integers(0, 256, spec["video"].shape, dtype=np.uint8),
          "label": (np.arange(batch) % config.model.num_classes).astype(np.int32),
          "clip": np.arange(batch, dtype=np.int32),
          "weight": np.ones(batch, np.float32)}


def model_flops(step_fn, state, batch) -> float:
  """FLOPs of one step from XLA's cost analysis of the step lowered for a GPU (no loops)."""
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), (state, batch))
  lowered = jax.jit(step_fn).trace(*abstract).lower(lowering_platforms=("cuda",))
  return float(lowered.cost_analysis()["flops"])


def compiled_flops(compiled) -> float:
  costs = compiled.cost_analysis()
  costs = costs[0] if isinstance(costs, list) else costs
  return float(costs["flops"])


class JaxStep:
  """A compiled JAX training step of `phase` with its own (donated, threaded-through) state."""

  def __init__(self, model, config, phase: str, batch: dict[str, np.ndarray]):
    train = default.get_config().train
    pretrain = default.get_config().pretrain
    tx, _ = state_lib.make_optimizer(train.lr, train.warmup_steps, train.steps,
                                     train.weight_decay, train.clip_norm)
    spec = models.batch_spec(config, len(batch["label"]))
    self.state = jax.jit(partial(state_lib.create, model, tx, spec))(jax.random.key(0))
    step_fn = steps.make_train_step(model, phase, margin=pretrain.margin,
                                    pair_proportions=tuple(pretrain.pair_proportions),
                                    aux_weight=train.aux_weight)
    mesh = mesh_lib.make_mesh()
    self.batch = mesh_lib.to_global(batch, mesh)
    self.flops = model_flops(step_fn, self.state, self.batch)
    start = time.perf_counter()
    self.compiled = steps.jit_train_step(step_fn, mesh).lower(self.state, self.batch).compile()
    self.compile_s = time.perf_counter() - start
    self.compiled_flops = compiled_flops(self.compiled)

  def __call__(self) -> float:
    self.state, metrics = self.compiled(self.state, self.batch)
    return float(metrics["loss"])


def torch_step(config, batch: dict[str, np.ndarray]):
  """The PyTorch reference step on `batch` (None when torch is not installed)."""
  try:
    import torch  # pylint: disable=import-outside-toplevel  # pip install -e .[bench]
  except ImportError:
    return None
  sys.path.insert(0, str(Path(__file__).resolve().parent))
  import torch_reference  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(os.cpu_count())
  train = default.get_config().train
  step = torch_reference.make_train_step(config, lr=train.lr,
                                         weight_decay=train.weight_decay,
                                         clip_norm=train.clip_norm, aux_weight=train.aux_weight)
  tensors = {"audio": torch.from_numpy(batch["audio"]),
             "video": torch.from_numpy(batch["video"]),
             "label": torch.from_numpy(batch["label"].astype(np.int64))}
  return partial(step, tensors)


def _worker(conn, kind: str, scale: str, batch_size: int) -> None:
  """One framework in a process of its own: builds and warms its runners, sends what it knows
  about them, then times one runner per request (the runner's name) until it receives None."""
  config = at_scale(scale)
  batch = random_batch(config, batch_size)
  info = {}
  if kind == "jax":
    model = models.get_model(config.model)
    matmul, info["matmul_flops"] = matmul_rate()
    runners = {"matmul": matmul,
               "jax_finetune": JaxStep(model, config, "finetune", batch),
               "jax_pretrain": JaxStep(model, config, "pretrain", batch)}
    for name in ("jax_finetune", "jax_pretrain"):
      info[name] = {"flops": runners[name].flops, "compiled_flops": runners[name].compiled_flops,
                    "compile_s": runners[name].compile_s}
  else:
    reference = torch_step(config, batch)
    runners = {} if reference is None else {"torch_finetune": reference}
  for run in runners.values():  # warm-up: first executions allocate, fault pages in
    run()
  info["runners"] = list(runners)
  conn.send(info)
  while (name := conn.recv()) is not None:
    wall, cpu, loss = timed(runners[name])
    conn.send((wall, cpu, loss if isinstance(loss, float) else None))


def bench_scale(scale: str, batch_size: int, rounds: int, with_torch: bool) -> dict:
  """All figures of one model scale.

  JAX and PyTorch each run in a process of their own, as a user runs them. The processes start
  one after the other, so compilation and warm-up never overlap; then the parent asks for one
  step at a time, alternating, so that load from elsewhere hits both alike.
  """
  config = at_scale(scale)
  context = multiprocessing.get_context("spawn")
  workers, infos = {}, {}
  try:
    for kind in ("jax", "torch") if with_torch else ("jax",):
      conn, child = context.Pipe()
      process = context.Process(target=_worker, args=(child, kind, scale, batch_size),
                                daemon=True)
      process.start()
      workers[kind] = (process, conn)
      infos[kind] = conn.recv()
    owner = {name: kind for kind, info in infos.items() for name in info["runners"]}
    walls, cpus, losses = ({name: [] for name in owner} for _ in range(3))
    for _ in range(rounds):
      for name, kind in owner.items():
        workers[kind][1].send(name)
        wall, cpu, loss = workers[kind][1].recv()
        walls[name].append(wall)
        cpus[name].append(cpu)
        losses[name].append(loss)
  finally:
    for process, conn in workers.values():
      if process.is_alive():
        conn.send(None)
      process.join(timeout=60)
  info = infos["jax"]
  matmul_walls = walls.pop("matmul")
  peak = info["matmul_flops"] / float(np.median(matmul_walls))
  flops = info["jax_finetune"]["flops"]
  a, v = config.audio, config.video
  result = {"batch": batch_size, "spectrogram": [a.height, a.width],
            "frames": [v.frames_per_segment, v.height, v.width], "processes": "one per framework",
            "model_gflop_per_example": round(flops / batch_size / 1e9, 3),
            "compiled_cpu_gflop_per_example": round(
              info["jax_finetune"]["compiled_flops"] / batch_size / 1e9, 3),
            "pretrain_model_gflop_per_example": round(
              info["jax_pretrain"]["flops"] / batch_size / 1e9, 3),
            "compile_s": {name: round(info[name]["compile_s"], 1)
                          for name in ("jax_finetune", "jax_pretrain")},
            "matmul_peak_gflops": round(peak / 1e9, 1),
            "matmul_gflops_rounds": [round(info["matmul_flops"] / w / 1e9, 1)
                                     for w in matmul_walls],
            "runs": {}}
  for name in walls:
    wall, cpu = float(np.median(walls[name])), float(np.median(cpus[name]))
    step_flops = info["jax_pretrain"]["flops"] if name == "jax_pretrain" else flops
    result["runs"][name] = {
      "examples_per_s": round(batch_size / wall, 3), "step_s": round(wall, 3),
      "step_s_rounds": [round(w, 3) for w in walls[name]],
      "process_cpu_s_per_step": round(cpu, 3),
      "achieved_gflops": round(step_flops / wall / 1e9, 2),
      "mfu": round(step_flops / wall / peak, 3),
      "loss_first_last": [round(losses[name][0], 4), round(losses[name][-1], 4)]}
  if "torch_finetune" in result["runs"]:
    result["jax_over_torch"] = round(result["runs"]["jax_finetune"]["examples_per_s"]
                                     / result["runs"]["torch_finetune"]["examples_per_s"], 3)
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--scales", default="paper,small",
                      help=f"comma-separated model scales from {models.SCALES}")
  parser.add_argument("--batch", type=int, help=f"batch size (default per scale: {DEFAULT_BATCH})")
  parser.add_argument("--rounds", type=int, default=5, help="timed steps of each runner")
  parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
  parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
  args = parser.parse_args()
  scales = args.scales.split(",")
  load_before = os.getloadavg()
  results = {}
  for scale in scales:
    batch = args.batch or DEFAULT_BATCH[scale]
    print(f"{scale}: batch {batch} ...", flush=True)
    results[scale] = r = bench_scale(scale, batch, args.rounds, not args.no_torch)
    print(f"  model {r['model_gflop_per_example']} GFLOP/example/step; matmul peak "
          f"{r['matmul_peak_gflops']} GFLOP/s")
    for name, run in r["runs"].items():
      print(f"  {name:15s} {run['examples_per_s']:8.3f} examples/s  {run['step_s']:7.3f} s/step  "
            f"{run['achieved_gflops']:7.2f} GFLOP/s  MFU {run['mfu']:.1%}")
    if "jax_over_torch" in r:
      print(f"  JAX / PyTorch: {r['jax_over_torch']:.2f}x")
  meets = None
  if "paper" in results and "jax_over_torch" in results["paper"]:
    paper = results["paper"]
    meets = {"paper_jax_over_torch": paper["jax_over_torch"]
             >= TARGETS["paper_jax_over_torch_min"],
             "paper_mfu": paper["runs"]["jax_finetune"]["mfu"] >= TARGETS["paper_mfu_min"]}
    print(f"targets: JAX >= {TARGETS['paper_jax_over_torch_min']}x PyTorch at paper sizes: "
          f"{'met' if meets['paper_jax_over_torch'] else 'NOT met'}; MFU >= "
          f"{TARGETS['paper_mfu_min']:.0%}: {'met' if meets['paper_mfu'] else 'NOT met'}")
  if args.json:
    try:
      import torch  # pylint: disable=import-outside-toplevel
      torch_version = torch.__version__
    except ImportError:
      torch_version = None
    out = {"machine": machine(), "date": datetime.date.today().isoformat(),
           "jax": jax.__version__, "torch": torch_version, "devices": [str(d) for d in jax.devices()],
           "threads": os.cpu_count(), "dtype": "float32",
           "loadavg_before": [round(x, 2) for x in load_before],
           "loadavg_after": [round(x, 2) for x in os.getloadavg()],
           "scales": results, "targets": TARGETS, "meets_targets": meets}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
  main()
