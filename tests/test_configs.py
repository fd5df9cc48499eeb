"""Every shipped config builds a model that accepts its own inputs; contradictions are refused."""

import importlib
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from lbher_jax import LABELS, config_checks, errors, inference, models

PROJECT_ROOT = Path(__file__).resolve().parents[1]

VARIANTS = [("default", None), ("demo", None), ("demo", "tiny"), ("iemocap", None),
            ("iemocap", "small"), ("cremad", None), ("cremad", "small"), ("ravdess", None),
            ("ravdess", "small"), ("ravdess", "fer_av"), ("table2", None), ("table2", "small"),
            ("table2", "tiny")]


def _config(name: str, arg: str | None):
  return importlib.import_module(f"configs.{name}").get_config(arg)


@pytest.mark.parametrize("name,arg", VARIANTS)
def test_shipped_configs_are_consistent_and_build_their_model(name, arg):
  """The model built from the config takes the shapes preprocessing writes (traced, not run)."""
  config = _config(name, arg)
  config_checks.check(config)
  batch = inference.example_batch(config, batch_size=2)
  model = models.get_model(config.model)
  out = jax.eval_shape(lambda rng, b: model.apply(model.init(rng, b, train=False), b, train=False),
                       jax.random.key(0), batch)
  assert out["logits"].shape == (2, len(LABELS))


@pytest.mark.parametrize("name", ["default", "demo", "iemocap", "cremad", "ravdess", "table2"])
def test_an_unknown_variant_is_refused_naming_the_file(name):
  with pytest.raises(ValueError, match=rf"configs/{name}\.py: unknown variant 'tny'"):
    _config(name, "tny")


def test_fer_av_trains_the_hybrid_detached_without_pretraining():
  """The real-data default chosen in BUILD_NOTES.md (development split, then actors 15-18)."""
  c = _config("ravdess", "fer_av")
  assert (c.model.name, c.model.detach_joint, c.pretrain.steps) == ("hybrid", True, 0)
  assert c.train.aux_weight > 0 and c.split.test_speakers[0] == "Actor_15"


@pytest.mark.parametrize("overrides,message", [
    ({"model.detach_joint": True, "train.aux_weight": 0.0},
     r"model.detach_joint needs train.aux_weight > 0"),
    ({"split.label_fraction": 0.1}, r"split.label_fraction < 1 needs pretrain.use_labels=False"),
])
def test_contradictory_settings_are_refused(overrides, message):
  config = _config("demo", "tiny")
  config.update_from_flattened_dict(overrides)
  with pytest.raises(errors.ConfigError, match=message):
    config_checks.check(config)


def test_an_unknown_training_key_is_refused():
  config = _config("demo", "tiny")
  config.train.eval_every = 3       # the old name of train.checkpoint_every
  with pytest.raises(errors.ConfigError, match=r"config.train: unknown key\(s\) \['eval_every'\]"):
    config_checks.check(config)


def test_main_reports_a_contradiction_in_one_line_before_any_work(tmp_path):
  workdir = tmp_path / "run"
  done = subprocess.run(
      [sys.executable, "-m", "lbher_jax.main", "--config", "configs/demo.py:tiny", "--workdir",
       str(workdir), "--config.model.detach_joint=True", "--config.train.aux_weight=0"],
      cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
  assert done.returncode == 1
  assert done.stderr.strip().splitlines()[-1].startswith(
      "error: model.detach_joint needs train.aux_weight > 0")
  assert "Traceback" not in done.stderr and not workdir.exists()
