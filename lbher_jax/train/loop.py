"""The training loop of one phase (contrastive pre-training or fine-tuning), resumable.

Knows no corpora: it gets a model, Grain sources of examples and a checkpoint directory.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from lbher_jax import files
from lbher_jax.data import loader as loader_lib
from lbher_jax.features import augment
from lbher_jax.train import checkpoint as ckpt_lib
from lbher_jax.train import mesh as mesh_lib
from lbher_jax.train import state as state_lib
from lbher_jax.train import steps as steps_lib


class NonFiniteError(RuntimeError):
  """Training produced a non-finite loss or gradient."""


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
  keep_checkpoints: int = 3
  margin: float = 1.0
  pair_proportions: tuple[float, float, float] = (0.5, 0.25, 0.25)
  aux_weight: float = 0.0    # fine-tuning: weight of each stream's own cross-entropy (hybrid)
  loss: str = "margin"       # pre-training: "margin" (Eq. 2) or "infonce" (batch-wise)
  temperature: float = 0.1   # pre-training with "infonce"
  use_labels: bool = True    # pre-training: hard / super-hard negatives by emotion label; False:
                             # labels unread, every other clip is a negative


def append_jsonl(path: Path, record: dict) -> None:
  if jax.process_index() == 0:
    with open(path, "a") as f:
      f.write(json.dumps(record) + "\n")


def _drop_records_after(path: Path, phase: str, step: int) -> None:
  """On resume, forgets the log lines of `phase` past `step` (the restored checkpoint's), and a
  line torn by a kill."""
  if jax.process_index() != 0 or not path.exists():
    return
  keep = []
  for line in path.read_text().splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    if not (record["phase"] == phase and record["step"] > step):
      keep.append(line)
  files.atomic_write_text(path, "".join(line + "\n" for line in keep))


def predict_heads(model, state, source: loader_lib.SegmentSource, mesh, batch_size: int,
                  eval_step: Callable | None = None) -> dict[str, np.ndarray]:
  """Class probabilities [len(source), 4] of every example of `source`, in order, from each
  output layer: "probs" (the model's output) and, for a two-stream model, "audio_probs" and
  "video_probs" (each stream's own layer); whatever else `eval_step` returns (e.g. "logits")."""
  eval_step = eval_step or compile_eval_step(model, mesh, heads=True)
  out: dict[str, list[np.ndarray]] = {}
  for batch in loader_lib.eval_batches(source, global_batch=batch_size,
                                       process_index=jax.process_index(),
                                       process_count=jax.process_count()):
    for key, probs in eval_step(state, mesh_lib.to_global(batch, mesh)).items():
      out.setdefault(key, []).append(np.asarray(probs))
  if not out:
    return {"probs": np.zeros((0, 4), np.float32)}
  return {key: np.concatenate(parts)[:len(source)] for key, parts in out.items()}


def predict(model, state, source: loader_lib.SegmentSource, mesh, batch_size: int,
            eval_step: Callable | None = None) -> np.ndarray:
  """Class probabilities [len(source), 4] of the model's output for every example, in order."""
  eval_step = eval_step or compile_eval_step(model, mesh)
  return predict_heads(model, state, source, mesh, batch_size, eval_step)["probs"]


def embeddings(model, state, source: loader_lib.SegmentSource, mesh, batch_size: int,
               embed_step: Callable | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(audio, video) stream embeddings [len(source), D] of a two-stream model, in order, in
  inference mode (what the contrastive loss compares, before its normalisation)."""
  embed_step = embed_step or compile_embedding_step(model, mesh)
  audio, video = [], []
  for batch in loader_lib.eval_batches(source, global_batch=batch_size,
                                       process_index=jax.process_index(),
                                       process_count=jax.process_count()):
    out = embed_step(state, mesh_lib.to_global(batch, mesh))
    audio.append(np.asarray(out["audio_embedding"]))
    video.append(np.asarray(out["video_embedding"]))
  return np.concatenate(audio)[:len(source)], np.concatenate(video)[:len(source)]


def compile_embedding_step(model, mesh) -> Callable:
  """jitted (state, batch) -> {"audio_embedding", "video_embedding"} (no output layers)."""
  def fn(state, batch):
    out = model.apply({"params": state.params, "batch_stats": state.batch_stats}, batch,
                      train=False)
    return {k: out[k] for k in ("audio_embedding", "video_embedding")}
  return steps_lib.jit_eval_step(fn, mesh)


def compile_eval_step(model, mesh, heads: bool = False, logits: bool = False,
                      temperature: float = 1.0) -> Callable:
  """jitted (state, batch) -> {"probs"}: the model's class probabilities (at `temperature`);
  with `heads` also "audio_probs" / "video_probs" of a two-stream model's per-stream layers (left
  out otherwise, so XLA drops those layers from the program); with `logits` the raw "logits"."""
  fn = steps_lib.make_eval_step(model, temperature)
  keep = lambda key: (key == "probs" or (heads and key.endswith("_probs"))
                      or (logits and key == "logits"))
  return steps_lib.jit_eval_step(
    lambda state, batch: {k: v for k, v in fn(state, batch).items() if keep(k)}, mesh)


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
  metrics_path = workdir / "metrics.jsonl"
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
                                 augment_params=augment_params, workers=loader_workers)
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
  _drop_records_after(metrics_path, phase.name, start)

  step_fn = steps_lib.jit_train_step(
      steps_lib.make_train_step(model, phase.name, margin=phase.margin,
                                pair_proportions=phase.pair_proportions,
                                aux_weight=phase.aux_weight, contrastive_loss=phase.loss,
                                temperature=phase.temperature, use_labels=phase.use_labels),
      mesh)

  logging.info("%s: %d steps of global batch %d on %d device(s), %d training examples",
               phase.name, phase.steps, phase.batch_size, mesh.size, len(source))
  in_main_thread = threading.current_thread() is threading.main_thread()
  previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
  try:
    return _train_steps(phase, step_fn, state, data_iter, start, mesh, ckpt, schedule,
                        metrics_path, validate, track_best)
  finally:
    if in_main_thread:
      signal.signal(signal.SIGTERM, previous)


def _train_steps(phase, step_fn, state, data_iter, start, mesh, ckpt, schedule, metrics_path,
                 validate, track_best):
  """The step loop of `run_phase`; on SIGTERM it finishes the step, checkpoints, raises
  Preempted."""
  pending, t0, done_since = [], time.perf_counter(), 0
  for step in range(start + 1, phase.steps + 1):
    batch = mesh_lib.to_global(next(data_iter), mesh)
    state, metrics = step_fn(state, batch)
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
        raise NonFiniteError(
            f"{phase.name}: non-finite loss or gradient at step {bad[0]}; the update was not "
            f"applied and {kept}. Lower the learning rate or check the data.")
      elapsed = time.perf_counter() - t0
      record = {"phase": phase.name, "step": step, "lr": float(schedule(step - 1)),
                "examples_per_s": round(done_since * phase.batch_size / elapsed, 2)}
      for key in fetched[0]:
        if key != "finite":
          record[key] = float(np.mean([m[key] for m in fetched]))
      logging.info("%s step %d/%d: %s", phase.name, step, phase.steps,
                   ", ".join(f"{k}={v:.4g}" for k, v in record.items()
                             if isinstance(v, float)))
      append_jsonl(metrics_path, record)
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
        append_jsonl(metrics_path, {"phase": phase.name, "step": step, **val})
      ckpt.save(step, state, data_iter, metrics=val if track_best else None)
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


def restore_for_inference(model, mesh, workdir: Path, batch_shapes: dict, *,
                          prefer_best: bool = True, phase: str = "finetune") -> Any:
  """The state of `phase` (best by validation when recorded, else the latest), no optimizer work.

  Raises CheckpointError when there is no checkpoint of that phase or it does not fit `model`.
  """
  directory = Path(workdir) / "checkpoints" / phase
  ckpt = ckpt_lib.Checkpointer(directory, track_best=prefer_best)
  step = (ckpt.best_step() if prefer_best else None) or ckpt.latest_step()
  if step is None:
    what = "fine-tuned" if phase == "finetune" else phase
    raise ckpt_lib.CheckpointError(f"{directory}: no {what} checkpoint (train first)")
  tx, _ = state_lib.make_optimizer(lr=0.0, warmup_steps=0, total_steps=1, weight_decay=0.0,
                                   clip_norm=1.0)
  init = lambda: state_lib.create(model, tx, batch_shapes, jax.random.key(0))
  abstract = ckpt_lib.abstract_like(jax.eval_shape(init), mesh_lib.replicated(mesh))
  state = ckpt.restore(step, abstract)
  ckpt.close()
  logging.info("restored the %s model of step %d from %s", phase, step, directory)
  return state
