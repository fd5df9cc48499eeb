"""Model shapes, parameter counts and behaviour (tiny scale computed, paper scale only traced)."""

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import at_scale
from lbher_jax import models
from lbher_jax.models import audio, ops, video

BATCH = 3
TINY = at_scale("tiny")  # the input sizes of the tiny scale


def _init_shapes(config, sizes=TINY):
  """Variables of the model as ShapeDtypeStructs (jax.eval_shape: nothing is computed)."""
  model = models.get_model(config)
  spec = models.batch_spec(sizes, BATCH)
  return model, spec, jax.eval_shape(lambda rng, batch: model.init(rng, batch, train=False),
                                     jax.random.key(0), spec)


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


# Tiny scale, by hand (BatchNorm: convs have no bias, each BN has scale + bias):
# audio: spectrogram 16x24, convs 4, 8 (3x3, 2x2 pool) -> map 4x6x8.
_AUDIO_CONVS = (3 * 3 * 1 * 4 + 2 * 4) + (3 * 3 * 4 * 8 + 2 * 8)  # 44 + 304 = 348
_AUDIO_HIDDEN = 8 * 8 + 8  # RNN / pooled features (8) -> embedding (8)
_SIMPLE_CELL = 32 * 8 + (8 * 8 + 8)  # input (6 steps of 4 x 8 = 32) and recurrent kernels, bias
_OUTPUT = 8 * 4 + 4
# video: frames 4x12x16x3, 3x3x3 convs 2, 4, 4, 8; pools (1,2,2), (2,2,2), (2,2,2) -> 1x1x2x8.
_VIDEO_CONVS = sum(27 * i * o + 2 * o for i, o in ((3, 2), (2, 4), (4, 4), (4, 8)))  # 1710
_VIDEO_DENSE = (16 * 16 + 16) + (16 * 8 + 8)  # flattened 16 -> 16 -> embedding 8
TINY_PARAMS = {
  "cnn": _AUDIO_CONVS + _AUDIO_HIDDEN + _OUTPUT,  # 456
  "cnn_rnn": _AUDIO_CONVS + _SIMPLE_CELL + _AUDIO_HIDDEN + _OUTPUT,  # 784
  "cnn_lstm": _AUDIO_CONVS + 4 * _SIMPLE_CELL + _AUDIO_HIDDEN + _OUTPUT,  # 4 gates: 1768
  "video3d": _VIDEO_CONVS + _VIDEO_DENSE + _OUTPUT,  # 2154
  "hybrid": (_AUDIO_CONVS + _SIMPLE_CELL + _AUDIO_HIDDEN + _VIDEO_CONVS + _VIDEO_DENSE
             + 16 * 4 + 4  # both embeddings (8 + 8) -> 4 classes
             + 2 * _OUTPUT),  # each stream's own output layer (auxiliary losses): 3006
}
STREAMS = {"cnn": ("audio",), "cnn_rnn": ("audio",), "cnn_lstm": ("audio",),
           "video3d": ("video",), "hybrid": ("audio", "video")}


def test_first_layer_by_hand():
  _, _, variables = _init_shapes(models.default_model_config("hybrid", "tiny"))
  params = variables["params"]
  assert params["audio"]["Conv_0"]["kernel"].shape == (3, 3, 1, 4)  # 36 weights, no bias
  assert params["video"]["Conv3D_0"]["kernel"].shape == (3, 3, 3, 3, 2)  # 162 weights
  assert _count(params["video"]["Conv3D_0"]) == 162
  assert _count(params["video"]["BatchNorm_0"]) == 4
  assert variables["batch_stats"]["video"]["BatchNorm_0"]["mean"].shape == (2,)


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_tiny_shapes_and_parameter_counts(name):
  model, spec, variables = _init_shapes(models.default_model_config(name, "tiny"))
  assert _count(variables["params"]) == TINY_PARAMS[name]
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables["params"]))
  out = jax.eval_shape(lambda v, b: model.apply(v, b, train=False), variables, spec)
  expected = {"logits"} | {f"{s}_embedding" for s in STREAMS[name]}
  if name == "hybrid":
    expected |= {"audio_logits", "video_logits"}
  assert set(out) == expected
  assert out["logits"].shape == (BATCH, 4) and out["logits"].dtype == jnp.float32
  for stream in STREAMS[name]:
    assert out[f"{stream}_embedding"].shape == (BATCH, 8)


