"""model.dtype="bfloat16" trains like float32: parameters, BatchNorm statistics, losses and the
contrastive distances stay float32, 100 steps from the same start give the same losses
and accuracies within a stated tolerance, and a checkpoint of one dtype restores in the other."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo
from lbher_jax.models import get_model
from lbher_jax.train import checkpoint as ckpt_lib
from lbher_jax.train import state as state_lib
from lbher_jax.train import steps

pytestmark = pytest.mark.slow  # subprocess / end-to-end runs

STEPS = 100


def _data(n=32, seed=0):
  """Tiny batches whose class is written into the audio's loudness and the faces' brightness."""
  c = demo.get_config("tiny")
  rng = np.random.default_rng(seed)
  label = np.arange(n, dtype=np.int32) % 4
  audio = (rng.normal(0, 0.2, (n, c.audio.height, c.audio.width)) + (label[:, None, None] - 1.5)
           * 0.4).clip(-1, 1).astype(np.float32)
  shape = (n, c.video.frames_per_segment, c.video.height, c.video.width, 3)
  video = (rng.integers(0, 60, shape) + 40 * label[:, None, None, None, None]).astype(np.uint8)
  return {"audio": audio, "video": video, "label": label, "clip": np.arange(n, dtype=np.int32),
          "weight": np.ones(n, np.float32)}


def _model(dtype):
  c = demo.get_config("tiny")
  c.model.dtype = dtype
  return get_model(c.model)


def _train(dtype, phase, batch, num_steps=STEPS):
  model = _model(dtype)
  tx, _ = state_lib.make_optimizer(lr=3e-3, warmup_steps=10, total_steps=STEPS,
                                   weight_decay=1e-4, clip_norm=1.0)
  state = state_lib.create(model, tx, batch, jax.random.key(0))
  step = jax.jit(steps.make_train_step(model, phase, aux_weight=1.0 if phase == "finetune"
                                       else 0.0, contrastive_loss="infonce"))
  history = []
  for _ in range(num_steps):
    state, metrics = step(state, batch)
    history.append(jax.device_get(metrics))
  return model, state, history


def test_bf16_fine_tuning_matches_float32():
  batch = _data()
  _, s32, h32 = _train("float32", "finetune", batch)
  model16, s16, h16 = _train("bfloat16", "finetune", batch)
  # What stays float32 whatever the compute dtype.
  for leaf in jax.tree.leaves((s16.params, s16.batch_stats)):
    assert leaf.dtype == jnp.float32
  assert h16[-1]["loss"].dtype == np.float32
  out = model16.apply({"params": s16.params, "batch_stats": s16.batch_stats}, batch, train=False)
  assert out["logits"].dtype == jnp.float32
  # Tolerance: the mean loss of the last 20 steps within 0.1 (absolute) and 15 % (relative);
  # both reach the same training accuracy within 0.1.
  late = lambda h, k: float(np.mean([m[k] for m in h[-20:]]))
  assert abs(late(h16, "loss") - late(h32, "loss")) < max(0.1, 0.15 * late(h32, "loss"))
  assert late(h32, "accuracy") > 0.9
  assert abs(late(h16, "accuracy") - late(h32, "accuracy")) < 0.1
  assert h16[0]["loss"] > 2 * late(h16, "loss")        # it trained


def test_bf16_pretraining_loss_and_distances_stay_float32():
  _, _, history = _train("bfloat16", "pretrain", _data(), num_steps=2)
  for key in ("loss", "distance_positive", "distance_negative"):
    assert history[-1][key].dtype == np.float32 and np.isfinite(history[-1][key])


def test_a_checkpoint_restores_in_the_other_dtype(tmp_path):
  batch = _data(8)
  model32, model16 = _model("float32"), _model("bfloat16")
  tx, _ = state_lib.make_optimizer(lr=1e-3, warmup_steps=1, total_steps=10, weight_decay=0.0,
                                   clip_norm=1.0)
  state = state_lib.create(model32, tx, batch, jax.random.key(1))
  ckpt = ckpt_lib.Checkpointer(tmp_path / "ckpt")
  ckpt.save(1, state)
  abstract = jax.eval_shape(lambda: state_lib.create(model16, tx, batch, jax.random.key(0)))
  restored = ckpt.restore(1, ckpt_lib.abstract_like(abstract, jax.sharding.SingleDeviceSharding(
      jax.devices()[0])))
  ckpt.close()
  variables = lambda s: {"params": s.params, "batch_stats": s.batch_stats}
  p32 = model32.apply(variables(state), batch, train=False)["logits"]
  p16 = model16.apply(variables(restored), batch, train=False)["logits"]
  np.testing.assert_allclose(np.asarray(p16), np.asarray(p32), atol=0.1, rtol=0.05)
