"""Face frames as in paper §3.4: 20 frames per 3-s segment, speaker's half, face crop, 60 x 100.

One `media.read_frames` call per utterance fetches every frame. Faces are found with OpenCV's
frontal-face Haar cascade on a small grayscale copy of `_DETECT_FRAMES` frames spread over the
utterance (detection dominates the cost of preprocessing); the median of the detected boxes (one
box per utterance, so the crop does not jitter) is widened by a margin and to the output aspect
ratio. When no face is found, or with face_detector="none", the crop is the fixed central region:
the largest centred rectangle of the output aspect ratio (width : height). `segment_faces` can keep
every face seen instead (one box per face that recurs over the examined frames), for prediction to
choose per segment the face whose mouth goes with the voice.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import cv2
import numpy as np

from lbher_jax import media

_MAX_READ_SIDE = 640  # frames are decoded at most this long (face crops end up 60 x 100)
_DETECT_SIDE = 96  # short side of the grayscale copy the detector sees: faces >= 1/4 of it
_DETECT_BORDER = 0.25  # border (fraction of the short side) so frame-filling faces are found
_DETECT_FRAMES = 4  # frames per utterance the detector examines (the box is their median)
_FACE_MARGIN = 1.3  # the crop spans the face box times this, widened to the output aspect


@dataclasses.dataclass(frozen=True)
class VideoParams:
  """Frame settings; the defaults are the paper's (20 frames per segment, 60 x 100)."""

  frames_per_segment: int = 20
  height: int = 60
  width: int = 100
  face_detector: str = "haar"  # or "none": always the fixed central region

  def __post_init__(self):
    if self.face_detector not in ("haar", "none"):
      raise ValueError(f"face_detector must be 'haar' or 'none', got {self.face_detector!r}")
    if min(self.frames_per_segment, self.height, self.width) <= 0:
      raise ValueError("frames_per_segment, height and width must be positive")


def frame_times(bounds: list[tuple[float, float]], duration: float, n: int) -> np.ndarray:
  """[len(bounds), n] times spread evenly (centres of n equal parts) over each segment's span.

  A span is clamped to [0, duration], so a segment running past the end samples what exists.
  """
  times = []
  for start, end in bounds:
    end = min(max(end, 0.0), duration)
    start = min(max(start, 0.0), end)
    times.append(start + (np.arange(n) + 0.5) * (end - start) / n)
  return np.asarray(times, np.float64).reshape(len(bounds), n)


def side_crop(frames: np.ndarray, side: str | None) -> np.ndarray:
  """The left ('L') or right ('R') half of [..., H, W, C] frames, or all of them (None)."""
  half = frames.shape[-2] // 2
  if side is None:
    return frames
  if side == "L":
    return frames[..., :half, :]
  if side == "R":
    return frames[..., frames.shape[-2] - half:, :]
  raise ValueError(f"side must be 'L', 'R' or None, got {side!r}")


@functools.cache
def _cascade() -> cv2.CascadeClassifier:
  """The frontal-face Haar cascade, loaded once per process."""
  path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
  cascade = cv2.CascadeClassifier(str(path))
  if cascade.empty():
    raise RuntimeError(f"{path}: cannot load the Haar cascade")
  return cascade


Box = tuple[float, float, float, float]   # (x, y, w, h) in pixels


def detect_faces(frame: np.ndarray) -> list[Box]:
  """Every frontal face (x, y, w, h) in pixels of an RGB frame, largest first."""
  gray = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
  scale = min(1.0, _DETECT_SIDE / min(gray.shape))
  if scale < 1.0:
    gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
  pad = int(_DETECT_BORDER * min(gray.shape))
  gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
  faces = _cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=3, minSize=(24, 24))
  boxes = [((x - pad) / scale, (y - pad) / scale, w / scale, h / scale)
           for x, y, w, h in sorted(faces, key=lambda f: -f[2] * f[3])]
  return [tuple(float(v) for v in b) for b in boxes]


def detect_face(frame: np.ndarray) -> Box | None:
  """Largest frontal face (x, y, w, h) in pixels of an RGB frame, or None."""
  faces = detect_faces(frame)
  return faces[0] if faces else None


