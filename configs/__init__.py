"""Configs as code: each module's `get_config(arg)` builds one ConfigDict; `arg` picks a variant."""


def check_variant(path: str, arg: str | None, known: tuple[str, ...]) -> None:
  """Refuses a variant the config does not define, so a typo cannot run the wrong experiment."""
  if arg not in (None, *known):
    raise ValueError(f"{path}: unknown variant {arg!r}; known: {', '.join(known) or 'none'}")
