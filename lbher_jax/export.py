"""Export a trained model as a self-contained inference function (`jax.export`), and load it back.

An export directory holds two files:
* `model.jaxexport`: the serialized StableHLO of `batch -> {"probs": [B, num_labels], ...}` (class
  probabilities of the model's output and, for a two-stream model, of each stream's own output
  layer, "audio_probs" / "video_probs"), with the model variables baked in as constants, lowered
  with a symbolic batch size `b` (any batch works) for CPU and for the platform it was exported
  on. Loading needs only jax and numpy: no model code, no Flax, no checkpoint, no pickle.
* `model.json`: labels, input names / shapes (null = batch) / dtypes, the outputs, and the
  preprocessing settings (audio and video parameter dicts) that make those inputs from a video.

Baking the variables in rather than shipping them in a separate array file keeps the artifact one
function whose argument is just the batch; the cost is that it is as large as the variables, and
a new set of weights needs a new export. jax.export guarantees that a serialized function loads in
jax releases of the following 6 months at least.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lbher_jax import LABELS, files

# jax is imported by the functions that use it: `read_metadata` needs none, so that
# `python -m lbher_jax.predict` can start decoding a video while jax loads beside it.

MODEL_FILE = "model.jaxexport"
META_FILE = "model.json"
FORMAT = "lbher_jax.export/2"


def _jsonable(value: Any) -> Any:
  """JSON form of the settings objects a config holds (dataclasses, ConfigDicts, numpy scalars)."""
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return dataclasses.asdict(value)
  if hasattr(value, "to_dict"):
    return value.to_dict()
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, Path):
    return str(value)
  raise TypeError(f"{type(value).__name__} cannot be written to {META_FILE}")


def export_model(apply_fn: Callable[[Any, Mapping[str, Any]], Mapping[str, Any]],
                 variables: Any,
                 example_batch: Mapping[str, np.ndarray], path: str | Path, *,
                 labels: Sequence[str] = LABELS,
                 preprocessing: Mapping[str, Any],
                 source: Mapping[str, Any] | None = None) -> Path:
  """Writes `path`/model.jaxexport and `path`/model.json; returns `path`.

  `preprocessing` ({"audio": ..., "video": ...}; values may be dicts, dataclasses or ConfigDicts)
  is stored as JSON so that a user can rebuild the inputs the way training built them; `source`
  (JSON values: where the variables came from) is stored as it is.

  `apply_fn(variables, batch)` returns {"probs": [B, len(labels)], ...}: class probabilities of
  one or more output layers, all of that shape; `example_batch` holds
  exactly the model inputs (its dtypes and per-example shapes are fixed, its batch size is not).
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.export  # pylint: disable=import-outside-toplevel
  path = Path(path)
  inputs = {name: np.asarray(x) for name, x in example_batch.items()}
  host_variables = jax.device_get(variables)  # numpy leaves: become constants, bound to no device

  def infer(batch):
    return apply_fn(host_variables, batch)

  platforms = tuple(dict.fromkeys(("cpu", jax.export.default_export_platform())))
  specs = jax.export.symbolic_args_specs(inputs, "b, ...")
  exported = jax.export.export(jax.jit(infer), platforms=platforms)(specs)
  batch_dim = next(iter(specs.values())).shape[0]
  outs = jax.tree.unflatten(exported.out_tree, exported.out_avals)
  if (not isinstance(outs, dict) or "probs" not in outs
      or any(getattr(x, "shape", None) != (batch_dim, len(labels)) for x in outs.values())):
    raise ValueError(f"{path}: apply_fn must return a dict with \"probs\" of arrays [batch, "
                     f"{len(labels)}] of probabilities, got {outs}")
  meta = {
      "format": FORMAT,
      "labels": list(labels),
      "inputs": {name: {"shape": [None, *x.shape[1:]], "dtype": x.dtype.name}
                 for name, x in inputs.items()},
      "outputs": {name: {"shape": [None, len(labels)], "dtype": np.dtype(x.dtype).name}
                  for name, x in sorted(outs.items())},
      "output_meaning": "class probabilities in `labels` order: probs of the model's output, "
                        "audio_probs / video_probs of a stream's own output layer",
      "preprocessing": preprocessing,
      "source": dict(source or {}),
      "platforms": list(exported.platforms),
      "jax_version": jax.__version__,
  }
  meta_text = json.dumps(meta, indent=2, default=_jsonable)  # fails before any file is written
  path.mkdir(parents=True, exist_ok=True)
  files.atomic_write_bytes(path / MODEL_FILE, bytes(exported.serialize()))
  files.atomic_write_bytes(path / META_FILE, (meta_text + "\n").encode())  # last: marks the export complete
  return path


