"""Algorithm 1 of the paper (LbHER) as a readable sequence of calls.

  D' <- Preprocess(D); (T1, T2) <- SplitData(D'); m' <- TrainModel(T1) (contrastive pre-training,
  then cross-entropy fine-tuning); save m'; load m'; R <- RecognizeEmotions(T2, m');
  P <- Evaluate(R, ground truth); display R and P.

Every stage resumes: finished shards, checkpoints and results are reused, never recomputed.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from lbher_jax import LABELS, STREAMS, answering_output, datasets, files, inference, provenance
from lbher_jax.data import loader as loader_lib
from lbher_jax.data import preprocess as preprocess_lib
from lbher_jax.data import splits as splits_lib
from lbher_jax.evaluation import calibration, correspondence
from lbher_jax.evaluation import metrics as metrics_lib
from lbher_jax.evaluation import plots, report
from lbher_jax.features import audio as audio_features
from lbher_jax.features import video as video_features
from lbher_jax.models import get_model, input_keys
from lbher_jax.train import augment, loop
from lbher_jax.train import mesh as mesh_lib

SHARDS = "shards"


def settings(config: ml_collections.ConfigDict) -> preprocess_lib.Settings:
  return preprocess_lib.Settings(
      audio=audio_features.AudioParams(**config.audio.to_dict()),
      video=video_features.VideoParams(**config.video.to_dict()), seed=config.data.noise_seed)


def read_corpus(config: ml_collections.ConfigDict, workdir: Path) -> list[datasets.Utterance]:
  """The corpus as utterances; statistics go to the log and to WORKDIR/corpus_stats.json."""
  options = reader_options(config)
  root = config.data.root or _default_root(config.data.name, options)
  utterances, stats = datasets.read_with_stats(config.data.name, root, **options)
  if jax.process_index() == 0:
    files.atomic_write_json(workdir / "corpus_stats.json", stats)
  return utterances


def reader_options(config: ml_collections.ConfigDict) -> dict:
  """config.data.options, plus the demo generator's settings when the corpus is the demo."""
  options = config.data.options.to_dict()
  if config.data.name == "demo" and "demo" in config.data:
    options.update(config.data.demo.to_dict())
  return options


def _default_root(name: str, options: dict) -> str:
  if name != "demo":
    raise datasets.CorpusError(f"config.data.root is empty: say where the {name} corpus is "
                               "(--config.data.root=PATH)")
  from lbher_jax.datasets import demo  # pylint: disable=import-outside-toplevel
  return str(demo.default_root(**options))


def preprocess(config, utterances, workdir: Path) -> list[dict]:
  """D' <- Preprocess(D): shards of spectrogram segments and face frames (paper §3.3, §3.4)."""
  corpus = {"name": config.data.name, "root": str(config.data.root),
            "options": reader_options(config)}
  preprocess_lib.preprocess(utterances, _shards_dir(workdir), settings(config), corpus=corpus,
                            workers=config.data.workers, per_shard=config.data.per_shard,
                            rejects_path=workdir / "rejects.jsonl",
                            share=(jax.process_index(), jax.process_count()),
                            barrier=multihost_utils.sync_global_devices)
  return preprocess_lib.load_records(_shards_dir(workdir))


def taking_part(config, utterances: list[datasets.Utterance]) -> list[datasets.Utterance]:
  """The utterances of the speakers in config.split.speakers (every speaker when empty).

  Applied after preprocessing, so a development protocol (e.g. folds over RAVDESS actors 1-14)
  shares the shards of the full one and never sees the speakers it leaves out.
  """
  wanted = set(config.split.speakers)
  if not wanted:
    return utterances
  unknown = sorted(wanted - {u.speaker for u in utterances})
  if unknown:
    raise datasets.CorpusError(f"config.split.speakers {unknown} are not speakers of this corpus")
  return [u for u in utterances if u.speaker in wanted]


@dataclasses.dataclass(frozen=True)
class Parts:
  """Row records of each side of one split (training rows already balanced). `pretrain` are the
  rows contrastive pre-training reads: every training clip, labeled or not."""
  train: list[dict]
  val: list[dict]
  test: list[dict]
  leaky: bool
  pretrain: list[dict]


