"""Mesh helpers, train state, optimizer and the jitted train / eval steps (tiny hybrid model)."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import at_scale
from lbher_jax import models
from lbher_jax.train import mesh as mesh_lib
from lbher_jax.train import state as state_lib
from lbher_jax.train import steps

# The programs are tiny: LLVM optimisation would dominate their compile time.
FAST = {"xla_backend_optimization_level": 0}
BATCH = 8
CONFIG = models.default_model_config("hybrid", "tiny")
MODEL = models.get_model(CONFIG)
SPEC = models.batch_spec(at_scale("tiny"), BATCH)
# Plain SGD: runs on 1 and 4 devices then differ by float rounding only (Adam's first step,
# ~lr * sign(g), would magnify it where a gradient is close to 0).
TX = optax.sgd(0.3)
ADAMW, _ = state_lib.make_optimizer(1e-2, 2, 100, weight_decay=1e-4, clip_norm=1.0)


def _mesh(n: int):
  return mesh_lib.make_mesh(jax.devices()[:n])


@pytest.fixture(scope="module")
def host_state():
  """The initial TrainState, on the host (device copies are donated by the steps)."""
  create = jax.jit(partial(state_lib.create, MODEL, TX, SPEC))
  rng = jax.random.key(0)
  return jax.device_get(create.lower(rng).compile(compiler_options=FAST)(rng))


@pytest.fixture(scope="module")
def host_batch():
  rng = np.random.default_rng(0)
  return {"audio": rng.uniform(-1, 1, SPEC["audio"].shape).astype(np.float32),
          "video": rng.integers(0, 256, SPEC["video"].shape, dtype=np.uint8),
          "label": np.array([0, 1, 2, 3, 0, 1, 2, 3], np.int32),
          "clip": np.array([0, 1, 2, 3, 4, 5, 6, 6], np.int32),
          "weight": np.array([1, 1, 1, 1, 1, 1, 1, 0], np.float32)}


_compiled = {}


def _train_step(phase: str, n: int, state, batch):
  """The jitted step for `phase` on the first n devices, compiled once per module and optimizer."""
  key = (phase, n, state.tx)
  if key not in _compiled:
    jitted = steps.jit_train_step(
      steps.make_train_step(MODEL, phase, margin=1.0, aux_weight=0.5), _mesh(n))
    _compiled[key] = jitted.lower(state, batch).compile(compiler_options=FAST)
  return _compiled[key]


def _with_adamw(host_state):
  return host_state.replace(tx=ADAMW, opt_state=jax.device_get(ADAMW.init(host_state.params)))


def _run(phase, n, host_state, host_batch, num_steps=1):
  """Runs num_steps steps from host_state; returns the final state and each step's metrics."""
  mesh = _mesh(n)
  state = jax.device_put(host_state, mesh_lib.replicated(mesh))
  batch = mesh_lib.to_global(host_batch, mesh)
  step = _train_step(phase, n, state, batch)
  history = []
  for _ in range(num_steps):
    state, metrics = step(state, batch)
    history.append(jax.device_get(metrics))
  return jax.device_get(state), history


def test_mesh_and_global_batch(host_batch):
  mesh = _mesh(4)
  assert mesh.axis_names == ("data",) and mesh.devices.size == 4
  batch = mesh_lib.to_global(host_batch, mesh)
  assert batch["video"].shape == host_batch["video"].shape
  assert batch["video"].sharding == mesh_lib.batch_sharding(mesh)
  assert [s.data.shape[0] for s in batch["label"].addressable_shards] == [2, 2, 2, 2]
  np.testing.assert_array_equal(batch["audio"], host_batch["audio"])


def test_initialize_distributed_is_noop_when_not_launched(monkeypatch):
  for var in ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    monkeypatch.delenv(var, raising=False)
  assert mesh_lib.initialize_distributed() is False
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1")
  with pytest.raises(ValueError, match="JAX_NUM_PROCESSES"):
    mesh_lib.initialize_distributed()


@pytest.mark.parametrize("shapes", ["structs", "tuples"])
def test_create_traces_abstractly(shapes):
  tx, _ = state_lib.make_optimizer(1e-3, 10, 100, 1e-4, 1.0)
  batch_shapes = SPEC if shapes == "structs" else {k: v.shape for k, v in SPEC.items()}
  abstract = jax.eval_shape(partial(state_lib.create, MODEL, tx, batch_shapes),
                            jax.random.key(0))
  assert abstract.step.shape == () and abstract.step.dtype == jnp.int32
  assert abstract.rng.dtype == jnp.uint32
  assert abstract.batch_stats["audio"]["BatchNorm_0"]["var"].shape == (4,)
  assert abstract.tx is tx
  variables = jax.eval_shape(partial(MODEL.init, train=False), jax.random.key(0), SPEC)
  assert jax.tree.structure(abstract.params) == jax.tree.structure(variables["params"])


