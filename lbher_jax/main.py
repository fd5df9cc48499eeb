"""Command line: python -m lbher_jax.main --config configs/NAME.py --workdir DIR [--mode MODE].

Modes: all (Algorithm 1 end to end, the default), preprocess, pretrain, train, evaluate, predict,
export, and sweep (Algorithm 1 for every model x protocol x seed x fold of `config.sweep`, with
intervals and paired tests; configs/table2.py is one). Only wiring lives here; the work is in
algorithm.py, sweep.py, predict.py and export.py.
"""

import logging as std_logging
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for shards, checkpoints and results.")
_MODE = flags.DEFINE_enum("mode", "all",
                          ["all", "preprocess", "pretrain", "train", "evaluate", "predict",
                           "export", "sweep"],
                          "Which part of Algorithm 1 to run, or predict / export with its model.")
_VIDEO = flags.DEFINE_multi_string("video", [], "--mode predict: video file(s) or directories.")
_OUTPUT = flags.DEFINE_string("output", None, "--mode predict: JSON file (one video) or folder; "
                              "--mode export: the export folder (default WORKDIR/export).")
_PLOT = flags.DEFINE_bool("plot", False, "--mode predict: also a timeline PNG beside each JSON.")
_ANNOTATE = flags.DEFINE_bool("annotate", False, "--mode predict: also a copy of each video with "
                              "the segment's label drawn on its frames, beside each JSON.")
_ENSEMBLE = flags.DEFINE_multi_string("ensemble", [], "--mode predict: further workdirs trained "
                                      "with the same config (e.g. other seeds); each output's "
                                      "probabilities are the mean over WORKDIR and these.")
flags.mark_flags_as_required(["config", "workdir"])


_PACKAGE = Path(__file__).resolve().parent


def _own_info_only(record: std_logging.LogRecord) -> bool:
  """Keeps our progress lines and everyone's warnings; drops libraries' INFO chatter (Orbax).

  "Ours" is a file inside this package's directory, so a checkout or virtualenv that sits in a
  folder named lbher_jax does not let every library through."""
  return (record.levelno >= std_logging.WARNING
          or Path(record.pathname).resolve().is_relative_to(_PACKAGE))


def _use_compilation_cache(workdir: str) -> None:
  """Keeps compiled programs in WORKDIR/jax_cache, so that a rerun, each predict call and every
  Table 2 run after the first of a model load them instead of compiling again."""
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_compilation_cache_dir", str(Path(workdir) / "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(_own_info_only)
  # Imported here so that --help stays fast and multi-host setup precedes any other JAX call.
  from lbher_jax import config_checks, errors  # pylint: disable=import-outside-toplevel
  from lbher_jax.train import loop, mesh  # pylint: disable=import-outside-toplevel
  mesh.initialize_distributed()
  _use_compilation_cache(_WORKDIR.value)
  try:
    config_checks.check(_CONFIG.value)
    if _MODE.value == "predict":
      from lbher_jax import predict  # pylint: disable=import-outside-toplevel
      return predict.run(_CONFIG.value, _WORKDIR.value, _VIDEO.value, _OUTPUT.value,
                         plot=_PLOT.value, annotate=_ANNOTATE.value,
                         ensemble=_ENSEMBLE.value)
    if _MODE.value == "export":
      from lbher_jax import export  # pylint: disable=import-outside-toplevel
      export.run(_CONFIG.value, _WORKDIR.value, _OUTPUT.value)
    elif _MODE.value == "sweep":
      from lbher_jax import sweep  # pylint: disable=import-outside-toplevel
      sweep.run(_CONFIG.value, _WORKDIR.value)
    else:
      from lbher_jax import algorithm  # pylint: disable=import-outside-toplevel
      algorithm.run(_CONFIG.value, _WORKDIR.value, _MODE.value)
  except errors.USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  except loop.Preempted as e:
    print(f"preempted: {e}", file=sys.stderr)
    return 0
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
