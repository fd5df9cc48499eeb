"""Corpus readers on tiny corpora built in each official layout, and on the real RAVDESS clips.

The readers never open media files (they only check that they exist), so the media here are
empty placeholder files; label files and names are real-format text, including edge cases. One
IEMOCAP test builds real media to check which audio the pipeline then reads.
"""

import collections
import csv
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from lbher_jax import LABELS
from lbher_jax import datasets
from lbher_jax import media as media_lib
from lbher_jax.data import preprocess as preprocess_lib
from lbher_jax.features import audio as audio_features
from lbher_jax.features.audio import AudioParams
from lbher_jax.features.video import VideoParams
from lbher_jax.datasets import CorpusError, Utterance, cremad, iemocap, manifest, ravdess


def _touch(*paths: Path) -> None:
  for path in paths:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


# ----------------------------------------------------------------------------------------- IEMOCAP

_SES01F_IMPRO01 = """\
% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]
C-E2:\tNeutral;\t()
C-E3:\tNeutral;\t()
A-E3:\tval 3; act 2; dom  2;\t()
A-F1:\tval 3; act 2; dom  1;\t()

[10.0100 - 11.3925]\tSes01F_impro01_M000\tfru\t[2.0000, 3.5000, 3.5000]
C-E1:\tFrustration;\t()

[12.5 - 15.0]\tSes01F_impro01_M001\tang\t[1.5000, 4.0000, 4.5000]

[16.0000 - 18.2500]\tSes01F_impro01_F001\texc\t[4.0000, 4.0000, 3.0000]

[20.0000 - 19.0000]\tSes01F_impro01_F002\tsad\t[2.0000, 2.0000, 2.0000]

[21.0000 - 23.5000]\tSes01F_impro01_M002\thap\t[4.0000, 3.0000, 3.0000]

[24.0000 - 25.0000]\tSes01F_impro01_F003\txxx\t[3.0000, 3.0000, 3.0000]

[26.0 - 27.0 Ses01F_impro01_F004 neu
"""

_SES02M_SCRIPT01_1 = """\
% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[1.0000 - 4.5000]\tSes02M_script01_1_M000\tsad\t[1.5000, 2.0000, 2.5000]
C-E1:\tSadness;\t()

[5.0000 - 6.0000]\tSes02M_script01_1_F000\tneu\t[3.0000, 2.0000, 3.0000]

[7.0000 - 8.0000]\tSes02M_script01_1_F001\tsur\t[3.0000, 4.0000, 3.0000]
"""

_SES02M_IMPRO03 = """\
[1.0000 - 2.0000]\tSes02M_impro03_M000\tang\t[1.0000, 4.0000, 4.0000]
[3.0000 - 4.0000]\tSes02M_impro03_F000\tneu\t[3.0000, 3.0000, 3.0000]
[5.0000 - 6.0000]\tSes02M_impro03_F001\tdis\t[3.0000, 3.0000, 3.0000]
"""


def _dialog(root: Path, session: int, dialog: str, text: str, media: bool = True) -> None:
  """The label file, and with `media` the dialog's avi and a sentence wav per utterance line."""
  labels = root / f"Session{session}" / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
  labels.parent.mkdir(parents=True, exist_ok=True)
  labels.write_text(text)
  if media:
    _touch(root / f"Session{session}" / "dialog" / "avi" / "DivX" / f"{dialog}.avi")
    for line in text.split("\n"):
      try:
        parsed = iemocap.parse_label_line(line)
      except ValueError:
        continue
      if parsed is not None and "/" not in parsed.utterance and "\0" not in parsed.utterance:
        _touch(root / f"Session{session}" / "sentences" / "wav" / dialog
               / f"{parsed.utterance}.wav")


@pytest.fixture
def iemocap_root(tmp_path: Path) -> Path:
  root = tmp_path / "IEMOCAP_full_release"
  _dialog(root, 1, "Ses01F_impro01", _SES01F_IMPRO01)
  _dialog(root, 2, "Ses02M_script01_1", _SES02M_SCRIPT01_1)
  _dialog(root, 2, "Ses02M_impro03", _SES02M_IMPRO03, media=False)   # no avi, no sentence wavs
  # Per-evaluator files live in subfolders and are not read; the dialog wav is not used.
  (root / "Session1/dialog/EmoEvaluation/Categorical").mkdir()
  (root / "Session1/dialog/EmoEvaluation/Categorical/Ses01F_impro01_e1_cat.txt").write_text(
      "Ses01F_impro01_F000 :Neutral state; ()\n")
  _touch(root / "Session1/dialog/wav/Ses01F_impro01.wav")
  (root / "Documentation").mkdir()
  return root


