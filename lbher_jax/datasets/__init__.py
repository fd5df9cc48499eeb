"""Corpus readers: each turns a corpus on disk into a list of `Utterance`s.

`read(name, root, **options)` is the one entry point (a contract users' scripts rely on).
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

from lbher_jax import LABELS


@dataclasses.dataclass(frozen=True)
class Utterance:
  """One labelled stretch of speech, with where its media lives.

  `start`/`end` are seconds within the media (None = the whole file); `side` says which half of a
  split-screen video shows the speaker ('L' or 'R'; None = the whole frame).
  """

  id: str
  video: Path | None
  audio: Path | None
  start: float | None
  end: float | None
  label: str
  speaker: str
  session: str | None = None
  side: str | None = None

  def __post_init__(self):
    if self.label not in LABELS:
      raise ValueError(f"utterance {self.id}: label {self.label!r} is not one of {LABELS}")
    if self.video is None and self.audio is None:
      raise ValueError(f"utterance {self.id}: needs a video or an audio file")
    if self.side not in (None, "L", "R"):
      raise ValueError(f"utterance {self.id}: side must be 'L', 'R' or None, got {self.side!r}")


class CorpusError(ValueError):
  """A corpus cannot be read: wrong root, broken label file, missing media, empty result."""


_READERS = {
    "demo": "lbher_jax.datasets.demo",
    "iemocap": "lbher_jax.datasets.iemocap",
    "ravdess": "lbher_jax.datasets.ravdess",
    "cremad": "lbher_jax.datasets.cremad",
    "manifest": "lbher_jax.datasets.manifest",
}


def read(name: str, root: str | Path, **options) -> list[Utterance]:
  """Reads corpus `name` from `root`; every module in `_READERS` defines `read(root, **options)`."""
  if name not in _READERS:
    raise CorpusError(f"unknown corpus {name!r}; known: {sorted(_READERS)}")
  module = importlib.import_module(_READERS[name])
  return module.read(Path(root), **options)
