"""LbHER: audio-visual emotion recognition in JAX/Flax (Algorithm 1 of the LbHER paper)."""

LABELS: tuple[str, ...] = ("happy", "anger", "sad", "neutral")
"""Class names in class-id order (paper Table 1: 0 happy, 1 anger, 2 sad, 3 neutral)."""

LABEL_TO_ID: dict[str, int] = {name: i for i, name in enumerate(LABELS)}