def _iemocap_utterance(root, session, dialog, utt, start, end, label, speaker, side):
  base = root / f"Session{session}"
  return Utterance(id=utt, video=base / "dialog" / "avi" / "DivX" / f"{dialog}.avi",
                   audio=base / "sentences" / "wav" / dialog / f"{utt}.wav", start=start,
                   end=end, label=label, speaker=speaker, session=str(session), side=side,
                   audio_start=0.0)


def test_iemocap_reads_every_field(iemocap_root):
  utterances, left_out = iemocap.scan(iemocap_root)
  r, d1, d2 = iemocap_root, "Ses01F_impro01", "Ses02M_script01_1"
  assert utterances == [
      _iemocap_utterance(r, 1, d1, "Ses01F_impro01_F000", 6.2901, 8.2357, "neutral", "Ses01F", "L"),
      _iemocap_utterance(r, 1, d1, "Ses01F_impro01_F001", 16.0, 18.25, "happy", "Ses01F", "L"),
      _iemocap_utterance(r, 1, d1, "Ses01F_impro01_M001", 12.5, 15.0, "anger", "Ses01M", "R"),
      _iemocap_utterance(r, 1, d1, "Ses01F_impro01_M002", 21.0, 23.5, "happy", "Ses01M", "R"),
      _iemocap_utterance(r, 2, d2, "Ses02M_script01_1_F000", 5.0, 6.0, "neutral", "Ses02F", "R"),
      _iemocap_utterance(r, 2, d2, "Ses02M_script01_1_M000", 1.0, 4.5, "sad", "Ses02M", "L"),
  ]
  # The dialog without media had 2 four-class utterances (ang, neu) and one dis.
  assert left_out == collections.Counter({"label fru": 1, "label xxx": 1, "label sur": 1,
                                          "label dis": 1, "malformed line": 2,
                                          "missing media": 2})


def test_iemocap_merge_excited_false_leaves_exc_out(iemocap_root):
  utterances, left_out = iemocap.scan(iemocap_root, merge_excited=False)
  assert "Ses01F_impro01_F001" not in [u.id for u in utterances]
  assert len(utterances) == 5 and left_out["label exc"] == 1


def test_iemocap_sessions_option(iemocap_root):
  utterances, left_out = iemocap.scan(iemocap_root, sessions=[2])
  assert [u.id for u in utterances] == ["Ses02M_script01_1_F000", "Ses02M_script01_1_M000"]
  assert left_out == collections.Counter({"label sur": 1, "label dis": 1, "missing media": 2})
  with pytest.raises(CorpusError, match=r"session\(s\) \[3\]"):
    iemocap.scan(iemocap_root, sessions=[1, 3])


def test_iemocap_unknown_code_names_file_and_line(iemocap_root):
  path = iemocap_root / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
  path.write_text(_SES01F_IMPRO01 + "[30.0 - 31.0]\tSes01F_impro01_F009\tjoy\t[1.0, 1.0, 1.0]\n")
  line = _SES01F_IMPRO01.count("\n") + 1
  with pytest.raises(CorpusError, match=rf"Ses01F_impro01.txt:{line}: unknown emotion code 'joy'"):
    iemocap.scan(iemocap_root)


