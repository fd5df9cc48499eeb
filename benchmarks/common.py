"""What every benchmark records about the machine it ran on."""

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
