"""The errors a user can cause (bad files, wrong paths, mismatched workdirs) and gets as one line."""

from lbher_jax.data.preprocess import PreprocessError
from lbher_jax.data.shards import ShardError
from lbher_jax.datasets import CorpusError
from lbher_jax.media import MediaError
from lbher_jax.train.checkpoint import CheckpointError
from lbher_jax.train.loop import NonFiniteError

USER_ERRORS = (CorpusError, MediaError, PreprocessError, ShardError, CheckpointError,
               NonFiniteError)