def test_iemocap_strict_raises_on_malformed_line_and_missing_media(iemocap_root):
  with pytest.raises(CorpusError, match=r"Ses01F_impro01.txt:16: malformed line"):
    iemocap.scan(iemocap_root, strict=True)
  (iemocap_root / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt").unlink()
  with pytest.raises(CorpusError, match=r"Ses02M_impro03.txt: 2 utterances name a missing "
                                        r"video: .*Ses02M_impro03.avi"):
    iemocap.scan(iemocap_root, strict=True)


def test_iemocap_missing_media_warns_naming_the_files(iemocap_root, caplog):
  iemocap.scan(iemocap_root, sessions=[2])
  assert "Ses02M_impro03.avi" in caplog.text


def test_iemocap_utterance_without_its_sentence_wav_is_left_out(iemocap_root, caplog):
  wav = iemocap_root / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M001.wav"
  wav.unlink()
  utterances, left_out = iemocap.scan(iemocap_root, sessions=[1])
  assert "Ses01F_impro01_M001" not in [u.id for u in utterances] and len(utterances) == 3
  assert left_out["missing media"] == 1 and str(wav) in caplog.text


def test_iemocap_audio_is_the_sentence_wav_not_the_dialog_mix(tmp_path):
  """A built dialog: the dialog wav mixes a 440 Hz 'speaker' with a 2 kHz 'other actor'; the
  utterance's sentence wav holds only its speaker. The featurized audio is the sentence wav's,
  the frames come from the label file's window of the dialog avi."""
  root = tmp_path / "IEMOCAP_full_release"
  _dialog(root, 1, "Ses01F_impro01", "[1.0000 - 4.0000]\tSes01F_impro01_F000\tneu\t[3, 3, 3]\n",
          media=False)
  session = root / "Session1"
  avi = session / "dialog/avi/DivX/Ses01F_impro01.avi"
  mix = session / "dialog/wav/Ses01F_impro01.wav"
  sentence = session / "sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"
  for path in (avi, mix, sentence):
    path.parent.mkdir(parents=True, exist_ok=True)
  ffmpeg = [media_lib.ffmpeg_exe(), "-nostdin", "-v", "error", "-y"]
  subprocess.run([*ffmpeg, "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=6",
                  "-c:v", "mpeg4", str(avi)], check=True)
  subprocess.run([*ffmpeg, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=6",
                  "-f", "lavfi", "-i", "sine=frequency=2000:sample_rate=16000:duration=6",
                  "-filter_complex", "amix=inputs=2", str(mix)], check=True)
  subprocess.run([*ffmpeg, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=3",
                  str(sentence)], check=True)
  [utt] = iemocap.scan(root)[0]
  assert utt.audio == sentence and utt.audio_window() == (0.0, None)
  assert (utt.start, utt.end) == (1.0, 4.0)
  params = preprocess_lib.Settings(
      AudioParams(sample_rate=16000, segment_seconds=3.0, n_fft=256, hop_length=128, height=32,
                  width=24, denoise=False, bandpass_high=7900.0),
      VideoParams(frames_per_segment=4, height=12, width=16, face_detector="none"))
  spec, frames, records = preprocess_lib.featurize(utt, params)

  def spectrogram_of(path, start=None, end=None):
    wave = media_lib.decode_audio(path, 16000, start, end)
    return audio_features.spectrogram_segments(
        wave, params.audio, preprocess_lib.utterance_rng(params.seed, utt.id))
  np.testing.assert_allclose(spec, spectrogram_of(sentence), atol=1e-3)
  assert np.abs(spec - spectrogram_of(mix, 1.0, 4.0)).max() > 0.2      # not the mix
  assert records[0]["start"] == 1.0 and records[0]["end"] == 4.0
  assert frames.shape == (1, 4, 12, 16, 3) and frames.std() > 0


def test_iemocap_utterance_of_another_dialog_is_malformed(tmp_path):
  _dialog(tmp_path, 1, "Ses01F_impro02", "[1.0 - 2.0]\tSes01F_impro01_F000\tneu\t[1, 1, 1]\n"
                                         "[1.0 - 2.0]\tSes01F_impro02_F000\tneu\t[1, 1, 1]\n")
  utterances, left_out = iemocap.scan(tmp_path)
  assert [u.id for u in utterances] == ["Ses01F_impro02_F000"]
  assert left_out == collections.Counter({"malformed line": 1})


def test_iemocap_bad_roots(tmp_path):
  with pytest.raises(CorpusError, match="does not exist"):
    iemocap.scan(tmp_path / "nowhere")
  with pytest.raises(CorpusError, match="no Session<N> folders"):
    iemocap.scan(tmp_path)
  (tmp_path / "Session1").mkdir()
  with pytest.raises(CorpusError, match="EmoEvaluation: missing"):
    iemocap.scan(tmp_path)


def test_iemocap_statistics(iemocap_root):
  utterances, stats = datasets.read_with_stats("iemocap", iemocap_root)
  assert len(utterances) == 6
  assert stats == {
      "num_utterances": 6,
      "per_class": {"happy": 2, "anger": 1, "sad": 1, "neutral": 2},
      "per_speaker": {"Ses01F": 2, "Ses01M": 2, "Ses02F": 1, "Ses02M": 1},
      "per_session": {"1": 4, "2": 2},
      # (8.2357 - 6.2901) + 2.25 + 2.5 + 2.5 + 1.0 + 3.5
      "duration_s": 13.696,
      "num_left_out": 8,
      "left_out": {"label dis": 1, "label fru": 1, "label sur": 1, "label xxx": 1,
                   "malformed line": 2, "missing media": 2},
  }


@pytest.mark.parametrize("line, expected", [
    ("[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]",
     iemocap.LabelLine(6.2901, 8.2357, "Ses01F_impro01_F000", "neu", "F")),
    ("  [0.5 - 3]  Ses05M_script02_2_M041 xxx  ",
     iemocap.LabelLine(0.5, 3.0, "Ses05M_script02_2_M041", "xxx", "M")),
    ("% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", None),
    ("C-E1:\tAnger;\t()", None),
    ("A-F1:\tval 1; act 5; dom  5;\t()", None),
    ("", None),
])
def test_parse_label_line(line, expected):
  assert iemocap.parse_label_line(line) == expected


@pytest.mark.parametrize("line", [
    "[6.2901 - 8.2357]",                                          # no id, no code
    "[8.0 - 6.0]\tSes01F_impro01_F000\tneu\t[1, 1, 1]",           # end before start
    "[6.0 - 6.0]\tSes01F_impro01_F000\tneu\t[1, 1, 1]",           # empty
    "[-1.0 - 6.0]\tSes01F_impro01_F000\tneu\t[1, 1, 1]",          # negative
    "[1.0 - 6.0]\tSes01F_impro01_X000\tneu\t[1, 1, 1]",           # no gender letter
    "[1.0 - 6.0]\tSes01F\tneu\t[1, 1, 1]",                        # no _ field
    "[1.0 - 6.0]\tSes01F_impro01_F000\tneu\t[1, 1, 1]\textra",    # trailing text
])
def test_parse_label_line_malformed(line):
  with pytest.raises(ValueError):
    iemocap.parse_label_line(line)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_label_line_any_text(text):
  try:
    parsed = iemocap.parse_label_line(text)
  except ValueError:
    assert text.strip().startswith("[")
    return
  assert parsed is None or (parsed.end > parsed.start >= 0 and parsed.gender in "FM")


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 10**6), st.sampled_from("FM"),
       st.integers(0, 999), st.sampled_from(["neu", "ang", "fru", "xxx", "exc"]))
