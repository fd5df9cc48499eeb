"""Train / validation / test splits of a corpus by utterance id, and training-set balancing.

Protocols (docs/ARCHITECTURE.md, "Why it is built this way"):
  "speaker"  the default: speaker-independent folds. When every utterance has a session, there are
             several sessions and no speaker spans two of them (IEMOCAP), fold k leaves session k
             out (sessions in natural order); otherwise the speakers are shuffled with the seed and
             dealt into `num_folds` groups of balanced size, and fold k tests on group k.
             Validation speakers are drawn from the training speakers, never from the test ones.
             `test_speakers` fixes the test speakers instead (one fold), e.g. RAVDESS actors 15-18.
             `train_speakers` > 0 keeps only that many of a fold's training speakers (a seeded
             draw after the validation speakers, so the test and validation speakers stay those
             of the full split, and a smaller count's speakers are part of a larger one's): the
             learning curve over the number of training speakers.
  "random"   the paper's split: stratified by label, by utterance, `test_fraction` of each class
             to test; validation is carved from the training part the same way.

Balancing (`balance`) runs after the split on the training ids only, so no copy of a test
utterance is ever trained on. `leaky_paper_oversampling=True` reproduces the paper's order instead
(balance the whole corpus, then split): copies of one utterance land on both sides and the test
score is inflated. It exists ONLY to demonstrate that leakage; never report its numbers as results.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from typing import Hashable, Sequence

import numpy as np
from absl import logging

from lbher_jax.datasets import Utterance

PROTOCOLS = ("speaker", "random")


@dataclasses.dataclass(frozen=True)
class Split:
  """Utterance ids of each side. With `leaky`, ids may repeat and appear on several sides."""

  train: list[str]
  val: list[str]
  test: list[str]
  leaky: bool = False

  def describe(self) -> str:
    """One line for the logs."""
    text = f"train {len(self.train)}, val {len(self.val)}, test {len(self.test)} utterances"
    if self.leaky:
      shared = len(set(self.train) & set(self.test))
      text += (f"; LEAKY (oversampled before splitting): {shared} test utterances also have "
               "copies in training")
    return text


def make_split(utterances: Sequence[Utterance], *, protocol: str = "speaker",
               test_fraction: float = 0.2, num_folds: int = 5, fold: int = 0,
               val_fraction: float = 0.1, seed: int = 0, leaky_paper_oversampling: bool = False,
               per_class: int | None = None, test_speakers: Sequence[str] = (),
               train_speakers: int = 0) -> Split:
  """Splits `utterances` by the protocol; see the module docstring.

  `num_folds`/`fold` select the speaker fold ("random" has the single fold 0); `per_class` is the
  per-class count of the leaky mode's balancing (None: the largest class); non-empty
  `test_speakers` replaces the speaker folds by the one fold that tests on exactly those speakers;
  `train_speakers` > 0 ("speaker" only) trains on that many of the fold's training speakers.
  """
  if len({u.id for u in utterances}) != len(utterances):
    raise ValueError("utterance ids must be unique to be split")
  if not 0 <= val_fraction < 1:
    raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
  if protocol not in PROTOCOLS:
    raise ValueError(f"unknown split protocol {protocol!r}; known: {PROTOCOLS}")
  if test_speakers and protocol != "speaker":
    raise ValueError("test_speakers fixes a speaker-independent split; it needs protocol='speaker'")
  if train_speakers < 0 or (train_speakers and protocol != "speaker"):
    raise ValueError(f"train_speakers must be 0 (all) or, with protocol='speaker', a positive "
                     f"count; got {train_speakers} with protocol {protocol!r}")
  if test_speakers:
    groups = [_known_speakers(utterances, test_speakers)]
  elif protocol == "speaker":
    groups = _speaker_groups(utterances, num_folds, seed)
  else:
    groups = [set()]
  if not 0 <= fold < len(groups):
    raise ValueError(f"fold {fold} out of range: protocol {protocol!r} has {len(groups)} fold(s) "
                     "here")
  if leaky_paper_oversampling and protocol != "random":
    raise ValueError("leaky_paper_oversampling reproduces the paper's random split; it needs "
                     "protocol='random'")
  if protocol == "speaker":
    return _speaker_split(utterances, groups[fold], val_fraction,
                          np.random.default_rng([seed, fold]), train_speakers)
  if not 0 < test_fraction < 1:
    raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
  label_of = {u.id: u.label for u in utterances}
  ids = sorted(label_of)
  if leaky_paper_oversampling:
    logging.warning("leaky_paper_oversampling: balancing BEFORE splitting puts copies of test "
                    "utterances in training; the test score is not a valid result")
    ids = balance(ids, [label_of[i] for i in ids], per_class=per_class, seed=seed)
  rng = np.random.default_rng(seed)
  rest, test = _stratified(ids, [label_of[i] for i in ids], test_fraction, rng)
  train, val = _stratified(rest, [label_of[i] for i in rest], val_fraction, rng)
  return Split(sorted(train), sorted(val), sorted(test), leaky=leaky_paper_oversampling)


def num_folds_for(utterances: Sequence[Utterance], protocol: str = "speaker",
                  num_folds: int = 5, test_speakers: Sequence[str] = ()) -> int:
  """How many folds `make_split` offers: sessions or `num_folds` for "speaker", 1 for "random"
  or fixed `test_speakers`."""
  if protocol not in PROTOCOLS:
    raise ValueError(f"unknown split protocol {protocol!r}; known: {PROTOCOLS}")
  if protocol == "random" or test_speakers:
    return 1
  return len(_speaker_groups(utterances, num_folds, seed=0))


def labeled_subset(ids: Sequence[str], labels: Sequence[Hashable], fraction: float,
                   seed: int = 0) -> list[str]:
  """A seeded, class-stratified `fraction` of `ids` (sorted): round(fraction * n) of each class's
  n ids, at least one. The ids whose labels fine-tuning may read when only part is labeled."""
  if not 0 < fraction <= 1:
    raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
  if fraction == 1:
    return sorted(ids)
  by_label = collections.defaultdict(list)
  for i, label in zip(ids, labels):
    by_label[label].append(i)
  rng = np.random.default_rng(seed)
  out = []
  for label in sorted(by_label):
    members = sorted(by_label[label])
    keep = max(1, int(round(fraction * len(members))))
    out += [members[k] for k in rng.permutation(len(members))[:keep]]
  return sorted(out)


def balance(ids: Sequence[str], labels: Sequence[Hashable], *, method: str = "resample",
            per_class: int | None = None, seed: int = 0) -> list[str]:
  """The paper's balancing: every class brought to `per_class` ids (sorted result).

  A class with more ids keeps a seeded random `per_class` of them; a class with fewer is repeated
  whole as often as fits and topped up with a seeded random subset, so copies are spread evenly.
  `per_class` None means the largest class's count (pure oversampling: nothing is thrown away).
  Meant for training ids only. `method="none"` returns the ids unchanged.
  """
  if len(ids) != len(labels):
    raise ValueError(f"{len(ids)} ids but {len(labels)} labels")
  if method == "none":
    return list(ids)
  if method != "resample":
    raise ValueError(f"unknown balancing method {method!r}; known: resample, none")
  if per_class is not None and per_class < 1:
    raise ValueError(f"per_class must be >= 1 or None, got {per_class}")
  by_label = collections.defaultdict(list)
  for i, label in zip(ids, labels):
    by_label[label].append(i)
  target = per_class or max((len(v) for v in by_label.values()), default=0)
  rng = np.random.default_rng(seed)
  out = []
  for label in sorted(by_label):
    members = by_label[label]
    order = rng.permutation(len(members))
    repeats, extra = divmod(target, len(members))
    out += members * repeats + [members[k] for k in order[:extra]]
  return sorted(out)


def _speaker_groups(utterances: Sequence[Utterance], num_folds: int,
                    seed: int) -> list[set[str]]:
  """The speakers tested in each fold."""
  sessions = collections.defaultdict(set)
  for u in utterances:
    sessions[u.session].add(u.speaker)
  if None not in sessions and len(sessions) > 1:
    span = collections.Counter(s for members in sessions.values() for s in members)
    spanning = sorted(s for s, n in span.items() if n > 1)
    if not spanning:
      return [sessions[k] for k in sorted(sessions, key=_natural)]
    logging.warning("speakers %s occur in several sessions; folding by speaker instead",
                    spanning[:5])
  speakers = sorted({u.speaker for u in utterances})
  if not 2 <= num_folds <= len(speakers):
    raise ValueError(f"num_folds must be between 2 and the number of speakers ({len(speakers)}), "
                     f"got {num_folds}")
  shuffled = [speakers[k] for k in np.random.default_rng(seed).permutation(len(speakers))]
  return [set(part) for part in np.array_split(np.array(shuffled, dtype=object), num_folds)]


def _known_speakers(utterances: Sequence[Utterance], wanted: Sequence[str]) -> set[str]:
  """`wanted` as a set, after checking that each names a speaker of the corpus and some remain."""
  speakers = {u.speaker for u in utterances}
  unknown = sorted(set(wanted) - speakers)
  if unknown:
    raise ValueError(f"test_speakers {unknown} are not speakers of this corpus; it has "
                     f"{sorted(speakers, key=_natural)[:8]}...")
  if not speakers - set(wanted):
    raise ValueError("test_speakers lists every speaker; none would be left to train on")
  return set(wanted)


def _speaker_split(utterances: Sequence[Utterance], test_speakers: set[str], val_fraction: float,
                   rng: np.random.Generator, keep: int = 0) -> Split:
  """Test = the given speakers; validation = a random share of the other speakers; training =
  the rest, or `keep` > 0 of them drawn at random (the first `keep` of one permutation, so the
  speakers of a smaller `keep` are among those of a larger one)."""
  others = sorted({u.speaker for u in utterances} - test_speakers)
  n = len(others)
  n_val = 0 if val_fraction == 0 else min(n - 1, max(round(val_fraction * n), int(n >= 3)))
  order = rng.permutation(n)
  val_speakers = {others[k] for k in order[:n_val]}
  rest = [s for s in others if s not in val_speakers]
  if keep > len(rest):
    raise ValueError(f"train_speakers={keep}, but this fold has only {len(rest)} training "
                     "speakers")
  if keep:
    rest = [rest[k] for k in rng.permutation(len(rest))[:keep]]
  train_speakers = set(rest)
  train, val, test = [], [], []
  for u in utterances:
    side = (test if u.speaker in test_speakers else val if u.speaker in val_speakers
            else train if u.speaker in train_speakers else None)
    if side is not None:
      side.append(u.id)
  return Split(sorted(train), sorted(val), sorted(test))


def _stratified(ids: Sequence[str], labels: Sequence[Hashable], fraction: float,
                rng: np.random.Generator) -> tuple[list[str], list[str]]:
  """(rest, picked): round(fraction * n) seeded picks from each class's n ids."""
  by_label = collections.defaultdict(list)
  for i, label in zip(ids, labels):
    by_label[label].append(i)
  rest, picked = [], []
  for label in sorted(by_label):
    members = by_label[label]
    order = rng.permutation(len(members))
    k = round(fraction * len(members))
    picked += [members[j] for j in order[:k]]
    rest += [members[j] for j in order[k:]]
  return rest, picked


def _natural(text: str) -> list:
  """Sort key that puts "2" before "10"."""
  return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]
