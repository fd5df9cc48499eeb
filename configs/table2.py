"""Table 2 of the paper as a sweep: models cnn, cnn_lstm, cnn_rnn and hybrid under the random
90/10, 80/20 and 70/30 splits and the speaker-independent split, each cell over seeds with its
95 % interval.

  python -m lbher_jax.main --config configs/table2.py[:small|:tiny] --workdir DIR --mode sweep

writes DIR/runs/<model>/<protocol>/seed_<s>/fold_<k>/ (one Algorithm 1 run each, on shards made
once in DIR/shards), DIR/sweep.{json,md,csv}, DIR/table2.md, DIR/table2.csv and
DIR/figures/table2.png (lbher_jax/sweep.py).
  (none)  paper scale (a GPU); set the corpus with --config.data.name / --config.data.root.
  small   the built-in demo corpus on a CPU: 60 pre-training (hybrid) and 200 fine-tuning steps per
          run, fewer than configs/demo.py's 150 + 500, so the whole sweep fits in CPU minutes;
          the audio models converge in that budget, the hybrid does not quite.
  tiny    seconds, for the tests.
The speaker-independent column uses the config's fold (split.fold, default 0); set
--config.split.fold=-1 to test every clip once per seed there as well.
"""

import ml_collections

from configs import check_variant, default, demo


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The sweep's base config (each run changes only the model, the split and the seed)."""
  check_variant("configs/table2.py", arg, ("small", "tiny"))
  if arg is None:
    c = default.get_config()
  else:
    c = demo.get_config("tiny" if arg == "tiny" else None)
  if arg == "small":
    c.pretrain.update(dict(steps=60, checkpoint_every=30))
    c.train.update(dict(steps=200, warmup_steps=20, checkpoint_every=100))
  if arg == "tiny":
    # Two clips per speaker and emotion, so that a 10 % test split still holds a clip of each
    # class (the demo cache keeps one folder per generator setting).
    c.data.demo.clips_per_emotion = 2
    c.pretrain.update(dict(steps=2, checkpoint_every=2))
    c.train.update(dict(steps=2, log_every=1, checkpoint_every=2))
  c.sweep.models = ("cnn", "cnn_lstm", "cnn_rnn", "hybrid")
  c.sweep.protocols = ("90-10", "80-20", "70-30", "speaker")
  c.sweep.seeds = (0,) if arg == "tiny" else (0, 1, 2)
  return c
