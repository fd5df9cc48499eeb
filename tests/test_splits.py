"""Split protocols and balancing: disjointness, coverage, stratification, determinism, leakage."""

import collections
from pathlib import Path

import pytest

from lbher_jax import LABELS, datasets
from lbher_jax.data import splits
from lbher_jax.datasets import Utterance


def _corpus(speakers: int, per_label: dict[str, int], sessions: dict[str, str] | None = None):
  """Every speaker says per_label[label] utterances of each label; ids `<speaker>-<label>-<k>`."""
  out = []
  for s in range(speakers):
    speaker = f"spk{s:02d}"
    for label, n in per_label.items():
      for k in range(n):
        out.append(Utterance(f"{speaker}-{label}-{k}", Path(f"{speaker}-{label}-{k}.mp4"), None,
                             None, None, label, speaker,
                             session=sessions[speaker] if sessions else None))
  return out


def _speakers(utterances, ids):
  speaker = {u.id: u.speaker for u in utterances}
  return {speaker[i] for i in ids}


def _check_speaker_split(utterances, split):
  train, val, test = (_speakers(utterances, ids) for ids in (split.train, split.val, split.test))
  assert not (train & val or train & test or val & test)
  ids = split.train + split.val + split.test
  assert sorted(ids) == sorted(u.id for u in utterances)   # every utterance exactly once
  assert not split.leaky


def test_speaker_folds_are_disjoint_and_cover_every_utterance_once():
  utterances = _corpus(10, {"happy": 2, "anger": 1, "sad": 1, "neutral": 3})
  assert splits.num_folds_for(utterances, "speaker", 4) == 4
  tested, sizes = [], []
  for fold in range(4):
    split = splits.make_split(utterances, num_folds=4, fold=fold, val_fraction=0.2, seed=3)
    _check_speaker_split(utterances, split)
    tested += split.test
    sizes.append(len(_speakers(utterances, split.test)))
    # 7 or 8 training speakers: round(0.2 * n) = 1 or 2 of them validate
    n_train = 10 - sizes[-1]
    assert len(_speakers(utterances, split.val)) == round(0.2 * n_train)
  assert sorted(tested) == sorted(u.id for u in utterances)
  assert sorted(sizes) == [2, 2, 3, 3]


def test_speaker_split_is_seeded():
  utterances = _corpus(12, {"happy": 1, "sad": 1})
  a = splits.make_split(utterances, seed=1)
  assert a == splits.make_split(utterances, seed=1)
  assert any(splits.make_split(utterances, seed=s).test != a.test for s in range(2, 6))


def test_session_folds_leave_one_session_out():
  sessions = {"spk00": "1", "spk01": "1", "spk02": "2", "spk03": "2", "spk04": "10", "spk05": "10"}
  utterances = _corpus(6, {"happy": 2, "neutral": 1}, sessions)
  assert splits.num_folds_for(utterances, "speaker", num_folds=5) == 3
  for fold, session in enumerate(["1", "2", "10"]):        # natural order: 10 comes last
    split = splits.make_split(utterances, fold=fold, val_fraction=0.1)
    _check_speaker_split(utterances, split)
    assert _speakers(utterances, split.test) == {s for s, v in sessions.items() if v == session}
    # 4 training speakers: round(0.4) = 0, raised to 1 because there are >= 3
    assert len(_speakers(utterances, split.val)) == 1
  with pytest.raises(ValueError, match="fold 3 out of range"):
    splits.make_split(utterances, fold=3)


def test_speaker_in_two_sessions_falls_back_to_speaker_folds():
  utterances = _corpus(4, {"sad": 2}, {f"spk{s:02d}": str(s % 2) for s in range(4)})
  moved = Utterance("spk00-extra", Path("x.mp4"), None, None, None, "sad", "spk00", session="1")
  utterances.append(moved)
  assert splits.num_folds_for(utterances, "speaker", num_folds=2) == 2
  _check_speaker_split(utterances, splits.make_split(utterances, num_folds=2))


