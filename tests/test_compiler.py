"""The CPU compiler options: chosen for CPU meshes only, used by the jitted steps, and accurate."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lbher_jax import compiler
from lbher_jax.models import ops
from lbher_jax.train import mesh as mesh_lib, steps


def test_options_for_cpu_devices_only():
  options = compiler.compiler_options(jax.devices())
  assert options == {"xla_cpu_experimental_ynn_fusion_type":
                     "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
  gpu = types.SimpleNamespace(platform="gpu")
  assert compiler.compiler_options([gpu]) is None
  assert compiler.compiler_options([jax.devices()[0], gpu]) is None


def test_steps_compile_with_the_options():
  """XLA's convolution stays a plain instruction instead of a YNNPACK fusion."""
  mesh = mesh_lib.make_mesh()
  x = jnp.ones((4, 6, 6, 3))
  kernel = jnp.ones((3, 3, 3, 2))
  fn = lambda state, batch: {"y": ops.conv2d_same(batch, state)}
  text = steps.jit_eval_step(fn, mesh).lower(kernel, x).compile().as_text()
  plain = jax.jit(fn).lower(kernel, x).compile().as_text()
  has_plain_convolution = lambda hlo: any(
    " convolution(" in line and "fused" not in line for line in hlo.splitlines()
    if line.lstrip().startswith("%conv"))
  assert has_plain_convolution(text)
  assert not has_plain_convolution(plain)


def _batch_norm_grads64(x, dy, scale, bias):
  """float64 gradients (x, scale, bias) of sum(relu(batch_norm(x)) * dy), by hand."""
  x64 = x.astype(np.float64)
  axes = tuple(range(x.ndim - 1))
  count = x.size // x.shape[-1]
  inv = 1 / np.sqrt(x64.var(axis=axes) + 1e-5)
  x_hat = (x64 - x64.mean(axis=axes)) * inv
  dy = dy * (x_hat * scale + bias > 0)
  dbias, dscale = dy.sum(axis=axes), (dy * x_hat).sum(axis=axes)
  return scale * inv * (dy - (dbias + x_hat * dscale) / count), dscale, dbias


@pytest.mark.slow
def test_batch_norm_gradient_is_accurate_under_the_options():
  """BatchNorm over 1.9 million values per channel, against a float64 reference written out by
  hand, alone and fused with ReLU and a (1, 2, 2) max-pool. (With YNNPACK's reductions switched
  off as well, XLA's own sums leave 11 % errors here.)"""
  rng = np.random.default_rng(0)
  shape = (8, 20, 60, 100, 16)
  x = (rng.normal(size=shape) * 2 + 0.5).astype(np.float32)
  r = rng.normal(size=shape).astype(np.float32)
  scale = np.linspace(0.5, 1.5, 16, dtype=np.float32)
  bias = np.linspace(-0.2, 0.2, 16, dtype=np.float32)
  weight = np.full(8, 1 / (x.size // 16), np.float32)
  options = compiler.compiler_options(jax.devices())

  def check(loss, want):
    got = jax.jit(jax.grad(loss, argnums=(0, 1, 2)), compiler_options=options)(x, scale, bias)
    for g, w, tol in zip(got, want, (1e-5, 1e-5, 1e-4)):
      assert np.max(np.abs(g - w)) <= tol * np.max(np.abs(w))

  check(lambda x, s, b: jnp.sum(jax.nn.relu(ops.batch_norm(x, s, b, weight, 1e-5)[0]) * r),
        _batch_norm_grads64(x, r, scale, bias))
  # Pooled: each window's cotangent goes to its largest input (the scales are positive).
  pooled_r = r[:, :, ::2, ::2]
  windows = x.reshape(8, 20, 30, 2, 50, 2, 16).transpose(0, 1, 2, 4, 6, 3, 5).reshape(
    8, 20, 30, 50, 16, 4)
  first = np.argmax(windows, axis=-1)[..., None] == np.arange(4)
  dy = (first * pooled_r[..., None]).reshape(8, 20, 30, 50, 16, 2, 2).transpose(
    0, 1, 2, 5, 3, 6, 4).reshape(shape)
  check(lambda x, s, b: jnp.sum(
          ops.batch_norm_relu_pool(x, s, b, weight, 1e-5, (1, 2, 2))[0] * pooled_r),
        _batch_norm_grads64(x, dy, scale, bias))