def test_conv3d_implementations_agree():
  """The CPU path (a 2-D conv over stacked temporal taps) is the 3-D convolution."""
  x = jax.random.normal(jax.random.key(0), (2, 4, 5, 6, 3))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 3, 3, 2))
  np.testing.assert_allclose(video._conv3d_as_2d(x, kernel), video._conv3d(x, kernel),
                             rtol=1e-5, atol=1e-5)
  # By hand at one output: the sum over the 3x3x3 window (zero outside) of x * kernel.
  padded = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (1, 1), (0, 0)))
  by_hand = np.einsum("dhwc,dhwco->o", padded[1, 0:3, 2:5, 5:8], np.asarray(kernel))
  np.testing.assert_allclose(video._conv3d_as_2d(x, kernel)[1, 0, 2, 5], by_hand, rtol=1e-5)
  def grads(conv):
    return jax.grad(lambda x, k: jnp.sum(jnp.sin(conv(x, k))), argnums=(0, 1))(x, kernel)

  grads_2d, grads_3d = grads(video._conv3d_as_2d), grads(video._conv3d)
  for a, b in zip(grads_2d, grads_3d):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_rnn_cells():
  def cell_params(name, rnn_cell="simple"):
    config = models.default_model_config(name, "tiny")
    config.rnn_cell = rnn_cell
    params = _init_shapes(config)[2]["params"]["audio"]
    return {k: set(v) for k, v in params.items() if k.endswith("Cell_0")}

  assert cell_params("cnn_rnn", rnn_cell="lstm") == {"SimpleCell_0": {"i", "h"}}
  assert cell_params("cnn_lstm") == {"LSTMCell_0": {"ii", "if", "ig", "io", "hi", "hf", "hg",
                                                    "ho"}}
  assert cell_params("hybrid") == {"SimpleCell_0": {"i", "h"}}
  with pytest.raises(ValueError, match="rnn_cell"):
    cell_params("hybrid", rnn_cell="gru")
  assert cell_params("cnn") == {}


def test_paper_scale_traced_only():
  model, spec, variables = _init_shapes(models.default_model_config("hybrid", "paper"),
                                         at_scale("paper"))
  params = variables["params"]
  # audio 200x300 -> four 2x2 pools -> 12x18x128: 18 RNN steps of 12 * 128 features.
  assert params["audio"]["SimpleCell_0"]["i"]["kernel"].shape == (12 * 128, 256)
  # video 20x60x100 -> pools (1,2,2), (2,2,2), (2,2,2) -> 5x7x12x256, flattened.
  assert params["video"]["Dense_0"]["kernel"].shape == (5 * 7 * 12 * 256, 256)
  assert params["output"]["Dense_0"]["kernel"].shape == (512, 4)
  assert 29e6 < _count(params) < 30e6
  out = jax.eval_shape(lambda v, b: model.apply(v, b, train=False), variables, spec)
  assert out["logits"].shape == (BATCH, 4)
  assert out["audio_embedding"].shape == out["video_embedding"].shape == (BATCH, 256)


def test_config_and_spec():
  spec = models.batch_spec(at_scale("small", "video3d"), 5)
  assert spec["audio"].shape == (5, 64, 96) and spec["audio"].dtype == jnp.float32
  assert spec["video"].shape == (5, 20, 30, 50, 3) and spec["video"].dtype == jnp.uint8
  with pytest.raises(ValueError, match="unknown model name 'lstm'"):
    models.default_model_config("lstm", "tiny")
  with pytest.raises(ValueError, match="unknown model scale"):
    models.default_model_config("cnn", "huge")


def _random_batch(config):
  spec = models.batch_spec(TINY, 4)
  rng = np.random.default_rng(0)
  return {"audio": rng.uniform(-1, 1, spec["audio"].shape).astype(np.float32),
          "video": rng.integers(0, 256, spec["video"].shape, dtype=np.uint8),
          "weight": np.array([1.0, 1.0, 1.0, 0.0], np.float32)}


def _numpy_variables(shapes):
  """Random parameters and unit batch statistics without compiling Flax's initialisers."""
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda x: rng.normal(0, 0.3, x.shape).astype(np.float32),
                        shapes["params"])
  stats = jax.tree_util.tree_map_with_path(
    lambda path, x: np.full(x.shape, path[-1].key == "var", np.float32), shapes["batch_stats"])
  return {"params": params, "batch_stats": stats}


