"""RAVDESS audio-video speech (24 actors), paper-scale; `:small` trains in minutes on a CPU.

  python -m lbher_jax.main --config configs/ravdess.py --workdir runs/ravdess \
      --config.data.root=/data/RAVDESS
  python -m lbher_jax.main --config configs/ravdess.py:small --workdir runs/ravdess_small ...
Actor-disjoint folds (config.split.fold=-1 runs all of them and reports mean ± std).
"""

import ml_collections

from configs import default, small


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = default.get_config()
  c.data.name = "ravdess"
  c.data.root = "/data/RAVDESS"     # the folder holding Actor_01 ... Actor_24
  c.audio.sample_rate = 48000       # RAVDESS is recorded at 48 kHz
  c.split.num_folds = 6             # 4 actors per fold
  if arg == "small":
    small.apply(c)
  return c
