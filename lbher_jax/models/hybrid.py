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
  sync_dim: int = 0

  @nn.compact
  def __call__(self, batch: dict[str, jax.Array], *, train: bool) -> dict[str, jax.Array]:
    mask = padding_mask(batch)
    sync = bool(self.sync_dim)
    audio = AudioStream(self.audio_convs, self.rnn_cell, self.rnn_hidden, self.embed_dim,
                        self.dropout, self.dtype, first_map=sync, name="audio")(
      batch["audio"], train=train, mask=mask)
    video = VideoStream(self.video_convs, self.video_pools, self.video_hidden, self.embed_dim,
                        self.dropout, self.dtype, first_map=sync, name="video")(
      batch["video"], train=train, mask=mask)
    if sync:
      (audio, audio_map), (video, video_map) = audio, video
    joint = jnp.concatenate([audio, video], axis=-1)
    if self.detach_joint:
      joint = jax.lax.stop_gradient(joint)
    logits = Classifier(self.num_classes, self.dropout, self.dtype, name="output")(
      joint, train=train)
    audio_logits = Classifier(self.num_classes, self.dropout, self.dtype, name="audio_output")(
      audio, train=train)
    video_logits = Classifier(self.num_classes, self.dropout, self.dtype, name="video_output")(
      video, train=train)
    if self.sync_dim:
      audio, video = self._sync_embeddings(audio_map, video_map, batch.get("span"))
    elif self.projection_dim:
      # What the contrastive loss compares: linear maps of the embeddings, free to take either
      # sign, used by pre-training only.
      audio = nn.Dense(self.projection_dim, dtype=self.dtype, name="audio_projection")(audio)
      video = nn.Dense(self.projection_dim, dtype=self.dtype, name="video_projection")(video)
    return {"logits": logits, "audio_logits": audio_logits, "video_logits": video_logits,
            "audio_embedding": audio.astype(jnp.float32),
            "video_embedding": video.astype(jnp.float32)}

  def _sync_embeddings(self, audio_map: jax.Array, video_map: jax.Array,
                       span: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """Time-keeping embeddings [B, S' * sync_dim] from the streams' first conv blocks (the only
    layers that keep the video's frame rate): each time step of each stream mapped linearly to
    sync_dim features, the audio read (linearly interpolated) at the times of the video's steps,
    each sequence's mean over time removed. Their dot product sums agreement step by step, so
    the contrastive loss can only tell a clip's own face from another's by when things happen.

    `span` [B] (the batch's "span"; None = 1): the fraction of the spectrogram's window that the
    segment fills. A short segment's audio is padded at the end while its frames spread over the
    segment, so video step k falls at (k + 1/2) / S' * span of the audio's time axis."""
    b, f, t, c = audio_map.shape
    audio = audio_map.transpose(0, 2, 1, 3).reshape(b, t, f * c)
    video = video_map.reshape(*video_map.shape[:2], -1)
    audio = nn.Dense(self.sync_dim, dtype=self.dtype, name="audio_sync")(audio).astype(jnp.float32)
    video = nn.Dense(self.sync_dim, dtype=self.dtype, name="video_sync")(video).astype(jnp.float32)
    steps = video.shape[1]
    span = jnp.ones((b,), jnp.float32) if span is None else span.astype(jnp.float32)
    where = (jnp.arange(steps) + 0.5) / steps * span[:, None] * t - 0.5   # [B, S'] in audio steps
    where = jnp.clip(where, 0.0, t - 1.0)
    lo = jnp.floor(where).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, t - 1)
    frac = (where - lo)[..., None]
    audio = ((1.0 - frac) * jnp.take_along_axis(audio, lo[..., None], axis=1)
             + frac * jnp.take_along_axis(audio, hi[..., None], axis=1))
    audio = audio - audio.mean(axis=1, keepdims=True)
    video = video - video.mean(axis=1, keepdims=True)
    return audio.reshape(b, -1), video.reshape(b, -1)
