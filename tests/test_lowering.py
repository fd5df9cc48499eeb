"""The training and evaluation steps lower for GPU and TPU on this CPU machine (jax.export), so a
CPU-only construct (a host callback, a CPU custom call) fails here instead of on a user's GPU."""

import jax
import numpy as np
import pytest

from configs import demo
from lbher_jax import inference
from lbher_jax.models import get_model
from lbher_jax.train import state as state_lib
from lbher_jax.train import steps

PLATFORMS = ("cuda", "tpu")


def _setup(dtype: str, batch: int = 4):
  c = demo.get_config("tiny")
  c.model.dtype = dtype
  model = get_model(c.model)
  example = inference.example_batch(c, batch)
  example["clip"] = np.arange(batch, dtype=np.int32)
  example["label"] = np.arange(batch, dtype=np.int32) % 4
  tx, _ = state_lib.make_optimizer(lr=1e-3, warmup_steps=1, total_steps=10, weight_decay=1e-4,
                                   clip_norm=1.0)
  state = jax.eval_shape(lambda: state_lib.create(model, tx, example, jax.random.key(0)))
  specs = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in example.items()}
  return model, state, specs


def _lowered_text(fn, *args) -> str:
  exported = jax.export.export(jax.jit(fn), platforms=PLATFORMS)(*args)
  assert tuple(exported.platforms) == PLATFORMS
  return exported.mlir_module()


def _assert_portable(text: str) -> None:
  for construct in ("custom_call @xla_python_cpu_callback", "xla_ffi_python_cpu_callback",
                    "@xla_python_gpu_callback", "cpu_callback"):
    assert construct not in text, construct


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("phase", ["pretrain", "finetune"])
def test_train_steps_lower_for_gpu_and_tpu(phase, dtype):
  model, state, batch = _setup(dtype)
  step = steps.make_train_step(model, phase, aux_weight=1.0 if phase == "finetune" else 0.0)
  text = _lowered_text(step, state, batch)
  _assert_portable(text)
  # Off CPU the models pool with flax's max_pool (reduce_window), not the CPU strided slices.
  assert "reduce_window" in text


def test_infonce_pretraining_lowers_for_gpu_and_tpu():
  model, state, batch = _setup("float32")
  step = steps.make_train_step(model, "pretrain", contrastive_loss="infonce")
  _assert_portable(_lowered_text(step, state, batch))


def test_eval_step_lowers_for_gpu_and_tpu():
  model, state, batch = _setup("float32")
  _assert_portable(_lowered_text(steps.make_eval_step(model), state, batch))
