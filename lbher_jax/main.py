"""Command line: python -m lbher_jax.main --config configs/NAME.py --workdir DIR [--mode MODE].

Modes: all (Algorithm 1 end to end, the default), preprocess, pretrain, train, evaluate, predict.
Only wiring lives here; the work is in algorithm.py and predict.py.
"""

import logging as std_logging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for shards, checkpoints and results.")
_MODE = flags.DEFINE_enum("mode", "all",
                          ["all", "preprocess", "pretrain", "train", "evaluate", "predict"],
                          "Which part of Algorithm 1 to run.")
_VIDEO = flags.DEFINE_multi_string("video", [], "--mode predict: video file(s) or directories.")
_OUTPUT = flags.DEFINE_string("output", None, "--mode predict: JSON file (one video) or folder.")
flags.mark_flags_as_required(["config", "workdir"])


def _own_info_only(record: std_logging.LogRecord) -> bool:
  """Keeps our progress lines and everyone's warnings; drops libraries' INFO chatter (Orbax)."""
  return record.levelno >= std_logging.WARNING or "lbher_jax" in record.pathname


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(_own_info_only)
  # Imported here so that --help stays fast and multi-host setup precedes any other JAX call.
  from lbher_jax import errors  # pylint: disable=import-outside-toplevel
  from lbher_jax.train import mesh  # pylint: disable=import-outside-toplevel
  mesh.initialize_distributed()
  try:
    if _MODE.value == "predict":
      from lbher_jax import predict  # pylint: disable=import-outside-toplevel
      return predict.run(_CONFIG.value, _WORKDIR.value, _VIDEO.value, _OUTPUT.value)
    from lbher_jax import algorithm  # pylint: disable=import-outside-toplevel
    algorithm.run(_CONFIG.value, _WORKDIR.value, _MODE.value)
  except errors.USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
