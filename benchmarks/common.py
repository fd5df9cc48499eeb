"""What the benchmarks share: the machine they ran on, and configs with command-line overrides."""

import ast
import importlib
import os
import platform
from pathlib import Path


def machine() -> str:
  """CPU model and count, OS."""
  model = platform.processor() or platform.machine()
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        model = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  return f"{model}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def load_config(spec: str, overrides: list[str]):
  """configs/NAME.py[:ARG] with KEY=VALUE overrides (VALUE a Python literal or a string); the
  project root must be on sys.path."""
  path, _, arg = spec.partition(":")
  module = importlib.import_module("configs." + Path(path).stem)
  config = module.get_config(arg or None)
  for item in overrides:
    key, _, text = item.partition("=")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    config.update_from_flattened_dict({key: value})
  return config
