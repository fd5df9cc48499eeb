"""The command line's log filter: our INFO lines, everyone's warnings, no library chatter."""

import logging
from pathlib import Path

from lbher_jax import main


def _record(path: str, level: int) -> logging.LogRecord:
  return logging.LogRecord("x", level, path, 1, "message", None, None)


def test_log_filter_keeps_our_info_and_all_warnings_only():
  ours = str(Path(main.__file__).resolve().parent / "train" / "loop.py")
  # A library inside a virtualenv that itself sits in a folder named lbher_jax.
  library = "/home/me/lbher_jax/.venv/lib/python3.11/site-packages/orbax/checkpoint/manager.py"
  assert main._own_info_only(_record(ours, logging.INFO))
  assert not main._own_info_only(_record(library, logging.INFO))
  assert main._own_info_only(_record(library, logging.WARNING))
