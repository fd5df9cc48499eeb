"""Table 2 of the paper: models cnn, cnn_lstm, cnn_rnn and hybrid under the random 90/10, 80/20 and
70/30 splits and the speaker-independent split, each trained and evaluated in its own directory.

  python -m lbher_jax.main --config configs/table2.py[:small|:tiny] --workdir DIR

writes DIR/<model>/<protocol>/ (one Algorithm 1 run each, on shards made once in DIR/shards),
DIR/table2.md, DIR/table2.csv and DIR/figures/table2.png (lbher_jax/table2.py).
  (none)  paper scale (a GPU); set the corpus with --config.data.name / --config.data.root.
  small   the built-in demo corpus on a CPU: 60 pre-training (hybrid) and 200 fine-tuning steps per
          run, fewer than configs/demo.py's 150 + 500, so the whole sweep fits in CPU minutes;
          the audio models converge in that budget, the hybrid does not quite.
  tiny    seconds, for the tests.
"""

import ml_collections

from configs import check_variant, default, demo


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The sweep's base config (each run changes only the model and the split) plus `table2`."""
  check_variant("configs/table2.py", arg, ("small", "tiny"))
  if arg is None:
    c = default.get_config()
  else:
    c = demo.get_config("tiny" if arg == "tiny" else None)
  if arg == "small":
    c.pretrain.update(dict(steps=60, checkpoint_every=30))
    c.train.update(dict(steps=200, warmup_steps=20, eval_every=100))
  if arg == "tiny":
    # Two clips per speaker and emotion, so that a 10 % test split still holds a clip of each
    # class (the demo cache keeps one folder per generator setting).
    c.data.demo.clips_per_emotion = 2
    c.pretrain.update(dict(steps=2, checkpoint_every=2))
    c.train.update(dict(steps=2, log_every=1, eval_every=2))
  c.table2 = ml_collections.ConfigDict(dict(
      models=("cnn", "cnn_lstm", "cnn_rnn", "hybrid"),
      protocols=("90-10", "80-20", "70-30", "speaker")))
  return c
