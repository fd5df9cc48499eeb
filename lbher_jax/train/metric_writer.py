"""Where a phase's metrics go: WORKDIR/metrics.jsonl (the contract every report reads) and
TensorBoard event files under WORKDIR/tensorboard/<phase>/ (`tensorboard --logdir WORKDIR`).

Only process 0 writes. A resumed phase first forgets what a killed run logged past the restored
checkpoint: JSONL lines are dropped, and TensorBoard is told to purge those steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import tensorboardX

from lbher_jax import files


class MetricWriter:
  """Appends {"phase", "step", **values} records and the same scalars to TensorBoard."""

  def __init__(self, workdir: Path, phase: str, start_step: int):
    self.path = Path(workdir) / "metrics.jsonl"
    self.phase = phase
    self._board = None
    if jax.process_index() == 0:
      drop_records_after(self.path, phase, start_step)
      # File names carry the second they were made in: the suffix keeps a quick resume from
      # overwriting the file of the run it resumes.
      self._board = tensorboardX.SummaryWriter(
          str(Path(workdir) / "tensorboard" / phase),
          purge_step=start_step + 1 if start_step else None,
          filename_suffix=f".from-step-{start_step}")

  def write(self, step: int, values: dict) -> None:
    if self._board is None:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps({"phase": self.phase, "step": step, **values}) + "\n")
    for key, value in values.items():
      if isinstance(value, (int, float)):
        self._board.add_scalar(key, value, step)

  def close(self) -> None:
    if self._board is not None:
      self._board.close()
      self._board = None


def drop_records_after(path: Path, phase: str, step: int) -> None:
  """Forgets the JSONL lines of `phase` past `step` (the restored checkpoint's), and a line torn
  by a kill."""
  if not path.exists():
    return
  keep = []
  for line in path.read_text().splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    if not (record["phase"] == phase and record["step"] > step):
      keep.append(line)
  files.atomic_write_text(path, "".join(line + "\n" for line in keep))
