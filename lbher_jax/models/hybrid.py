"""The LbHER two-stream model (paper §3.5, Fig. 3).

The CNN+RNN audio stream without its output layer and the 3-D CNN video stream; their last
hidden layers (both embed_dim wide, so the contrastive distance between them is defined) are
concatenated and feed one output layer. Each stream also has its own output layer
("audio_logits", "video_logits"): fine-tuning can add their cross-entropy (per-modality losses,
as in MBT) so that neither stream is left unlearned when the other fits the training speakers.
With `detach_joint` the joint layer reads the embeddings through stop_gradient: each stream then
learns only from its own output layer, and the joint layer only learns to combine them. With
`projection_dim`, the embeddings the contrastive loss compares ("audio_embedding",
"video_embedding") are linear projections of the streams' last hidden layers.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lbher_jax.models.audio import AudioStream, Classifier, padding_mask
from lbher_jax.models.video import VideoStream


class HybridModel(nn.Module):
  """Audio + video -> logits, plus both embeddings for contrastive pre-training."""
  audio_convs: tuple[int, ...]
  rnn_cell: str
  rnn_hidden: int
  video_convs: tuple[int, ...]
  video_pools: tuple[tuple[int, int, int], ...]
  video_hidden: int
  embed_dim: int
  num_classes: int
  dropout: float
  dtype: Any = jnp.float32
  detach_joint: bool = False
  projection_dim: int = 0

  @nn.compact
  def __call__(self, batch: dict[str, jax.Array], *, train: bool) -> dict[str, jax.Array]:
    mask = padding_mask(batch)
    audio = AudioStream(self.audio_convs, self.rnn_cell, self.rnn_hidden, self.embed_dim,
                        self.dropout, self.dtype, name="audio")(
      batch["audio"], train=train, mask=mask)
    video = VideoStream(self.video_convs, self.video_pools, self.video_hidden, self.embed_dim,
                        self.dropout, self.dtype, name="video")(
      batch["video"], train=train, mask=mask)
    joint = jnp.concatenate([audio, video], axis=-1)
    if self.detach_joint:
      joint = jax.lax.stop_gradient(joint)
    logits = Classifier(self.num_classes, self.dropout, self.dtype, name="output")(
      joint, train=train)
    audio_logits = Classifier(self.num_classes, self.dropout, self.dtype, name="audio_output")(
      audio, train=train)
    video_logits = Classifier(self.num_classes, self.dropout, self.dtype, name="video_output")(
      video, train=train)
    if self.projection_dim:
      # What the contrastive loss compares: linear maps of the embeddings, free to take either
      # sign, used by pre-training only.
      audio = nn.Dense(self.projection_dim, dtype=self.dtype, name="audio_projection")(audio)
      video = nn.Dense(self.projection_dim, dtype=self.dtype, name="video_projection")(video)
    return {"logits": logits, "audio_logits": audio_logits, "video_logits": video_logits,
            "audio_embedding": audio.astype(jnp.float32),
            "video_embedding": video.astype(jnp.float32)}
