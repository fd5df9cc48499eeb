"""One process of test_multiprocess: a few pre-training steps of the tiny hybrid model on CPU.

Joins a multi-process job through train.mesh.initialize_distributed (JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID in the environment) or runs alone when they are unset, feeds its
own consecutive rows of a fixed global batch, and writes the final parameters, the losses and the
global labels as it sees them to an .npz file.

usage: python distributed_worker.py OUT.npz NUM_LOCAL_DEVICES
"""

import os
import sys
from pathlib import Path

os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # configs/

from functools import partial  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from configs import at_scale  # noqa: E402
from lbher_jax import models  # noqa: E402
from lbher_jax.train import mesh as mesh_lib  # noqa: E402
from lbher_jax.train import state as state_lib  # noqa: E402
from lbher_jax.train import steps  # noqa: E402

GLOBAL_BATCH = 8
PHASE, STEPS = "pretrain", 3  # contrastive: also gathers partner embeddings across processes


def main(out_path: str, num_devices: int) -> None:
  jax.config.update("jax_num_cpu_devices", num_devices)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  mesh_lib.initialize_distributed()
  config = models.default_model_config("hybrid", "tiny")
  model = models.get_model(config)
  spec = models.batch_spec(at_scale("tiny"), GLOBAL_BATCH)
  rng = np.random.default_rng(0)
  full = {
    "audio": rng.uniform(-1, 1, spec["audio"].shape).astype(np.float32),
    "video": rng.integers(0, 256, spec["video"].shape, dtype=np.uint8),
    "label": rng.integers(0, 4, GLOBAL_BATCH).astype(np.int32),
    "clip": np.arange(GLOBAL_BATCH, dtype=np.int32),
    "weight": np.array([1, 1, 1, 1, 1, 1, 1, 0], np.float32),
  }
  local = GLOBAL_BATCH // jax.process_count()
  rows = slice(jax.process_index() * local, (jax.process_index() + 1) * local)

  mesh = mesh_lib.make_mesh()
  jax.set_mesh(mesh)
  batch = mesh_lib.to_global({k: v[rows] for k, v in full.items()}, mesh)
  gathered = jax.jit(lambda x: x, out_shardings=mesh_lib.replicated(mesh))(batch["label"])

  # Plain SGD: parameters then differ from a one-process run only by float rounding (Adam's
  # first step, ~lr * sign(g), would magnify it where a gradient is close to 0).
  tx = optax.sgd(0.1)
  state = jax.jit(partial(state_lib.create, model, tx, spec),
                  out_shardings=mesh_lib.replicated(mesh))(jax.random.key(0))
  initial = _flatten(state.params, "initial")
  losses = []
  train_step = steps.jit_train_step(steps.make_train_step(model, PHASE), mesh)
  for _ in range(STEPS):
    state, metrics = train_step(state, batch)
    losses.append(float(metrics["loss"]))

  np.savez(out_path, labels=np.asarray(gathered), expected_labels=full["label"],
           losses=np.array(losses), **initial, **_flatten(state.params, "params"))


def _flatten(params, prefix: str) -> dict[str, np.ndarray]:
  """{"<prefix>/audio/Conv_0/kernel": array, ...}"""
  return {"/".join([prefix] + [k.key for k in path]): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]))