def split(config, utterances, records: list[dict], fold: int) -> Parts:
  """(T1, T2) <- SplitData(D'): by speaker by default; balancing after the split, training only."""
  s = config.split
  kept = {r["utt"] for r in records}   # rejected files are not part of the data
  usable = [u for u in utterances if u.id in kept]
  parts = splits_lib.make_split(
      usable, protocol=s.protocol, test_fraction=s.test_fraction, num_folds=s.num_folds,
      fold=fold, val_fraction=s.val_fraction, seed=config.seed,
      leaky_paper_oversampling=s.leaky_paper_oversampling, per_class=s.per_class or None,
      test_speakers=tuple(s.test_speakers), train_speakers=s.train_speakers)
  label = {u.id: u.label for u in usable}
  # Training and validation read only clips that hold every stream the model reads (a stream a
  # clip lacks is zeros, nothing to learn from); the test side keeps them all.
  inputs = input_keys(config.model.name)
  lacking = {u for u, held in zip((r["utt"] for r in records),
                                  streams_used(records, inputs)) if held != inputs}
  pretrain_ids = train_ids = [i for i in parts.train if i not in lacking]
  val_ids = [i for i in parts.val if i not in lacking]
  if s.label_fraction < 1:
    # Semi-supervised: fine-tuning reads the labels of this stratified part of the training
    # clips only; pre-training sees them all, unlabeled and unbalanced.
    train_ids = splits_lib.labeled_subset(train_ids, [label[i] for i in train_ids],
                                          s.label_fraction, seed=config.seed)
  if not parts.leaky:
    balance = lambda ids: splits_lib.balance(ids, [label[i] for i in ids], method=s.balance,
                                             per_class=s.per_class or None, seed=config.seed)
    train_ids = balance(train_ids)
    if s.label_fraction == 1:
      pretrain_ids = train_ids
  by_utt: dict[str, list[dict]] = {}
  for r in records:
    by_utt.setdefault(r["utt"], []).append(r)
  rows = lambda ids: [r for i in ids for r in by_utt[i]]
  return Parts(rows(train_ids), rows(val_ids), rows(parts.test), parts.leaky,
               rows(pretrain_ids))


def train(config, parts: Parts, workdir: Path, mesh, *, phases=("pretrain", "finetune")):
  """m' <- TrainModel(T1): contrastive pre-training (two-stream models), then fine-tuning."""
  model = get_model(config.model)
  shards_dir = _shards_dir(workdir)
  source = loader_lib.source_from_records(shards_dir, parts.train)
  # Pre-training batches carry each segment's span, which time-keeping embeddings align by.
  pretrain_source = loader_lib.source_from_records(shards_dir, parts.pretrain,
                                                   config.audio.segment_seconds)
  augment_params = augment.AugmentParams(**config.augment.to_dict())
  variables = None
  pretrains = config.model.name == "hybrid" and config.pretrain.steps > 0
  # Fine-tuning alone (--mode train) starts from a finished pre-training when there is one: the
  # pre-training phase then only restores its last checkpoint.
  if pretrains and ("pretrain" in phases
                    or loop.finished_step(workdir, "pretrain") == config.pretrain.steps):
    val_rows, last = parts.val, {}
    def validate_pretrain(state):   # held-out audio-visual correspondence, every checkpoint
      m = pretraining_metrics(model, state, shards_dir, val_rows, mesh, config.eval.batch_size,
                              config.audio.segment_seconds)
      last.update({f"val_{k}": m[k] for k in CORRESPONDENCE_KEYS if m[k] is not None})
      return dict(last)
    state = loop.run_phase(
        phase=_phase("pretrain", config.pretrain), model=model, mesh=mesh,
        source=pretrain_source,
        augment_params=augment_params, workdir=workdir, seed=config.seed,
        validate=validate_pretrain if val_rows else None,
        loader_workers=config.data.loader_workers)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    if last:
      _warn_if_collapsed(last, "validation")
  if "finetune" not in phases:
    return None
  if variables is not None:
    logging.info("finetune: starting from the pre-trained weights and BatchNorm statistics")
  elif pretrains:
    logging.warning("finetune: no finished pre-training in %s; starting from random weights",
                    workdir)
  validate = _validator(model, mesh, shards_dir, parts.val, config.eval.batch_size)
  return loop.run_phase(
      phase=_phase("finetune", config.train), model=model, mesh=mesh, source=source,
      augment_params=augment_params, workdir=workdir, seed=config.seed, validate=validate,
      init_variables=variables, loader_workers=config.data.loader_workers)


