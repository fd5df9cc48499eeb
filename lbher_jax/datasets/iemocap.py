"""IEMOCAP (Busso et al. 2008) in its release layout (`IEMOCAP_full_release/`).

Read from `root`:
  SessionN/dialog/EmoEvaluation/<dialog>.txt   labels, `[START - END]<TAB>UTT<TAB>code<TAB>[V, A, D]`
  SessionN/dialog/avi/DivX/<dialog>.avi         the split-screen video of the whole dialog
  SessionN/sentences/wav/<dialog>/<utt>.wav     the audio of one utterance (its speaker's microphone)

The audio is each utterance's own sentence wav, as SpeechBrain's recipe and the public IEMOCAP
loaders use: the dialog wav mixes both actors' microphones and any overlapping speech. A sentence
wav starts at the utterance's START, so the Utterance reads the whole audio file
(`audio_start=0.0`, `audio_end=None`) while the video keeps the label file's [START, END] window
of the dialog avi. An utterance whose sentence wav is missing is left out ("missing media").

speaker = f"Ses{N:02d}{gender}" (gender = first letter of the utterance id's last `_` field,
Ses01F_impro01_M012 -> Ses01M); session = str(N).

Side convention (not checked here: no IEMOCAP video is available to this project). In every dialog
one actor wears the motion-capture markers; the dialog name carries that actor's gender
(Ses01F_impro01: the female actor), as the release README describes. We take that actor to be on
the LEFT half of the split-screen avi and the other actor on the RIGHT, the convention used by
public IEMOCAP face-extraction code (e.g. IoannisKansizoglou/Iemocap-preprocess,
extractionmapCreator.py). If frames of a real release show the opposite, swap 'L'/'R' in
`_side`.

Codes: neu -> neutral, ang -> anger, sad -> sad, hap -> happy, exc -> happy (`merge_excited=True`,
the usual 4-class IEMOCAP setup; with False, exc is left out). fru, sur, fea, dis, oth, xxx are left
out and counted as "label <code>". Any other code raises `CorpusError` naming file:line (strict:
it means the file is not what this reader understands). A line that starts with '[' but does not
parse is counted as "malformed line" with a warning naming file:line (`strict=True` raises).
Header lines, evaluator lines (`C-E1:`, `A-E1:`, ...) and blank lines are ignored.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from pathlib import Path
from typing import Iterable

from lbher_jax.datasets import CorpusError, Utterance, leave_out, require_dir

_LABELS = {"neu": "neutral", "ang": "anger", "sad": "sad", "hap": "happy", "exc": "happy"}
_LEFT_OUT = frozenset({"fru", "sur", "fea", "dis", "oth", "xxx"})

_NUMBER = r"(\d+(?:\.\d*)?)"
_LINE = re.compile(
    rf"\[\s*{_NUMBER}\s*-\s*{_NUMBER}\s*\]\s+(\S+)\s+(\S+)(?:\s+\[[^\[\]]*\])?\s*")
_SPEAKER = re.compile(r"[FM]\d+")
_DIALOG = re.compile(r"Ses\d\d([FM])_\S+")
_SESSION = re.compile(r"Session(\d+)")


@dataclasses.dataclass(frozen=True)
class LabelLine:
  """One parsed utterance line of an EmoEvaluation file."""

  start: float
  end: float
  utterance: str
  code: str
  gender: str  # 'F' or 'M': the speaking actor


def parse_label_line(line: str) -> LabelLine | None:
  """Parses one EmoEvaluation line.

  Returns None for lines that are not utterance lines (header, evaluator, blank); raises
  ValueError for a line that starts with '[' but is malformed.
  """
  text = line.strip()
  if not text.startswith("["):
    return None
  match = _LINE.fullmatch(text)
  if not match:
    raise ValueError(f"not `[START - END] UTTERANCE code [V, A, D]`: {text[:80]!r}")
  start, end = float(match[1]), float(match[2])
  if not end > start:
    raise ValueError(f"end {match[2]} is not after start {match[1]}")
  utterance, code = match[3], match[4]
  last = utterance.rsplit("_", 1)[-1]
  if "_" not in utterance or not _SPEAKER.fullmatch(last):
    raise ValueError(f"utterance id {utterance!r} does not end in _F<n> or _M<n>")
  return LabelLine(start, end, utterance, code, last[0])


def scan(root: Path, *, merge_excited: bool = True, sessions: Iterable[int] | None = None,
         strict: bool = False) -> tuple[list[Utterance], collections.Counter]:
  """Lists the 4-class utterances of the IEMOCAP release at `root`.

  Options: `merge_excited` (exc counts as happy), `sessions` (session numbers to read, default
  all), `strict` (raise instead of counting malformed lines and missing media).
  """
  require_dir(root, "IEMOCAP")
  found = {int(m[1]): p for p in root.iterdir() if p.is_dir() and (m := _SESSION.fullmatch(p.name))}
  if not found:
    raise CorpusError(f"{root}: no Session<N> folders; expected the IEMOCAP release layout "
                      "SessionN/dialog/EmoEvaluation/*.txt")
  wanted = sorted(found) if sessions is None else sorted({int(n) for n in sessions})
  missing = [n for n in wanted if n not in found]
  if missing:
    raise CorpusError(f"{root}: no folder for session(s) {missing}; found {sorted(found)}")
  codes = dict(_LABELS) if merge_excited else {k: v for k, v in _LABELS.items() if k != "exc"}
  utterances, left_out = [], collections.Counter()
  for number in wanted:
    labels_dir = found[number] / "dialog" / "EmoEvaluation"
    if not labels_dir.is_dir():
      raise CorpusError(f"{labels_dir}: missing; expected one <dialog>.txt label file per dialog")
    for label_file in sorted(labels_dir.glob("*.txt")):
      if not label_file.name.startswith("."):
        utterances += _read_dialog(label_file, number, codes, left_out, strict)
  return sorted(utterances, key=lambda u: u.id), left_out


def _read_dialog(label_file: Path, session: int, codes: dict[str, str],
                 left_out: collections.Counter, strict: bool) -> list[Utterance]:
  """The kept utterances of one dialog's label file."""
  dialog = label_file.stem
  match = _DIALOG.fullmatch(dialog)
  if not match:
    raise CorpusError(f"{label_file}: file name is not an IEMOCAP dialog name like Ses01F_impro01")
  marked = match[1]
  session_dir = label_file.parents[2]
  video = session_dir / "dialog" / "avi" / "DivX" / f"{dialog}.avi"
  sentences = session_dir / "sentences" / "wav" / dialog
  kept = []
  text = label_file.read_text(encoding="utf-8", errors="replace")
  for number, line in enumerate(text.split("\n"), start=1):
    where = f"{label_file}:{number}"
    try:
      parsed = parse_label_line(line)
      if parsed is not None and not parsed.utterance.startswith(dialog + "_"):
        raise ValueError(f"utterance {parsed.utterance!r} is not in dialog {dialog}")
    except ValueError as e:
      leave_out(left_out, "malformed line", f"{where}: malformed line: {e}", strict=strict)
      continue
    if parsed is None:
      continue
    if parsed.code in codes:
      kept.append(Utterance(
          id=parsed.utterance, video=video, audio=sentences / f"{parsed.utterance}.wav",
          start=parsed.start, end=parsed.end, label=codes[parsed.code],
          speaker=f"Ses{session:02d}{parsed.gender}", session=str(session),
          side=_side(parsed.gender, marked), audio_start=0.0))
    elif parsed.code in _LEFT_OUT or parsed.code == "exc":
      left_out[f"label {parsed.code}"] += 1
    else:
      raise CorpusError(f"{where}: unknown emotion code {parsed.code!r}; known: "
                        f"{sorted(set(_LABELS) | _LEFT_OUT)}")
  if kept and not video.is_file():
    leave_out(left_out, "missing media",
              f"{label_file}: {len(kept)} utterances name a missing video: {video}",
              strict=strict, count=len(kept))
    return []
  heard, unheard = [], []
  for u in kept:
    (heard if u.audio.is_file() else unheard).append(u)
  if unheard:
    leave_out(left_out, "missing media",
              f"{label_file}: {len(unheard)} utterances have no sentence wav, e.g. "
              f"{unheard[0].audio}", strict=strict, count=len(unheard))
  return heard


def _side(gender: str, marked: str) -> str:
  """The marker-wearing actor (gender in the dialog name) is on the left half."""
  return "L" if gender == marked else "R"
