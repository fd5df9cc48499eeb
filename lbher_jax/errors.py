"""The errors a user can cause (bad files, wrong paths, mismatched workdirs, contradictory
settings) and gets as one line, not a traceback."""

from lbher_jax.data.preprocess import PreprocessError
from lbher_jax.data.shards import ShardError
from lbher_jax.datasets import CorpusError
from lbher_jax.media import MediaError
from lbher_jax.train.checkpoint import CheckpointError
from lbher_jax.train.steps import NonFiniteError


class ConfigError(ValueError):
  """Config settings that contradict each other."""


USER_ERRORS = (ConfigError, CorpusError, MediaError, PreprocessError, ShardError,
               CheckpointError, NonFiniteError)
