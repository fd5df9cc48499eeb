"""Model registry: the paper's audio baselines, the 3-D CNN video stream and the hybrid (§3.5).

Every model maps a batch {"audio": float [B, F, T] in [-1, 1], "video": uint8 [B, S, H, W, 3],
optionally "weight": float [B] (0 = padding row)} to {"logits": float32 [B, 4], plus
"audio_embedding" / "video_embedding": float32 [B, embed_dim] for the streams it has}. A model reads
only the keys it needs.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lbher_jax.models import audio
from lbher_jax.models import hybrid
from lbher_jax.models import video

MODEL_NAMES: tuple[str, ...] = ("cnn", "cnn_lstm", "cnn_rnn", "video3d", "hybrid")
SCALES: tuple[str, ...] = ("paper", "small", "tiny")

_SCALE_FIELDS = {
  # The paper-size network: ~20 GFLOP per example per training step for hybrid.
  "paper": dict(
    audio_convs=(32, 64, 128, 128), rnn_hidden=256,
    video_convs=(32, 64, 128, 256), video_pools=((1, 2, 2), (2, 2, 2), (2, 2, 2)),
    video_hidden=256, embed_dim=256, dropout=0.3),
  # CPU demo: trains in minutes on two cores.
  "small": dict(
    audio_convs=(8, 16, 32), rnn_hidden=32,
    video_convs=(8, 16, 32, 32), video_pools=((1, 2, 2), (2, 2, 2), (2, 2, 2)),
    video_hidden=64, embed_dim=32, dropout=0.2),
  # Unit tests.
  "tiny": dict(
    audio_convs=(4, 8), rnn_hidden=8,
    video_convs=(2, 4, 4, 8), video_pools=((1, 2, 2), (2, 2, 2), (2, 2, 2)),
    video_hidden=16, embed_dim=8, dropout=0.1),
}


def default_model_config(name: str, scale: str = "paper") -> ml_collections.ConfigDict:
  """The hyper-parameters of model `name` at `scale` ("paper", "small" or "tiny").

  Fields (all models carry all of them, so `--config.model.name=...` can switch models):
    name: one of MODEL_NAMES.
    num_classes: output classes (4: happy, anger, sad, neutral).
    audio_convs: channels of the audio 2-D conv blocks (3x3 conv, norm, ReLU, 2x2 max-pool each).
    rnn_cell: "simple" or "lstm": the hybrid's audio recurrent cell (cnn_lstm and cnn_rnn
      are fixed to "lstm" and "simple" by their names).
    rnn_hidden: recurrent state width.
    video_convs: channels of the four 3x3x3 conv layers of the video stream.
    video_pools: (S, H, W) windows of the three 3-D max-pools after the first three convs.
    video_hidden: width of the video stream's first fully connected layer.
    embed_dim: width of each stream's last hidden layer (the embeddings of the contrastive loss).
    dropout: rate before every fully connected layer.
    dtype: compute dtype, "float32" or "bfloat16"; parameters always stay float32.
    detach_joint: hybrid only: the joint output layer gets no gradient into the streams, which
      then learn only from their own output layers (needs config.train.aux_weight > 0).
    projection_dim: hybrid only: 0 = the contrastive loss compares the streams' last hidden
      layers (the paper); > 0 = it compares a linear projection of each (no ReLU) of this width,
      used only by pre-training.
    sync_dim: hybrid only: > 0 = the contrastive loss compares time-keeping embeddings instead
      (each stream's first conv block, sync_dim features per video time step, mean over time
      removed), so that pre-training must learn when voice and face move together; used only
      by pre-training.
  """
  if name not in MODEL_NAMES:
    raise ValueError(f"unknown model name {name!r}; expected one of {MODEL_NAMES}")
  if scale not in SCALES:
    raise ValueError(f"unknown model scale {scale!r}; expected one of {SCALES}")
  config = ml_collections.ConfigDict()
  config.name = name
  config.num_classes = 4
  config.rnn_cell = "simple"
  config.dtype = "float32"
  config.detach_joint = False
  config.projection_dim = 0
  config.sync_dim = 0
  for key, value in _SCALE_FIELDS[scale].items():
    config[key] = value
  return config


def get_model(model_config: ml_collections.ConfigDict) -> nn.Module:
  """Builds the Flax module named by `model_config.name`."""
  c = model_config
  common = dict(num_classes=c.num_classes, dropout=c.dropout,
                dtype=jnp.dtype(c.dtype))
  if c.rnn_cell not in audio.RNN_CELLS:
    raise ValueError(f"unknown rnn_cell {c.rnn_cell!r}; expected one of {tuple(audio.RNN_CELLS)}")
  audio_fields = dict(convs=tuple(c.audio_convs), rnn_hidden=c.rnn_hidden, embed_dim=c.embed_dim)
  video_fields = dict(convs=tuple(c.video_convs), pools=tuple(map(tuple, c.video_pools)),
                      hidden=c.video_hidden, embed_dim=c.embed_dim)
  if c.name == "cnn":
    return audio.AudioModel(**audio_fields, rnn_cell=None, **common)
  if c.name == "cnn_lstm":
    return audio.AudioModel(**audio_fields, rnn_cell="lstm", **common)
  if c.name == "cnn_rnn":
    return audio.AudioModel(**audio_fields, rnn_cell="simple", **common)
  if c.name == "video3d":
    return video.VideoModel(**video_fields, **common)
  if c.name == "hybrid":
    return hybrid.HybridModel(
      audio_convs=audio_fields["convs"], rnn_cell=c.rnn_cell, rnn_hidden=c.rnn_hidden,
      video_convs=video_fields["convs"], video_pools=video_fields["pools"],
      video_hidden=c.video_hidden, embed_dim=c.embed_dim, **common,
      detach_joint=c.detach_joint,
      projection_dim=c.projection_dim, sync_dim=c.sync_dim)
  raise ValueError(f"unknown model name {c.name!r}; expected one of {MODEL_NAMES}")


def input_keys(name: str) -> tuple[str, ...]:
  """The batch keys model `name` reads: audio, video or both."""
  return {"video3d": ("video",), "hybrid": ("audio", "video")}.get(name, ("audio",))


def batch_spec(config: ml_collections.ConfigDict,
               batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes and dtypes of a model input batch (for initialisation and jax.eval_shape).

  The sizes are those the experiment config's `audio` and `video` sections make; the models
  themselves take any size.
  """
  a, v = config.audio, config.video
  return {
    "audio": jax.ShapeDtypeStruct((batch_size, a.height, a.width), jnp.float32),
    "video": jax.ShapeDtypeStruct((batch_size, v.frames_per_segment, v.height, v.width, 3),
                                  jnp.uint8),
  }