def test_parse_label_line_round_trip(start_ms, length_ms, gender, number, code):
  start, end = start_ms / 1000, (start_ms + length_ms) / 1000
  utt = f"Ses03M_impro05a_{gender}{number:03d}"
  parsed = iemocap.parse_label_line(f"[{start:.4f} - {end:.4f}]\t{utt}\t{code}\t[2.0, 3.0, 4.0]")
  assert parsed == iemocap.LabelLine(start, end, utt, code, gender)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from(list("[]-_ .\t\n019FMSesneuangxjoyC:%"))
               | st.characters(codec="utf-8"), max_size=200))
def test_iemocap_scan_any_label_file(tmp_path_factory, text):
  root = tmp_path_factory.mktemp("iemocap")
  _dialog(root, 1, "Ses01F_impro01", text)
  try:
    utterances, left_out = iemocap.scan(root)
  except CorpusError as e:
    assert "Ses01F_impro01.txt:" in str(e)
    return
  assert all(u.id.startswith("Ses01F_impro01_") for u in utterances)
  assert set(left_out) <= {"malformed line", "label fru", "label sur", "label fea", "label dis",
                           "label oth", "label xxx", "missing media"}


# ----------------------------------------------------------------------------------------- RAVDESS


@pytest.fixture
def ravdess_root(tmp_path: Path) -> Path:
  root = tmp_path / "ravdess"
  _touch(root / "Actor_01" / "01-01-03-01-01-01-01.mp4",   # happy, audio-video speech
         root / "Actor_01" / "01-01-02-01-01-01-01.mp4",   # calm
         root / "Actor_02" / "01-02-05-02-01-01-02.mp4",   # song
         root / "Actor_02" / "01-01-05-02-02-01-02.mp4",   # angry (folder and name agree)
         root / "Actor_02" / "01-01-04-01-01-02-03.mp4",   # sad; the name's actor (03) counts
         root / "03-01-04-01-02-02-02.wav",                # audio-only (flat layout)
         root / "02-01-01-01-01-01-02.mp4",                # video-only
         root / "notes.mp4",                               # not a RAVDESS name
         root / "faces.csv", root / "README.md",           # not media: ignored
         root / "Actor_01" / "._01-01-03-01-01-01-01.mp4")  # macOS resource fork: ignored
  return root


