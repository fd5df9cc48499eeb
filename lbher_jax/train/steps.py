"""Training and evaluation steps: pure functions of (state, batch), jitted over a device mesh.

A batch is a dict of global arrays {"audio", "video", "label" int32 [B], "clip" int32 [B],
"weight" float32 [B]} (weight 0 = padding row; "clip" is read by pre-training only: rows of one
clip are never each other's negatives), sharded over the mesh axis 'data' (see train/mesh.py).
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, Sharding

from lbher_jax import compiler
from lbher_jax.train import augment, losses
from lbher_jax.train.mesh import batch_sharding, replicated
from lbher_jax.train.state import TrainState, step_rng

PHASES = ("pretrain", "finetune")

Batch = dict[str, jax.Array]
TrainStep = Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]


class NonFiniteError(RuntimeError):
  """Training produced a non-finite loss or gradient (the loop checks each step's metrics)."""


def _unit(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def _variables(state: TrainState, params: Any) -> dict[str, Any]:
  return {"params": params, "batch_stats": state.batch_stats}


CONTRASTIVE_LOSSES = ("margin", "infonce")
_AUGMENT_STREAM = 1  # folded into the step's key: augmentation draws apart from dropout's


def make_train_step(model: nn.Module, phase: str, *, margin: float = 1.0,
                    pair_proportions: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3),
                    aux_weight: float = 0.0, contrastive_loss: str = "margin",
                    temperature: float = 0.1, use_labels: bool = True,
                    augment_params: augment.AugmentParams | None = None) -> TrainStep:
  """Returns step(state, batch) -> (state, metrics) for `phase`.

  With `augment_params`, the batch is augmented first, in the step (train/augment.py), from a key
  of its own derived from the step's.

  "finetune": cross-entropy (Eq. 1) on the logits, plus `aux_weight` times the cross-entropy
  of each stream's own logits where the model has them (hybrid). "pretrain": contrastive loss (Eq. 2) between
  each clip's audio embedding and the video embedding of the partner drawn by
  losses.make_pairs (needs a model with both streams, i.e. hybrid; without `use_labels` the
  pairs ignore the emotion labels, so a hard-negative draw has no partner and counts
  nothing); with contrastive_loss
  "infonce", the batch-wise InfoNCE of losses.info_nce instead (every other clip a negative).

  Metrics: loss, grad_norm, finite (False when the loss or a gradient is not finite: the state is
  then returned unchanged and the caller should stop), plus accuracy (finetune) or the mean
  positive / negative pair distances (pretrain).
  """
  if phase not in PHASES:
    raise ValueError(f"unknown training phase {phase!r}; expected one of {PHASES}")
  if contrastive_loss not in CONTRASTIVE_LOSSES:
    raise ValueError(f"unknown contrastive loss {contrastive_loss!r}; expected one of "
                     f"{CONTRASTIVE_LOSSES}")

  def loss_fn(params, state, batch, rng):
    dropout_rng, pair_rng = jax.random.split(rng)
    out, updates = model.apply(_variables(state, params), batch, train=True,
                               rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
    weights = batch["weight"]
    if phase == "finetune":
      loss = losses.cross_entropy(out["logits"], batch["label"], weights)
      for key in ("audio_logits", "video_logits"):
        if aux_weight and key in out:
          loss += aux_weight * losses.cross_entropy(out[key], batch["label"], weights)
      correct = jnp.argmax(out["logits"], axis=-1) == batch["label"]
      aux = {"accuracy": losses.weighted_mean(correct, weights)}
    else:
      if not {"audio_embedding", "video_embedding"} <= out.keys():
        raise ValueError("phase 'pretrain' needs a model with both streams (hybrid); "
                         f"{type(model).__name__} returns only {sorted(out)}")
      # Without labels every other clip counts as one kind of negative (the "super-hard" draw,
      # over all clips): no label is read.
      pair_labels = batch["label"] if use_labels else jnp.zeros_like(batch["label"])
      video_index, y, pair_weight, _ = losses.make_pairs(
        pair_labels, batch["clip"], weights, pair_rng, pair_proportions)
      # Eq. 2 on unit-length embeddings: a distance scale the margin can refer to, and no
      # collapse of the (post-ReLU) embeddings to zero, which would kill their units.
      audio = _unit(out["audio_embedding"])
      video = _unit(out["video_embedding"])[video_index]
      if contrastive_loss == "margin":
        loss = losses.contrastive_loss(audio, video, y, pair_weight, margin)
      else:
        loss = losses.info_nce(audio, _unit(out["video_embedding"]), batch["clip"], weights,
                               temperature)
      distance, _ = losses.embedding_distance(video, audio)
      aux = {"distance_positive": losses.weighted_mean(distance, pair_weight * y),
             "distance_negative": losses.weighted_mean(distance, pair_weight * (1.0 - y))}
    return loss, (updates.get("batch_stats", {}), aux)

  def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
    rng = step_rng(state)
    if augment_params is not None:
      batch = augment.augment_batch(batch, jax.random.fold_in(rng, _AUGMENT_STREAM),
                                    augment_params)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (batch_stats, aux)), grads = grad_fn(state.params, state, batch, rng)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    return new_state, {"loss": loss, "grad_norm": grad_norm, "finite": finite, **aux}

  return step


def make_eval_step(model: nn.Module, temperature: float = 1.0
                   ) -> Callable[[TrainState, Batch], dict[str, jax.Array]]:
  """Returns eval(state, batch) -> {"logits", "probs"}, plus "audio_probs" / "video_probs" for a
  model with per-stream output layers (inference mode: running BatchNorm statistics, no dropout).
  "probs" is softmax(logits / temperature): the calibrated output (evaluation/calibration.py)."""

  def eval_step(state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    out = model.apply(_variables(state, state.params), batch, train=False)
    heads = {k.removesuffix("logits") + "probs": jax.nn.softmax(v)
             for k, v in out.items() if k.endswith("_logits")}
    return {"logits": out["logits"], "probs": jax.nn.softmax(out["logits"] / temperature),
            **heads}

  return eval_step


def jit_train_step(step_fn: TrainStep, mesh: Mesh,
                   state_sharding: Sharding | None = None) -> TrainStep:
  """jits a train step: batch split over 'data', state (default: replicated) donated, with the
  platform's compiler options (`compiler.compiler_options`).

  Metrics come back replicated, so every process can read them.
  """
  state_sharding = replicated(mesh) if state_sharding is None else state_sharding
  return jax.jit(step_fn, in_shardings=(state_sharding, batch_sharding(mesh)),
                 out_shardings=(state_sharding, replicated(mesh)), donate_argnums=(0,),
                 compiler_options=compiler.compiler_options(mesh.devices.flat))


def jit_eval_step(eval_fn: Callable[[TrainState, Batch], dict[str, jax.Array]], mesh: Mesh,
                  state_sharding: Sharding | None = None,
                  ) -> Callable[[TrainState, Batch], dict[str, jax.Array]]:
  """jits an eval step (with the platform's compiler options); outputs come back replicated, so
  every process holds all rows."""
  state_sharding = replicated(mesh) if state_sharding is None else state_sharding
  return jax.jit(eval_fn, in_shardings=(state_sharding, batch_sharding(mesh)),
                 out_shardings=replicated(mesh),
                 compiler_options=compiler.compiler_options(mesh.devices.flat))
