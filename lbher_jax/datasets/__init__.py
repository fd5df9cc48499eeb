"""Corpus readers: each turns a corpus on disk into a list of `Utterance`s.

`read(name, root, **options)` is the one entry point (a contract users' scripts rely on);
`read_with_stats` also returns the corpus statistics. Each reader module defines
`scan(root, **options) -> (utterances, left_out)`, where `left_out` counts the utterances it did
not keep, keyed by a short reason ("label fru", "calm", "song", "missing media", ...).

Policy shared by the readers: utterances outside the four classes are left out and counted; a
label file that names media which are not on disk is skipped and counted ("missing media", with a
warning) so that a partly downloaded corpus still trains, unless the option `strict=True` asks
for a `CorpusError` instead; an unknown emotion code is always a `CorpusError` (it means the
reader does not understand the corpus, which must not pass silently).
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import inspect
from pathlib import Path
from typing import Any, Sequence

from absl import logging

from lbher_jax import LABELS


@dataclasses.dataclass(frozen=True)
class Utterance:
  """One labelled stretch of speech, with where its media lives.

  `start`/`end` are seconds within the media (None = the whole file); `side` says which half of a
  split-screen video shows the speaker ('L' or 'R'; None = the whole frame). `audio_start` /
  `audio_end` give the audio file its own window when it has its own time base (IEMOCAP's
  per-sentence wavs: 0.0 / None, the whole file, while the video keeps start/end); when
  `audio_start` is None the audio uses start/end too.
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
  audio_start: float | None = None
  audio_end: float | None = None

  def __post_init__(self):
    if self.label not in LABELS:
      raise ValueError(f"utterance {self.id}: label {self.label!r} is not one of {LABELS}")
    if self.video is None and self.audio is None:
      raise ValueError(f"utterance {self.id}: needs a video or an audio file")
    if self.audio_start is None and self.audio_end is not None:
      raise ValueError(f"utterance {self.id}: audio_end needs audio_start")
    if self.side not in (None, "L", "R"):
      raise ValueError(f"utterance {self.id}: side must be 'L', 'R' or None, got {self.side!r}")

  def audio_window(self) -> tuple[float | None, float | None]:
    """(start, end) in seconds of the audio file (None = its start / its end)."""
    if self.audio_start is not None:
      return self.audio_start, self.audio_end
    return self.start, self.end


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
  """Reads corpus `name` from `root`, logs its statistics, returns the utterances sorted by id."""
  return read_with_stats(name, root, **options)[0]


def read_with_stats(name: str, root: str | Path, **options) -> tuple[list[Utterance], dict]:
  """Like `read`, and also returns `statistics(...)` of the result (which it logs)."""
  if name not in _READERS:
    raise CorpusError(f"unknown corpus {name!r}; known: {sorted(_READERS)}")
  module = importlib.import_module(_READERS[name])
  try:
    inspect.signature(module.scan).bind(Path(root), **options)
  except TypeError as e:
    raise CorpusError(f"corpus {name!r} does not take the options {sorted(options)} ({e})") from e
  utterances, left_out = module.scan(Path(root), **options)
  utterances = sorted(utterances, key=lambda u: u.id)
  for a, b in zip(utterances, utterances[1:]):
    if a.id == b.id:
      raise CorpusError(f"{root}: utterance id {a.id!r} occurs twice ({a.video or a.audio}, "
                        f"{b.video or b.audio})")
  if not utterances:
    why = ", ".join(f"{k}: {v}" for k, v in sorted(left_out.items())) or "no utterances found"
    raise CorpusError(f"{root}: no usable utterances in corpus {name!r} (left out: {why})")
  stats = statistics(utterances, left_out)
  logging.info("corpus %s at %s: %d utterances, %d speakers, per class %s, duration %s s, "
               "left out %s", name, root, stats["num_utterances"], len(stats["per_speaker"]),
               stats["per_class"], stats["duration_s"], stats["left_out"] or "none")
  return utterances, stats


def statistics(utterances: Sequence[Utterance], left_out: collections.Counter) -> dict[str, Any]:
  """Counts per class (in `LABELS` order), speaker and session; duration; what was left out.

  `duration_s` sums `end - start` over the utterances that give both (no media is decoded);
  it is None when none does.
  """
  timed = [u.end - u.start for u in utterances if u.start is not None and u.end is not None]
  per_class = collections.Counter(u.label for u in utterances)
  return {
      "num_utterances": len(utterances),
      "per_class": {label: per_class[label] for label in LABELS},
      "per_speaker": dict(sorted(collections.Counter(u.speaker for u in utterances).items())),
      "per_session": dict(sorted(collections.Counter(
          u.session for u in utterances if u.session is not None).items())),
      "duration_s": round(sum(timed), 3) if timed else None,
      "num_left_out": sum(left_out.values()),
      "left_out": dict(sorted(left_out.items())),
  }


def require_dir(root: Path, corpus: str) -> Path:
  """Returns `root` if it is a folder, else raises a `CorpusError` saying what was expected."""
  if not root.exists():
    raise CorpusError(f"{root}: does not exist (expected the {corpus} corpus folder)")
  if not root.is_dir():
    raise CorpusError(f"{root}: is not a folder (expected the {corpus} corpus folder)")
  return root


def leave_out(left_out: collections.Counter, reason: str, message: str, *, strict: bool,
              count: int = 1) -> None:
  """Counts `count` utterances left out for a defect of the corpus, or raises when `strict`."""
  if strict:
    raise CorpusError(message)
  logging.warning("%s (left out: %s)", message, reason)
  left_out[reason] += count