def test_ravdess_reads_every_field(ravdess_root):
  utterances, left_out = ravdess.scan(ravdess_root)
  r = ravdess_root
  assert utterances == [
      Utterance("01-01-03-01-01-01-01", r / "Actor_01/01-01-03-01-01-01-01.mp4",
                r / "Actor_01/01-01-03-01-01-01-01.mp4", None, None, "happy", "Actor_01"),
      Utterance("01-01-04-01-01-02-03", r / "Actor_02/01-01-04-01-01-02-03.mp4",
                r / "Actor_02/01-01-04-01-01-02-03.mp4", None, None, "sad", "Actor_03"),
      Utterance("01-01-05-02-02-01-02", r / "Actor_02/01-01-05-02-02-01-02.mp4",
                r / "Actor_02/01-01-05-02-02-01-02.mp4", None, None, "anger", "Actor_02"),
  ]
  assert all(u.session is None and u.side is None for u in utterances)
  assert left_out == collections.Counter({"label calm": 1, "song": 1, "audio-only": 1,
                                          "video-only": 1, "unrecognised name": 1})


def test_ravdess_other_modalities_and_extra_labels(ravdess_root):
  utterances, left_out = ravdess.scan(ravdess_root, modalities=("01", "02", "03"),
                                      vocal_channels=("01", "02"),
                                      extra_labels={"calm": "neutral"})
  by_id = {u.id: u for u in utterances}
  assert by_id["03-01-04-01-02-02-02"] == Utterance(
      "03-01-04-01-02-02-02", None, ravdess_root / "03-01-04-01-02-02-02.wav", None, None,
      "sad", "Actor_02")
  assert by_id["02-01-01-01-01-01-02"] == Utterance(
      "02-01-01-01-01-01-02", ravdess_root / "02-01-01-01-01-01-02.mp4", None, None, None,
      "neutral", "Actor_02")
  assert by_id["01-01-02-01-01-01-01"].label == "neutral"
  assert by_id["01-02-05-02-01-01-02"].label == "anger"
  assert len(utterances) == 7 and left_out == collections.Counter({"unrecognised name": 1})


@pytest.mark.parametrize("name, message", [
    ("01-01-09-01-01-01-01.mp4", "emotion code '09'"),
    ("04-01-01-01-01-01-01.mp4", "modality code '04'"),
    ("01-01-01-01-01-01-25.mp4", "actor code '25'"),
    ("01-01-01-03-01-01-01.mp4", "intensity code '03'"),
    ("01-01-01-01-01-01-01.wav", "does not fit a .wav file"),
    ("03-01-01-01-01-01-01.mp4", "does not fit a .mp4 file"),
])
def test_ravdess_impossible_codes_raise(tmp_path, name, message):
  _touch(tmp_path / "Actor_01" / name)
  with pytest.raises(CorpusError, match=message):
    ravdess.scan(tmp_path)


def test_ravdess_errors(ravdess_root, tmp_path):
  with pytest.raises(CorpusError, match="notes.mp4: not a RAVDESS name"):
    ravdess.scan(ravdess_root, strict=True)
  with pytest.raises(ValueError, match="extra_labels"):
    ravdess.scan(ravdess_root, extra_labels={"calm": "bored"})
  with pytest.raises(ValueError, match="modalities"):
    ravdess.scan(ravdess_root, modalities=("04",))
  (tmp_path / "empty").mkdir()
  with pytest.raises(CorpusError, match="no .mp4 or .wav files"):
    ravdess.scan(tmp_path / "empty")
  with pytest.raises(CorpusError, match="does not exist"):
    ravdess.scan(tmp_path / "nowhere")
  _touch(tmp_path / "songs" / "01-02-03-01-01-01-01.mp4", tmp_path / "songs" / "x.wav")
  with pytest.raises(CorpusError, match=r"no usable utterances .*song: 1, unrecognised name: 1"):
    datasets.read("ravdess", tmp_path / "songs")


