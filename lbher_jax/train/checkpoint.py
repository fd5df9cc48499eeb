"""Orbax checkpoints of one training phase: model state and data-iterator position together.

Keeps the latest `keep` checkpoints and, when validation metrics are given, the best one by
validation unweighted accuracy. Restores into an abstract, sharded target (no host copy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np
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
    # Named handlers, so that a fresh manager can read a checkpoint's metadata before restoring.
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for item, args in (("state", ocp.args.StandardSave), ("state", ocp.args.StandardRestore),
                       ("data", grain.checkpoint.CheckpointSave),
                       ("data", grain.checkpoint.CheckpointRestore)):
      registry.add(item, args)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          handler_registry=registry)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    return self._manager.best_step()

  def save(self, step: int, state: Any, data_iter=None, metrics: dict | None = None) -> None:
    """Writes checkpoint `step` and waits until it is complete.

    A write that fails (disk full, permissions) raises CheckpointError; Orbax writes into a
    temporary directory first, so the earlier checkpoints stay as they were.
    """
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    previous = self.latest_step()
    try:
      self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)
      self._manager.wait_until_finished()
    except (OSError, ValueError) as e:  # TensorStore reports failed writes as ValueError
      kept = "no earlier checkpoint" if previous is None else (
          f"the checkpoint of step {previous} is intact")
      raise CheckpointError(f"{self.directory}: could not write the checkpoint of step {step} "
                            f"({_reason(e)}); {kept}") from e

  def restore(self, step: int, abstract_state: Any, data_iter=None) -> Any:
    """Restores `step` into the structure, shapes and shardings of `abstract_state`.

    Raises CheckpointError, naming the first difference, when the checkpoint holds other arrays
    (e.g. it was written by another model or model size).
    """
    try:
      saved = self._manager.item_metadata(step)["state"]
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise CheckpointError(f"{self.directory}: the checkpoint of step {step} is unreadable "
                            f"({_reason(e)})") from e
    difference = _difference(saved, abstract_state)
    if difference:
      raise CheckpointError(f"{self.directory}: the checkpoint of step {step} does not fit this "
                            f"model ({difference}); was it trained with another model config?")
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise CheckpointError(f"{self.directory}: cannot restore the checkpoint of step {step} "
                            f"({_reason(e)})") from e
    return restored["state"]

  def close(self) -> None:
    self._manager.close()


def _reason(e: BaseException) -> str:
  """A one-line cause from an OS, TensorStore or Orbax error."""
  if isinstance(e, OSError) and e.strerror:
    return e.strerror + (f": {e.filename}" if e.filename else "")
  lines = str(e).strip().splitlines()
  if not lines:
    return type(e).__name__
  # TensorStore: 'RESOURCE_EXHAUSTED: Error writing ...: Failed to write ...: <cause> [os_error...]'
  return lines[0].split(" [", 1)[0].rsplit(": ", 1)[-1][:200]


def _difference(saved: Any, abstract_state: Any) -> str:
  """The arrays where a checkpoint's metadata and the restore target differ, in words ('' if none).

  Arrays are named as Orbax names them: 'params.audio.Conv_0.kernel'.
  """
  names = jax.tree.leaves(ocp.tree.get_param_names(abstract_state, include_empty_nodes=False))
  wanted = {n: (tuple(x.shape), np.dtype(x.dtype))
            for n, x in zip(names, jax.tree.leaves(abstract_state), strict=True)}
  have = {m.name: (tuple(m.shape), np.dtype(m.dtype)) for m in jax.tree.leaves(saved)
          if hasattr(m, "shape")}
  missing = [n for n in wanted if n not in have]
  extra = [n for n in have if n not in wanted]
  if missing or extra:
    parts = [f"{len(missing)} arrays of the model are not in it, e.g. {missing[0]}" if missing
             else "", f"{len(extra)} of its arrays are not in the model, e.g. {extra[0]}" if extra
             else ""]
    return "; ".join(p for p in parts if p)
  changed = [n for n in wanted if wanted[n] != have[n]]
  if not changed:
    return ""
  (shape, dtype), (saved_shape, saved_dtype) = wanted[changed[0]], have[changed[0]]
  more = f" and {len(changed) - 1} more arrays differ" if len(changed) > 1 else ""
  return (f"{changed[0]} is {saved_dtype}{list(saved_shape)} in it, {dtype}{list(shape)} in the "
          f"model{more}")


def abstract_like(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """ShapeDtypeStructs of `tree` (from jax.eval_shape), all placed with `sharding`."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