def test_validation_size_rules():
  utterances = _corpus(4, {"sad": 1})
  assert splits.make_split(utterances, num_folds=2, val_fraction=0.0).val == []
  # 2 training speakers: no validation speaker unless the fraction asks for one
  assert splits.make_split(utterances, num_folds=2, val_fraction=0.1).val == []
  assert len(splits.make_split(utterances, num_folds=2, val_fraction=0.5).val) == 1
  with pytest.raises(ValueError, match="num_folds must be between 2 and"):
    splits.make_split(utterances, num_folds=5)


def test_random_split_is_stratified_and_disjoint():
  per_label = {"happy": 13, "anger": 30, "sad": 7, "neutral": 50}
  utterances = _corpus(1, per_label)
  label = {u.id: u.label for u in utterances}
  for fraction in (0.1, 0.2, 0.3):
    split = splits.make_split(utterances, protocol="random", test_fraction=fraction,
                              val_fraction=0.1, seed=0)
    assert not (set(split.train) & set(split.test) or set(split.train) & set(split.val)
                or set(split.val) & set(split.test))
    assert sorted(split.train + split.val + split.test) == sorted(label)
    test_counts = collections.Counter(label[i] for i in split.test)
    val_counts = collections.Counter(label[i] for i in split.val)
    for name, n in per_label.items():
      assert abs(test_counts[name] - fraction * n) <= 1
      assert abs(val_counts[name] - 0.1 * (n - test_counts[name])) <= 1


def test_random_split_is_seeded():
  utterances = _corpus(2, {"happy": 10, "sad": 10})
  a = splits.make_split(utterances, protocol="random", seed=5)
  assert a == splits.make_split(utterances, protocol="random", seed=5)
  assert a.test != splits.make_split(utterances, protocol="random", seed=6).test


def test_bad_arguments_raise():
  utterances = _corpus(5, {"sad": 2})
  with pytest.raises(ValueError, match="unknown split protocol"):
    splits.make_split(utterances, protocol="session")
  with pytest.raises(ValueError, match="fold 1 out of range: protocol 'random' has 1"):
    splits.make_split(utterances, protocol="random", fold=1)
  with pytest.raises(ValueError, match="needs protocol='random'"):
    splits.make_split(utterances, leaky_paper_oversampling=True)
  with pytest.raises(ValueError, match="test_fraction"):
    splits.make_split(utterances, protocol="random", test_fraction=1.0)
  with pytest.raises(ValueError, match="unique"):
    splits.make_split(utterances + utterances[:1])


def test_leaky_mode_puts_copies_on_both_sides_and_says_so():
  utterances = _corpus(1, {"happy": 5, "anger": 20, "sad": 10, "neutral": 40})
  label = {u.id: u.label for u in utterances}
  split = splits.make_split(utterances, protocol="random", test_fraction=0.2, val_fraction=0.0,
                            leaky_paper_oversampling=True, per_class=30, seed=0)
  assert split.leaky and "LEAKY" in split.describe()
  everything = split.train + split.val + split.test
  assert collections.Counter(label[i] for i in everything) == {name: 30 for name in LABELS}
  assert collections.Counter(label[i] for i in split.test) == {name: 6 for name in LABELS}
  assert len(set(everything)) < len(everything)                 # ids repeated
  happy = {i for i in split.test if label[i] == "happy"}
  assert happy & set(split.train)   # 5 happy clips, 6 copies each: copies sit on both sides
  honest = splits.make_split(utterances, protocol="random", test_fraction=0.2, seed=0)
  assert not honest.leaky and not set(honest.train) & set(honest.test)
  assert "LEAKY" not in honest.describe()


