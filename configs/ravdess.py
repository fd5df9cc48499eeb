"""RAVDESS audio-video speech (24 actors), paper-scale; `:small` trains in minutes on a CPU.

  python -m lbher_jax.main --config configs/ravdess.py --workdir runs/ravdess \
      --config.data.root=/data/RAVDESS
  python -m lbher_jax.main --config configs/ravdess.py:small --workdir runs/ravdess_small ...
Actor-disjoint folds (config.split.fold=-1 runs all of them and reports mean ± std).

`:fer_av` is the real-data check on ../shared/data/ravdess_fer_av (18 actors, RAVDESS voices with
FER2013 faces; run from the project root): small scale, train on actors 1-14, test on 15-18, with
face mirroring and shifts, 1000 fine-tuning steps, no contrastive pre-training and a detached joint
layer (the choices measured in BUILD_NOTES.md).
"""

import ml_collections

from configs import check_variant, default, small


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  check_variant("configs/ravdess.py", arg, ("small", "fer_av", "fer_av_dev"))
  c = default.get_config()
  c.data.name = "ravdess"
  c.data.root = "/data/RAVDESS"     # the folder holding Actor_01 ... Actor_24
  c.audio.sample_rate = 48000       # RAVDESS is recorded at 48 kHz
  c.split.num_folds = 6             # 4 actors per fold
  if arg in ("small", "fer_av", "fer_av_dev"):
    small.apply(c)
  if arg in ("fer_av", "fer_av_dev"):
    c.data.root = "../shared/data/ravdess_fer_av"
    c.split.test_speakers = tuple(f"Actor_{a:02d}" for a in range(15, 19))
    # One face photograph per clip: mirrored and shifted faces keep the video stream from
    # memorising the 208 training faces; it then needs more steps to fit (BUILD_NOTES.md).
    c.augment.update(dict(frames_flip=True, frames_shift=0.06))
    c.train.steps = 1000
    # Voice and face come from different people here, so pre-training has no real pairing to
    # learn; and a face stream that fits the training faces must not steer the voice stream.
    c.pretrain.steps = 0
    c.model.detach_joint = True
  if arg == "fer_av_dev":
    # The development protocol: 7 folds over actors 1-14 (2 per fold) for every choice of
    # recipe; actors 15-18 take no part, and results are reported on the full cross-validation.
    c.split.speakers = tuple(f"Actor_{a:02d}" for a in range(1, 15))
    c.split.test_speakers = ()
    c.split.num_folds = 7
    c.split.fold = -1
  return c