def face_tracks(detections: list[list[Box]], max_faces: int) -> list[Box]:
  """The faces that recur over frames: `detections` holds each examined frame's boxes; a box
  joins the face whose median centre lies within half a face width of its own, else starts a
  new face. Returns the median box of each face seen in at least a quarter of the frames that
  show any face, the most often seen first (then the largest), at most `max_faces`."""
  faces: list[list[Box]] = []
  centre = lambda b: np.array([b[0] + b[2] / 2, b[1] + b[3] / 2])
  for boxes in detections:
    for box in boxes:
      medians = [np.median(np.asarray(f), axis=0) for f in faces]
      near = [np.linalg.norm(centre(m) - centre(box)) / max(m[2], box[2]) for m in medians]
      if near and min(near) < 0.5:
        faces[int(np.argmin(near))].append(box)
      else:
        faces.append([box])
  frames = sum(1 for boxes in detections if boxes)
  kept = [f for f in faces if len(f) >= 0.25 * frames]
  kept.sort(key=lambda f: (-len(f), -np.median(np.asarray(f)[:, 2] * np.asarray(f)[:, 3])))
  return [tuple(float(v) for v in np.median(np.asarray(f), axis=0)) for f in kept[:max_faces]]


def crop_box(frame_h: int, frame_w: int, aspect: float,
             face: tuple[float, float, float, float] | None) -> tuple[int, int, int, int]:
  """(top, left, height, width) of the crop inside the frame, of the given width/height aspect.

  Around `face` (widened by the margin to the aspect ratio), else the largest centred rectangle.
  Where the frame is too small for the widened face box, the box is cut to the frame on each axis
  on its own, so the whole face stays in (the resize then stretches it) rather than losing the
  mouth to keep the aspect ratio.
  """
  if face is None:
    cy, cx = frame_h / 2, frame_w / 2
    ch = min(frame_h, frame_w / aspect)
    cw = ch * aspect
  else:
    x, y, w, h = face
    cy, cx = y + h / 2, x + w / 2
    ch = _FACE_MARGIN * max(h, w / aspect)
    ch, cw = min(ch, frame_h), min(ch * aspect, frame_w)
  ch_i, cw_i = max(1, int(round(ch))), max(1, int(round(cw)))
  top = int(round(np.clip(cy - ch / 2, 0, frame_h - ch_i)))
  left = int(round(np.clip(cx - cw / 2, 0, frame_w - cw_i)))
  return top, left, ch_i, cw_i


def _read_size(info: media.MediaInfo) -> tuple[int, int]:
  scale = min(1.0, _MAX_READ_SIDE / max(info.width, info.height))
  return max(1, int(round(info.height * scale))), max(1, int(round(info.width * scale)))


@dataclasses.dataclass(frozen=True)
class Faces:
  """Face frames of an utterance's segments for each face candidate.

  crops: uint8 [K, segments, frames_per_segment, height, width, 3] (K >= 1; the one crop is the
  fixed central region when no face was found or no detector runs); boxes: each candidate's
  (x, y, w, h) in the file's pixels, None for the central region; found: float32 [segments], the
  fraction of each segment's examined frames in which the detector found a face.
  """
  crops: np.ndarray
  boxes: list[Box | None]
  found: np.ndarray


def face_regions(boxes: list[Box], frame_h: int, frame_w: int) -> list[tuple[int, int, int, int]]:
  """(y0, x0, y1, x1) per face: the frame, cut halfway to each other face on the axis along which
  they lie apart most, so that a face's crop holds no other face (as the frame's edge cuts the
  crop of a face alone)."""
  regions = []
  for i, (x, y, w, h) in enumerate(boxes):
    y0, x0, y1, x1 = 0.0, 0.0, float(frame_h), float(frame_w)
    cx, cy = x + w / 2, y + h / 2
    for j, (ox, oy, ow, oh) in enumerate(boxes):
      if j == i:
        continue
      dx, dy = ox + ow / 2 - cx, oy + oh / 2 - cy
      if abs(dx) >= abs(dy):
        x0, x1 = (x0, min(x1, cx + dx / 2)) if dx > 0 else (max(x0, cx + dx / 2), x1)
      else:
        y0, y1 = (y0, min(y1, cy + dy / 2)) if dy > 0 else (max(y0, cy + dy / 2), y1)
    regions.append((int(round(y0)), int(round(x0)), int(round(y1)), int(round(x1))))
  return regions


