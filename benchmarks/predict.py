"""Speed of `--mode predict` on one long video: wall time and real-time factor, end to end.

  python benchmarks/predict.py [--seconds 60] [--config configs/demo.py] [--json PATH]

Makes a synthetic talking-face video (the demo corpus's renderer) and a workdir whose fine-tuned
checkpoint holds randomly initialised weights of the config's model: speed does not depend on the
weights, so nothing is trained. Then it times
* in process: loading the checkpoint, the first predict_video call (cold: includes the JIT
  compilation of the model) and a second one (warm), and each stage of the second alone (probe,
  audio decode, spectrograms, frame decode + face crops, model);
* the command lines, start to finish (later runs find the first one's compiled model in the
  compilation cache): `python -m lbher_jax.main --mode predict` (the checkpoint and
  the training stack) and `python -m lbher_jax.predict EXPORT_DIR` (the `--mode export` artifact:
  only jax, numpy, OpenCV and ffmpeg loaded), that one five times more. Target: the median of
  those five <= 2.5 s for 60 s of video.
The real-time factor is seconds of work per second of video (< 1: faster than real time).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lbher_jax import inference, media, predict  # noqa: E402  pylint: disable=wrong-import-position
from lbher_jax.models import input_keys  # noqa: E402
from lbher_jax.features import audio as audio_features  # noqa: E402
from lbher_jax.features import video as video_features  # noqa: E402


def make_video(directory: Path, seconds: float) -> Path:
  """A `seconds`-long demo-style clip (128x128, 25 fps, H.264 + AAC) of one speaker."""
  from lbher_jax.datasets import demo  # pylint: disable=import-outside-toplevel
  speaker = demo._make_speaker(0, 0)  # pylint: disable=protected-access
  clip = demo._Clip(speaker, "anger", 0, round(seconds * demo.FPS) / demo.FPS,  # pylint: disable=protected-access
                    (0, 9, 0, 1, 0))
  (directory / speaker.name).mkdir(parents=True, exist_ok=True)
  demo._make_clip(clip, directory)  # pylint: disable=protected-access
  return directory / clip.file


def load_config(spec: str, face_detector: str):
  """The config of "configs/NAME.py[:ARG]" with the given face detector."""
  import importlib  # pylint: disable=import-outside-toplevel
  path, _, arg = spec.partition(":")
  config = importlib.import_module(f"configs.{Path(path).stem}").get_config(arg or None)
  config.video.face_detector = face_detector
  return config


def random_checkpoint(config, workdir: Path) -> None:
  """A fine-tuned checkpoint of random weights in workdir, as training would leave it."""
  import jax  # pylint: disable=import-outside-toplevel
  from lbher_jax.models import get_model  # pylint: disable=import-outside-toplevel
  from lbher_jax.train import checkpoint, state  # pylint: disable=import-outside-toplevel
  tx, _ = state.make_optimizer(lr=0.0, warmup_steps=0, total_steps=1, weight_decay=0.0,
                               clip_norm=1.0)
  shapes = {k: x.shape for k, x in inference.example_batch(config).items()}
  ckpt = checkpoint.Checkpointer(workdir / "checkpoints" / "finetune")
  ckpt.save(1, state.create(get_model(config.model), tx, shapes, jax.random.key(config.seed)))
  ckpt.close()


def _timed(fn, *args, **kwargs):
  began = time.perf_counter()
  out = fn(*args, **kwargs)
  return out, time.perf_counter() - began


def stages(path: Path, classify, audio_params, video_params) -> dict[str, float]:
  """Seconds of each stage of predict.segment_inputs + the model, run one after the other."""
  t = {}
  info, t["probe"] = _timed(media.require_streams, path, predict.STREAMS)
  bounds = audio_features.segment_bounds(info.duration, audio_params)
  rel = dataclasses.replace(audio_params, mode="segments")
  rng = np.random.default_rng(0)
  t.update(audio_decode=0.0, spectrogram=0.0, frames=0.0, model=0.0)
  for i in range(0, len(bounds), predict.CHUNK_SEGMENTS):
    part = bounds[i:i + predict.CHUNK_SEGMENTS]
    start, end = part[0][0], part[-1][1]
    wave, dt = _timed(media.decode_audio, path, audio_params.sample_rate, start, end)
    t["audio_decode"] += dt
    began = time.perf_counter()
    spec = np.stack([audio_features.spectrogram_segments(
        wave[int((a - start) * rel.sample_rate):int((b - start) * rel.sample_rate)], rel, rng)[0]
                     for a, b in part])
    t["spectrogram"] += time.perf_counter() - began
    (frames, _), dt = _timed(video_features.segment_frames, path, part, None, video_params)
    t["frames"] += dt
    _, dt = _timed(classify.heads, {"audio": spec.astype(np.float32), "video": frames})
    t["model"] += dt
  return {k: round(v, 3) for k, v in t.items()}


def main_cli(config_spec: str, overrides: list[str], workdir: Path, *args: str) -> list[str]:
  return [sys.executable, "-m", "lbher_jax.main", f"--config={config_spec}",
          f"--workdir={workdir}", *args, *(f"--config.{o}" for o in overrides)]


def cli_run(cmd: list[str]) -> float:
  """Seconds that the command takes, start to finish."""
  began = time.perf_counter()
  done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
  seconds = time.perf_counter() - began
  if done.returncode != 0:
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
  return round(seconds, 3)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--seconds", type=float, default=60.0, help="length of the test video")
  parser.add_argument("--config", default="configs/demo.py", help="config file[:arg]")
  parser.add_argument("--face-detector", default="haar", choices=("haar", "none"),
                      help="haar: as for real videos; none: the demo's fixed central crop")
  parser.add_argument("--no-cli", action="store_true", help="skip the command-line timings")
  parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
  args = parser.parse_args()

  overrides = [f"video.face_detector={args.face_detector}"]
  config = load_config(args.config, args.face_detector)
  audio_params = audio_features.AudioParams(**config.audio.to_dict())
  video_params = video_features.VideoParams(**config.video.to_dict())
  with tempfile.TemporaryDirectory(prefix="lbher_bench_") as tmp:
    tmp = Path(tmp)
    video, made_s = _timed(make_video, tmp / "video", args.seconds)
    duration = media.probe(video).duration
    workdir = tmp / "work"
    random_checkpoint(config, workdir)
    load_avg = os.getloadavg()
    heads, load_s = _timed(inference.load_classifier, config, workdir, predict.CHUNK_SEGMENTS)
    classify = predict.Classifier(input_keys(config.model.name), heads)
    call = lambda: predict.predict_video(video, classify, audio_params, video_params,
                                         seed=config.seed)
    result, cold_s = _timed(call)
    _, warm_s = _timed(call)
    breakdown = stages(video, classify, audio_params, video_params)
    cli = {}
    if not args.no_cli:
      checkpoint_cmd = main_cli(args.config, overrides, workdir, "--mode=predict",
                                f"--video={video}")
      cli["checkpoint_first_s"] = cli_run(checkpoint_cmd)
      cli["checkpoint_second_s"] = cli_run(checkpoint_cmd)
      cli_run(main_cli(args.config, overrides, workdir, "--mode=export"))
      export_cmd = [sys.executable, "-m", "lbher_jax.predict", str(workdir / "export"),
                    str(video), "--output", str(tmp / "from_export.json")]
      cli["export_first_s"] = cli_run(export_cmd)
      cli["export_later_s"] = [cli_run(export_cmd) for _ in range(5)]
      cli["export_later_median_s"] = float(np.median(cli["export_later_s"]))
      cli["real_time_factor_export_later"] = round(cli["export_later_median_s"] / duration, 4)
  import jax  # pylint: disable=import-outside-toplevel
  figures = {
      "video_seconds": round(duration, 3), "segments": len(result["segments"]),
      "video_size": "128x128 @ 25 fps (H.264 + AAC)", "config": args.config,
      "model": config.model.name, "face_detector": args.face_detector,
      "weights": "random (speed does not depend on them)",
      "make_video_s": round(made_s, 2), "load_checkpoint_s": round(load_s, 3),
      "cold_s": round(cold_s, 3), "warm_s": round(warm_s, 3),
      "real_time_factor_cold": round(cold_s / duration, 4),
      "real_time_factor_warm": round(warm_s / duration, 4),
      "warm_stages_s": breakdown, "cli": cli,
      "target": "60 s of video in <= 3 s in process (real-time factor <= 0.05); the fast "
                "command line (export, median of the runs after the first) <= 2.5 s",
      "loadavg_before": [round(x, 2) for x in load_avg],
      "loadavg_after": [round(x, 2) for x in os.getloadavg()],
      "cpu_count": os.cpu_count(), "platform": platform.platform(),
      "jax": jax.__version__, "backend": jax.default_backend(),
  }
  print(json.dumps(figures, indent=1))
  if args.json:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
  main()
