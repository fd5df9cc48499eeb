"""The training loop of one phase (contrastive pre-training or fine-tuning), resumable.

Knows no corpora: it gets a model, Grain sources of examples and a checkpoint directory.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from lbher_jax.data import loader as loader_lib
from lbher_jax.train import augment
from lbher_jax.train import checkpoint as ckpt_lib
from lbher_jax.train import metric_writer
from lbher_jax.train import mesh as mesh_lib
from lbher_jax.train import state as state_lib
from lbher_jax.train import steps as steps_lib


class Preempted(Exception):
  """SIGTERM arrived: the current step was finished and checkpointed; the same command resumes."""


_sigterm = threading.Event()


def _on_sigterm(signum, frame) -> None:  # pylint: disable=unused-argument
  _sigterm.set()


def _preempted() -> bool:
  """Whether any process of the run has received SIGTERM: every process must stop at the same
  step, so on several hosts the flags are gathered (one small collective per step)."""
  flag = _sigterm.is_set()
  if jax.process_count() > 1:
    flag = bool(np.any(multihost_utils.process_allgather(np.array(flag))))
  return flag


@dataclasses.dataclass(frozen=True)
class PhaseConfig:
  """What one phase needs; built from config.pretrain / config.train."""
  name: str                  # "pretrain" or "finetune"
  steps: int
  batch_size: int
  lr: float
  warmup_steps: int
  weight_decay: float
  clip_norm: float
  log_every: int
  checkpoint_every: int      # also how often validation runs when there is a validation set
  profile_steps: tuple[int, int] = ()   # (first, last): a jax.profiler trace of those steps
  keep_checkpoints: int = 3
  margin: float = 1.0
  pair_proportions: tuple[float, float, float] = (0.5, 0.25, 0.25)
  aux_weight: float = 0.0    # fine-tuning: weight of each stream's own cross-entropy (hybrid)
  loss: str = "margin"       # pre-training: "margin" (Eq. 2) or "infonce" (batch-wise)
  temperature: float = 0.1   # pre-training with "infonce"
  use_labels: bool = True    # pre-training: hard / super-hard negatives by emotion label; False:
                             # labels unread, every other clip is a negative


def run_phase(*, phase: PhaseConfig, model, mesh, source: loader_lib.SegmentSource,
              augment_params: augment.AugmentParams, workdir: Path, seed: int,
              validate: Callable[[Any], dict] | None = None, init_variables: Any = None,
              loader_workers: int = 0) -> Any:
  """Trains one phase to `phase.steps`, resuming from its latest checkpoint if there is one.

  `validate(state) -> metrics` is called every `checkpoint_every` steps and at the end; in
  fine-tuning its `val_unweighted_accuracy` selects the best checkpoint (pre-training keeps the
  latest: its validation measures correspondence, not emotions). `init_variables` ({"params",
  "batch_stats"}, e.g. of the pre-trained model) seed a fresh state. Returns the final state.
  """
  workdir = Path(workdir)
  track_best = validate is not None and phase.name == "finetune"
  ckpt = ckpt_lib.Checkpointer(workdir / "checkpoints" / phase.name,
                               keep=phase.keep_checkpoints, track_best=track_best)
  tx, schedule = state_lib.make_optimizer(
      lr=phase.lr, warmup_steps=phase.warmup_steps, total_steps=phase.steps,
      weight_decay=phase.weight_decay, clip_norm=phase.clip_norm)
  example = source[0]
  batch_shapes = {k: (phase.batch_size, *np.shape(v)) for k, v in example.items()}
  replicated = mesh_lib.replicated(mesh)
  init = lambda: state_lib.create(model, tx, batch_shapes, jax.random.key(seed))
  abstract = ckpt_lib.abstract_like(jax.eval_shape(init), replicated)

  data = loader_lib.train_loader(source, global_batch=phase.batch_size, seed=seed,
                                 workers=loader_workers)
  data_iter = iter(data)
  start = ckpt.latest_step()
  if start is not None:
    state = ckpt.restore(start, abstract, data_iter)
    logging.info("%s: resuming from the checkpoint of step %d", phase.name, start)
  else:
    def fresh(variables):  # given weights replace the random ones, which XLA then drops
      state = init()
      return state if variables is None else state.replace(**variables)
    state = jax.jit(fresh, out_shardings=replicated)(init_variables)
    start = 0
  writer = metric_writer.MetricWriter(workdir, phase.name, start)

  step_fn = steps_lib.jit_train_step(
      steps_lib.make_train_step(model, phase.name, margin=phase.margin,
                                pair_proportions=phase.pair_proportions,
                                aux_weight=phase.aux_weight, contrastive_loss=phase.loss,
                                temperature=phase.temperature, use_labels=phase.use_labels,
                                augment_params=augment_params),
      mesh)

  logging.info("%s: %d steps of global batch %d on %d device(s), %d training examples",
               phase.name, phase.steps, phase.batch_size, mesh.size, len(source))
  in_main_thread = threading.current_thread() is threading.main_thread()
  previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
  try:
    return _train_steps(phase, step_fn, state, data_iter, start, mesh, ckpt, schedule,
                        writer, validate, track_best, workdir)
  finally:
    writer.close()
    if in_main_thread:
      signal.signal(signal.SIGTERM, previous)


class _Profile:
  """A jax.profiler trace of the steps phase.profile_steps = (first, last) names, written to
  WORKDIR/profile/<phase>/ (TensorBoard's profile plugin or Perfetto reads it)."""

  def __init__(self, phase: PhaseConfig, workdir: Path):
    self.first, self.last = phase.profile_steps or (0, -1)
    self.last = min(self.last, phase.steps)
    self.directory = Path(workdir) / "profile" / phase.name
    self.active = False

  def before(self, step: int) -> None:
    if step == self.first:
      jax.profiler.start_trace(str(self.directory))
      self.active = True

  def after(self, step: int, state: Any) -> None:
    if self.active and step == self.last:
      jax.block_until_ready(state)
      self.stop()
      logging.info("profile of steps %d-%d written to %s", self.first, step, self.directory)

  def stop(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False


def _train_steps(phase, step_fn, state, data_iter, start, mesh, ckpt, schedule, writer,
                 validate, track_best, workdir):
  """The step loop of `run_phase`; on SIGTERM it finishes the step, checkpoints, raises
  Preempted."""
  pending, t0, done_since = [], time.perf_counter(), 0
  profile = _Profile(phase, workdir)
  try:
    for step in range(start + 1, phase.steps + 1):
      profile.before(step)
      batch = mesh_lib.to_global(next(data_iter), mesh)
      state, metrics = step_fn(state, batch)
      profile.after(step, state)
      pending.append(metrics)
      done_since += 1
      last = step == phase.steps
      preempted = not last and _preempted()
      checkpoint = step % phase.checkpoint_every == 0 or last or preempted
      # A checkpoint also closes a logging window: no checkpoint follows a non-finite step, and a
      # resumed run logs the same windows as an uninterrupted one.
      if step % phase.log_every == 0 or checkpoint:
        fetched = jax.device_get(pending)
        bad = [step - len(fetched) + 1 + i for i, m in enumerate(fetched) if not m["finite"]]
        if bad:
          latest = ckpt.latest_step()
          kept = ("no checkpoint was written" if latest is None
                  else f"the last checkpoint (step {latest}) is intact")
          raise steps_lib.NonFiniteError(
              f"{phase.name}: non-finite loss or gradient at step {bad[0]}; the update was not "
              f"applied and {kept}. Lower the learning rate or check the data.")
        elapsed = time.perf_counter() - t0
        record = {"lr": float(schedule(step - 1)),
                  "examples_per_s": round(done_since * phase.batch_size / elapsed, 2)}
        for key in fetched[0]:
          if key != "finite":
            record[key] = float(np.mean([m[key] for m in fetched]))
        logging.info("%s step %d/%d: %s", phase.name, step, phase.steps,
                     ", ".join(f"{k}={v:.4g}" for k, v in record.items()
                               if isinstance(v, float)))
        writer.write(step, record)
        pending, t0, done_since = [], time.perf_counter(), 0
      if preempted:
        # Not validated: the best checkpoint is chosen among the regular ones, as without SIGTERM.
        ckpt.save(step, state, data_iter)
        ckpt.close()
        raise Preempted(f"{phase.name}: stopped by SIGTERM after step {step}; the checkpoint is in "
                        f"{ckpt.directory}; run the same command again to resume")
      if checkpoint:
        val = validate(state) if validate is not None else None
        if val is not None:
          logging.info("%s step %d: validation %s", phase.name, step,
                       ", ".join(f"{k}={v:.4f}" for k, v in val.items()))
          writer.write(step, val)
        ckpt.save(step, state, data_iter, metrics=val if track_best else None)
  finally:
    profile.stop()
  ckpt.close()
  return state


def finished_step(workdir: Path, phase_name: str) -> int | None:
  """The latest checkpointed step of a phase in `workdir`, or None."""
  directory = Path(workdir) / "checkpoints" / phase_name
  if not directory.is_dir():
    return None
  ckpt = ckpt_lib.Checkpointer(directory)
  step = ckpt.latest_step()
  ckpt.close()
  return step