def test_balance_hand_computed():
  ids = ["a1", "a2", "a3", "a4", "b1", "c1", "c2"]
  labels = ["a", "a", "a", "a", "b", "c", "c"]
  # largest class: 4; b repeated 4 times, c twice each; nothing depends on the seed here
  assert splits.balance(ids, labels, seed=7) == [
      "a1", "a2", "a3", "a4", "b1", "b1", "b1", "b1", "c1", "c1", "c2", "c2"]
  cut = splits.balance(ids, labels, per_class=2, seed=0)
  assert len(cut) == 6 and cut.count("b1") == 2 and sorted(set(cut) & {"c1", "c2"}) == ["c1", "c2"]
  assert len(set(cut) & {"a1", "a2", "a3", "a4"}) == 2
  assert splits.balance(ids, labels, method="none") == ids
  assert splits.balance([], []) == []


def test_balance_counts_spread_and_determinism():
  ids = [f"x{k}" for k in range(23)] + [f"y{k}" for k in range(4)] + [f"z{k}" for k in range(9)]
  labels = ["x"] * 23 + ["y"] * 4 + ["z"] * 9
  label = dict(zip(ids, labels))
  for per_class in (None, 10, 3):
    out = splits.balance(ids, labels, per_class=per_class, seed=1)
    target = per_class or 23
    assert collections.Counter(label[i] for i in out) == {"x": target, "y": target, "z": target}
    assert set(out) <= set(ids)                          # only the given (training) ids
    for name in "xyz":
      copies = collections.Counter(i for i in out if label[i] == name)
      n = labels.count(name)
      if target >= n:   # every id kept, copies spread evenly
        assert len(copies) == n and max(copies.values()) - min(copies.values()) <= 1
      else:             # cut: distinct ids
        assert max(copies.values()) == 1
  assert splits.balance(ids, labels, per_class=10, seed=1) == splits.balance(
      ids, labels, per_class=10, seed=1)
  assert splits.balance(ids, labels, per_class=10, seed=1) != splits.balance(
      ids, labels, per_class=10, seed=2)


def test_balance_bad_arguments():
  with pytest.raises(ValueError, match="2 ids but 1 labels"):
    splits.balance(["a", "b"], ["x"])
  with pytest.raises(ValueError, match="unknown balancing method"):
    splits.balance(["a"], ["x"], method="smote")
  with pytest.raises(ValueError, match="per_class must be"):
    splits.balance(["a"], ["x"], per_class=0)


def test_actor_folds_over_real_clips(ravdess_fer_av):
  utterances = datasets.read("ravdess", ravdess_fer_av)
  assert splits.num_folds_for(utterances, "speaker", 5) == 5
  tested = []
  for fold in range(5):
    split = splits.make_split(utterances, fold=fold, num_folds=5, val_fraction=0.1, seed=0)
    _check_speaker_split(utterances, split)
    test = _speakers(utterances, split.test)
    assert _speakers(utterances, split.val) <= {u.speaker for u in utterances} - test
    assert len(test) in (3, 4)
    assert len(_speakers(utterances, split.val)) == round(0.1 * (18 - len(test)))   # 2 or 1
    tested += split.test
  assert sorted(tested) == sorted(u.id for u in utterances)


def test_fixed_test_speakers_give_one_fold_on_exactly_those_speakers():
  utterances = _corpus(8, {"happy": 1, "sad": 2})
  fixed = ("spk06", "spk07")
  assert splits.num_folds_for(utterances, "speaker", 4, test_speakers=fixed) == 1
  split = splits.make_split(utterances, num_folds=4, val_fraction=0.2, seed=5,
                            test_speakers=fixed)
  _check_speaker_split(utterances, split)
  assert _speakers(utterances, split.test) == set(fixed)
  assert len(_speakers(utterances, split.val)) == 1        # round(0.2 * 6)
  with pytest.raises(ValueError, match=r"\['spk99'\] are not speakers"):
    splits.make_split(utterances, test_speakers=("spk01", "spk99"))
  with pytest.raises(ValueError, match="none would be left"):
    splits.make_split(utterances, test_speakers=[f"spk{s:02d}" for s in range(8)])
  with pytest.raises(ValueError, match="needs protocol='speaker'"):
    splits.make_split(utterances, protocol="random", test_speakers=fixed)
  with pytest.raises(ValueError, match="fold 1 out of range"):
    splits.make_split(utterances, fold=1, test_speakers=fixed)