def test_ravdess_duplicate_ids_raise(tmp_path):
  _touch(tmp_path / "a" / "01-01-03-01-01-01-01.mp4", tmp_path / "b" / "01-01-03-01-01-01-01.mp4")
  with pytest.raises(CorpusError, match="'01-01-03-01-01-01-01' occurs twice"):
    datasets.read("ravdess", tmp_path)


def test_ravdess_real_clips(ravdess_fer_av):
  utterances, stats = datasets.read_with_stats("ravdess", ravdess_fer_av)
  assert len(utterances) == 288
  assert stats["per_class"] == {label: 72 for label in LABELS}
  assert stats["per_speaker"] == {f"Actor_{a:02d}": 16 for a in range(1, 19)}
  assert stats["left_out"] == {} and stats["duration_s"] is None
  for u in utterances:
    assert u.video == u.audio == ravdess_fer_av / u.speaker / f"{u.id}.mp4"
    assert u.video.is_file() and (u.start, u.end, u.session, u.side) == (None,) * 4
  assert [u.id for u in utterances] == sorted(u.id for u in utterances)


# ----------------------------------------------------------------------------------------- CREMA-D


def test_cremad_reads_every_field(tmp_path):
  video, audio = tmp_path / "VideoFlash", tmp_path / "AudioWAV"
  _touch(video / "1001_DFA_ANG_XX.flv", video / "1001_IEO_HAP_HI.flv",
         video / "1002_TIE_SAD_LO.flv", video / "1002_TIE_FEA_LO.flv",
         video / "1003_ITS_DIS_MD.flv", video / "junk.flv", tmp_path / "1004_WSI_NEU_XX.flv",
         audio / "1001_DFA_ANG_XX.wav", audio / "1002_TIE_SAD_LO.wav",
         audio / "1002_TIE_FEA_LO.wav", tmp_path / "VideoMP4" / "1001_DFA_ANG_XX.mp4")
  utterances, left_out = cremad.scan(tmp_path)
  assert utterances == [
      Utterance("1001_DFA_ANG_XX", video / "1001_DFA_ANG_XX.flv", audio / "1001_DFA_ANG_XX.wav",
                None, None, "anger", "1001"),
      Utterance("1001_IEO_HAP_HI", video / "1001_IEO_HAP_HI.flv", video / "1001_IEO_HAP_HI.flv",
                None, None, "happy", "1001"),
      Utterance("1002_TIE_SAD_LO", video / "1002_TIE_SAD_LO.flv", audio / "1002_TIE_SAD_LO.wav",
                None, None, "sad", "1002"),
      Utterance("1004_WSI_NEU_XX", tmp_path / "1004_WSI_NEU_XX.flv",
                tmp_path / "1004_WSI_NEU_XX.flv", None, None, "neutral", "1004"),
  ]
  assert all(u.session is None and u.side is None for u in utterances)
  assert left_out == collections.Counter({"label FEA": 1, "label DIS": 1, "unrecognised name": 1})
  with pytest.raises(CorpusError, match="junk.flv: not a CREMA-D name"):
    cremad.scan(tmp_path, strict=True)


@pytest.mark.parametrize("name, message", [
    ("1001_DFA_JOY_XX.flv", "emotion code 'JOY'"),
    ("1001_DFA_ANG_ZZ.flv", "level code 'ZZ'"),
])
def test_cremad_unknown_codes_raise(tmp_path, name, message):
  _touch(tmp_path / "VideoFlash" / name)
  with pytest.raises(CorpusError, match=message):
    cremad.scan(tmp_path)


def test_cremad_bad_root(tmp_path):
  _touch(tmp_path / "AudioWAV" / "1001_DFA_ANG_XX.wav")
  with pytest.raises(CorpusError, match="no .flv videos"):
    cremad.scan(tmp_path)


# ---------------------------------------------------------------------------------------- manifest


def _write_csv(path: Path, rows: list[list[str]]) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("w", newline="") as f:
    csv.writer(f).writerows(rows)
  return path


