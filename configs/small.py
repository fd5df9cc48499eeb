"""The small CPU variant shared by the corpus configs (`configs/NAME.py:small`)."""

import ml_collections

from lbher_jax.models import default_model_config


def apply(c: ml_collections.ConfigDict) -> None:
  """Shrinks a paper-scale config in place: 16 kHz audio, 64x96 spectrograms, 30x50 faces."""
  c.audio.update(dict(sample_rate=16000, bandpass_high=7900.0, n_fft=512, hop_length=160,
                      top_crop=0.0, height=64, width=96))
  c.video.update(dict(height=30, width=50))
  c.augment.crop_top = 3
  c.model = default_model_config(c.model.name, "small")
  c.pretrain.update(dict(steps=150, batch_size=16, lr=1e-3, warmup_steps=20, log_every=25,
                         checkpoint_every=75))
  c.train.update(dict(steps=500, batch_size=16, lr=1e-3, warmup_steps=30, log_every=25,
                      checkpoint_every=100))
  c.eval.batch_size = 32
