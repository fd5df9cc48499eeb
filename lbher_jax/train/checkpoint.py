"""Orbax checkpoints of one training phase: model state and data-iterator position together.

Keeps the latest `keep` checkpoints and, when validation metrics are given, the best one by
validation unweighted accuracy. Restores into an abstract, sharded target (no host copy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm

BEST_METRIC = "val_unweighted_accuracy"


class CheckpointError(RuntimeError):
  """A checkpoint cannot be written or does not match the model it should restore."""


def _best_metric(metrics: dict) -> float:
  return float(metrics[BEST_METRIC])


class Checkpointer:
  """One phase's checkpoint directory (e.g. WORKDIR/checkpoints/finetune)."""

  def __init__(self, directory: Path, *, keep: int = 3, track_best: bool = False):
    policies = [cm.LatestN(n=keep)]
    if track_best:
      policies.append(cm.BestN(get_metric_fn=_best_metric, n=1,
                               keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=cm.AnyPreservationPolicy(policies),
        best_fn=_best_metric if track_best else None, best_mode="max", create=True)
    self.directory = Path(directory).absolute()
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    return self._manager.best_step()

  def save(self, step: int, state: Any, data_iter=None, metrics: dict | None = None) -> None:
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    try:
      self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)
      self._manager.wait_until_finished()
    except OSError as e:
      raise CheckpointError(f"{self.directory}: could not write the checkpoint of step {step} "
                            f"({e}); earlier checkpoints are intact") from e

  def restore(self, step: int, abstract_state: Any, data_iter=None) -> Any:
    """Restores `step` into the structure, shapes and shardings of `abstract_state`."""
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointError(f"{self.directory}: step {step} does not match this model "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:300]})") from e
    return restored["state"]

  def close(self) -> None:
    self._manager.close()


def abstract_like(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """ShapeDtypeStructs of `tree` (from jax.eval_shape), all placed with `sharding`."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