@pytest.fixture
def manifest_root(tmp_path: Path) -> Path:
  root = tmp_path / "corpus"
  _touch(root / "clips" / "a.mp4", root / "clips" / "a.wav", root / "clips" / "b.wav")
  _write_csv(root / "manifest.csv", [
      ["label", "speaker", "video", "audio", "start", "end", "session", "side", "id"],
      ["anger", "s1", "clips/a.mp4", "clips/a.wav", "1.5", "3.25", "day1", "L", "first"],
      [" sad ", "s2", "clips/a.mp4", "", "4", "", "", "", ""],
      ["happy", "s2", "", "./clips/b.wav", "", "", "", "R", ""],
      ["", "", "", "", "", "", "", "", ""],
      ["neutral", "s3", "clips/gone.mp4", "", "", "", "", "", ""],
  ])
  return root


def test_manifest_reads_every_field(manifest_root):
  clips = manifest_root.resolve() / "clips"
  expected = [
      Utterance("./clips/b", None, clips / "b.wav", None, None, "happy", "s2", None, "R"),
      Utterance("clips/a@4-", clips / "a.mp4", None, 4.0, None, "sad", "s2", None, None),
      Utterance("first", clips / "a.mp4", clips / "a.wav", 1.5, 3.25, "anger", "s1", "day1", "L"),
  ]
  for root in (manifest_root, manifest_root / "manifest.csv"):
    utterances, left_out = manifest.scan(root)
    assert utterances == expected
    assert left_out == collections.Counter({"missing media": 1})
  with pytest.raises(CorpusError, match=r"manifest.csv:6: missing media .*gone.mp4"):
    manifest.scan(manifest_root, strict=True)


def _one_row(tmp_path: Path, row: list[str], header=("video", "label", "speaker")) -> Path:
  """A manifest in tmp_path/m with x.mp4 beside it and link.mp4 -> tmp_path/outside.mp4."""
  _touch(tmp_path / "m" / "x.mp4", tmp_path / "outside.mp4")
  os.symlink(tmp_path / "outside.mp4", tmp_path / "m" / "link.mp4")
  return _write_csv(tmp_path / "m" / "manifest.csv", [list(header), row])


@pytest.mark.parametrize("row, message", [
    (["../outside.mp4", "sad", "s"], r"manifest.csv:2: path '../outside.mp4' leads to .*outside"),
    (["link.mp4", "sad", "s"], r"manifest.csv:2: path 'link.mp4' leads to .*outside"),
    (["/abs/x.mp4", "sad", "s"], r"manifest.csv:2: absolute path '/abs/x.mp4'"),
    (["x.mp4", "joy", "s"], r"manifest.csv:2: label 'joy' is not one of"),
    (["x.mp4", "", "s"], r"manifest.csv:2: label None is not one of"),
    (["x.mp4", "sad", ""], r"manifest.csv:2: speaker is empty"),
    (["", "sad", "s"], r"manifest.csv:2: needs a video or an audio path"),
    (["x.mp4", "sad", "s", "extra"], r"manifest.csv:2: 4 cells but 3 columns"),
])
def test_manifest_bad_rows_raise_naming_the_line(tmp_path, row, message):
  with pytest.raises(CorpusError, match=message):
    manifest.scan(_one_row(tmp_path, row))


@pytest.mark.parametrize("start, end, message", [
    ("abc", "", "time 'abc' is not a number"), ("-1", "", "time '-1'"), ("nan", "", "'nan'"),
    ("inf", "", "'inf'"), ("2", "2", "end 2.0 is not after start 2.0"),
])
def test_manifest_bad_times_raise(tmp_path, start, end, message):
  path = _one_row(tmp_path, ["x.mp4", "sad", "s", start, end],
                  header=("video", "label", "speaker", "start", "end"))
  with pytest.raises(CorpusError, match=rf"manifest.csv:2: .*{message}"):
    manifest.scan(path)


def test_manifest_bad_side_raises(tmp_path):
  path = _one_row(tmp_path, ["x.mp4", "sad", "s", "left"], header=("video", "label", "speaker",
                                                                     "side"))
  with pytest.raises(CorpusError, match="manifest.csv:2: side must be L, R or empty"):
    manifest.scan(path)


def test_manifest_allow_absolute(tmp_path):
  _touch(tmp_path / "outside.mp4")
  os.symlink(tmp_path / "outside.mp4", tmp_path / "link.mp4")
  path = _write_csv(tmp_path / "m" / "manifest.csv", [
      ["id", "video", "label", "speaker"], ["a", str(tmp_path / "outside.mp4"), "sad", "s"],
      ["b", "../outside.mp4", "sad", "s"], ["c", "../link.mp4", "sad", "s"]])
  utterances, _ = manifest.scan(path, allow_absolute=True)
  assert [u.video.resolve() for u in utterances] == [tmp_path / "outside.mp4"] * 3


