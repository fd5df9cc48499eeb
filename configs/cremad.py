"""CREMA-D (91 actors; ANG, HAP, SAD, NEU), paper-scale; `:small` trains in minutes on a CPU.

  python -m lbher_jax.main --config configs/cremad.py --workdir runs/cremad \
      --config.data.root=/data/CREMA-D
Audio comes from AudioWAV/ when present, else from the .flv itself. Actor-disjoint folds.
"""

import ml_collections

from configs import check_variant, default, small


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  check_variant("configs/cremad.py", arg, ("small",))
  c = default.get_config()
  c.data.name = "cremad"
  c.data.root = "/data/CREMA-D"     # holds VideoFlash/ (and AudioWAV/)
  c.audio.sample_rate = 16000       # CREMA-D audio is 16 kHz
  c.audio.bandpass_high = 7900.0
  c.audio.top_crop = 0.0            # 16 kHz already ends at 8 kHz, the paper's cut-off
  c.split.num_folds = 5
  if arg == "small":
    small.apply(c)
  return c
