"""LbHER: audio-visual emotion recognition in JAX/Flax (Algorithm 1 of the LbHER paper)."""

LABELS: tuple[str, ...] = ("happy", "anger", "sad", "neutral")
"""Class names in class-id order (paper Table 1: 0 happy, 1 anger, 2 sad, 3 neutral)."""

LABEL_TO_ID: dict[str, int] = {name: i for i, name in enumerate(LABELS)}

STREAMS: tuple[str, ...] = ("audio", "video")
"""The input streams, in the order every list of them keeps."""


def answering_output(used: tuple[str, ...], outputs) -> str:
  """Which of a model's `outputs` answers for a segment that holds the streams `used`: the one
  stream's own output layer ("audio_probs" / "video_probs") when only one is there and the model
  has that layer, else the model's output "probs"."""
  own = f"{used[0]}_probs" if len(used) == 1 else None
  return own if own in outputs else "probs"
