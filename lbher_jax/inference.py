"""Running a trained model: its restored state and the jitted steps that give class
probabilities and stream embeddings, for evaluation, prediction and export.

Knows no corpora or media: it gets a model, a checkpoint directory and Grain sources or batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from absl import logging

from lbher_jax.data import loader as loader_lib
from lbher_jax.evaluation import calibration
from lbher_jax.models import batch_spec, get_model
from lbher_jax.train import checkpoint as ckpt_lib
from lbher_jax.train import mesh as mesh_lib
from lbher_jax.train import state as state_lib
from lbher_jax.train import steps as steps_lib


def restore(model, mesh, workdir: Path, batch_shapes: dict, *,
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


def example_batch(config, batch_size: int = 1) -> dict[str, np.ndarray]:
  """Zeros shaped like a model input batch of `config` (audio, video, label, weight)."""
  inputs = {k: np.zeros(s.shape, s.dtype) for k, s in batch_spec(config, batch_size).items()}
  return {**inputs, "label": np.zeros(batch_size, np.int32),
          "weight": np.ones(batch_size, np.float32)}


def load_model(config, workdir: Path):
  """(model, state, mesh): the fine-tuned checkpoint that evaluation uses, on one device."""
  model = get_model(config.model)
  mesh = mesh_lib.make_mesh(jax.local_devices()[:1])
  shapes = {k: x.shape for k, x in example_batch(config).items()}
  state = restore(model, mesh, Path(workdir), shapes,
                  prefer_best=config.eval.checkpoint == "best")
  return model, state, mesh


def load_classifier(config, workdir: Path, batch_size: int
                    ) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
  """The fine-tuned model in WORKDIR as a function batch -> class probabilities of each output
  layer ("probs", and for a two-stream model "audio_probs" / "video_probs"), for batches of up to
  `batch_size` rows (padded to it: one compilation). "probs" is calibrated by the temperature of
  WORKDIR/calibration.json when evaluation has fitted one."""
  model, state, mesh = load_model(config, workdir)
  step = compile_eval_step(model, mesh, heads=True,
                           temperature=calibration.load_temperature(workdir))

  def classify(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    n = len(next(iter(batch.values())))
    padded = {k: np.concatenate([x, np.repeat(x[-1:], batch_size - n, 0)])
              for k, x in batch.items()}
    padded["label"] = np.zeros(batch_size, np.int32)
    padded["weight"] = (np.arange(batch_size) < n).astype(np.float32)
    return {k: np.asarray(v)[:n] for k, v in step(state, mesh_lib.to_global(padded, mesh)).items()}
  return classify


def load_sync_scorer(config, workdir: Path, batch_size: int
                     ) -> Callable[[dict[str, np.ndarray]], np.ndarray] | None:
  """How well each row's face goes with its voice, by the time-keeping embeddings of WORKDIR's
  pre-trained model (`model.sync_dim` > 0): a function {"audio", "video", "span"} -> [n] distances
  between the unit embeddings (lower: the mouth moves with the voice), for up to `batch_size`
  rows. None when the model has no such embeddings or was not pre-trained. The pre-trained
  weights are used because fine-tuning trains the first conv blocks for emotion alone."""
  if not config.model.get("sync_dim", 0):
    return None
  model = get_model(config.model)
  mesh = mesh_lib.make_mesh(jax.local_devices()[:1])
  shapes = {k: x.shape for k, x in example_batch(config).items()}
  try:
    state = restore(model, mesh, Path(workdir), shapes, prefer_best=False, phase="pretrain")
  except ckpt_lib.CheckpointError:
    return None
  embed = compile_embedding_step(model, mesh)

  def score(batch: dict[str, np.ndarray]) -> np.ndarray:
    n = len(batch["audio"])
    padded = {k: np.concatenate([x, np.repeat(x[-1:], batch_size - n, 0)])
              for k, x in batch.items()}
    out = embed(state, mesh_lib.to_global(padded, mesh))
    unit = lambda e: e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    a, v = (unit(np.asarray(out[k], np.float64)[:n]) for k in ("audio_embedding",
                                                              "video_embedding"))
    return np.linalg.norm(a - v, axis=1)
  return score


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