def test_labeled_subset_is_stratified_seeded_and_nested_in_the_ids():
  ids = [f"u{i:02d}" for i in range(40)]
  labels = ["happy"] * 20 + ["sad"] * 12 + ["anger"] * 8
  sub = splits.labeled_subset(ids, labels, 0.25, seed=3)
  by = dict(zip(ids, labels))
  counts = collections.Counter(by[i] for i in sub)
  assert counts == {"happy": 5, "sad": 3, "anger": 2}
  assert sub == sorted(sub) and set(sub) <= set(ids)
  assert splits.labeled_subset(ids, labels, 0.25, seed=3) == sub
  assert splits.labeled_subset(ids, labels, 0.25, seed=4) != sub
  assert splits.labeled_subset(ids, labels, 0.01, seed=0) and len(
      splits.labeled_subset(ids, labels, 0.01, seed=0)) == 3      # at least one per class
  assert splits.labeled_subset(ids, labels, 1.0) == ids
  with pytest.raises(ValueError):
    splits.labeled_subset(ids, labels, 0.0)


def records_of(utts, lacking: dict[str, str] | None = None) -> list[dict]:
  """One row record per utterance, holding both streams unless `lacking` names one (id -> stream)."""
  lacking = lacking or {}
  return [{"utt": u.id, "label_id": LABELS.index(u.label), "label": u.label,
           "speaker": u.speaker, "has_audio": lacking.get(u.id) != "audio",
           "has_video": lacking.get(u.id) != "video"} for u in utts]


def test_training_reads_only_clips_holding_every_stream_of_the_model():
  from configs import demo as demo_config  # pylint: disable=import-outside-toplevel
  from lbher_jax import algorithm  # pylint: disable=import-outside-toplevel
  c = demo_config.get_config("tiny")
  c.split.val_fraction = 0.25
  utts = [Utterance(id=f"s{s}_{e}_{k}", video=Path("x.mp4"), audio=None, start=None, end=None,
                    label=e, speaker=f"s{s}") for s in range(6) for e in LABELS for k in range(4)]
  lacking = {u.id: ("audio", "video")[int(u.id[-1]) % 2] for u in utts if u.id[-1] in "12"}
  records = records_of(utts, lacking)
  both = algorithm.split(c, utts, records_of(utts), 0)
  for model, kept in (("hybrid", set()), ("cnn_rnn", {"video"}), ("video3d", {"audio"})):
    c.model.name = model
    parts = algorithm.split(c, utts, records, 0)
    for side in (parts.train, parts.val, parts.pretrain):
      assert side and {lacking.get(r["utt"]) for r in side} <= {None, *kept}, model
    assert [r["utt"] for r in parts.test] == [r["utt"] for r in both.test]   # all tested
  assert {r["utt"] for r in parts.test} & set(lacking)
  assert collections.Counter(r["label"] for r in parts.train).most_common()[-1][1] == \
      collections.Counter(r["label"] for r in parts.train).most_common()[0][1]   # balanced after


def test_label_fraction_limits_fine_tuning_not_pre_training():
  from configs import demo as demo_config  # pylint: disable=import-outside-toplevel
  from lbher_jax import algorithm  # pylint: disable=import-outside-toplevel
  c = demo_config.get_config("tiny")
  utts = [Utterance(id=f"s{s}_{e}_{k}", video=None, audio=Path("x.wav"), start=None, end=None,
                    label=e, speaker=f"s{s}") for s in range(6) for e in LABELS for k in range(5)]
  records = records_of(utts)
  full = algorithm.split(c, utts, records, 0)
  c.split.label_fraction = 0.2
  part = algorithm.split(c, utts, records, 0)
  assert {r["utt"] for r in part.pretrain} == {r["utt"] for r in full.pretrain}
  labeled = {r["utt"] for r in part.train}
  assert labeled < {r["utt"] for r in full.train}
  per_class = collections.Counter(r["label"] for r in part.train)
  clips_per_class = len({r["utt"] for r in full.train}) // 4
  assert set(per_class.values()) == {round(0.2 * clips_per_class)}   # balanced, a fifth
  assert part.test == full.test and part.val == full.val