def test_padding_rows_do_not_touch_real_rows():
  """BatchNorm statistics (and so every real row's output) ignore rows with weight 0."""
  config = models.default_model_config("hybrid", "tiny")
  config.dropout = 0.0
  model, _, shapes = _init_shapes(config)
  variables = _numpy_variables(shapes)
  batch = _random_batch(config)
  other = {k: v.copy() for k, v in batch.items()}
  other["audio"][3] = 1.0
  other["video"][3] = 255

  train_apply = jax.jit(lambda v, b: model.apply(v, b, train=True, mutable=["batch_stats"]))
  (out, stats), (out_other, stats_other) = (train_apply(variables, b) for b in (batch, other))
  for key in out:
    np.testing.assert_allclose(out[key][:3], out_other[key][:3], rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               stats, stats_other)
  assert not np.allclose(out["logits"][3], out_other["logits"][3])


@pytest.mark.slow
@pytest.mark.parametrize("detach", [False, True])
def test_detach_joint_stops_the_joint_loss_at_the_streams(detach):
  """With detach_joint the joint logits' loss trains the joint layer only; the streams get none of
  it. The outputs are the same either way."""
  config = models.default_model_config("hybrid", "tiny")
  model = models.get_model(config)
  batch = _random_batch(config)
  variables = model.init(jax.random.key(0), batch, train=False)
  config.detach_joint = detach
  trained = models.get_model(config)

  def joint_loss(params):
    out = trained.apply({**variables, "params": params}, batch, train=False)
    return jnp.sum(out["logits"] ** 2)

  grads = jax.grad(joint_loss)(variables["params"])
  norm = lambda tree: float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(tree)))
  assert norm(grads["output"]) > 0
  for stream in ("audio", "video"):
    assert (norm(grads[stream]) == 0) == detach
  np.testing.assert_array_equal(trained.apply(variables, batch, train=False)["logits"],
                                model.apply(variables, batch, train=False)["logits"])


def test_bfloat16_compute():
  """float32 parameters and outputs, values close to float32 compute."""
  config = models.default_model_config("hybrid", "tiny")
  model, _, shapes = _init_shapes(config)
  variables = _numpy_variables(shapes)
  batch = _random_batch(config)
  config.dtype = "bfloat16"
  model_bf16 = models.get_model(config)
  out = jax.jit(lambda v, b: model.apply(v, b, train=False))(variables, batch)
  out_bf16 = jax.jit(lambda v, b: model_bf16.apply(v, b, train=False))(variables, batch)
  for key in out:
    assert out_bf16[key].dtype == jnp.float32
    np.testing.assert_allclose(out_bf16[key], out[key], atol=0.05 * np.abs(out[key]).max())
  assert not np.array_equal(out_bf16["logits"], out["logits"])


@pytest.mark.parametrize("shape, window", [((2, 7, 9, 3), (2, 2)), ((2, 5, 7, 9, 4), (1, 2, 2)),
                                           ((1, 5, 7, 9, 2), (2, 2, 2))])
def test_max_pool_matches_flax(shape, window):
  """Values as flax.linen.max_pool (odd sizes drop the last row / column / frame); with no ties
  (distinct random values) the gradient is flax's too."""
  x = jax.random.normal(jax.random.key(0), shape)
  reference = lambda v: nn.max_pool(v, window, strides=window)
  np.testing.assert_array_equal(ops.max_pool(x, window), reference(x))
  cotangent = jax.random.normal(jax.random.key(1), reference(x).shape)
  grad = lambda f: jax.grad(lambda v: jnp.sum(f(v) * cotangent))(x)
  np.testing.assert_array_equal(grad(lambda v: ops.max_pool(v, window)), grad(reference))
  # A window whose elements tie shares the gradient among them; the total stays the same.
  tied = jnp.zeros((1, 2, 2, 1))
  shared = jax.grad(lambda v: ops.max_pool(v, (2, 2)).sum())(tied)
  assert float(shared.sum()) == pytest.approx(1.0) and float(shared.max()) < 1.0


