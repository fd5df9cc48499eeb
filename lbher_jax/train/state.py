"""Training state and optimizer."""

from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """Everything a training step reads and writes; a pytree of arrays (checkpointable as is).

  `rng` holds raw uint32 key data (jax.random.key_data) so checkpointers see a plain array;
  steps derive their keys with `step_rng`. `tx` is static (not a leaf, not checkpointed).
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


def create(model: nn.Module, tx: optax.GradientTransformation,
           batch_shapes: Mapping[str, Any], rng: jax.Array) -> TrainState:
  """Initialises a TrainState for a batch shaped like `batch_shapes`.

  `batch_shapes` maps each batch key to an array, a jax.ShapeDtypeStruct or a shape tuple (then
  float32 is assumed; the models read uint8 frames and float frames alike).

  Pure and traceable: `jax.eval_shape(partial(create, model, tx, shapes), rng)` gives the abstract
  state (e.g. a checkpoint restore target) without computing anything, and
  `jax.jit(partial(create, model, tx, shapes), out_shardings=...)(rng)` builds it directly on the
  devices.
  """
  if not jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.wrap_key_data(rng)
  params_rng, state_rng = jax.random.split(rng)
  dummy = {key: jnp.zeros(s.shape, s.dtype) if hasattr(s, "shape") else jnp.zeros(s, jnp.float32)
           for key, s in batch_shapes.items()}
  variables = model.init(params_rng, dummy, train=False)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                    rng=jax.random.key_data(state_rng), tx=tx)


def step_rng(state: TrainState) -> jax.Array:
  """The random key of the current step: state.rng folded with state.step."""
  return jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)


def make_schedule(lr: float, warmup_steps: int, total_steps: int) -> Callable[[Any], jax.Array]:
  """Learning rate at a step: linear warmup from 0 to `lr`, then cosine decay to 0 at the end."""
  if not 0 <= warmup_steps < total_steps:
    raise ValueError(f"need 0 <= warmup_steps < total_steps, got {warmup_steps}, {total_steps}")
  return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps, total_steps)


def make_optimizer(lr: float, warmup_steps: int, total_steps: int, weight_decay: float,
                   clip_norm: float,
                   ) -> tuple[optax.GradientTransformation, Callable[[Any], jax.Array]]:
  """AdamW on the schedule of `make_schedule`, after clipping the global gradient norm.

  Weight decay applies to kernels only (not to biases or norm scales). Returns the optimizer and
  its schedule (the learning rate used by update number n, counted from 0, is schedule(n)).
  """
  schedule = make_schedule(lr, warmup_steps, total_steps)
  tx = optax.chain(optax.clip_by_global_norm(clip_norm),
                   optax.adamw(schedule, weight_decay=weight_decay, mask=_kernels))
  return tx, schedule


def _kernels(params: Any) -> Any:
  """True for the leaves that weight decay applies to: matrices and conv kernels."""
  return jax.tree.map(lambda p: p.ndim > 1, params)
