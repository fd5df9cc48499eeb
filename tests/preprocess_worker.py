"""One process of test_multiprocess's sharded preprocessing: joins a multi-process job (or runs
alone), preprocesses the tiny demo corpus at CACHE into OUT_DIR with its share of the shard plan,
and prints the shard ids it made itself as JSON.

usage: python preprocess_worker.py CACHE OUT_DIR
"""

import json
import os
import sys
from pathlib import Path

os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from lbher_jax.data import preprocess  # noqa: E402
from lbher_jax.datasets import demo  # noqa: E402
from lbher_jax.features import audio, video  # noqa: E402
from lbher_jax.train import mesh as mesh_lib  # noqa: E402

TINY = dict(num_speakers=3, clips_per_emotion=1, min_duration=1.2, max_duration=2.4)


def main(cache: str, out_dir: str) -> None:
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  mesh_lib.initialize_distributed()
  made = []
  process_shard = preprocess._process_shard  # pylint: disable=protected-access

  def noting(task):
    made.append(task[0])
    return process_shard(task)

  preprocess._process_shard = noting  # pylint: disable=protected-access
  settings = preprocess.Settings(
      audio.AudioParams(sample_rate=16000, n_fft=256, hop_length=128, height=8, width=12,
                        pad="zeros", bandpass_high=7000.0),
      video.VideoParams(frames_per_segment=2, height=8, width=10, face_detector="none"))
  utterances = demo.read(Path(cache), **TINY)
  preprocess.preprocess(utterances, Path(out_dir), settings, corpus={"tiny": 1}, workers=1,
                        per_shard=2, rejects_path=Path(out_dir) / "rejects.jsonl",
                        share=(jax.process_index(), jax.process_count()),
                        barrier=multihost_utils.sync_global_devices)
  print(json.dumps({"process": jax.process_index(), "made": made}))


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2])
