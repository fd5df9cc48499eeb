"""Configs as code: each module's `get_config(arg)` builds one ConfigDict; `arg` picks a variant."""


def check_variant(path: str, arg: str | None, known: tuple[str, ...]) -> None:
  """Refuses a variant the config does not define, so a typo cannot run the wrong experiment."""
  if arg not in (None, *known):
    raise ValueError(f"{path}: unknown variant {arg!r}; known: {', '.join(known) or 'none'}")


def at_scale(scale: str, model: str = "hybrid"):
  """The experiment config of a model scale with model `model`: "paper" (configs/default.py),
  "small" (configs/demo.py) or "tiny" (configs/demo.py:tiny); for tests and benchmarks."""
  from configs import default, demo  # pylint: disable=import-outside-toplevel
  from lbher_jax.models import default_model_config  # pylint: disable=import-outside-toplevel
  makers = {"paper": default.get_config, "small": demo.get_config,
            "tiny": lambda: demo.get_config("tiny")}
  if scale not in makers:
    raise ValueError(f"unknown scale {scale!r}; known: {', '.join(makers)}")
  config = makers[scale]()
  config.model = default_model_config(model, scale)
  return config
