"""Test setup: four simulated CPU devices, shared-data fixture, a cached demo corpus."""

import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)

import pytest  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
RAVDESS_FER_AV = SHARED_DATA / "ravdess_fer_av"


@pytest.fixture(scope="session")
def ravdess_fer_av() -> Path:
  """The real RAVDESS+FER2013 clips from ../shared/data; skips when they are not there."""
  if not (RAVDESS_FER_AV / "Actor_01").is_dir():
    pytest.skip(f"real recordings not found at {RAVDESS_FER_AV} (see ../shared/data/README.md)")
  return RAVDESS_FER_AV