def test_optimizer_schedule_and_weight_decay():
  schedule = state_lib.make_schedule(1.0, 10, 110)
  np.testing.assert_allclose([schedule(s) for s in (0, 5, 10, 60, 110)],
                             [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)
  with pytest.raises(ValueError, match="warmup_steps < total_steps"):
    state_lib.make_schedule(1.0, 10, 10)
  tx, schedule = state_lib.make_optimizer(0.5, 0, 10, weight_decay=0.1, clip_norm=1.0)
  assert schedule(0) == 0.5
  params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  np.testing.assert_allclose(updates["kernel"], -0.5 * 0.1)  # decoupled decay: -lr * wd * p
  np.testing.assert_array_equal(updates["bias"], 0.0)  # biases are not decayed


@pytest.mark.slow
@pytest.mark.parametrize("phase", steps.PHASES)
def test_one_and_four_devices_agree(phase, host_state, host_batch):
  state1, (metrics1,) = _run(phase, 1, host_state, host_batch)
  state4, (metrics4,) = _run(phase, 4, host_state, host_batch)
  assert metrics1["finite"] and metrics4["finite"]
  assert int(state1.step) == int(state4.step) == 1
  for key in metrics1:
    np.testing.assert_allclose(metrics4[key], metrics1[key], rtol=1e-5, err_msg=key)
  for tree in ("params", "batch_stats"):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 getattr(state4, tree), getattr(state1, tree))
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), state1.params, host_state.params)
  if phase == "finetune":
    assert all(jax.tree.leaves(changed))
  else:  # the output layers play no part in the contrastive loss
    for head in ("output", "audio_output", "video_output"):
      assert not any(jax.tree.leaves(changed[head]))
    assert all(jax.tree.leaves(changed["audio"])) and all(jax.tree.leaves(changed["video"]))


@pytest.mark.parametrize("phase", steps.PHASES)
def test_loss_decreases_on_a_fixed_batch(phase, host_state, host_batch):
  """With the project's optimizer (AdamW, warmup + cosine, clipping)."""
  host_state = _with_adamw(host_state)
  state, history = _run(phase, 1, host_state, host_batch, num_steps=40)
  assert all(m["finite"] for m in history)
  # The trained parameters under step 0's randomness (same dropout masks and pairs) give a much
  # lower loss than the initial ones did.
  _, (again,) = _run(phase, 1, state.replace(step=host_state.step), host_batch)
  # Unit-length, non-negative (post-ReLU) embeddings bound how far apart negatives can be
  # pushed, so the contrastive loss falls less than the cross-entropy; how much less depends on
  # float summation order (14-47 % over these 40 steps with equivalent convolution gradients).
  assert again["loss"] < (0.5 if phase == "finetune" else 0.9) * history[0]["loss"]
  if phase == "finetune":
    assert history[-1]["accuracy"] == 1.0


def test_pretrain_needs_both_streams(host_batch):
  model = models.get_model(models.default_model_config("cnn_rnn", "tiny"))
  spec = SPEC
  state = jax.eval_shape(partial(state_lib.create, model, TX, spec), jax.random.key(0))
  with pytest.raises(ValueError, match="needs a model with both streams"):
    jax.eval_shape(steps.make_train_step(model, "pretrain"), state, host_batch)


def test_non_finite_batch_keeps_state(host_state, host_batch):
  bad = dict(host_batch, audio=host_batch["audio"].copy())
  bad["audio"][2, 3, 4] = np.nan
  host_state = _with_adamw(host_state)
  state, (metrics,) = _run("finetune", 1, host_state, bad)
  assert not metrics["finite"] and not np.isfinite(metrics["loss"])
  assert int(state.step) == 0
  jax.tree.map(np.testing.assert_array_equal, state.params, host_state.params)
  jax.tree.map(np.testing.assert_array_equal, state.batch_stats, host_state.batch_stats)
  jax.tree.map(np.testing.assert_array_equal, state.opt_state, host_state.opt_state)


def test_train_step_donates_state(host_state, host_batch):
  mesh = _mesh(1)
  state = jax.device_put(host_state, mesh_lib.replicated(mesh))
  batch = mesh_lib.to_global(host_batch, mesh)
  _train_step("finetune", 1, state, batch)(state, batch)
  assert all(x.is_deleted() for x in jax.tree.leaves(state.params))


def test_eval_step(host_state, host_batch):
  mesh = _mesh(4)
  state = jax.device_put(host_state, mesh_lib.replicated(mesh))
  eval_step = steps.jit_eval_step(steps.make_eval_step(MODEL), mesh)
  batch = mesh_lib.to_global(host_batch, mesh)
  compiled = eval_step.lower(state, batch).compile(compiler_options=FAST)
  out = jax.device_get(compiled(state, batch))
  assert out["logits"].shape == out["probs"].shape == (BATCH, 4)
  np.testing.assert_allclose(out["probs"], jax.nn.softmax(out["logits"]), rtol=1e-6)
  # The hybrid's per-stream output layers come out too, as probabilities.
  heads = MODEL.apply({"params": host_state.params, "batch_stats": host_state.batch_stats},
                      host_batch, train=False)
  for stream in ("audio", "video"):
    np.testing.assert_allclose(out[f"{stream}_probs"],
                               jax.nn.softmax(heads[f"{stream}_logits"]), rtol=1e-5, atol=1e-6)
  # Inference uses the running statistics: a row's output does not depend on the other rows.
  changed = dict(host_batch, video=host_batch["video"].copy())
  changed["video"][0] = 0
  out_changed = jax.device_get(compiled(state, mesh_lib.to_global(changed, mesh)))
  np.testing.assert_allclose(out_changed["logits"][1:], out["logits"][1:], rtol=1e-5, atol=1e-6)
  assert not np.allclose(out_changed["logits"][0], out["logits"][0])
