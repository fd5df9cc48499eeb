"""Checks of a whole config before any work is done: unknown keys and contradictory settings."""

import dataclasses

from lbher_jax.errors import ConfigError
from lbher_jax.train.loop import PhaseConfig


def check(config) -> None:
  """Raises ConfigError, naming the keys to change, for settings that cannot run together."""
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
