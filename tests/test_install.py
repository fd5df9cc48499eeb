"""The install is reproducible and free of numba's on-disk cache (issue 19)."""

import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import PROJECT_ROOT


def _pins() -> dict[str, str]:
  pins = {}
  for line in (PROJECT_ROOT / "constraints.txt").read_text().splitlines():
    line = line.split("#")[0].strip()
    if line:
      name, version = line.split("==")
      pins[canonicalize_name(name)] = version
  return pins


def test_constraints_pin_every_dependency_within_its_range():
  project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
  pins = _pins()
  for spec in project["dependencies"] + project["optional-dependencies"]["test"]:
    req = Requirement(spec)
    name = canonicalize_name(req.name)
    assert name in pins, f"{req.name} is not pinned in constraints.txt"
    assert req.specifier.contains(pins[name], prereleases=True), (spec, pins[name])


def test_nothing_depends_on_numba():
  # numba's gufunc cache in site-packages can be left inconsistent by concurrent first use in
  # several processes (numba#10128), which then crashes every later process. The project's
  # pipeline (features, preprocessing workers, training, predict) must not load it at all.
  assert "numba" not in _pins() and "librosa" not in _pins()
  code = ("import sys, numpy as np\n"
          "from lbher_jax import algorithm, predict\n"
          "from lbher_jax.features import audio\n"
          "audio.spectrogram_segments(np.ones(9000, np.float32),\n"
          "    audio.AudioParams(sample_rate=8000, n_fft=256, hop_length=64, height=8, width=8),\n"
          "    np.random.default_rng(0))\n"
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'llvmlite', "
          "'librosa')))\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       check=True, cwd=PROJECT_ROOT)
  assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("command", [0, 1])
def test_readme_commands_install_from_the_lock(command):
  readme = (PROJECT_ROOT / "README.md").read_text().split("```bash\n", 1)[1].split("```")[0]
  lines = readme.strip().splitlines()
  assert len(lines) == 2
  assert "-c constraints.txt" in lines[command] and "pip install" in lines[command]
  ci = (PROJECT_ROOT / ".ci" / "run").read_text()
  assert lines[1] in ci and lines[0].split(" && ")[0] in ci
