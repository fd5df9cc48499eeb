"""Paper-scale LbHER (Algorithm 1): 44.1 kHz spectrograms 200x300, 20 faces of 60x100 per 3 s.

Base for every other config. Usage:
  python -m lbher_jax.main --config configs/default.py --workdir DIR --config.data.name=manifest \
      --config.data.root=/path/to/manifest.csv
"""

import ml_collections

from configs import check_variant
from lbher_jax.models import default_model_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  check_variant("configs/default.py", arg, ())
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = "demo"             # demo | iemocap | ravdess | cremad | manifest
  c.data.root = ""                 # corpus directory ("" = the built-in demo cache)
  c.data.options = ml_collections.ConfigDict()   # reader options, e.g. merge_excited
  c.data.workers = 2               # preprocessing processes
  c.data.per_shard = 16            # utterances per shard
  c.data.loader_workers = 0        # Grain worker processes (0 = in the training process)
  # Seed of the padding noise drawn in preprocessing (and predict). Separate from `seed`, which
  # drives the split, initialisation, data order and augmentation, so that every seed of a sweep
  # shares one set of shards.
  c.data.noise_seed = 0

  # Paper §3.3; fields are those of features.audio.AudioParams.
  c.audio = ml_collections.ConfigDict(dict(
      sample_rate=44100, segment_seconds=3.0, mode="segments", min_last_segment=1.0,
      bandpass_low=1.0, bandpass_high=30000.0, pad="noise", pad_snr=1.0, denoise=True,
      n_fft=2048, hop_length=512, db_limit=60.0, top_crop=0.6, height=200, width=300))
  # Paper §3.4; fields are those of features.video.VideoParams.
  c.video = ml_collections.ConfigDict(dict(
      frames_per_segment=20, height=60, width=100, face_detector="haar"))
  # Training batches only, inside the jitted step (fields of train.augment.AugmentParams):
  # spectrograms as in the paper (§3.3). Face-frame jitter (frames_flip / frames_shift, e.g.
  # True / 0.06) is ours and off here: the paper augments audio only (:fer_av turns it on).
  c.augment = ml_collections.ConfigDict(dict(
      enabled=True, crop_top=10, max_rotate_deg=10.0, frames_flip=False, frames_shift=0.0))

  c.split = ml_collections.ConfigDict()
  c.split.protocol = "speaker"     # speaker (speaker-independent folds) | random (paper)
  c.split.test_fraction = 0.2      # random protocol: 0.1, 0.2 or 0.3 as in Table 2
  c.split.num_folds = 5            # speaker protocol (IEMOCAP: one fold per session)
  c.split.fold = 0                 # which fold to test on; -1 = every fold, reported as mean ± std
  c.split.test_speakers = ()       # speaker protocol: fixed test speakers (one fold) instead
  c.split.speakers = ()            # only these speakers take part (() = all): development protocols
  c.split.train_speakers = 0       # speaker protocol: train on this many of a fold's training
                                   # speakers (0 = all): the learning curve over speakers
  c.split.val_fraction = 0.1       # validation carved from the training speakers / utterances
  c.split.balance = "resample"     # resample (paper: repeat minority, cut majority) | none
  c.split.per_class = 0            # 0 = the largest class's count after the split
  c.split.leaky_paper_oversampling = False   # paper's order (oversample, then split): leaky!
  # Semi-supervised (paper §3.5): fine-tuning reads the labels of only this class-stratified
  # fraction of the training clips; pre-training sees every training clip (needs
  # pretrain.use_labels=False, so that it reads none of their labels).
  c.split.label_fraction = 1.0

  c.model = default_model_config("hybrid", "paper")

  c.pretrain = ml_collections.ConfigDict(dict(
      steps=2000, batch_size=32, lr=3e-4, warmup_steps=100, weight_decay=1e-4, clip_norm=1.0,
      margin=1.0, pair_proportions=(0.5, 0.25, 0.25), loss="margin", temperature=0.1,
      use_labels=True,
      log_every=50, checkpoint_every=500, profile_steps=()))
  c.train = ml_collections.ConfigDict(dict(
      steps=4000, batch_size=32, lr=3e-4, warmup_steps=200, weight_decay=1e-4, clip_norm=1.0,
      aux_weight=1.0, log_every=50, checkpoint_every=500, keep_checkpoints=3,
      profile_steps=()))   # (first, last): a jax.profiler trace in WORKDIR/profile/
  # Which fine-tuned checkpoint evaluate/predict use: "best" by validation UA, or "latest".
  c.eval = ml_collections.ConfigDict(dict(batch_size=64, checkpoint="best"))
  # --mode sweep (lbher_jax/sweep.py): every model x protocol x seed x fold (split.fold=-1: all
  # folds). No models = the config's model; no protocols = the config's own split; protocol keys
  # are sweep.PROTOCOLS' (speaker, 90-10, 80-20, 70-30, paper-80-20).
  c.sweep = ml_collections.ConfigDict(dict(models=(), protocols=(), seeds=(0, 1, 2)))
  return c
