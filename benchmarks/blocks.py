"""Forward + backward of each conv layer's BatchNorm, ReLU and max-pool: fused against plain (issue 7).

For every pooled conv layer of `hybrid` at the chosen scale, a random map of that layer's
output shape goes through `ops.batch_norm_relu_pool` (the model's form: pool first, normalise
the pooled map) and through the plain chain `ops.batch_norm` -> ReLU -> `ops.max_pool`, both
under `jax.grad` of a loss with a fixed random cotangent and jitted with the project's compiler
options. The two run alternately; medians are reported, with how far their gradients differ. They
agree up to rounding except where a window's float32 inputs tie (a few windows of the largest
maps): there the plain chain shares the gradient and the fused op gives it to the first maximum.

  python benchmarks/blocks.py [--scale paper] [--batch 8] [--rounds 7] [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # configs/

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from common import machine  # noqa: E402  # benchmarks/common.py (the script's own folder)
from configs import at_scale  # noqa: E402
from lbher_jax import compiler, models  # noqa: E402
from lbher_jax.models import ops  # noqa: E402


def pooled_maps(config, batch: int) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
  """{layer: (conv output shape, pool window)} for every conv layer followed by a max-pool."""
  spec, config = models.batch_spec(config, batch), config.model
  maps = {}
  size = spec["video"].shape[1:4]
  for i, (channels, window) in enumerate(zip(config.video_convs, config.video_pools)):
    maps[f"video {i + 1}"] = ((batch, *size, channels), tuple(window))
    size = tuple(n // k for n, k in zip(size, window))
  size = spec["audio"].shape[1:]
  for i, channels in enumerate(config.audio_convs):
    maps[f"audio {i + 1}"] = ((batch, *size, channels), (2, 2))
    size = tuple(n // 2 for n in size)
  return maps


def plain(x, scale, bias, weight, epsilon, window):
  y, mean, var = ops.batch_norm(x, scale, bias, weight, epsilon)
  return ops.max_pool(jax.nn.relu(y), window), mean, var


def compile_grad(block, x, scale, bias, window, cotangent):
  weight = jnp.full(x.shape[:1], 1.0 / (x.size // x.shape[-1]), jnp.float32)
  loss = lambda x, s, b: jnp.sum(block(x, s, b, weight, 1e-5, window)[0] * cotangent)
  options = compiler.compiler_options(jax.devices())
  return jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(x, scale, bias).compile(
    compiler_options=options)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--scale", default="paper", help="model scale (paper, small, tiny)")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--rounds", type=int, default=7, help="timed runs of each form")
  parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
  args = parser.parse_args()
  load_before = os.getloadavg()
  config = at_scale(args.scale)
  layers = {}
  for name, (shape, window) in pooled_maps(config, args.batch).items():
    keys = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(keys[0], shape) * 2 + 0.3
    scale = jax.random.normal(keys[1], shape[-1:])  # both signs
    bias = jax.random.normal(keys[2], shape[-1:]) * 0.5
    pooled_shape = jax.eval_shape(lambda v: ops.max_pool(v, window), x).shape
    cotangent = jax.random.normal(keys[3], pooled_shape)
    forms = {form: compile_grad(block, x, scale, bias, window, cotangent)
             for form, block in (("plain", plain), ("fused", ops.batch_norm_relu_pool))}
    grads = {form: fn(x, scale, bias) for form, fn in forms.items()}
    times = {form: [] for form in forms}
    for _ in range(args.rounds):
      for form, fn in forms.items():
        start = time.perf_counter()
        jax.block_until_ready(fn(x, scale, bias))
        times[form].append(time.perf_counter() - start)
    rel = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))
              for a, b in zip(grads["plain"], grads["fused"]))
    plain_x, fused_x = grads["plain"][0], grads["fused"][0]
    differing = int(jnp.sum(jnp.abs(plain_x - fused_x) > 1e-4 * jnp.max(jnp.abs(plain_x))))
    layers[name] = {"shape": list(shape), "window": list(window),
                    "plain_ms": round(1e3 * float(np.median(times["plain"])), 2),
                    "fused_ms": round(1e3 * float(np.median(times["fused"])), 2),
                    "max_rel_grad_diff": rel, "input_grads_differing": differing}
    r = layers[name]
    print(f"{name}: {shape} pool {window}: plain {r['plain_ms']:.1f} ms, fused "
          f"{r['fused_ms']:.1f} ms ({r['plain_ms'] / r['fused_ms']:.1f}x), gradients differ by "
          f"{rel:.1e} (input gradient: {differing} of {x.size} values by > 1e-4)", flush=True)
  if args.json:
    out = {"machine": machine(), "date": datetime.date.today().isoformat(),
           "loadavg_before": [round(v, 2) for v in load_before],
           "loadavg_after": [round(v, 2) for v in os.getloadavg()],
           "scale": args.scale, "batch": args.batch, "rounds": args.rounds, "layers": layers}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