@pytest.mark.parametrize("header, message", [
    (["video", "lable", "speaker"], r"unknown column\(s\) \['lable'\]"),
    (["video", "label"], "needs label, speaker and video and/or audio"),
    (["start", "label", "speaker"], "needs label, speaker and video and/or audio"),
    (["video", "label", "speaker", "label"], "named twice"),
])
def test_manifest_bad_header_raises(tmp_path, header, message):
  with pytest.raises(CorpusError, match=message):
    manifest.scan(_write_csv(tmp_path / "manifest.csv", [header]))


def test_manifest_bad_files_raise(tmp_path):
  with pytest.raises(CorpusError, match="no such manifest"):
    manifest.scan(tmp_path)
  (tmp_path / "manifest.csv").write_text("")
  with pytest.raises(CorpusError, match="empty; expected a header"):
    manifest.scan(tmp_path)
  (tmp_path / "manifest.csv").write_bytes(b"video,label,speaker\n\xff\xfe.mp4,sad,s\n")
  with pytest.raises(CorpusError, match="not UTF-8 text"):
    manifest.scan(tmp_path)


def test_manifest_header_only_is_an_empty_corpus(tmp_path):
  _write_csv(tmp_path / "manifest.csv", [["video", "label", "speaker"]])
  assert manifest.scan(tmp_path) == ([], collections.Counter())
  with pytest.raises(CorpusError, match="no usable utterances in corpus 'manifest'"):
    datasets.read("manifest", tmp_path)


def test_read_rejects_duplicate_ids_and_unknown_corpus(tmp_path):
  _touch(tmp_path / "x.mp4")
  _write_csv(tmp_path / "manifest.csv", [["id", "video", "label", "speaker"],
                                         ["a", "x.mp4", "sad", "s"], ["a", "x.mp4", "happy", "s"]])
  with pytest.raises(CorpusError, match="'a' occurs twice"):
    datasets.read("manifest", tmp_path)
  with pytest.raises(CorpusError, match="unknown corpus 'timit'"):
    datasets.read("timit", tmp_path)


_TEXT = st.text(alphabet=st.sampled_from(list("x./-_0129eLRsad ")) | st.characters(codec="utf-8"),
                max_size=12)
def _cell(*plausible: str) -> st.SearchStrategy[str]:
  """Mostly a plausible value, one time in six any text."""
  return st.integers(0, 5).flatmap(lambda k: _TEXT if k == 0 else st.sampled_from(plausible))


_ROW = st.fixed_dictionaries({
    "video": _cell("", "x.mp4", "gone.mp4", "../x.mp4", "/x.mp4", "./x.mp4", "link.mp4"),
    "audio": _cell("", "x.mp4"), "start": _cell("", "0", "1.5", "-1", "1e400"),
    "end": _cell("", "1.5", "3"), "label": _cell(*LABELS, "", "joy"), "speaker": _cell("", "s1"),
    "session": _TEXT, "side": _cell("", "L", "R"), "id": _TEXT,
})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ROW, st.sampled_from([[], [], [""], ["z"]]))
def test_manifest_any_row(tmp_path_factory, row, extra_cells):
  root = tmp_path_factory.mktemp("manifest")
  _touch(root / "x.mp4", root.parent / "outside.mp4")
  os.symlink(root.parent / "outside.mp4", root / "link.mp4")
  path = _write_csv(root / "manifest.csv", [list(row), list(row.values()) + extra_cells])
  try:
    utterances, left_out = manifest.scan(path)
  except CorpusError as e:
    assert str(e).startswith(str(path))
    return
  assert len(utterances) + sum(left_out.values()) <= 1
  assert set(left_out) <= {"missing media"}
  for u in utterances:
    assert u.label in LABELS and u.speaker and (u.video or u.audio).is_relative_to(root.resolve())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_manifest_any_bytes(tmp_path_factory, data):
  root = tmp_path_factory.mktemp("manifest")
  (root / "manifest.csv").write_bytes(b"video,label,speaker\n" + data)
  try:
    manifest.scan(root)
  except CorpusError as e:
    assert str(e).startswith(str(root / "manifest.csv"))