def read_metadata(path: str | Path) -> dict[str, Any]:
  """The model.json of a complete export in `path` (needs no jax); ValueError naming it if not."""
  path = Path(path)
  try:
    meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    if not (path / MODEL_FILE).is_file():
      raise OSError(f"no {MODEL_FILE}")
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"{path}: not a complete model export ({e})") from None
  if meta.get("format") != FORMAT:
    raise ValueError(f"{path / META_FILE}: format {meta.get('format')!r}, expected {FORMAT!r}")
  return meta


def load_exported(path: str | Path
                  ) -> tuple[Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]],
                             dict[str, Any]]:
  """(predict, metadata) from an export directory; needs jax and numpy only.

  `predict(batch)` takes a dict of numpy arrays named as in `metadata["inputs"]` (other keys are
  ignored) and returns numpy probabilities [B, len(metadata["labels"])] of each output named in
  `metadata["outputs"]`.
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.export  # pylint: disable=import-outside-toplevel
  from lbher_jax import compiler  # pylint: disable=import-outside-toplevel
  path = Path(path)
  meta = read_metadata(path)
  blob = (path / MODEL_FILE).read_bytes()
  call = jax.jit(jax.export.deserialize(bytearray(blob)).call,
                 compiler_options=compiler.compiler_options(jax.devices()))

  def predict(batch: Mapping[str, np.ndarray]) -> np.ndarray:
    args = {}
    for name, spec in meta["inputs"].items():
      if name not in batch:
        raise ValueError(f"{path}: batch has no input {name!r} (has {sorted(batch)})")
      x = np.asarray(batch[name])
      if list(x.shape[1:]) != spec["shape"][1:]:
        raise ValueError(f"{path}: input {name!r} has shape {x.shape}, expected "
                         f"[batch, {', '.join(map(str, spec['shape'][1:]))}]")
      if not np.can_cast(x.dtype, spec["dtype"], casting="same_kind"):
        raise ValueError(f"{path}: input {name!r} has dtype {x.dtype}, expected {spec['dtype']}")
      args[name] = x.astype(spec["dtype"], copy=False)
    return {name: np.asarray(x) for name, x in call(args).items()}

  return predict, meta


def run(config, workdir: str | Path, output: str | Path | None = None) -> Path:
  """--mode export: the model that evaluate and predict use (WORKDIR's fine-tuned checkpoint) to
  `output` (default WORKDIR/export), with its labels and preprocessing settings.

  An export of the same checkpoint already there is kept; any other is replaced.
  """
  # The exporting side needs the model code; loading an export (above) must not.
  import jax  # pylint: disable=import-outside-toplevel
  from lbher_jax import inference  # pylint: disable=import-outside-toplevel
  from lbher_jax.evaluation import calibration  # pylint: disable=import-outside-toplevel
  from lbher_jax.models import input_keys  # pylint: disable=import-outside-toplevel
  workdir = Path(workdir)
  path = Path(output) if output else workdir / "export"
  model, state, _ = inference.load_model(config, workdir)
  temperature = calibration.load_temperature(workdir)
  source = {"workdir": str(workdir.absolute()), "step": int(state.step),
            "model": config.model.to_dict(), "checkpoint": config.eval.checkpoint,
            "temperature": temperature}
  try:   # model.json is written last, so it marks a complete export
    kept = json.loads((path / META_FILE).read_text(encoding="utf-8")).get("source")
  except (OSError, json.JSONDecodeError):
    kept = None
  if kept == json.loads(json.dumps(source)):
    print(f"{path}: already holds the export of step {source['step']}; kept")
    return path

  def probabilities(variables, batch):
    out = model.apply(variables, batch, train=False)
    return {"probs": jax.nn.softmax(out["logits"] / temperature),
            **{k.removesuffix("logits") + "probs": jax.nn.softmax(v)
               for k, v in out.items() if k.endswith("_logits")}}

  inputs = input_keys(config.model.name)
  example = {k: x for k, x in inference.example_batch(config).items() if k in inputs}
  export_model(probabilities, {"params": state.params, "batch_stats": state.batch_stats}, example,
               path, preprocessing={"audio": config.audio, "video": config.video,
                                    "seed": config.data.noise_seed}, source=source)
  print(f"exported {config.model.name} (step {source['step']}) to {path}: {MODEL_FILE}, "
        f"{META_FILE}")
  return path
