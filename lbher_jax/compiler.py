"""XLA compiler options for the project's jitted programs.

On CPU, XLA (jaxlib 0.10) hands convolutions, dots, reductions and elementwise work to its YNNPACK
library by default. On the models' shapes its convolutions run at about half the speed of XLA's
Eigen convolutions and its kernel-gradient convolutions several times slower still, while its
dots and reductions are the fastest there are and its reductions are the accurate ones (without
them, a BatchNorm over 1.9 million values per channel got an input gradient 11 % off). So CPU
programs keep YNNPACK for dots and reductions only: the paper-scale training step 3.5 -> 2.4 s
(BUILD_NOTES.md, issue 7).

Needs jax and numpy only, like `lbher_jax.export.load`, which uses it too.
"""

import functools
import logging
from collections.abc import Iterable

import jax
import numpy as np

_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type":
                "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}


@functools.cache
def _accepted() -> bool:
  """Whether this XLA knows the CPU options (they are experimental and may be renamed)."""
  try:
    jax.jit(lambda v: v + 1, compiler_options=_CPU_OPTIONS).lower(
      jax.ShapeDtypeStruct((), np.float32)).compile()
  except jax.errors.JaxRuntimeError as e:
    logging.getLogger(__name__).warning(
      "XLA refuses the CPU compiler options %s (%s); compiling with its defaults, which train "
      "the models more slowly", _CPU_OPTIONS, e)
    return False
  return True


def compiler_options(devices: Iterable[jax.Device]) -> dict[str, str] | None:
  """The options for a program that runs on `devices` (e.g. `mesh.devices.flat`): the CPU
  options above when they are all CPUs and XLA accepts them, else None (XLA's defaults)."""
  devices = list(devices)
  if devices and all(d.platform == "cpu" for d in devices) and _accepted():
    return dict(_CPU_OPTIONS)
  return None
