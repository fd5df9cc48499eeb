"""Two processes on localhost train together through jax.distributed (CPU collectives: gloo).

Runs tests/distributed_worker.py as two processes of one job (2 CPU devices each, each feeding
its half of the global batch) and once alone (4 CPU devices, the full batch), then checks that the
job assembled the global batch in order and that both processes end with identical parameters,
equal to the single-process run up to float rounding.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import portpicker
import pytest

pytestmark = pytest.mark.slow  # subprocess / end-to-end runs

# Cross-process computations on CPU need the gloo collectives, which jaxlib's Linux wheels ship
# (the lock pins one); others may not.
NO_GLOO = pytest.mark.skipif(not sys.platform.startswith("linux"),
                             reason="gloo CPU collectives ship with the Linux jaxlib wheels only")

WORKER = Path(__file__).with_name("distributed_worker.py")
PROJECT_ROOT = WORKER.parents[1]
TIMEOUT_S = 240


def _start(out: Path, num_devices: int, extra_env: dict[str, str],
           worker: Path = WORKER, args: tuple[str, ...] | None = None) -> subprocess.Popen:
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("JAX_", "SLURM_", "OMPI_", "XLA_FLAGS"))}
  # Compile quickly: the programs are tiny, LLVM optimisation would dominate the run time.
  env.update(extra_env, PYTHONPATH=str(PROJECT_ROOT),
             XLA_FLAGS="--xla_backend_optimization_level=0")
  args = (str(out), str(num_devices)) if args is None else args
  return subprocess.Popen([sys.executable, str(worker), *args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(procs: list[subprocess.Popen]) -> list[str]:
  """Waits for all processes (killing every one on timeout); returns their outputs."""
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=TIMEOUT_S)[0])
  except subprocess.TimeoutExpired:
    for proc in procs:
      proc.kill()
      proc.communicate()
    pytest.fail(f"distributed workers did not finish within {TIMEOUT_S} s")
  return outputs


@NO_GLOO
def test_two_processes_match_one(tmp_path):
  port = portpicker.pick_unused_port()
  procs = [_start(tmp_path / f"process{i}.npz", 2,
                  {"JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2",
                   "JAX_PROCESS_ID": str(i)}) for i in range(2)]
  procs.append(_start(tmp_path / "single.npz", 4, {}))
  outputs = _finish(procs)
  for proc, output in zip(procs, outputs):
    assert proc.returncode == 0, output[-3000:]

  p0, p1, single = (np.load(tmp_path / f"{name}.npz")
                    for name in ("process0", "process1", "single"))
  np.testing.assert_array_equal(p0["labels"], p0["expected_labels"])
  np.testing.assert_array_equal(p1["labels"], p1["expected_labels"])
  param_keys = [k for k in single.files if k.startswith("params/")]
  assert len(param_keys) == 33  # 29 + kernel and bias of each stream's own output layer
  assert param_keys == [k for k in p0.files if k.startswith("params/")]
  np.testing.assert_array_equal(p0["losses"], p1["losses"])
  np.testing.assert_allclose(p0["losses"], single["losses"], rtol=1e-5)
  for key in param_keys:
    np.testing.assert_array_equal(p0[key], p1[key], err_msg=key)
    np.testing.assert_allclose(p0[key], single[key], rtol=1e-4, atol=1e-5, err_msg=key)
    trained = not np.array_equal(p0[key], p0["initial" + key[len("params"):]])
    head = key.startswith(("params/output/", "params/audio_output/", "params/video_output/"))
    assert trained != head, key  # no pre-training loss term reaches the output layers


@NO_GLOO
def test_two_processes_preprocess_half_each_and_match_one(tmp_path):
  from lbher_jax.datasets import demo  # pylint: disable=import-outside-toplevel
  worker = WORKER.with_name("preprocess_worker.py")
  cache = tmp_path / "corpus"
  demo.ensure(cache, num_speakers=3, clips_per_emotion=1, min_duration=1.2, max_duration=2.4)
  port = portpicker.pick_unused_port()
  env = lambda i: {"JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2",
                   "JAX_PROCESS_ID": str(i)}
  procs = [_start(tmp_path, 1, env(i), worker, (str(cache), str(tmp_path / "two")))
           for i in range(2)]
  procs.append(_start(tmp_path, 1, {}, worker, (str(cache), str(tmp_path / "one"))))
  outputs = _finish(procs)
  for proc, output in zip(procs, outputs):
    assert proc.returncode == 0, output[-3000:]
  made = [json.loads(out.strip().splitlines()[-1])["made"] for out in outputs]
  assert made[0] == [0, 2, 4] and made[1] == [1, 3, 5] and made[2] == list(range(6))
  one, two = tmp_path / "one", tmp_path / "two"
  names = sorted(p.name for p in one.iterdir())
  assert names == sorted(p.name for p in two.iterdir()) and "index.json" in names
  for name in names:
    assert (one / name).read_bytes() == (two / name).read_bytes(), name
