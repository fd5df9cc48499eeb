"""The errors a user can cause (bad files, wrong paths, mismatched workdirs) and gets as one line."""

import dataclasses

from lbher_jax.data.preprocess import PreprocessError
from lbher_jax.data.shards import ShardError
from lbher_jax.datasets import CorpusError
from lbher_jax.media import MediaError
from lbher_jax.train.checkpoint import CheckpointError
from lbher_jax.train.loop import NonFiniteError, PhaseConfig


class ConfigError(ValueError):
  """Config settings that contradict each other."""


def check_config(config) -> None:
  """Refuses contradictory settings before any work is done, naming the keys to change."""
  m = config.model
  known = {f.name for f in dataclasses.fields(PhaseConfig)} - {"name"}
  for section in ("pretrain", "train"):
    unknown = sorted(set(config[section].to_dict()) - known)
    if unknown:
      raise ConfigError(f"config.{section}: unknown key(s) {unknown}; known: {sorted(known)}")
  if config.split.label_fraction < 1 and config.pretrain.use_labels and config.pretrain.steps:
    raise ConfigError("split.label_fraction < 1 needs pretrain.use_labels=False: pre-training "
                      "sees every training clip and must not read the labels fine-tuning may "
                      "not see")
  if m.name == "hybrid" and m.detach_joint and config.train.aux_weight <= 0:
    raise ConfigError("model.detach_joint needs train.aux_weight > 0: the streams learn only "
                      "from their own output layers")


USER_ERRORS = (ConfigError, CorpusError, MediaError, PreprocessError, ShardError,
               CheckpointError, NonFiniteError)
