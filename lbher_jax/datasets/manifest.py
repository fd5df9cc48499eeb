"""A CSV manifest listing utterances, for corpora without a reader of their own.

`root` is the CSV file or a folder holding `manifest.csv`. The header names the columns, any order:
  video, audio   media paths (at least one of the two columns; a row needs one of them)
  start, end     seconds within the media (empty = whole file)
  label          one of LABELS (anything else is a user error and raises, naming the line)
  speaker        required
  id, session, side   optional; side is 'L' or 'R'; id defaults to the media path (without suffix)
                      plus "@start-end" when start is given
Empty cells are None. Relative paths resolve against the manifest's folder and may not leave it
(neither by `..` nor through a symlink); absolute paths are rejected too, unless
`allow_absolute=True`, which lifts both checks. A row whose media is not on disk is counted as
"missing media" and skipped (`strict=True` raises). Rows whose cells are all empty are ignored.
"""

from __future__ import annotations

import collections
import csv
import math
from pathlib import Path, PurePosixPath

from lbher_jax import LABELS
from lbher_jax.datasets import CorpusError, Utterance, leave_out

COLUMNS = ("id", "video", "audio", "start", "end", "label", "speaker", "session", "side")


def scan(root: Path, *, allow_absolute: bool = False,
         strict: bool = False) -> tuple[list[Utterance], collections.Counter]:
  """Lists the utterances of the manifest at `root` (a .csv file or a folder with manifest.csv)."""
  path = root / "manifest.csv" if root.is_dir() else root
  if not path.is_file():
    raise CorpusError(f"{path}: no such manifest (give a .csv file or a folder with manifest.csv)")
  base = path.parent.resolve()
  utterances, left_out = [], collections.Counter()
  try:
    with path.open(newline="", encoding="utf-8-sig") as f:
      reader = csv.reader(f)
      header = _header(path, next(reader, None))
      for row in reader:
        where = f"{path}:{reader.line_num}"
        if len(row) > len(header) and any(cell.strip() for cell in row[len(header):]):
          raise CorpusError(f"{where}: {len(row)} cells but {len(header)} columns")
        cells = {name: cell.strip() or None for name, cell in zip(header, row)}
        if any(cells.values()):
          utterance = _utterance(cells, base, allow_absolute, where)
          missing = [str(p) for p in (utterance.video, utterance.audio)
                     if p is not None and not _is_file(p)]
          if missing:
            leave_out(left_out, "missing media", f"{where}: missing media {', '.join(missing)}",
                      strict=strict)
          else:
            utterances.append(utterance)
  except UnicodeDecodeError as e:
    raise CorpusError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
  except csv.Error as e:
    raise CorpusError(f"{path}: not a readable CSV file ({e})") from e
  return sorted(utterances, key=lambda u: u.id), left_out


def _header(path: Path, row: list[str] | None) -> list[str]:
  """The column names, checked: known, unique, with label, speaker and video and/or audio."""
  if row is None:
    raise CorpusError(f"{path}: empty; expected a header row naming columns among {COLUMNS}")
  header = [name.strip() for name in row]
  unknown = [name for name in header if name not in COLUMNS]
  if unknown:
    raise CorpusError(f"{path}: unknown column(s) {unknown}; known: {COLUMNS}")
  if len(set(header)) != len(header):
    raise CorpusError(f"{path}: a column is named twice in {header}")
  if "label" not in header or "speaker" not in header or not {"video", "audio"} & set(header):
    raise CorpusError(f"{path}: the header needs label, speaker and video and/or audio; "
                      f"got {header}")
  return header


def _utterance(cells: dict[str, str | None], base: Path, allow_absolute: bool,
               where: str) -> Utterance:
  """Builds the utterance of one row; raises CorpusError naming the row for any bad cell."""
  video = _media(cells.get("video"), base, allow_absolute, where)
  audio = _media(cells.get("audio"), base, allow_absolute, where)
  if video is None and audio is None:
    raise CorpusError(f"{where}: needs a video or an audio path")
  start, end = _seconds(cells.get("start"), where), _seconds(cells.get("end"), where)
  if start is not None and end is not None and not end > start:
    raise CorpusError(f"{where}: end {end} is not after start {start}")
  label, speaker, side = cells.get("label"), cells.get("speaker"), cells.get("side")
  if label not in LABELS:
    raise CorpusError(f"{where}: label {label!r} is not one of {LABELS}")
  if speaker is None:
    raise CorpusError(f"{where}: speaker is empty")
  if side not in (None, "L", "R"):
    raise CorpusError(f"{where}: side must be L, R or empty, got {side!r}")
  media = cells.get("video") or cells.get("audio")
  default_id = media.removesuffix(PurePosixPath(media).suffix)
  if start is not None:
    default_id += f"@{cells['start']}-{cells.get('end') or ''}"
  return Utterance(id=cells.get("id") or default_id, video=video, audio=audio, start=start,
                   end=end, label=label, speaker=speaker, session=cells.get("session"),
                   side=side)


def _media(cell: str | None, base: Path, allow_absolute: bool, where: str) -> Path | None:
  """The path a cell names; relative to `base`, and inside it unless `allow_absolute`."""
  if cell is None:
    return None
  path = Path(cell)
  if allow_absolute:
    return base / path
  if path.is_absolute():
    raise CorpusError(f"{where}: absolute path {cell!r} (relative paths only, unless "
                      "allow_absolute=True)")
  try:
    resolved = (base / path).resolve()
  except (OSError, ValueError) as e:
    raise CorpusError(f"{where}: unusable path {cell!r} ({e})") from e
  if not resolved.is_relative_to(base):
    raise CorpusError(f"{where}: path {cell!r} leads to {resolved}, outside the manifest's folder "
                      f"{base} (use allow_absolute=True to permit this)")
  return resolved


def _seconds(cell: str | None, where: str) -> float | None:
  """A time in seconds: a finite number >= 0, or None for an empty cell."""
  if cell is None:
    return None
  try:
    value = float(cell)
  except ValueError:
    value = math.nan
  if not (math.isfinite(value) and value >= 0):
    raise CorpusError(f"{where}: time {cell!r} is not a number of seconds >= 0")
  return value


def _is_file(path: Path) -> bool:
  """Path.is_file that treats unusable names (too long, ...) as absent."""
  try:
    return path.is_file()
  except (OSError, ValueError):
    return False
