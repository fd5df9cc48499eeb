"""The training loop: exact resumption after SIGKILL, checkpoint faults, the non-finite guard.

Tiny models on tiny random shards, compiled with most XLA optimisations off (compile time
dominates on CPU). The kill-and-resume runs are subprocesses running this file as their worker.
"""

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import logging

from configs import at_scale
from lbher_jax import inference, models
from lbher_jax.data import loader as loader_lib
from lbher_jax.data import shards
from lbher_jax.train import augment
from lbher_jax.train import checkpoint as ckpt_lib
from lbher_jax.train import loop
from lbher_jax.train import metric_writer
from lbher_jax.train import mesh as mesh_lib
from lbher_jax.train import state as state_lib

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 240
CLIPS, SEGMENTS = 6, 2  # 12 rows: an epoch is 3 steps of BATCH
BATCH = 4
SEED = 3
HUNG = "hung"  # the worker creates this file when it blocks inside a checkpoint write


def write_corpus(directory: Path) -> list[dict]:
  """Two shards of random examples with the tiny shapes (CLIPS clips of SEGMENTS segments);
  returns the row records, as data.preprocess.load_records would."""
  sizes = models.batch_spec(at_scale("tiny"), 1)
  (f, t), (s, h, w) = sizes["audio"].shape[1:], sizes["video"].shape[1:4]
  rng = np.random.default_rng(0)
  directory.mkdir(parents=True, exist_ok=True)
  records = []
  for shard_id, clips in enumerate((range(CLIPS // 2), range(CLIPS // 2, CLIPS))):
    rows = [{"id": f"c{c}#{k}", "utt": f"c{c}", "label_id": c % 4}
            for c in clips for k in range(SEGMENTS)]
    arrays = {"audio": rng.uniform(-1, 1, (len(rows), f, t)),
              "video": rng.integers(0, 256, (len(rows), s, h, w, 3), dtype=np.uint8)}
    shards.write_shard(directory, shard_id, arrays, rows, [])
    records += [{**r, "shard": shard_id, "row": i} for i, r in enumerate(rows)]
  return records


def phase_config(name: str, **overrides) -> loop.PhaseConfig:
  fields = dict(name=name, steps=10, batch_size=BATCH, lr=1e-2, warmup_steps=2,
                weight_decay=1e-4, clip_norm=1.0, log_every=3, checkpoint_every=4,
                keep_checkpoints=2)
  return loop.PhaseConfig(**{**fields, **overrides})


def flat(tree) -> dict[str, np.ndarray]:
  return {jax.tree_util.keystr(path): np.asarray(x)
          for path, x in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]}


# --- The worker: pre-training then fine-tuning in its own process ---------------------------------

def _hang_in_checkpoint_write(phase: str, step: int, workdir: Path) -> None:
  """Makes the save of `phase`'s checkpoint `step` block halfway (model state written, data
  iterator not), after creating workdir/HUNG, so that the test can SIGKILL the process there."""
  saving = {}
  save, write_iterator = ckpt_lib.Checkpointer.save, grain.checkpoint.CheckpointHandler.save

  def save_noting_step(self, s, *args, **kwargs):
    saving["at"] = (self.directory.name, s)
    return save(self, s, *args, **kwargs)

  def blocking_write(self, *args, **kwargs):
    if saving.get("at") == (phase, step):
      (workdir / HUNG).touch()
      time.sleep(TIMEOUT_S)
    return write_iterator(self, *args, **kwargs)

  ckpt_lib.Checkpointer.save = save_noting_step
  grain.checkpoint.CheckpointHandler.save = blocking_write


def _sigterm_during_step(count: int) -> None:
  """Sends this process SIGTERM while its `count`-th training step (of both phases) runs, as a
  scheduler does: the step is under way when the signal arrives."""
  jit_train_step = loop.steps_lib.jit_train_step
  calls = {"n": 0}

  def counting(step_fn, mesh):
    jitted = jit_train_step(step_fn, mesh)

    def step(state, batch):
      calls["n"] += 1
      if calls["n"] == count:
        os.kill(os.getpid(), signal.SIGTERM)
      return jitted(state, batch)
    return step

  loop.steps_lib.jit_train_step = counting


def worker(shards_dir: Path, workdir: Path, hang_at: str) -> None:
  """Pre-trains and fine-tunes the tiny hybrid as algorithm.train does (resuming what a killed
  run left), and saves the final state to workdir/final.npz. `hang_at`: "PHASE:STEP" (hang in
  that checkpoint write), "sigterm:N" (SIGTERM during the N-th step; exits 0 with one line) or
  "-"."""
  logging.set_verbosity(logging.INFO)  # the project's INFO lines only, not Orbax's
  logging.get_absl_logger().addFilter(lambda record: "lbher_jax" in record.pathname)
  jax.config.update("jax_num_cpu_devices", 2)
  jax.config.update("jax_disable_most_optimizations", True)
  if hang_at.startswith("sigterm:"):
    _sigterm_during_step(int(hang_at.split(":")[1]))
  elif hang_at != "-":
    phase, step = hang_at.split(":")
    _hang_in_checkpoint_write(phase, int(step), workdir)
  records = [{**r, "shard": i, "row": row} for i in range(2)
             for row, r in enumerate(shards.read_shard_info(shards_dir, i)["records"])]
  model = models.get_model(models.default_model_config("hybrid", "tiny"))
  mesh = mesh_lib.make_mesh()
  val_source = loader_lib.source_from_records(shards_dir, records[::3])
  labels = np.array([r["label_id"] for r in records[::3]])
  eval_step = inference.compile_eval_step(model, mesh)

  def validate(state):
    probs = inference.predict(model, state, val_source, mesh, BATCH, eval_step)
    return {"val_unweighted_accuracy": float(np.mean(probs.argmax(-1) == labels))}

  run = partial(loop.run_phase, model=model, mesh=mesh,
                source=loader_lib.source_from_records(shards_dir, records),
                augment_params=augment.AugmentParams(), workdir=workdir, seed=SEED)
  try:
    pretrained = run(phase=phase_config("pretrain"))
    state = run(phase=phase_config("finetune"), validate=validate,
                init_variables={"params": pretrained.params,
                                "batch_stats": pretrained.batch_stats})
  except loop.Preempted as e:
    print(f"preempted: {e}")
    return
  np.savez(workdir / "final.npz", **flat(state))


def _start(shards_dir: Path, workdir: Path, hang_at: str = "-") -> subprocess.Popen:
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / HUNG).unlink(missing_ok=True)
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_FLAGS"))}
  env.update(PYTHONPATH=str(PROJECT_ROOT), JAX_PLATFORMS="cpu")
  with open(workdir / "log.txt", "w") as log:
    return subprocess.Popen([sys.executable, __file__, str(shards_dir), str(workdir), hang_at],
                            env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait(proc: subprocess.Popen, workdir: Path) -> str:
  try:
    proc.wait(timeout=TIMEOUT_S)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
    pytest.fail(f"the training worker in {workdir} did not finish within {TIMEOUT_S} s")
  log = (workdir / "log.txt").read_text()
  assert proc.returncode == 0, log[-3000:]
  return log


def _kill_when_hung(proc: subprocess.Popen, workdir: Path) -> str:
  deadline = time.monotonic() + TIMEOUT_S
  while not (workdir / HUNG).exists():
    if proc.poll() is not None or time.monotonic() > deadline:
      proc.kill()
      proc.wait()
      pytest.fail("the worker never reached the checkpoint write it should hang in:\n"
                  + (workdir / "log.txt").read_text()[-3000:])
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  return (workdir / "log.txt").read_text()


def _records(workdir: Path) -> list[dict]:
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return [{k: v for k, v in json.loads(line).items() if k != "examples_per_s"} for line in lines]


def _checkpoints(workdir: Path, phase: str) -> list[str]:
  return sorted(os.listdir(workdir / "checkpoints" / phase), key=lambda name: (len(name), name))


@pytest.mark.slow
def test_sigkill_or_sigterm_then_resume_equals_uninterrupted_run(tmp_path):
  shards_dir = tmp_path / "shards"
  write_corpus(shards_dir)
  straight_dir, resumed_dir = tmp_path / "straight", tmp_path / "resumed"
  term_dir = tmp_path / "sigterm"
  straight = _start(shards_dir, straight_dir)  # runs alongside the interrupted runs
  try:
    # SIGTERM during fine-tuning step 6 (the 16th step: 10 of pre-training first): the step
    # finishes, checkpoint 6 is written, the worker exits 0 with one line; the rerun resumes.
    log = _wait(_start(shards_dir, term_dir, "sigterm:16"), term_dir)
    assert "preempted: finetune: stopped by SIGTERM after step 6" in log
    assert _checkpoints(term_dir, "finetune") == ["4", "6"]
    assert not (term_dir / "final.npz").exists()
    log = _wait(_start(shards_dir, term_dir), term_dir)
    assert "finetune: resuming from the checkpoint of step 6" in log
    # Killed while writing pre-training checkpoint 8 (after checkpoint 4 and the log lines of
    # steps 6 and 8), then while writing fine-tuning checkpoint 8; the third run finishes.
    _kill_when_hung(_start(shards_dir, resumed_dir, "pretrain:8"), resumed_dir)
    assert _checkpoints(resumed_dir, "pretrain") == ["4", "8.orbax-checkpoint-tmp"]
    assert max(r["step"] for r in _records(resumed_dir)) == 8
    log = _kill_when_hung(_start(shards_dir, resumed_dir, "finetune:8"), resumed_dir)
    assert "pretrain: resuming from the checkpoint of step 4" in log
    assert _checkpoints(resumed_dir, "finetune") == ["4", "8.orbax-checkpoint-tmp"]
    log = _wait(_start(shards_dir, resumed_dir), resumed_dir)
    assert "pretrain: resuming from the checkpoint of step 10" in log
    assert "finetune: resuming from the checkpoint of step 4" in log
    _wait(straight, straight_dir)
  finally:
    if straight.poll() is None:
      straight.kill()
      straight.wait()

  assert _records(resumed_dir) == _records(straight_dir)
  assert {r["phase"] for r in _records(straight_dir)} == {"pretrain", "finetune"}
  expected = np.load(straight_dir / "final.npz")
  for got in (np.load(resumed_dir / "final.npz"), np.load(term_dir / "final.npz")):
    assert sorted(got.files) == sorted(expected.files)
    assert int(got[".step"]) == 10
    for key in expected.files:
      np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
  for phase in ("pretrain", "finetune"):  # the half-written checkpoints are gone
    assert _checkpoints(resumed_dir, phase) == _checkpoints(straight_dir, phase)


# --- In-process tests ----------------------------------------------------------------------------

def test_resume_forgets_log_lines_past_the_checkpoint_and_a_torn_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  kept = [{"phase": "pretrain", "step": 8}, {"phase": "finetune", "step": 4},
          {"phase": "finetune", "step": 4, "val_accuracy": 0.5}]
  later = [{"phase": "finetune", "step": 6}]
  path.write_text("".join(json.dumps(r) + "\n" for r in kept + later) + '{"phase": "fine')
  metric_writer.drop_records_after(path, "finetune", 4)
  assert [json.loads(line) for line in path.read_text().splitlines()] == kept


def _events(directory: Path) -> list:
  """Every Event in the TensorBoard files of `directory`, in order (TFRecord framing: length,
  its CRC, the serialised Event, its CRC)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  events = []
  for path in sorted(directory.glob("events.out.tfevents.*")):
    data, at = path.read_bytes(), 0
    while at < len(data):
      length = int.from_bytes(data[at:at + 8], "little")
      events.append(event_pb2.Event.FromString(data[at + 12:at + 12 + length]))
      at += 12 + length + 4
  return events


def test_metric_writer_writes_jsonl_and_tensorboard_and_purges_on_resume(tmp_path):
  writer = metric_writer.MetricWriter(tmp_path, "finetune", 0)
  for step in (1, 2, 3, 4):
    writer.write(step, {"loss": 1.0 / step, "note": "text is not a scalar"})
  writer.close()
  resumed = metric_writer.MetricWriter(tmp_path, "finetune", 2)   # a kill after step 4's log
  resumed.write(3, {"loss": 0.25})
  resumed.close()
  lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [(r["step"], r["loss"]) for r in lines] == [(1, 1.0), (2, 0.5), (3, 0.25)]
  events = _events(tmp_path / "tensorboard" / "finetune")
  scalars = [(e.step, v.tag, round(v.simple_value, 4)) for e in events for v in e.summary.value]
  assert scalars == [(1, "loss", 1.0), (2, "loss", 0.5), (3, "loss", 0.3333), (4, "loss", 0.25),
                     (3, "loss", 0.25)]
  # TensorBoard drops the first run's steps >= 3 when it meets this marker.
  purges = [e.step for e in events if e.HasField("session_log")]
  assert purges == [3]


@pytest.fixture(scope="module", autouse=True)
def fast_compile():
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", previous)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[dict]]:
  directory = tmp_path_factory.mktemp("shards")
  return directory, write_corpus(directory)


def _mesh():
  return mesh_lib.make_mesh(jax.devices()[:2])


def _abstract_state(model_name: str, mesh, **overrides):
  config = models.default_model_config(model_name, "tiny")
  config.update(overrides)
  tx, _ = state_lib.make_optimizer(1e-3, 0, 10, 0.0, 1.0)
  create = partial(state_lib.create, models.get_model(config), tx,
                   models.batch_spec(at_scale("tiny"), BATCH))
  return ckpt_lib.abstract_like(jax.eval_shape(create, jax.random.key(0)),
                                mesh_lib.replicated(mesh))


def _train_iterator(corpus):
  directory, records = corpus
  return iter(loader_lib.train_loader(loader_lib.source_from_records(directory, records),
                                      global_batch=BATCH, seed=SEED))


class _FileSizeLimit:
  """Makes every write past `limit` bytes of a file fail with EFBIG ('File too large'), as a full
  disk would fail it; the limit holds only inside the `with` block."""

  def __init__(self, limit: int):
    self._limit = limit

  def __enter__(self):
    self._previous = resource.getrlimit(resource.RLIMIT_FSIZE)
    self._handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (self._limit, self._previous[1]))

  def __exit__(self, *exc):
    resource.setrlimit(resource.RLIMIT_FSIZE, self._previous)
    signal.signal(signal.SIGXFSZ, self._handler)


@pytest.mark.parametrize("fault", ["array data", "every file"])
def test_failed_checkpoint_write_raises_and_keeps_the_previous_one(tmp_path, corpus, fault):
  mesh = _mesh()
  rng = np.random.default_rng(0)
  state = {"w": jnp.asarray(rng.standard_normal(4096), jnp.float32), "step": jnp.array(1)}
  directory = tmp_path / "checkpoints" / "finetune"
  ckpt = ckpt_lib.Checkpointer(directory, keep=1)  # keeps one: step 1 goes when step 2 is done
  data_iter = _train_iterator(corpus)
  next(data_iter)
  ckpt.save(1, state, data_iter)
  next(data_iter)
  newer = {"w": state["w"] + 1, "step": jnp.array(2)}
  # TensorStore fails writing the arrays (a ValueError), or Python the first file (an OSError).
  with pytest.raises(ckpt_lib.CheckpointError) as error, _FileSizeLimit(
      4096 if fault == "array data" else 0):
    ckpt.save(2, newer, data_iter)
  message = str(error.value)
  assert "\n" not in message and len(message) < 400, message
  assert message.startswith(f"{directory.absolute()}: could not write the checkpoint of step 2")
  assert "checkpoint of step 1 is intact" in message
  assert "File too large" in message

  reopened = ckpt_lib.Checkpointer(directory, keep=1)
  assert reopened.latest_step() == 1
  restored_iter = _train_iterator(corpus)
  abstract = ckpt_lib.abstract_like(jax.eval_shape(lambda: state), mesh_lib.replicated(mesh))
  restored = reopened.restore(1, abstract, restored_iter)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(state))
  fresh = _train_iterator(corpus)
  next(fresh)
  np.testing.assert_array_equal(next(restored_iter)["clip"], next(fresh)["clip"])
  reopened.save(2, newer, restored_iter)  # once there is space again, the same step saves
  assert reopened.latest_step() == 2 and sorted(os.listdir(directory)) == ["2"]
  reopened.close()


@pytest.mark.parametrize("model_name,overrides,difference", [
  ("cnn", {"audio_convs": (4, 16)},
   r"params\.audio\.\w+\.\w+ is float32\[\d+(, \d+)*\] in it, float32\[[\d, ]+\] in the model "
   r"and \d+ more arrays differ"),
  ("cnn_rnn", {}, r"arrays of the model are not in it, e\.g\. params\.audio\.SimpleCell"),
  ("hybrid", {}, r"\d\d arrays of the model are not in it, e\.g\. params\.audio\."),
])
def test_restoring_another_models_checkpoint_fails_clearly(tmp_path, model_name, overrides,
                                                          difference):
  mesh = _mesh()
  saved = _abstract_state("cnn", mesh)
  ckpt = ckpt_lib.Checkpointer(tmp_path / "checkpoints" / "finetune")
  ckpt.save(3, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), saved))
  restored = ckpt.restore(3, saved)
  assert jax.tree.structure(restored) == jax.tree.structure(saved)
  with pytest.raises(ckpt_lib.CheckpointError) as error:
    ckpt.restore(3, _abstract_state(model_name, mesh, **overrides))
  message = str(error.value)
  assert "\n" not in message and len(message) < 400, message
  assert message.startswith(f"{ckpt.directory}: the checkpoint of step 3 does not fit this model")
  assert re.search(difference, message), message
  ckpt.close()
  # The same check guards inference.
  config = models.default_model_config(model_name, "tiny")
  config.update(overrides)
  shapes = {k: v.shape for k, v in models.batch_spec(at_scale("tiny"), BATCH).items()}
  with pytest.raises(ckpt_lib.CheckpointError, match="does not fit this model"):
    inference.restore(models.get_model(config), mesh, tmp_path, shapes)


def test_non_finite_loss_stops_training_before_the_next_checkpoint(tmp_path, corpus):
  directory, records = corpus
  no_augment = augment.AugmentParams(enabled=False)
  # The loader's order depends on the source's length and the seed only: find the rows of step 3.
  probe = loader_lib.SegmentSource(directory, [(r["shard"], r["row"]) for r in records],
                                   [r["label_id"] for r in records], range(len(records)))
  batches = iter(loader_lib.train_loader(probe, global_batch=BATCH, seed=SEED))
  step3_row = int([next(batches) for _ in range(3)][-1]["clip"][1])
  # A NaN in that row's spectrogram, written past the shard writer's check.
  bad_dir = tmp_path / "bad_shards"
  shutil.copytree(directory, bad_dir)
  shard, row = records[step3_row]["shard"], records[step3_row]["row"]
  audio = np.load(f"{shards.shard_stem(bad_dir, shard)}.audio.npy")
  audio[row, 2, 3] = np.nan
  np.save(f"{shards.shard_stem(bad_dir, shard)}.audio.npy", audio)

  model = models.get_model(models.default_model_config("cnn", "tiny"))
  mesh = _mesh()
  # Logging every 5 steps: the check at the checkpoint of step 4 must catch step 3 first.
  with pytest.raises(loop.steps_lib.NonFiniteError) as error:
    loop.run_phase(phase=phase_config("finetune", steps=6, log_every=5, checkpoint_every=2),
                   model=model, mesh=mesh, source=loader_lib.source_from_records(bad_dir, records),
                   augment_params=no_augment, workdir=tmp_path, seed=SEED)
  message = str(error.value)
  assert "\n" not in message
  assert message.startswith("finetune: non-finite loss or gradient at step 3;"), message
  assert "the last checkpoint (step 2) is intact" in message
  assert sorted(os.listdir(tmp_path / "checkpoints" / "finetune")) == ["2"]
  assert [r["step"] for r in _records(tmp_path)] == [2]
  shapes = {k: (BATCH, *np.shape(v)) for k, v in probe[0].items()}
  restored = jax.device_get(inference.restore(model, mesh, tmp_path, shapes,
                                                       prefer_best=False))
  assert int(restored.step) == 2
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(restored))



def test_profile_steps_write_a_trace_and_metrics_reach_tensorboard(tmp_path, corpus):
  directory, records = corpus
  model = models.get_model(models.default_model_config("cnn", "tiny"))
  loop.run_phase(phase=phase_config("finetune", steps=4, log_every=2, checkpoint_every=4,
                                    profile_steps=(2, 3)),
                 model=model, mesh=_mesh(),
                 source=loader_lib.source_from_records(directory, records),
                 augment_params=augment.AugmentParams(enabled=False), workdir=tmp_path, seed=SEED)
  traces = list((tmp_path / "profile" / "finetune").rglob("*.xplane.pb"))
  assert len(traces) == 1 and traces[0].stat().st_size > 0
  events = _events(tmp_path / "tensorboard" / "finetune")
  assert {(e.step, v.tag) for e in events for v in e.summary.value} >= {(2, "loss"), (4, "loss")}


if __name__ == "__main__":
  worker(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])


def test_sources_carry_each_segments_span_when_asked(corpus):
  directory, records = corpus
  records = [dict(r, start=10.0, end=10.0 + seconds) for r, seconds in
             zip(records, [3.0, 1.5, 4.0, 0.75] * len(records))]
  source = loader_lib.source_from_records(directory, records, window_seconds=3.0)
  batch = source.read_batch(np.arange(4))
  np.testing.assert_allclose(batch["span"], [1.0, 0.5, 1.0, 0.25])   # at most the window
  assert "span" not in loader_lib.source_from_records(directory, records).read_batch([0])
  assert repr(source) != repr(loader_lib.source_from_records(directory, records))
