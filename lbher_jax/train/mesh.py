"""Data-parallel device mesh: the batch is split over axis 'data', everything else replicated."""

import os
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed(force: bool = False) -> bool:
  """Joins the multi-process JAX runtime when launched as one of several processes.

  Calls jax.distributed.initialize() when JAX_COORDINATOR_ADDRESS is set (with JAX_NUM_PROCESSES
  and JAX_PROCESS_ID), when SLURM or Open MPI started more than one task, or when `force` is
  True or LBHER_DISTRIBUTED=1 (e.g. on a Cloud TPU pod, whose hosts JAX detects itself);
  otherwise does nothing. Call it
  before any other JAX call. Returns whether the runtime is distributed.
  """
  if jax.distributed.is_initialized():
    return True
  env = os.environ
  if env.get("JAX_COORDINATOR_ADDRESS"):
    try:
      num_processes, process_id = int(env["JAX_NUM_PROCESSES"]), int(env["JAX_PROCESS_ID"])
    except (KeyError, ValueError) as e:
      raise ValueError("JAX_COORDINATOR_ADDRESS is set, so JAX_NUM_PROCESSES and JAX_PROCESS_ID "
                       f"must be set to integers too ({e!r})") from e
    jax.distributed.initialize(coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
                               num_processes=num_processes, process_id=process_id)
    return True
  launched = (int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env) or (
    int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1)
  if launched or force or env.get("LBHER_DISTRIBUTED") == "1":
    jax.distributed.initialize()
    return True
  return False


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D ('data',) mesh over `devices` (default: all devices of all processes).

  The axis is Auto (GSPMD propagates shardings through the model), so models need no sharding
  annotations.
  """
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over 'data'."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """A full copy on every device of the mesh."""
  return NamedSharding(mesh, P())


def to_global(host_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each process's rows of the batch into global arrays sharded over 'data'.

  Every process passes its own consecutive slice of the global batch (process i holds rows
  [i * b, (i + 1) * b) for local batch size b); single-process, the local batch is the global one.
  The local batch size must be a multiple of the process's devices in the mesh.
  """
  sharding = batch_sharding(mesh)
  return {key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
          for key, value in host_batch.items()}
