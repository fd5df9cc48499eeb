"""The `hybrid` model and its fine-tuning step written in PyTorch: the reference of
benchmarks/train_step.py (issue 7).

Same layers, shapes and FLOPs as lbher_jax.models.hybrid.HybridModel built from the same model
config (3x3 convs without bias, BatchNorm, ReLU, max-pools; a tanh RNN over the audio map read
along time; the video stream's two dense layers; the joint and the two per-stream output
layers), and the same step: cross-entropy on the joint logits plus `aux_weight` times each
stream's, gradient clipping to a global norm, AdamW with weight decay on kernels only. Only
the figures matter here, not checkpoints: initial values are PyTorch's defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class AudioStream(nn.Module):
  """Spectrogram [B, F, T] -> embedding [B, embed_dim] (conv blocks, RNN over time, dense)."""

  def __init__(self, spectrogram: tuple[int, int], convs: tuple[int, ...], rnn_hidden: int,
               embed_dim: int, dropout: float):
    super().__init__()
    layers, channels = [], 1
    for features in convs:
      layers += [nn.Conv2d(channels, features, 3, padding=1, bias=False),
                 nn.BatchNorm2d(features), nn.ReLU(), nn.MaxPool2d(2)]
      channels = features
    self.convs = nn.Sequential(*layers)
    f = spectrogram[0]
    for _ in convs:
      f //= 2
    self.rnn = nn.RNN(f * channels, rnn_hidden, batch_first=True)
    self.dropout = nn.Dropout(dropout)
    self.dense = nn.Linear(rnn_hidden, embed_dim)

  def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
    x = self.convs(spectrogram[:, None])  # [B, C, F, T]
    b, c, f, t = x.shape
    x = x.permute(0, 3, 2, 1).reshape(b, t, f * c)  # time steps of (frequency, channel)
    x = self.rnn(x)[0][:, -1]
    return torch.relu(self.dense(self.dropout(x)))


class VideoStream(nn.Module):
  """Frames uint8 [B, S, H, W, 3] -> embedding [B, embed_dim] (3-D convs, pools, two dense)."""

  def __init__(self, frames: tuple[int, int, int], convs: tuple[int, ...],
               pools: tuple[tuple[int, int, int], ...], hidden: int, embed_dim: int,
               dropout: float):
    super().__init__()
    layers, channels, size = [], 3, list(frames)
    for i, features in enumerate(convs):
      layers += [nn.Conv3d(channels, features, 3, padding=1, bias=False),
                 nn.BatchNorm3d(features), nn.ReLU()]
      if i < len(pools):
        layers.append(nn.MaxPool3d(pools[i]))
        size = [n // k for n, k in zip(size, pools[i])]
      channels = features
    self.convs = nn.Sequential(*layers)
    self.dense = nn.Sequential(
      nn.Dropout(dropout), nn.Linear(channels * size[0] * size[1] * size[2], hidden), nn.ReLU(),
      nn.Dropout(dropout), nn.Linear(hidden, embed_dim), nn.ReLU())

  def forward(self, frames: torch.Tensor) -> torch.Tensor:
    x = frames.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0  # [B, 3, S, H, W]
    return self.dense(self.convs(x).flatten(1))


class Hybrid(nn.Module):
  """Both streams, the joint output layer and each stream's own output layer."""

  def __init__(self, config: Any):
    super().__init__()
    c, a, v = config.model, config.audio, config.video
    self.audio = AudioStream((a.height, a.width), tuple(c.audio_convs), c.rnn_hidden,
                             c.embed_dim, c.dropout)
    self.video = VideoStream((v.frames_per_segment, v.height, v.width), tuple(c.video_convs),
                             tuple(map(tuple, c.video_pools)), c.video_hidden, c.embed_dim,
                             c.dropout)
    self.output = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(2 * c.embed_dim,
                                                                 c.num_classes))
    self.audio_output = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(c.embed_dim,
                                                                       c.num_classes))
    self.video_output = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(c.embed_dim,
                                                                       c.num_classes))

  def forward(self, audio: torch.Tensor, video: torch.Tensor) -> tuple[torch.Tensor, ...]:
    a, v = self.audio(audio), self.video(video)
    return self.output(torch.cat([a, v], dim=-1)), self.audio_output(a), self.video_output(v)


def make_train_step(config: Any, *, lr: float, weight_decay: float, clip_norm: float,
                    aux_weight: float) -> Callable[[dict[str, torch.Tensor]], float]:
  """A fresh Hybrid of the experiment config's model and input sizes and step(batch) -> loss:
  forward, backward, clip, AdamW update.

  `batch` holds torch tensors "audio" float32 [B, F, T], "video" uint8 [B, S, H, W, 3] and
  "label" int64 [B].
  """
  model = Hybrid(config).train()
  kernels = [p for p in model.parameters() if p.ndim > 1]
  others = [p for p in model.parameters() if p.ndim <= 1]
  optimizer = torch.optim.AdamW([{"params": kernels, "weight_decay": weight_decay},
                                 {"params": others, "weight_decay": 0.0}], lr=lr)
  cross_entropy = nn.CrossEntropyLoss()

  def step(batch: dict[str, torch.Tensor]) -> float:
    optimizer.zero_grad(set_to_none=True)
    logits, audio_logits, video_logits = model(batch["audio"], batch["video"])
    loss = cross_entropy(logits, batch["label"]) + aux_weight * (
      cross_entropy(audio_logits, batch["label"]) + cross_entropy(video_logits, batch["label"]))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    return float(loss.detach())

  return step
