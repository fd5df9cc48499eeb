"""IEMOCAP (the paper's corpus), paper-scale; `:small` trains in minutes on a CPU.

  python -m lbher_jax.main --config configs/iemocap.py --workdir runs/iemocap \
      --config.data.root=/data/IEMOCAP_full_release
Leave-one-session-out folds (5); config.split.fold=-1 runs them all (mean ± std).
The paper's own protocol (random 80/20 after oversampling: leaky) is
  --config.split.protocol=random --config.split.leaky_paper_oversampling=True
and is labelled LEAKY in every report.
"""

import ml_collections

from configs import check_variant, default, small


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  check_variant("configs/iemocap.py", arg, ("small",))
  c = default.get_config()
  c.data.name = "iemocap"
  c.data.root = "/data/IEMOCAP_full_release"   # holds Session1 ... Session5
  c.data.options.merge_excited = True          # exc -> happy, as is usual for 4-class IEMOCAP
  c.split.num_folds = 5
  if arg == "small":
    small.apply(c)
  return c