def _validator(model, mesh, shards_dir: Path, val: list[dict], batch_size: int):
  """state -> the validation clips' accuracy and UA, for choosing the best checkpoint; None
  without validation clips."""
  if not val:
    return None
  source = loader_lib.source_from_records(shards_dir, val)
  eval_step = inference.compile_eval_step(model, mesh)

  def validate(state) -> dict[str, float]:
    probs = inference.predict(model, state, source, mesh, batch_size, eval_step)
    m = clip_metrics(val, probs)
    return {"val_accuracy": m["accuracy"], "val_unweighted_accuracy": m["unweighted_accuracy"]}
  return validate


CORRESPONDENCE_KEYS = ("auc_all", "auc_same_emotion", "top1_all", "top1_same_emotion",
                       "candidates")


def pretraining_metrics(model, state, shards_dir: Path, rows: list[dict], mesh,
                        batch_size: int, window_seconds: float) -> dict:
  """Audio-visual correspondence of those of `rows` that hold both streams, under the model's
  current weights (evaluation/correspondence.py), plus the unit-embedding distances for the
  figure. `window_seconds`: the spectrogram window (config.audio.segment_seconds)."""
  rows = [r for r, held in zip(rows, streams_used(rows, STREAMS)) if held == STREAMS]
  source = loader_lib.source_from_records(shards_dir, rows, window_seconds)
  audio, video = inference.embeddings(model, state, source, mesh, batch_size)
  labels = np.array([r["label_id"] for r in rows])
  clips = np.array([r["utt"] for r in rows])
  d = correspondence.distances(audio, video)
  result = correspondence.from_distances(d, labels, clips)
  result["_distances"] = correspondence.distance_groups(d, labels, clips)
  return result


def _warn_if_collapsed(metrics: dict, where: str) -> None:
  auc = metrics.get("val_auc_all", metrics.get("auc_all"))
  if auc is not None and auc < correspondence.COLLAPSE_AUC:
    logging.warning("pretrain: collapsed: on the %s speakers a clip's own video is no nearer "
                    "to its audio than other clips' videos (auc_all %.3f < %.2f; chance 0.5), "
                    "so pre-training learned no audio-visual correspondence", where, auc,
                    correspondence.COLLAPSE_AUC)


def _phase(name: str, c) -> loop.PhaseConfig:
  """The PhaseConfig of config.pretrain / config.train (config_checks.check refuses other keys)."""
  values = c.to_dict()
  for key in ("pair_proportions", "profile_steps"):
    if key in values:
      values[key] = tuple(values[key])
  return loop.PhaseConfig(name=name, **values)


def _is_fold(workdir: Path) -> bool:
  return workdir.name.startswith("fold_")


def _shards_dir(workdir: Path) -> Path:
  return (workdir.parent if _is_fold(workdir) else workdir) / SHARDS


def clip_metrics(rows: list[dict], probs: np.ndarray) -> dict:
  """Clip-level metrics: a clip's segment probabilities are averaged, then the argmax taken."""
  ids, clip_probs = metrics_lib.clip_probabilities(probs, [r["utt"] for r in rows])
  true = {r["utt"]: r["label_id"] for r in rows}
  y_true = np.array([true[i] for i in ids])
  cm = metrics_lib.confusion_matrix(y_true, clip_probs.argmax(-1), len(LABELS))
  return metrics_lib.classification_metrics(cm, LABELS)


def streams_used(rows: list[dict], streams: tuple[str, ...]) -> list[tuple[str, ...]]:
  """The streams of `streams` that each segment holds (its record's `has_audio`, `has_video`;
  shards written before `has_audio` existed hold only clips with audio). A clip whose
  frames the face detector found no face in keeps its video: on face photographs that fill the
  frame the Haar detector misses 56 of the 306 ravdess_fer_av segments, and the fixed crop there
  is still the face (predict, on arbitrary video, does drop such segments to the voice)."""
  held = lambda r, s: r.get("has_audio", True) if s == "audio" else r["has_video"]
  return [tuple(s for s in streams if held(r, s)) for r in rows]


def from_streams_used(probs: np.ndarray, heads: dict[str, np.ndarray],
                      used: list[tuple[str, ...]]) -> np.ndarray:
  """`probs` [N, 4] of a model's output, with the row of each segment that holds one stream only
  taken from that stream's own output layer (`heads`: "audio_probs" / "video_probs") when the
  model has one."""
  out = probs.copy()
  for k, u in enumerate(used):
    if (name := answering_output(u, heads)) != "probs":
      out[k] = heads[name][k]
  return out


