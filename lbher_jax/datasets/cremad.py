"""CREMA-D (Cao et al. 2014): videos named `ActorID_Sentence_EMO_Level.flv`.

Videos are read from `root/VideoFlash/*.flv` and from `*.flv` directly under `root`. When
`root/AudioWAV/<same stem>.wav` exists it is the audio, else the audio is the video's own track.
The id is the file stem, the speaker the 4-digit actor id (e.g. "1001"); session, side, start and
end are None. ANG, HAP, SAD, NEU are kept; FEA and DIS are left out ("label FEA", "label DIS").
An unknown emotion or level code raises; a .flv whose name is not a CREMA-D name is counted as
"unrecognised name" (`strict=True` raises).
"""

from __future__ import annotations

import collections
import re
from pathlib import Path

from lbher_jax.datasets import CorpusError, Utterance, leave_out, require_dir

_LABELS = {"ANG": "anger", "HAP": "happy", "SAD": "sad", "NEU": "neutral"}
_LEFT_OUT = ("FEA", "DIS")
_LEVELS = ("LO", "MD", "HI", "XX")
_NAME = re.compile(r"(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})")


def scan(root: Path, *, strict: bool = False) -> tuple[list[Utterance], collections.Counter]:
  """Lists the 4-class CREMA-D utterances under `root` (`strict`: raise on unrecognised names)."""
  require_dir(root, "CREMA-D")
  videos = sorted(p for folder in (root / "VideoFlash", root) for p in folder.glob("*.flv")
                  if p.is_file() and not p.name.startswith("."))
  if not videos:
    raise CorpusError(f"{root}: no .flv videos in {root / 'VideoFlash'} or {root}; expected "
                      "CREMA-D files named ActorID_Sentence_EMO_Level.flv")
  utterances, left_out = [], collections.Counter()
  for video in videos:
    match = _NAME.fullmatch(video.stem)
    if not match:
      leave_out(left_out, "unrecognised name",
                f"{video}: not a CREMA-D name ActorID_Sentence_EMO_Level", strict=strict)
      continue
    actor, _, emotion, level = match.groups()
    if emotion not in _LABELS and emotion not in _LEFT_OUT:
      raise CorpusError(f"{video}: unknown CREMA-D emotion code {emotion!r}; "
                        f"known: {sorted(_LABELS) + sorted(_LEFT_OUT)}")
    if level not in _LEVELS:
      raise CorpusError(f"{video}: unknown CREMA-D level code {level!r}; known: {_LEVELS}")
    if emotion in _LEFT_OUT:
      left_out[f"label {emotion}"] += 1
      continue
    wav = root / "AudioWAV" / f"{video.stem}.wav"
    utterances.append(Utterance(
        id=video.stem, video=video, audio=wav if wav.is_file() else video, start=None, end=None,
        label=_LABELS[emotion], speaker=actor))
  return sorted(utterances, key=lambda u: u.id), left_out
