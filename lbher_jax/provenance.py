"""The software stack a result was computed with, so that every figure can be traced to it."""

from __future__ import annotations

import importlib.metadata
import platform

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "numpy", "scipy",
            "opencv-python-headless", "imageio-ffmpeg")


def stack() -> dict[str, str | None]:
  """Installed versions of the packages results depend on (None = not installed), the Python
  version and the platform (OS, machine). Reads package metadata only; imports nothing."""
  versions: dict[str, str | None] = {}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  versions["python"] = platform.python_version()
  versions["platform"] = platform.platform()
  versions["machine"] = platform.machine()
  return versions


def describe(versions: dict[str, str | None]) -> str:
  """One log line: 'jax 0.10.2, jaxlib 0.10.2, ..., python 3.11.7, Linux-...'."""
  return ", ".join(f"{k} {v}" for k, v in versions.items() if k != "machine")
