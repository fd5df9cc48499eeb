"""The built-in demo: synthetic speakers, small shapes, Algorithm 1 end to end in minutes on a CPU.

`configs/demo.py:tiny` is a seconds-long variant with tiny shapes for the tests.
"""

import ml_collections

from configs import check_variant, default, small
from lbher_jax.models import default_model_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  check_variant("configs/demo.py", arg, ("tiny",))
  c = default.get_config()
  c.data.name = "demo"
  # The demo generator's settings (used only while config.data.name is "demo").
  c.data.demo = ml_collections.ConfigDict(dict(num_speakers=16, clips_per_emotion=3, seed=0,
                                               min_duration=1.5, max_duration=6.0))
  c.data.per_shard = 8
  small.apply(c)
  c.audio.pad = "zeros"            # the paper tried both; noise at SNR 1 drowns short clips
  c.video.face_detector = "none"   # drawn faces: a fixed central region
  c.eval.checkpoint = "latest"     # one validation speaker is too few to choose a model by
  if arg == "tiny":
    c.data.demo.update(dict(num_speakers=5, clips_per_emotion=1, max_duration=3.5))
    c.data.workers = 1
    c.audio.update(dict(height=16, width=24))
    c.video.update(dict(frames_per_segment=4, height=12, width=16))
    c.model = default_model_config("hybrid", "tiny")
    c.pretrain.update(dict(steps=4, batch_size=8, warmup_steps=1, log_every=2,
                           checkpoint_every=2))
    c.train.update(dict(steps=6, batch_size=8, warmup_steps=1, log_every=2, checkpoint_every=3))
    c.eval.batch_size = 8
  return c