def _crop_all(frames: np.ndarray, box: Box | None, params: VideoParams,
              region: tuple[int, int, int, int] | None = None) -> np.ndarray:
  y0, x0, y1, x1 = region or (0, 0, frames.shape[1], frames.shape[2])
  inside = None if box is None else (box[0] - x0, box[1] - y0, box[2], box[3])
  top, left, ch, cw = crop_box(y1 - y0, x1 - x0, params.width / params.height, inside)
  top, left = top + y0, left + x0
  out = np.empty((len(frames), params.height, params.width, 3), np.uint8)
  for i, frame in enumerate(frames):
    out[i] = cv2.resize(frame[top:top + ch, left:left + cw], (params.width, params.height),
                        interpolation=cv2.INTER_AREA)
  return out


def segment_faces(path, bounds: list[tuple[float, float]], side: str | None,
                  params: VideoParams, *, info: media.MediaInfo | None = None,
                  max_faces: int = 1) -> Faces:
  """Face frames of each segment (`bounds`: absolute (start, end) seconds in the file).

  The detector examines at least `_DETECT_FRAMES` frames and two per segment, evenly spread.
  With max_faces=1 the crop box is the median of each examined frame's largest face; above 1,
  each face that recurs (`face_tracks`) is a candidate with its own median box, its crop kept
  clear of the others (`face_regions`). One box per candidate serves every segment. Grayscale
  video gives 3 equal channels. `info` (`media.probe(path)`) saves probing the file again.
  """
  info = info or media.probe(path)
  if not info.has_video:
    raise media.MediaError(info.path, "no video stream")
  n = params.frames_per_segment
  times = frame_times(bounds, info.duration, n).reshape(-1)
  height, width = _read_size(info)
  frames = side_crop(media.read_frames(path, times, height, width, info=info), side)
  examined, hit, boxes = np.zeros(0, int), [], [None]
  if params.face_detector == "haar" and len(frames):
    count = max(_DETECT_FRAMES, 2 * len(bounds))
    examined = np.unique(np.linspace(0, len(frames) - 1, count).round().astype(int))
    if max_faces == 1:
      faces = [detect_face(frames[i]) for i in examined]
      hit = [f is not None for f in faces]
      found = [f for f in faces if f is not None]
      if found:
        boxes = [tuple(float(v) for v in np.median(np.asarray(found), axis=0))]
    else:
      detections = [detect_faces(frames[i]) for i in examined]
      hit = [bool(d) for d in detections]
      boxes = face_tracks(detections, max_faces) or [None]
  regions = ([None] if boxes == [None]
             else face_regions(boxes, frames.shape[1], frames.shape[2]))
  crops = np.stack([_crop_all(frames, box, params, region) for box, region in zip(boxes, regions)])
  hits = np.zeros(len(bounds), np.float32)
  looks = np.zeros(len(bounds), np.float32)
  np.add.at(looks, examined // n, 1.0)
  np.add.at(hits, examined // n, hit)
  fractions = np.divide(hits, looks, out=np.zeros_like(hits), where=looks > 0)
  # Boxes in the file's pixels (frames are decoded at most _MAX_READ_SIDE long, after `side`).
  scale = info.height / height
  offset = (width - frames.shape[2]) if side == "R" else 0
  boxes = [None if b is None else ((b[0] + offset) * scale, b[1] * scale, b[2] * scale,
                                   b[3] * scale) for b in boxes]
  return Faces(crops.reshape(len(boxes), len(bounds), n, params.height, params.width, 3), boxes,
               fractions)


def segment_frames(path, bounds: list[tuple[float, float]], side: str | None,
                   params: VideoParams, *,
                   info: media.MediaInfo | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Face frames of each segment around the largest face, and for each segment the fraction of
  its examined frames in which the detector found a face (`segment_faces` with one candidate).

  Returns uint8 [len(bounds), frames_per_segment, height, width, 3] RGB and float32
  [len(bounds)]; with face_detector="none" no detection runs and the fractions are 0.
  """
  faces = segment_faces(path, bounds, side, params, info=info)
  return faces.crops[0], faces.found