def _head_summary(metrics: dict) -> dict:
  keys = ("accuracy", "unweighted_accuracy", "macro_f1", "weighted_f1", "confusion_matrix")
  return {k: metrics[k] for k in keys}


def calibrate(model, state, parts: Parts, workdir: Path, mesh, batch_size: int) -> float:
  """Fits the output temperature on the validation speakers' segments (1.0 without any) and
  saves it as WORKDIR/calibration.json, which predict and export then apply."""
  temperature, n = 1.0, 0
  if parts.val:
    source = loader_lib.source_from_records(_shards_dir(workdir), parts.val)
    step = inference.compile_eval_step(model, mesh, logits=True)
    logits = inference.predict_heads(model, state, source, mesh, batch_size, step)["logits"]
    labels = np.array([r["label_id"] for r in parts.val])
    temperature, n = calibration.fit_temperature(logits, labels), len(labels)
  if jax.process_index() == 0:
    files.atomic_write_json(workdir / calibration.FILE,
                            {"temperature": temperature, "fitted_on_segments": n,
                             "step": int(state.step)})
  return temperature


def evaluate(config, parts: Parts, workdir: Path, mesh) -> dict:
  """Load m'; R <- RecognizeEmotions(T2, m'); P <- Evaluate(R); display R and P; write outputs."""
  model = get_model(config.model)
  source = loader_lib.source_from_records(_shards_dir(workdir), parts.test)
  example = source[0]
  batch_shapes = {k: (config.eval.batch_size, *np.shape(v)) for k, v in example.items()}
  state = inference.restore(model, mesh, workdir, batch_shapes,
                            prefer_best=config.eval.checkpoint == "best")
  temperature = calibrate(model, state, parts, workdir, mesh, config.eval.batch_size)
  heads = inference.predict_heads(model, state, source, mesh, config.eval.batch_size,
                                  inference.compile_eval_step(model, mesh, heads=True,
                                                              logits=True))
  logits, uncalibrated = heads.pop("logits"), heads.pop("probs")
  probs = calibration.softmax(logits, temperature).astype(np.float32)
  used = streams_used(parts.test, input_keys(config.model.name))
  probs, uncalibrated = (from_streams_used(p, heads, used) for p in (probs, uncalibrated))
  ids, clip_probs = metrics_lib.clip_probabilities(probs, [r["utt"] for r in parts.test])
  meta = {r["utt"]: r for r in parts.test}
  rows = [{"id": i, "speaker": meta[i]["speaker"], "true": meta[i]["label"],
           "pred": LABELS[int(p.argmax())], "confidence": float(p.max()), "probs": p.tolist()}
          for i, p in zip(ids, clip_probs)]
  result = clip_metrics(parts.test, probs)
  clip_labels = np.array([meta[i]["label_id"] for i in ids])
  _, clip_uncalibrated = metrics_lib.clip_probabilities(uncalibrated,
                                                        [r["utt"] for r in parts.test])
  result["calibration"] = {
      "temperature": temperature, "bins": calibration.ECE_BINS,
      "ece_before": calibration.expected_calibration_error(clip_uncalibrated, clip_labels),
      "ece_after": calibration.expected_calibration_error(clip_probs, clip_labels)}
  result["modalities"] = dict(collections.Counter(
      "+".join(u) or "none" for u in {r["utt"]: u for r, u in zip(parts.test, used)}.values()))
  result.update(protocol=config.split.protocol, model=config.model.name, leaky=parts.leaky,
                num_test_segments=len(parts.test), stack=provenance.stack(),
                devices=_devices())
  distances = None
  if (config.model.name == "hybrid" and config.pretrain.steps > 0
      and loop.finished_step(workdir, "pretrain") is not None):
    pretrained = inference.restore(model, mesh, workdir, batch_shapes, phase="pretrain",
                                   prefer_best=False)
    m = pretraining_metrics(model, pretrained, _shards_dir(workdir), parts.test, mesh,
                            config.eval.batch_size, config.audio.segment_seconds)
    distances = m.pop("_distances")
    result["pretraining"] = m
    _warn_if_collapsed(m, "test")
  if heads and config.train.aux_weight > 0:
    # Each stream's own output layer (trained when aux_weight > 0): what audio and video give
    # alone inside this model.
    result["heads"] = {key.removesuffix("_probs"): _head_summary(clip_metrics(parts.test, p))
                       for key, p in heads.items()}
  if jax.process_index() == 0:
    print(report.format_results(rows))
    print(report.format_statistics(result))
    report.write_predictions_csv(workdir / "predictions.csv", rows)
    report.write_results_json(workdir / "results.json", result)
    figures = workdir / "figures"
    figures.mkdir(exist_ok=True)
    plots.plot_confusion_matrix(np.array(result["confusion_matrix"]), LABELS,
                                figures / "confusion_matrix.png")
    plots.plot_per_class(result, figures / "per_class.png")
    if (workdir / "metrics.jsonl").exists():
      plots.plot_training_curves(workdir / "metrics.jsonl", figures / "training_curves.png")
    if distances is not None:
      plots.plot_pair_distances(distances, figures / "pretraining_distances.png")
    plots.plot_reliability(calibration.reliability(clip_uncalibrated, clip_labels),
                           calibration.reliability(clip_probs, clip_labels), temperature,
                           figures / "reliability.png")
    report.write_report_md(workdir / "report.md", result, title=f"LbHER {config.model.name}")
  return result


