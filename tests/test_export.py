"""An exported model gives the in-process outputs at any batch size, and loads without Flax."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import at_scale
from lbher_jax import LABELS
from lbher_jax import export
from lbher_jax.models import (MODEL_NAMES, batch_spec, default_model_config, get_model,
                              input_keys)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class VideoSettings:
  frames_per_segment: int = 2
  height: int = 6
  width: int = 10


PREPROCESSING = {"audio": {"sample_rate": 16000, "segment_seconds": 3.0, "pad": "noise"},
                 "video": VideoSettings()}


class TinyAV(nn.Module):
  """Two streams (dense over the spectrogram, 3D conv over the frames) fused into 4 classes."""

  @nn.compact
  def __call__(self, batch):
    audio = nn.Dense(5)(batch["audio"].reshape(batch["audio"].shape[0], -1))
    video = nn.Conv(4, (1, 3, 3))(batch["video"].astype(jnp.float32) / 255.0).mean(axis=(1, 2, 3))
    return {"probs": nn.softmax(nn.Dense(4)(jnp.concatenate([nn.relu(audio), video], axis=-1))),
            "audio_probs": nn.softmax(nn.Dense(4)(audio))}


def _batch(n, seed):
  rng = np.random.default_rng(seed)
  return {"audio": rng.uniform(-1, 1, (n, 8, 12)).astype(np.float32),
          "video": rng.integers(0, 256, (n, 2, 6, 10, 3), dtype=np.uint8)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  model = TinyAV()
  variables = model.init(jax.random.key(0), _batch(1, 0))
  path = export.export_model(model.apply, variables, _batch(3, 1),
                             tmp_path_factory.mktemp("export") / "model",
                             labels=LABELS, preprocessing=PREPROCESSING)
  return model, variables, path


def test_outputs_match_in_process_for_two_batch_sizes(exported):
  model, variables, path = exported
  predict, _ = export.load_exported(path)
  for n, seed in ((2, 2), (5, 3)):
    batch = _batch(n, seed)
    got = predict({**batch, "label": np.zeros(n, np.int32)})  # extra keys are ignored
    want = model.apply(variables, batch)
    assert sorted(got) == ["audio_probs", "probs"] and got["probs"].shape == (n, 4)
    for name in want:
      np.testing.assert_allclose(got[name], np.asarray(want[name]), atol=1e-5)
    # float64 audio is cast to the exported float32.
    np.testing.assert_allclose(
      predict({**batch, "audio": batch["audio"].astype(np.float64)})["probs"], got["probs"],
      atol=1e-6)


def test_metadata_round_trips(exported):
  _, _, path = exported
  assert sorted(p.name for p in path.iterdir()) == ["model.jaxexport", "model.json"]
  _, meta = export.load_exported(path)
  assert meta == json.loads((path / "model.json").read_text())
  assert meta["labels"] == list(LABELS)
  assert meta["inputs"] == {"audio": {"shape": [None, 8, 12], "dtype": "float32"},
                            "video": {"shape": [None, 2, 6, 10, 3], "dtype": "uint8"}}
  assert meta["outputs"] == {"audio_probs": {"shape": [None, 4], "dtype": "float32"},
                             "probs": {"shape": [None, 4], "dtype": "float32"}}
  assert meta["preprocessing"] == {
      "audio": {"sample_rate": 16000, "segment_seconds": 3.0, "pad": "noise"},
      "video": {"frames_per_segment": 2, "height": 6, "width": 10}}
  assert "cpu" in meta["platforms"]


def test_bad_batches_name_the_export(exported):
  _, _, path = exported
  predict, _ = export.load_exported(path)
  batch = _batch(2, 4)
  with pytest.raises(ValueError, match=f"{path}: batch has no input 'video'"):
    predict({"audio": batch["audio"]})
  with pytest.raises(ValueError, match=r"input 'audio' has shape \(2, 8, 11\)"):
    predict({**batch, "audio": batch["audio"][:, :, :11]})
  with pytest.raises(ValueError, match="input 'video' has dtype float32, expected uint8"):
    predict({**batch, "video": batch["video"].astype(np.float32)})


def test_export_rejects_wrong_output_and_missing_files(tmp_path):
  for wrong in (lambda v, b: {"probs": b["audio"][:, 0, :3]},
                lambda v, b: {"logits": b["audio"][:, 0, :4]}, lambda v, b: b["audio"][:, 0, :4]):
    with pytest.raises(ValueError, match=r"a dict with \"probs\" of arrays \[batch, 4\]"):
      export.export_model(wrong, {}, _batch(2, 0), tmp_path / "bad", preprocessing={})
  with pytest.raises(TypeError, match="object cannot be written to model.json"):
    export.export_model(lambda v, b: {"probs": b["audio"][:, 0, :4]}, {}, _batch(2, 0),
                        tmp_path / "bad", preprocessing={"audio": object()})
  assert not (tmp_path / "bad").exists()
  (tmp_path / "half").mkdir()
  (tmp_path / "half" / "model.jaxexport").write_bytes(b"x")
  with pytest.raises(ValueError, match="not a complete model export"):
    export.load_exported(tmp_path / "half")


def test_loads_in_fresh_process_without_flax(exported, tmp_path):
  model, variables, path = exported
  batch = _batch(4, 5)
  np.savez(tmp_path / "batch.npz", **batch)
  script = textwrap.dedent(f"""
      import json, sys
      import numpy as np
      from lbher_jax.export import load_exported
      predict, meta = load_exported({str(path)!r})
      with np.load({str(tmp_path / "batch.npz")!r}) as f:
        probs = predict(dict(f))
      print(json.dumps({{"probs": probs["probs"].tolist(), "labels": meta["labels"],
                        "flax": any(m == "flax" or m.startswith("flax.") for m in sys.modules),
                        "models": any(m.startswith(("lbher_jax.models", "lbher_jax.train"))
                                      for m in sys.modules)}}))
  """)
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(PROJECT_ROOT)}
  done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                        cwd=tmp_path, timeout=120, check=False)
  assert done.returncode == 0, done.stderr
  out = json.loads(done.stdout.strip().splitlines()[-1])
  assert not out["flax"] and not out["models"]
  assert out["labels"] == list(LABELS)
  np.testing.assert_allclose(out["probs"], np.asarray(model.apply(variables, batch)["probs"]),
                             atol=1e-5)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_inputs_are_all_a_model_reads(name):
  """Each registered model initialises from exactly the inputs its export takes."""
  config = default_model_config(name, "tiny")
  specs = batch_spec(at_scale("tiny"), 2)
  batch = {k: jnp.zeros(specs[k].shape, specs[k].dtype) for k in input_keys(name)}
  out = jax.eval_shape(lambda: get_model(config).init(jax.random.key(0), batch, train=False))
  assert "params" in out


@pytest.mark.slow
def test_hybrid_exports_for_any_batch_size(tmp_path):
  """The hybrid exports with a symbolic batch size and gives the in-process outputs at other
  sizes."""
  config = default_model_config("hybrid", "tiny")
  model = get_model(config)

  def batch(n, seed):
    rng, specs = np.random.default_rng(seed), batch_spec(at_scale("tiny"), n)
    return {"audio": rng.uniform(-1, 1, specs["audio"].shape).astype(np.float32),
            "video": rng.integers(0, 256, specs["video"].shape, dtype=np.uint8)}

  variables = model.init(jax.random.key(0), batch(2, 0), train=False)
  apply = lambda v, b: {"probs": jax.nn.softmax(model.apply(v, b, train=False)["logits"])}
  path = export.export_model(apply, variables, batch(3, 1), tmp_path / "model", labels=LABELS,
                             preprocessing=PREPROCESSING)
  predict, _ = export.load_exported(path)
  for n in (1, 4):
    np.testing.assert_allclose(predict(batch(n, n))["probs"],
                               apply(variables, batch(n, n))["probs"], atol=1e-6)