@pytest.mark.parametrize("masked", [False, True])
def test_batch_norm_matches_flax(masked):
  """Outputs, gradients and running statistics of flax.linen.BatchNorm(momentum=0.9), in
  training (statistics from the real rows only) and at test time."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(0.5, 2.0, (4, 3, 5, 6, 7)), jnp.float32)
  r = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  mask = jnp.array([True, True, False, True]) if masked else None
  ours, theirs = audio.BatchNorm(), nn.BatchNorm(momentum=0.9)
  variables = ours.init(jax.random.key(0), x, train=False, mask=None)
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(
    jnp.shape, theirs.init(jax.random.key(0), x, use_running_average=True))
  variables = {"params": {"scale": jnp.linspace(0.5, 1.5, 7), "bias": jnp.linspace(-1, 1, 7)},
               "batch_stats": {"mean": jnp.linspace(-0.1, 0.1, 7), "var": jnp.linspace(1, 2, 7)}}
  theirs_mask = None if mask is None else mask[:, None, None, None, None]

  def loss(apply, params, x):
    y, updates = apply({**variables, "params": params}, x)
    return jnp.sum(nn.relu(y) * r), (y, updates)

  run = lambda apply: jax.grad(partial(loss, apply), argnums=(0, 1), has_aux=True)(
    variables["params"], x)
  (grads, grad_x), (y, updates) = run(
    lambda v, x: ours.apply(v, x, train=True, mask=mask, mutable=["batch_stats"]))
  (grads_ref, grad_x_ref), (y_ref, updates_ref) = run(
    lambda v, x: theirs.apply(v, x, use_running_average=False, mask=theirs_mask,
                              mutable=["batch_stats"]))
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(grad_x, grad_x_ref, rtol=1e-4, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
               (grads, updates), (grads_ref, updates_ref))
  if masked:  # the padding row (2) changes nothing in the others
    other = x.at[2].set(100.0)
    y_other = ours.apply(variables, other, train=True, mask=mask, mutable=["batch_stats"])[0]
    np.testing.assert_allclose(y_other[np.array([0, 1, 3])], y[np.array([0, 1, 3])], rtol=1e-5,
                               atol=1e-5)
  np.testing.assert_allclose(ours.apply(variables, x, train=False, mask=mask),
                             theirs.apply(variables, x, use_running_average=True),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("shape, window, masked", [
  ((4, 7, 9, 5), (2, 2), False),
  ((4, 5, 7, 9, 6), (1, 2, 2), True),
  ((3, 5, 6, 7, 6), (2, 2, 2), True),
  ((3, 12, 13, 4), (12, 12), False),  # 144 offsets: more than int8 holds
])
def test_batch_norm_relu_pool_matches_flax(shape, window, masked):
  """BatchNorm(pool=window) against flax: BatchNorm, ReLU, then max_pool. Values, gradients and
  running statistics agree in training and at test time, with scales of both signs (a window's
  output then comes from its smallest input), odd sizes (the pooling drops the last positions,
  the statistics keep them), padding rows, and ties: x is on a grid of 0.5, so windows tie for
  the maximum, and the gradient goes to the first of them, as with flax's select-and-scatter."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(np.round(rng.normal(0.5, 1.5, shape) * 2) / 2, jnp.float32)
  channels = shape[-1]
  mask = jnp.array([True, False] + [True] * (shape[0] - 2)) if masked else None
  variables = {"params": {"scale": jnp.linspace(-1.5, 1.2, channels),
                          "bias": jnp.linspace(-0.5, 0.6, channels)},
               "batch_stats": {"mean": jnp.linspace(-0.1, 0.1, channels),
                               "var": jnp.linspace(1, 2, channels)}}
  assert (variables["params"]["scale"] < 0).any() and (variables["params"]["scale"] > 0).any()
  ours, theirs = audio.BatchNorm(), nn.BatchNorm(momentum=0.9)
  theirs_mask = None if mask is None else mask.reshape((-1,) + (1,) * (len(shape) - 1))
  pool = lambda y: nn.max_pool(nn.relu(y), window, strides=window)
  r = jnp.asarray(rng.normal(size=pool(x).shape), jnp.float32)

  def run(apply):
    def loss(params, x):
      y, updates = apply({**variables, "params": params}, x)
      return jnp.sum(y * r), (y, updates)
    return jax.grad(loss, argnums=(0, 1), has_aux=True)(variables["params"], x)

  (grads, grad_x), (y, updates) = run(
    lambda v, x: ours.apply(v, x, train=True, mask=mask, pool=window, mutable=["batch_stats"]))
  (grads_ref, grad_x_ref), (y_ref, updates_ref) = run(
    lambda v, x: (lambda out: (pool(out[0]), out[1]))(theirs.apply(
      v, x, use_running_average=False, mask=theirs_mask, mutable=["batch_stats"])))
  assert y.shape == y_ref.shape and float(jnp.mean(y > 0)) > 0.2
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(grad_x, grad_x_ref, rtol=1e-4, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
               (grads, updates), (grads_ref, updates_ref))
  np.testing.assert_allclose(
    ours.apply(variables, x, train=False, mask=mask, pool=window),
    pool(theirs.apply(variables, x, use_running_average=True)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("window", [None, (2, 2)])
def test_plain_batch_norm_off_cpu_matches_the_fused_cpu_forms(window):
  """ops.plain_batch_norm (what the models run on GPU / TPU) against the hand-written CPU forms:
  the same values, statistics and gradients (continuous inputs, so no window ties)."""
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(0.3, 1.2, (3, 6, 5, 4)), jnp.float32)
  scale, bias = jnp.linspace(-1.2, 1.5, 4), jnp.linspace(-0.3, 0.4, 4)
  weight = jnp.array([0.5, 0.0, 0.5]) / 30.0
  fused = (lambda *a: ops.batch_norm(*a, 1e-5)) if window is None else (
      lambda *a: ops.batch_norm_relu_pool(*a, 1e-5, window))
  plain = lambda *a: ops.plain_batch_norm(*a, 1e-5, window)
  r = jnp.asarray(rng.normal(size=fused(x, scale, bias, weight)[0].shape), jnp.float32)
  loss = lambda f: lambda x, s, b: jnp.sum(f(x, s, b, weight)[0] * r)
  for got, want in zip(plain(x, scale, bias, weight), fused(x, scale, bias, weight)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  for got, want in zip(jax.grad(loss(plain), argnums=(0, 1, 2))(x, scale, bias),
                       jax.grad(loss(fused), argnums=(0, 1, 2))(x, scale, bias)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_sync_embeddings_keep_time_and_leave_fine_tuning_alone():
  """sync_dim: the contrastive embeddings are per-time-step features of the first conv blocks
  (tiny: 4 frames, no temporal pooling there -> 4 steps x 3), centred over time; the classifier
  outputs are those of the same weights without it."""
  config = models.default_model_config("hybrid", "tiny")
  batch = _random_batch(config)
  plain = models.get_model(config)
  config.sync_dim = 3
  synced = models.get_model(config)
  variables = synced.init(jax.random.key(0), batch, train=False)
  params = variables["params"]
  # audio: first block 8 x 12 x 4 -> 12 steps of 32 -> 3; video: 4 x 6 x 8 x 2 per frame -> 3.
  assert params["audio_sync"]["kernel"].shape == (8 * 4, 3)
  assert params["video_sync"]["kernel"].shape == (6 * 8 * 2, 3)
  out = synced.apply(variables, batch, train=False)
  for key in ("audio_embedding", "video_embedding"):
    steps = np.asarray(out[key]).reshape(len(batch["audio"]), 4, 3)
    np.testing.assert_allclose(steps.mean(axis=1), 0.0, atol=1e-6)
    assert np.abs(steps).max() > 1e-4
  without = {k: v for k, v in params.items() if not k.endswith("_sync")}
  reference = plain.apply({**variables, "params": without}, batch, train=False)
  for key in ("logits", "audio_logits", "video_logits"):
    np.testing.assert_allclose(out[key], reference[key], atol=1e-6)


def test_sync_embeddings_read_only_the_audio_a_short_segment_fills():
  """With span 1/2 the audio embedding reads the first half of the spectrogram's window (video
  steps at 1/8, 3/8, 5/8, 7/8 of the segment = 1/16 ... 7/16 of the window): what the padded
  second half holds does not reach it, while with span 1 it does."""
  config = models.default_model_config("hybrid", "tiny")
  config.sync_dim = 3
  model = models.get_model(config)
  batch = _random_batch(config)
  variables = model.init(jax.random.key(0), batch, train=False)
  tail = {**batch, "audio": batch["audio"].copy()}
  tail["audio"][:, :, 14:] = -1.0   # 24 columns; the last step read at span 1/2 sees up to ~12
  for span, same in ((0.5, True), (1.0, False)):
    spans = np.full(len(batch["audio"]), span, np.float32)
    a, b = (np.asarray(model.apply(variables, {**x, "span": spans}, train=False)
                       ["audio_embedding"]) for x in (batch, tail))
    assert np.allclose(a, b, atol=1e-6) == same, span
