"""RAVDESS (Livingstone & Russo 2018): files named `MM-VV-EE-II-SS-RR-AA.mp4` / `.wav`.

MM modality (01 audio-video, 02 video-only, 03 audio-only), VV vocal channel (01 speech, 02 song),
EE emotion (01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust, 08 surprised),
II intensity, SS statement, RR repetition, AA actor (01-24).

Files are found recursively under `root` (`Actor_XX/` folders or flat). The id is the file stem,
the speaker is `Actor_AA` (the actor code of the name, not the folder), session and side are None,
start/end None (whole file). By default only audio-video speech is kept; other modalities and
channels are left out and counted ("video-only", "audio-only", "song"), as are emotions outside
the four classes ("label calm", ...). A media file whose name is not a RAVDESS name is counted as
"unrecognised name" (`strict=True` raises); a RAVDESS name with an impossible code raises.
"""

from __future__ import annotations

import collections
import re
from pathlib import Path
from typing import Iterable, Mapping

from lbher_jax import LABELS
from lbher_jax.datasets import CorpusError, Utterance, leave_out, require_dir

_MODALITIES = {"01": "audio-video", "02": "video-only", "03": "audio-only"}
_CHANNELS = {"01": "speech", "02": "song"}
_EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry",
             "06": "fearful", "07": "disgust", "08": "surprised"}
_LABELS = {"neutral": "neutral", "happy": "happy", "sad": "sad", "angry": "anger"}
_TWO_WAY = ("01", "02")  # intensity, statement and repetition codes
_ACTORS = tuple(f"{a:02d}" for a in range(1, 25))
_NAME = re.compile(r"(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)")
_MEDIA = (".mp4", ".wav")


def scan(root: Path, *, modalities: Iterable[str] = ("01",),
         vocal_channels: Iterable[str] = ("01",), extra_labels: Mapping[str, str] | None = None,
         strict: bool = False) -> tuple[list[Utterance], collections.Counter]:
  """Lists the RAVDESS utterances under `root`.

  Options: `modalities` (codes to keep, e.g. ("01", "03")), `vocal_channels` (("01",) speech,
  "02" song), `extra_labels` (RAVDESS emotion name -> one of LABELS, e.g. {"calm": "neutral"}),
  `strict` (raise on media files with unrecognised names).
  """
  modalities, vocal_channels = set(modalities), set(vocal_channels)
  if not modalities <= set(_MODALITIES) or not vocal_channels <= set(_CHANNELS):
    raise ValueError(f"modalities must be among {sorted(_MODALITIES)} and vocal_channels among "
                     f"{sorted(_CHANNELS)}; got {sorted(modalities)}, {sorted(vocal_channels)}")
  labels = {**_LABELS, **(extra_labels or {})}
  if not set(labels) <= set(_EMOTIONS.values()) or not set(labels.values()) <= set(LABELS):
    raise ValueError(f"extra_labels must map RAVDESS emotions {sorted(_EMOTIONS.values())} to "
                     f"{LABELS}; got {extra_labels}")
  require_dir(root, "RAVDESS")
  files = sorted(p for p in root.rglob("*") if p.suffix.lower() in _MEDIA
                 and not p.name.startswith(".") and p.is_file())
  if not files:
    raise CorpusError(f"{root}: no .mp4 or .wav files; expected RAVDESS files named "
                      "MM-VV-EE-II-SS-RR-AA.mp4 (in Actor_XX/ folders or flat)")
  utterances, left_out = [], collections.Counter()
  for path in files:
    match = _NAME.fullmatch(path.stem)
    if not match:
      leave_out(left_out, "unrecognised name",
                f"{path}: not a RAVDESS name MM-VV-EE-II-SS-RR-AA", strict=strict)
      continue
    modality, channel, emotion, *_, actor = match.groups()
    _check_codes(path, match.groups())
    if modality not in modalities:
      left_out[_MODALITIES[modality]] += 1
    elif channel not in vocal_channels:
      left_out[_CHANNELS[channel]] += 1
    elif _EMOTIONS[emotion] not in labels:
      left_out[f"label {_EMOTIONS[emotion]}"] += 1
    else:
      utterances.append(Utterance(
          id=path.stem, video=None if modality == "03" else path,
          audio=None if modality == "02" else path, start=None, end=None,
          label=labels[_EMOTIONS[emotion]], speaker=f"Actor_{actor}"))
  return sorted(utterances, key=lambda u: u.id), left_out


def _check_codes(path: Path, codes: tuple[str, ...]) -> None:
  """Raises CorpusError when a field of a RAVDESS name holds an impossible code."""
  modality, channel, emotion, intensity, statement, repetition, actor = codes
  fields = [("modality", modality, _MODALITIES), ("vocal channel", channel, _CHANNELS),
            ("emotion", emotion, _EMOTIONS), ("intensity", intensity, _TWO_WAY),
            ("statement", statement, _TWO_WAY), ("repetition", repetition, _TWO_WAY),
            ("actor", actor, _ACTORS)]
  for field, code, known in fields:
    if code not in known:
      raise CorpusError(f"{path}: unknown RAVDESS {field} code {code!r}; known: {sorted(known)}")
  if (path.suffix.lower() == ".wav") != (modality == "03"):
    raise CorpusError(f"{path}: modality {modality} ({_MODALITIES[modality]}) does not fit a "
                      f"{path.suffix} file")
