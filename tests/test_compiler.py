"""The CPU compiler options: chosen for CPU meshes only, used by the jitted steps, and accurate."""

import types

import jax
import jax.numpy as jnp
import numpy as np

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


def test_batch_norm_gradient_is_accurate_under_the_options():
  """A BatchNorm over 1.9 million values per channel, against a float64 reference written out by
  hand. (With YNNPACK's reductions switched off as well, XLA's own sums leave 11 % errors here.)"""
  rng = np.random.default_rng(0)
  shape, count = (8, 20, 60, 100, 16), 8 * 20 * 60 * 100
  x = (rng.normal(size=shape) * 2 + 0.5).astype(np.float32)
  r = rng.normal(size=shape).astype(np.float32)
  scale = np.linspace(0.5, 1.5, 16, dtype=np.float32)
  bias = np.linspace(-0.2, 0.2, 16, dtype=np.float32)
  weight = np.full(8, 1 / count, np.float32)
  loss = lambda x, s, b: jnp.sum(jax.nn.relu(ops.batch_norm(x, s, b, weight, 1e-5)[0]) * r)
  got = jax.jit(jax.grad(loss, argnums=(0, 1, 2)),
                compiler_options=compiler.compiler_options(jax.devices()))(x, scale, bias)

  x64 = x.astype(np.float64)
  inv = 1 / np.sqrt(x64.var(axis=(0, 1, 2, 3)) + 1e-5)
  x_hat = (x64 - x64.mean(axis=(0, 1, 2, 3))) * inv
  dy = r * (x_hat * scale + bias > 0)
  dbias, dscale = dy.sum(axis=(0, 1, 2, 3)), (dy * x_hat).sum(axis=(0, 1, 2, 3))
  dx = scale * inv * (dy - (dbias + x_hat * dscale) / count)
  for g, want, tol in zip(got, (dx, dscale, dbias), (1e-5, 1e-5, 1e-4)):
    assert np.max(np.abs(g - want)) <= tol * np.max(np.abs(want))