def test_split_speakers_keep_the_others_out_of_every_fold():
  from configs import ravdess as ravdess_config  # pylint: disable=import-outside-toplevel
  from lbher_jax import algorithm  # pylint: disable=import-outside-toplevel
  c = ravdess_config.get_config("fer_av_dev")
  utts = [Utterance(id=f"a{a}_{e}_{k}", video=None, audio=Path("x.wav"), start=None, end=None,
                    label=e, speaker=f"Actor_{a:02d}")
          for a in range(1, 19) for e in LABELS for k in range(2)]
  records = records_of(utts)
  dev = algorithm.taking_part(c, utts)
  assert {u.speaker for u in dev} == {f"Actor_{a:02d}" for a in range(1, 15)}
  assert splits.num_folds_for(dev, "speaker", c.split.num_folds) == 7
  tested = []
  for fold in range(7):
    parts = algorithm.split(c, dev, records, fold)
    seen = {r["speaker"] for r in parts.train + parts.val + parts.test}
    assert seen <= {u.speaker for u in dev}
    assert len({r["speaker"] for r in parts.test}) == 2
    tested += [r["utt"] for r in parts.test]
  assert sorted(tested) == sorted(u.id for u in dev)     # every dev clip tested exactly once
  c.split.speakers = ("Actor_01", "Actor_99")
  with pytest.raises(Exception, match="Actor_99"):
    algorithm.taking_part(c, utts)
  c.split.speakers = ()
  assert algorithm.taking_part(c, utts) == utts


def test_train_speakers_keeps_a_nested_subset_and_leaves_test_and_validation_alone():
  utterances = _corpus(18, {"happy": 2, "sad": 2})
  full = splits.make_split(utterances, num_folds=6, fold=2, val_fraction=0.1, seed=4)
  full_train = _speakers(utterances, full.train)
  assert len(full_train) == 13   # 18 - 3 test - round(0.1 * 15) = 2 validation
  previous = set()
  for keep in (1, 5, 9, 13):
    part = splits.make_split(utterances, num_folds=6, fold=2, val_fraction=0.1, seed=4,
                             train_speakers=keep)
    assert (part.val, part.test) == (full.val, full.test)
    train = _speakers(utterances, part.train)
    assert len(train) == keep and previous <= train <= full_train
    # every clip of a kept speaker, none of the others
    assert sorted(part.train) == sorted(u.id for u in utterances if u.speaker in train)
    previous = train
  assert splits.make_split(utterances, num_folds=6, fold=2, val_fraction=0.1, seed=4,
                           train_speakers=13) == full
  assert splits.make_split(utterances, num_folds=6, fold=2, val_fraction=0.1, seed=5,
                           train_speakers=5).train != splits.make_split(
      utterances, num_folds=6, fold=2, val_fraction=0.1, seed=4, train_speakers=5).train


def test_train_speakers_is_refused_beyond_the_fold_or_outside_the_speaker_protocol():
  utterances = _corpus(18, {"happy": 2, "sad": 2})
  with pytest.raises(ValueError, match="only 13 training speakers"):
    splits.make_split(utterances, num_folds=6, val_fraction=0.1, train_speakers=14)
  with pytest.raises(ValueError, match="train_speakers"):
    splits.make_split(utterances, protocol="random", train_speakers=3)
  with pytest.raises(ValueError, match="train_speakers"):
    splits.make_split(utterances, train_speakers=-1)