def run(config: ml_collections.ConfigDict, workdir: Path, mode: str = "all") -> dict | None:
  """Runs Algorithm 1 (mode "all") or one stage of it in `workdir`, resuming what is done."""
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  logging.info("software: %s; devices: %s", provenance.describe(provenance.stack()), _devices())
  utterances = read_corpus(config, workdir)
  records = preprocess(config, utterances, workdir)
  if mode == "preprocess":
    return None
  utterances = taking_part(config, utterances)
  mesh = mesh_lib.make_mesh()
  s = config.split
  folds = (range(splits_lib.num_folds_for(utterances, s.protocol, s.num_folds,
                                          tuple(s.test_speakers)))
           if config.split.fold < 0 else [config.split.fold])
  results = []
  for fold in folds:
    fold_dir = workdir / f"fold_{fold}" if config.split.fold < 0 else workdir
    fold_dir.mkdir(exist_ok=True)
    parts = split(config, utterances, records, fold)
    _record_split(fold_dir, parts)
    results_path = fold_dir / "results.json"
    if mode in ("all", "pretrain", "train"):
      phases = {"all": ("pretrain", "finetune"), "pretrain": ("pretrain",),
                "train": ("finetune",)}[mode]
      if mode == "all" and results_path.exists():
        logging.info("fold %d: finished earlier; reporting the saved results", fold)
      else:
        train(config, parts, fold_dir, mesh, phases=phases)
    if mode in ("all", "evaluate"):
      if mode == "all" and results_path.exists():
        result = json.loads(results_path.read_text())
        print(report.format_statistics(result))
      else:
        result = evaluate(config, parts, fold_dir, mesh)
      results.append(result)
  if len(results) > 1 and jax.process_index() == 0:
    # Top level: every fold's test clips pooled (the contract fields); then per fold, mean ± std.
    pooled = np.sum([np.array(r["confusion_matrix"]) for r in results], axis=0)
    summary = {**metrics_lib.classification_metrics(pooled, LABELS),
               "protocol": config.split.protocol, "model": config.model.name,
               "leaky": any(r.get("leaky") for r in results), "stack": provenance.stack(),
               "devices": _devices(),
               "aggregate": metrics_lib.aggregate_folds(results), "folds": results}
    files.atomic_write_json(workdir / "results.json", summary)
    report.write_report_md(workdir / "report.md", summary, title="LbHER, all folds")
  return results[0] if len(results) == 1 else None


def _devices() -> str:
  """'4 x cpu (cpu)': how many devices of which kind this process computed on."""
  devices = jax.devices()
  return f"{len(devices)} x {devices[0].device_kind} ({devices[0].platform})"


def _record_split(fold_dir: Path, parts: Parts) -> None:
  """Writes the split's utterance ids; a resumed run must see the same split."""
  ids = {side: sorted({r["utt"] for r in getattr(parts, side)}) for side in ("train", "val",
                                                                          "test")}
  path = fold_dir / "split.json"
  if path.exists() and json.loads(path.read_text()) != ids:
    raise preprocess_lib.PreprocessError(
        f"{path}: this workdir was trained on another split (config changed?); use a new --workdir")
  if jax.process_index() == 0:
    files.atomic_write_json(path, ids)
