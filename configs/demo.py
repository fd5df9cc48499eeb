"""The built-in demo: synthetic speakers, small shapes, Algorithm 1 end to end in minutes on a CPU."""

import ml_collections

from configs import default
from lbher_jax.models import default_model_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = default.get_config(arg)
  c.data.name = "demo"
  c.data.per_shard = 8
  c.audio.sample_rate = 16000
  c.audio.bandpass_high = 7900.0
  c.audio.n_fft = 512
  c.audio.hop_length = 160
  c.audio.top_crop = 0.0           # 16 kHz audio already stops at 8 kHz (the paper's cut-off)
  c.audio.height = 64
  c.audio.width = 96
  c.video.height = 30
  c.video.width = 50
  c.video.face_detector = "none"   # drawn faces: a fixed central region
  c.augment.crop_top = 3
  c.split.num_folds = 5
  c.model = default_model_config("hybrid", "small")
  c.pretrain.update(dict(steps=150, batch_size=16, lr=1e-3, warmup_steps=20, log_every=25,
                         checkpoint_every=75))
  c.train.update(dict(steps=300, batch_size=16, lr=1e-3, warmup_steps=30, log_every=25,
                      eval_every=100))
  c.eval.batch_size = 32
  return c
